"""Faults a hostile caller, another program or the system can cause, each against a real
worker: one bad call, row, signal or file fails alone (at the call, or as that task's
FAILURE) and never stops the worker or leaves a task waiting forever."""
import json
import os
import pickle
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import closing

import pytest

from miniq import Miniq, chain, chord, exceptions
from tests import tasks
from tests.conftest import ROOT, wait_for
from tests.test_reliability import group_alive, states, tokens_run
from tests.test_worker_lifecycle import alive, deliver, start_gated

FAST = {"worker_lost_after": 2, "worker_heartbeat": 0.2}  # recovery within seconds
COLUMNS = ("id", "name", "queue", "priority", "body", "options", "eta", "expires", "created",
           "chord", "status")  # the order of app.message_row()


def conf_env(**conf):
    """Worker settings read by tests/tasks.py at import: this worker only."""
    return {"MINIQ_TEST_CONF": json.dumps(conf)}


def tail(worker, chars=3000):
    return worker.output()[-chars:]


def count_rows(app, where="1", args=()):
    return app.broker.db.execute(f"SELECT COUNT(*) FROM task WHERE {where}", args).fetchone()[0]


def row_of(app, result, columns="status, state, worker, attempts"):
    return app.broker.db.execute(f"SELECT {columns} FROM task WHERE id = ?",
                                 (result.id,)).fetchone()


def within(seconds, fn, *args, what=None, **kwargs):
    """fn(*args, **kwargs), failing the test if it takes longer than seconds: a call stuck on
    a locked database fails the test instead of hanging it. A stuck call's thread finishes
    once teardown has stopped the worker that holds the lock."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            box["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"{what or getattr(fn, '__qualname__', fn)} still running after "
                             f"{seconds}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def raw_db(app):
    """A connection of our own, as another program writing to the file would have."""
    return closing(sqlite3.connect(app.broker.path, timeout=10))


def insert_raw(app, task_name, task_args=(), **columns):
    """Insert a queued message row as app.message_row() makes it, some columns replaced."""
    row = dict(zip(COLUMNS, app.message_row(task_name, task_args)))
    row.update(columns)
    with raw_db(app) as db, db:
        db.execute(f"INSERT INTO task ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                   tuple(row.values()))
    return app.AsyncResult(row["id"])


def settle(result, worker, timeout=15):
    """Until the task is done; the worker must still be there all along."""
    deadline = time.monotonic() + timeout
    while not result.ready() and worker.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert worker.proc.poll() is None, f"the worker died:\n{tail(worker)}"
    assert result.ready(), f"task not done after {timeout}s: {row_of(result.app, result)}"


def not_done(app, worker):
    """Rows not done yet, while the worker lives."""
    assert worker.proc.poll() is None, f"the worker died:\n{tail(worker)}"
    return count_rows(app, "status != 2")


def wait_done(app, worker, explain, stall=15.0, timeout=120.0, interval=0.1):
    """Until every row is done; fails once none got done for stall seconds (a stuck worker
    fails fast), or after timeout, with the text explain() gives then."""
    started = last_change = time.monotonic()
    seen = None
    while True:
        left = not_done(app, worker)
        if not left:
            return
        now = time.monotonic()
        if left != seen:
            seen, last_change = left, now
        if now - last_change > stall or now - started > timeout:
            pytest.fail(f"{left} rows not done after {now - started:.0f}s, none done in the "
                        f"last {now - last_change:.0f}s: {explain()}")
        time.sleep(interval)


def stays(condition, seconds, explain, interval=0.05):
    """condition() holds on every poll for seconds; fails at the first poll it does not,
    with the text explain() gives then."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not condition():
            pytest.fail(explain())
        time.sleep(interval)


def get_or_fail(result, timeout):
    """result.get(timeout), failing with the row's lifecycle when it is not done in time."""
    try:
        return result.get(timeout=timeout)
    except exceptions.TimeoutError:
        pass
    pytest.fail(f"task {result.id} not done after {timeout}s: (status, state, worker, attempts)"
                f" = {row_of(result.app, result)}")


def assert_serving(worker, timeout=15):
    assert worker.proc.poll() is None, f"the worker died:\n{tail(worker)}"
    assert within(timeout + 5, lambda: tasks.add.delay(20, 22).get(timeout=timeout)) == 42
    assert worker.proc.poll() is None, f"the worker died:\n{tail(worker)}"


# a soft limit that lands inside miniq's own database calls ---------------------------------------

@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_soft_limits_landing_inside_database_calls_leave_the_database_usable(app, start_worker):
    rng = random.Random(0)
    worker = start_worker("-c", "2")
    results = [within(5, tasks.progress_forever.apply_async, what=f"delay() number {n + 1}",
                      soft_time_limit=round(rng.uniform(0.02, 0.2), 3)) for n in range(100)]
    wait_done(app, worker, lambda: f"states {states(app)}\n{tail(worker)}")
    assert Counter(type(r.info).__name__ for r in results) == {"SoftTimeLimitExceeded": 100}
    assert {r.state for r in results} == {"FAILURE"}
    started = time.monotonic()
    assert within(5, lambda: tasks.add.delay(1, 1).get(timeout=5), what="add(1, 1)") == 2
    assert time.monotonic() - started < 5
    worker.signal(signal.SIGTERM)
    try:
        code = worker.wait(10)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, f"SIGTERM: exit code {code} after 10s (None: still running)\n{tail(worker)}"


# priorities --------------------------------------------------------------------------------------

@pytest.mark.parametrize("priority", ["high", "", b"1", "1.5", 1.5, True],
                         ids=["word", "empty", "bytes", "numeric-text", "float", "bool"])
def test_a_priority_that_is_not_an_int_is_refused_at_the_call(app, priority):
    with pytest.raises(TypeError):
        tasks.add.apply_async((1, 1), priority=priority)
    assert count_rows(app) == 0


@pytest.mark.parametrize("priority", [-1, 256, 10 ** 30])
def test_a_priority_outside_0_to_255_is_refused_at_the_call(app, priority):
    with pytest.raises(ValueError):
        tasks.add.apply_async((1, 1), priority=priority)
    assert count_rows(app) == 0


def test_priorities_none_0_and_255_are_accepted(app):
    ids = [tasks.add.apply_async((1, 1), priority=p).id for p in (None, 0, 255)]
    stored = dict(app.broker.db.execute("SELECT id, priority FROM task"))
    assert [stored[i] for i in ids] == [0, 0, 255]


def test_a_stored_priority_that_is_text_fails_that_task_and_the_worker_keeps_serving(
        app, start_worker, tmp_path):
    worker = start_worker("-c", "1")
    bad = insert_raw(app, tasks.record.name, (str(tmp_path / "runs.txt"), 1), priority="high")
    settle(bad, worker)
    assert bad.state == "FAILURE"
    assert "priority" in f"{type(bad.info).__name__}: {bad.info}"
    after = [tasks.add.delay(i, i) for i in range(3)]
    assert [r.get(timeout=15) for r in after] == [0, 2, 4]
    assert_serving(worker)


# revoke's signal, and the delivery cap -----------------------------------------------------------

@pytest.mark.parametrize("signum", [999, "NOSUCH", -1, 0, True, 9.0, "SIGSTOP", "TSTP", signal.SIGTTIN])
def test_revoke_with_a_signal_that_does_not_exist_is_refused_at_the_call(app, signum):
    """Nor one that pauses a task: it would never end, nor would a warm shutdown."""
    queued = tasks.add.delay(1, 1)  # no worker: it stays queued
    with pytest.raises(ValueError):
        app.control.revoke(queued.id, terminate=True, signal=signum)
    with pytest.raises(TypeError, match="strings"):  # not ids 97, 98 and 99
        app.control.revoke(queued.id.encode())
    assert row_of(app, queued, "status, state, revoked") == (0, "PENDING", None)


def test_celerys_other_names_for_revoke_and_purge(app):
    """terminate() is revoke(terminate=True) and discard_all() purge(), as Celery's; a
    revoke choosing workers by pattern is refused: here it holds for every worker."""
    queued, other = tasks.add.delay(1, 1), tasks.add.delay(2, 2)
    with pytest.raises(TypeError, match="no matcher, pattern"):
        app.control.revoke(queued.id, pattern="web@*", matcher="glob")
    with pytest.raises(ValueError):  # as revoke(terminate=True) checks it
        app.control.terminate(queued.id, signal="NOSUCH")
    app.control.terminate(queued.id)
    assert queued.state == "REVOKED" and row_of(app, other, "state") == ("PENDING",)
    assert app.control.discard_all() == 1 and row_of(app, other, "state") is None


def start_sleeper(app, worker):
    """A task running in the worker's only child; returns (result, that child's pid)."""
    (child,) = worker.children()
    result = tasks.sleep.delay(30)
    wait_for(lambda: result.state == "STARTED", timeout=15, message="the task running")
    return result, child


@pytest.mark.parametrize("signum", ["SIGUSR2", "USR2", signal.SIGKILL],
                         ids=["SIGUSR2", "USR2", "SIGKILL-number"])
def test_revoke_terminate_takes_names_and_numbers_of_real_signals(app, start_worker, signum):
    worker = start_worker("-c", "1")
    result, child = start_sleeper(app, worker)
    app.control.revoke(result.id, terminate=True, signal=signum)
    with pytest.raises(exceptions.TaskRevokedError):
        result.get(timeout=15)
    assert result.state == "REVOKED"
    wait_for(lambda: not alive(child), timeout=10, message=f"child {child} killed")
    assert_serving(worker)


@pytest.mark.parametrize("signum, seconds", [("SIGKILL", 30), ("SIGTERM", 0.3)])
def test_a_terminated_task_is_revoked_at_once_and_its_chain_ends(app, start_worker, tmp_path,
                                                                 signum, seconds):
    """As Celery's: a busy worker acts on a terminate as it is sent, not at its next beat
    (here 60 s away); a task that ends before its kill (its child ignores SIGTERM, which
    has a second's grace) is REVOKED still. The step after it never runs."""
    start_worker("-c", "1", env={"MINIQ_TEST_CONF": json.dumps(
        {"worker_heartbeat": 60, "worker_lost_after": 120})})
    path = tmp_path / "runs"
    flow = chain(tasks.record_slow.si(str(path), "first", seconds),
                 tasks.record.si(str(path), "next"))
    last = flow.apply_async()
    first = last.parent
    wait_for(lambda: first.state == "STARTED", timeout=15, message="the first step running")
    app.control.revoke(first.id, terminate=True, signal=signum)
    with pytest.raises(exceptions.TaskRevokedError):
        first.get(timeout=15)
    with pytest.raises(exceptions.TaskRevokedError):
        last.get(timeout=15)
    assert "next" not in (path.read_text() if path.exists() else "")


@pytest.mark.parametrize("mark", [999, "abc", int(signal.SIGSTOP)],
                         ids=["no-such-signal", "text", "a-pausing-one"])
def test_a_stored_revoke_signal_no_caller_could_send_still_kills_the_task(
        app, start_worker, mark):
    worker = start_worker("-c", "1")
    result, child = start_sleeper(app, worker)
    with raw_db(app) as db, db:
        db.execute("UPDATE task SET revoked = ? WHERE id = ? AND status = 1", (mark, result.id))
    settle(result, worker)
    assert result.state == "REVOKED"
    assert isinstance(result.info, exceptions.TaskRevokedError)
    wait_for(lambda: not alive(child), timeout=10, message=f"child {child} killed")
    assert_serving(worker)


def test_a_task_put_back_by_cold_shutdowns_stops_at_the_delivery_cap(
        app, start_worker, tmp_path):
    """Each cold shutdown puts the running task back; the third put-back is its last."""
    runs, gate = tmp_path / "runs.txt", tmp_path / "gate"  # the gate never opens
    result = tasks.record_gated.delay(str(runs), 1, str(gate))
    cap = app.conf.task_max_deliveries
    for delivery in range(1, cap + 1):
        worker = start_worker("-c", "1")
        wait_for(lambda: tokens_run(runs)[1] == delivery, timeout=30,
                 message=f"delivery {delivery} running")
        deliver(worker, signal.SIGTERM)
        deliver(worker, signal.SIGQUIT)  # cold: the task goes back
        assert worker.wait(30) != 0, tail(worker)
    start_worker("-c", "1")
    wait_for(lambda: result.ready() or tokens_run(runs)[1] > cap, timeout=15,
             message=f"the task failed after {cap} deliveries")
    assert tokens_run(runs)[1] == cap, f"delivered more than {cap} times"
    with pytest.raises(exceptions.WorkerLostError):
        result.get(timeout=1)
    assert row_of(app, result, "status, state, attempts") == (2, "FAILURE", cap)


# text that is not UTF-8 --------------------------------------------------------------------------

@pytest.mark.parametrize("in_message", [False, True], ids=["as-filename", "in-message"])
def test_an_exception_with_an_undecodable_file_name_fails_the_task_alone(
        app, start_worker, in_message):
    worker = start_worker("-c", "1")
    result = tasks.raise_undecodable_path.delay(in_message)
    settle(result, worker)
    assert result.state == "FAILURE"
    with pytest.raises(FileNotFoundError):
        result.get(timeout=1)
    assert_serving(worker)


def test_update_state_with_an_undecodable_state_does_not_break_the_task(app, start_worker):
    worker = start_worker("-c", "1")
    result = tasks.undecodable_state.delay()
    settle(result, worker)
    assert result.get(timeout=1) == "done"
    assert_serving(worker)


# a worker killed with its children, nothing else sent --------------------------------------------

@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_the_surviving_worker_puts_back_and_runs_the_task_of_a_killed_one(
        app, start_worker, tmp_path):
    runs = tmp_path / "runs.txt"
    workers = [start_worker("-c", "1", env=conf_env(**FAST)) for _ in range(2)]
    result = tasks.record_attempt.delay(str(runs), 30)
    wait_for(lambda: runs.exists(), timeout=15, message="the task running")
    (holder,) = app.broker.db.execute(
        "SELECT w.pid FROM task t JOIN worker w ON w.id = t.worker WHERE t.id = ?",
        (result.id,)).fetchone()
    busy = next(w for w in workers if w.pid == holder)
    survivor = next(w for w in workers if w is not busy)
    os.killpg(busy.pid, signal.SIGKILL)
    busy.wait(10)
    killed = time.monotonic()
    budget = FAST["worker_lost_after"] + 10
    assert get_or_fail(result, budget) == 2
    print(f"\nkill -9 of the busy worker: task run again after {time.monotonic() - killed:.1f}s")
    assert [line.split()[0] for line in runs.read_text().splitlines()] == ["1", "2"]
    assert survivor.proc.poll() is None, tail(survivor)


# orphans -----------------------------------------------------------------------------------------

def descendants(pid):
    """Pids of pid's children and of theirs (a fork server's), from /proc: fast enough to
    catch a child as it appears, where running pgrep takes milliseconds."""
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                kids = [int(p) for p in f.read().split()]
        except OSError:  # gone meanwhile
            kids = []
        found += kids
        todo += kids
    return found


ORPHAN_ROUNDS = 10


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_children_exit_when_the_manager_dies_while_it_replaces_one(
        app, start_worker, method):
    if not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        pytest.skip("needs /proc/<pid>/task/<pid>/children to catch a child as it appears")
    leftovers = []
    try:
        for round_ in range(ORPHAN_ROUNDS):
            worker = start_worker("-c", "1", "--start-method", method)
            before = set(descendants(worker.pid))
            tasks.exit_now.delay(3)  # the child exits; the manager starts another
            new = wait_for(lambda: set(descendants(worker.pid)) - before, timeout=30,
                           interval=0.001, message="the replacement child")
            os.kill(worker.pid, signal.SIGKILL)  # the manager only, as it boots the child
            gone = time.monotonic()
            worker.wait(10)
            with raw_db(app) as db, db:  # its task is not for the next round to recover
                db.execute("DELETE FROM task")
            while group_alive(worker.pid) and time.monotonic() - gone < 5:
                time.sleep(0.05)
            leftovers = group_alive(worker.pid)
            assert not leftovers, (f"round {round_ + 1}: processes {leftovers} of the killed "
                                   f"manager (replacement {sorted(new)}) still running after 5s")
    finally:
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_an_orphan_mid_task_is_gone_before_its_task_runs_again(app, start_worker, tmp_path):
    """The manager killed mid-task: its child does not run on past the hard limit only
    the manager enforced, nor beside the run another worker starts after recovery."""
    runs, gate = tmp_path / "runs.txt", tmp_path / "gate"
    result = tasks.record_gated.apply_async((str(runs), 1, str(gate), 60), time_limit=30)
    worker = start_worker("-c", "1", env=conf_env(**FAST))
    wait_for(lambda: runs.exists() and runs.read_text(), timeout=30, message="the first run")
    orphan = int(runs.read_text().split()[1])
    os.kill(worker.pid, signal.SIGKILL)  # the manager only: its child runs on, orphaned
    killed = time.monotonic()
    worker.wait(10)
    start_worker("-c", "1", env=conf_env(**FAST))  # recovers the task from the dead one
    orphan_ran_for = None
    while len(runs.read_text().splitlines()) < 2:  # until the task runs again
        if orphan_ran_for is None and not alive(orphan):
            orphan_ran_for = time.monotonic() - killed
        assert orphan_ran_for is not None or time.monotonic() - killed < 5, "orphan lives on"
        assert time.monotonic() - killed < 30, "the task never ran again"
        time.sleep(0.01)
    assert orphan_ran_for is not None, "the task ran again beside its orphaned first run"
    gate.touch()
    assert result.get(timeout=30) == 1
    print(f"\norphan gone {orphan_ran_for:.2f}s after its manager's kill -9")


# malformed rows from another program -------------------------------------------------------------

MALFORMED = [
    ("options", '{"chain": 5}'),
    ("options", '{"chain": [{"foo": 1}]}'),
    ("options", "not json"),
    ("options", "[1]"),
    ("options", '{"soft_time_limit": "x"}'),
    ("options", '{"soft_time_limit": -5}'),
    ("options", '{"headers": [1, 2]}'),
    ("eta", "abc"),
    ("expires", "abc"),
    ("priority", "abc"),
    ("retries", "x"),
]


@pytest.mark.parametrize("column, value", MALFORMED,
                         ids=[f"{c}={v}" for c, v in MALFORMED])
def test_a_malformed_row_fails_without_running_and_the_worker_keeps_serving(
        app, start_worker, tmp_path, column, value):
    runs = tmp_path / "runs.txt"
    worker = start_worker("-c", "1")
    before = tasks.record.delay(str(runs), 1)
    bad = insert_raw(app, tasks.record.name, (str(runs), 2), **{column: value})
    after = tasks.record.delay(str(runs), 3)
    settle(bad, worker)
    assert bad.state == "FAILURE"
    with pytest.raises(exceptions.InvalidTaskError, match=rf"(?i)corrupt|{column}"):
        bad.get(timeout=1)
    assert (before.get(timeout=15), after.get(timeout=15)) == (1, 3)
    assert tokens_run(runs) == Counter({1: 1, 3: 1}), "the malformed task ran"
    assert_serving(worker)


def test_a_time_no_date_holds_is_refused_at_the_call_and_read_from_a_row(app, start_worker):
    """As Celery's: a time past the year 9999 is an OverflowError at the call. Such a
    row another program stored runs (its request shows no time), and inspect still
    lists what is scheduled."""
    for options in ({"countdown": 1e12}, {"expires": 1e12}, {"countdown": -1e12}):
        with pytest.raises(OverflowError, match="9999"):
            tasks.add.apply_async((1, 2), **options)
    worker = start_worker("-c", "1")
    far = insert_raw(app, tasks.add.name, (1, 2), expires=1e12)
    later = tasks.add.apply_async((3, 4), countdown=300)
    with raw_db(app) as db, db:
        db.execute("UPDATE task SET eta = 1e12 WHERE id = ?", (later.id,))
    assert far.get(timeout=15) == 3
    listed = [entry for entries in app.control.inspect().scheduled().values() for entry in entries]
    assert [(entry["request"]["id"], entry["eta"]) for entry in listed] == [(later.id, None)]
    assert_serving(worker)


def test_a_delivery_count_below_zero_counts_from_one(app):
    """Another program's row with attempts = -5 would need many deliveries to reach
    task_max_deliveries: a task that kills its worker each time would loop on."""
    app.broker.db  # the schema
    for attempts in (-5, 0):
        insert_raw(app, tasks.add.name, (1, 2), attempts=attempts)
    assert [m.attempts for m in app.broker.claim("w", ["celery"], 2, 60.0)] == [1, 1]


# the database's side files -----------------------------------------------------------------------

PRODUCER_ONCE = """
import json, sys, time
from miniq.exceptions import MiniqError
from tests import tasks
started = time.monotonic()
try:
    result = tasks.add.delay(2, 3)
    out = {"value": result.get(timeout=15) if sys.argv[1] == "get" else "sent"}
except MiniqError as exc:
    out = {"miniq_error": f"{type(exc).__name__}: {exc}"}
except Exception as exc:
    out = {"other_error": f"{type(exc).__module__}.{type(exc).__name__}: {exc}"}
out["seconds"] = time.monotonic() - started
print(json.dumps(out))
"""


def fresh_producer(broker_url, mode):
    """A new process sends add(2, 3) (and with mode 'get' waits for it): what it saw."""
    env = dict(os.environ, MINIQ_BROKER_URL=broker_url, PYTHONPATH=ROOT)
    try:
        done = subprocess.run([sys.executable, "-c", PRODUCER_ONCE, mode], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=25)
    except subprocess.TimeoutExpired:
        done = None
    if done is None:
        pytest.fail("the producer hung for 25s")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("damage", ["delete-wal", "delete-shm", "truncate"])
def test_a_fresh_producer_copes_with_damaged_database_files(
        app, start_worker, broker_url, damage):
    worker = start_worker("-c", "1", env=conf_env(worker_heartbeat=0.2))
    assert tasks.add.delay(1, 1).get(timeout=15) == 2
    path = app.broker.path
    app.broker.close()  # ours would keep the files in use: only the worker's remain
    if damage == "truncate":
        os.truncate(path, 0)
    else:
        suffix = "-" + damage.split("-")[1]
        assert os.path.exists(path + suffix)
        os.unlink(path + suffix)
    seen = fresh_producer(broker_url, "send" if damage == "truncate" else "get")
    print(f"\n{damage}: the producer saw {seen}")
    if damage == "truncate":  # sent, or refused in miniq's words; promptly either way
        assert "other_error" not in seen, seen
    else:
        assert seen.get("value") == 5, seen
    assert seen["seconds"] <= 15, seen
    stays(lambda: worker.proc.poll() is None, 2, lambda: f"the worker died:\n{tail(worker)}")


# workers in other PID namespaces on the same host ------------------------------------------------

def free_pid():
    """A pid no process here has, high enough that none will soon."""
    try:
        with open("/proc/sys/kernel/pid_max") as f:
            top = int(f.read())
    except OSError:  # macOS
        top = 99_999
    for pid in range(top - 2000, top - 1000):
        if not alive(pid):
            return pid
    pytest.skip("no free pid found")


class FreshHeartbeat:
    """Keeps a worker row's heartbeat fresh from a thread until stop()."""

    def __init__(self, app, worker_id, every=0.2):
        self.path, self.worker_id, self.every = app.broker.path, worker_id, every
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        with closing(sqlite3.connect(self.path, timeout=10)) as db:
            while not self.done.wait(self.every):
                with db:
                    db.execute("UPDATE worker SET heartbeat = ? WHERE id = ?",
                               (time.time(), self.worker_id))

    def stop(self):
        self.done.set()
        self.thread.join(15)


@pytest.mark.slow
def test_a_worker_of_another_pid_namespace_is_judged_by_its_heartbeat_not_its_pid(
        app, start_worker):
    worker = start_worker("-c", "1", env=conf_env(**FAST))
    foreign, now = "foreign-worker", time.time()
    with raw_db(app) as db, db:
        columns = [c[1] for c in db.execute("PRAGMA table_info(worker)")]
        values = {"id": foreign, "host": socket.gethostname(), "pid": free_pid(),
                  "concurrency": 1, "queues": "celery", "started": now, "heartbeat": now,
                  "machine": "another-pid-namespace"}
        values = {k: v for k, v in values.items() if k in columns}  # machine: if there is one
        db.execute(f"INSERT INTO worker ({', '.join(values)}) VALUES "
                   f"({', '.join('?' * len(values))})", tuple(values.values()))
        row = dict(zip(COLUMNS, app.message_row(tasks.add.name, (2, 3))))
        db.execute("INSERT INTO task (id, name, queue, priority, body, created, status, state,"
                   " worker, lease, attempts, started) VALUES (?, ?, ?, ?, ?, ?, 1, 'STARTED',"
                   " ?, ?, 1, ?)", (row["id"], row["name"], row["queue"], row["priority"],
                                    row["body"], now, foreign, now + 3600, now))
    held = app.AsyncResult(row["id"])
    heartbeat = FreshHeartbeat(app, foreign)
    try:
        def still_held():
            return (row_of(app, held, "status, worker, attempts") == (1, foreign, 1)
                    and app.broker.db.execute("SELECT COUNT(*) FROM worker WHERE id = ?",
                                              (foreign,)).fetchone()[0] == 1)
        stays(still_held, 4, lambda: f"the live foreign worker was judged dead: task row "
                                     f"{row_of(app, held)}\n{tail(worker)}")
    finally:
        heartbeat.stop()
    silent = time.monotonic()
    assert get_or_fail(held, FAST["worker_lost_after"] + 10) == 5
    print(f"\nforeign worker silent: its task run again after {time.monotonic() - silent:.1f}s")
    assert "machine" in columns, "the worker table has no machine column"
    assert worker.proc.poll() is None


class NamespacedWorker:
    """A real worker command in a PID namespace of its own (unshare), on our database."""

    def __init__(self, broker_url, log_path, inner_pid, *args, conf=None):
        env = dict(os.environ, MINIQ_BROKER_URL=broker_url, PYTHONFAULTHANDLER="1",
                   PYTHONPATH=ROOT, **conf_env(**(conf or {})))
        # sh is the namespace's pid 1; the worker gets inner_pid, which no process here has
        script = (f'echo {inner_pid - 1} 2>/dev/null >/proc/sys/kernel/ns_last_pid; '
                  f'"$0" -m miniq -A tests.tasks worker --loglevel info {" ".join(args)}; '
                  f'exit $?')
        self.log_path, self.inner_pid = log_path, inner_pid
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script, sys.executable],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def stop(self):
        """SIGTERM to the worker (a warm shutdown), then SIGKILL to whatever is left."""
        for pid in group_alive(self.proc.pid):
            try:
                with open(f"/proc/{pid}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            if fields.get("NSpid", "").split()[-1:] == [str(self.inner_pid)]:
                os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(10)
        self.log.close()


def unshare_works():
    if shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                              capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_two_real_workers_in_different_pid_namespaces_do_not_judge_each_other_by_pid(
        app, start_worker, broker_url, tmp_path):
    if not unshare_works():
        pytest.skip("unshare --pid --fork --mount-proc is not permitted here")
    outer = start_worker("-c", "1", env=conf_env(**FAST))
    inner_pid = free_pid()
    inner = NamespacedWorker(broker_url, tmp_path / "inner.log", inner_pid, "-c", "1",
                             "-Q", "inner", conf=FAST)
    runs, gate = tmp_path / "runs.txt", tmp_path / "gate"
    try:
        wait_for(lambda: "ready" in inner.output() or inner.proc.poll() is not None,
                 timeout=30, message="the namespaced worker ready")
        assert inner.proc.poll() is None, inner.output()
        pids = [p for (p,) in app.broker.db.execute("SELECT pid FROM worker")]
        if inner_pid not in pids:
            pytest.skip(f"could not choose the namespaced worker's pid ({pids})")
        result = tasks.record_gated.apply_async((str(runs), 1, str(gate)), queue="inner")
        wait_for(lambda: runs.exists(), timeout=15, message="the task running in the namespace")
        (holder,) = row_of(app, result, "worker")

        def still_held():
            return (row_of(app, result, "status, worker, attempts") == (1, holder, 1)
                    and app.broker.db.execute("SELECT COUNT(*) FROM worker WHERE id = ?",
                                              (holder,)).fetchone()[0] == 1)
        stays(still_held, 4, lambda: f"the namespaced worker was judged dead: task row "
                                     f"{row_of(app, result)}, runs {tokens_run(runs)}\n"
                                     f"{tail(outer)}")
        gate.touch()
        assert result.get(timeout=15) == 1
        assert tokens_run(runs) == Counter({1: 1})
        assert outer.proc.poll() is None and inner.proc.poll() is None
    finally:
        gate.touch()  # a warm shutdown need not wait for the task
        inner.stop()


# what JSON cannot carry, exceptions without text, bad time limits --------------------------------

def test_an_argument_nested_too_deep_is_a_type_error_at_the_call(app):
    deep = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(TypeError):
        tasks.add.delay(deep, 1)
    assert count_rows(app) == 0


@pytest.mark.parametrize("task, args", [
    (tasks.unserializable_result, ()),
    (tasks.object_result, ()),
    (tasks.nested_result, (100_000,)),
], ids=["set", "object", "nested-100000"])
def test_a_result_json_cannot_carry_fails_with_a_type_error(app, start_worker, task, args):
    worker = start_worker("-c", "1")
    result = task.delay(*args)
    settle(result, worker)
    with pytest.raises(TypeError, match="not JSON serializable"):
        result.get(timeout=1)
    assert result.state == "FAILURE"
    assert_serving(worker)


def test_values_nested_past_the_managers_recursion_limit_fail_alone(app, start_worker):
    """A task may raise its recursion limit, then raise or return a value nested deeper
    than the manager reads: the manager logs what it can and serves on."""
    worker = start_worker("-c", "1")
    raised = tasks.nested_beyond_limit.delay(3000, True)
    returned = chain(tasks.nested_beyond_limit.s(3000, False), tasks.add.s(1)).apply_async()
    for result in (raised, returned.parent):
        settle(result, worker)
    # a newer json reads 3,000 levels: nothing to refuse; else the step that cannot send
    # its next one fails, as Celery's does
    old = sys.version_info < (3, 12)
    assert (raised.state, returned.parent.state) == ("FAILURE", "FAILURE" if old else "SUCCESS")
    if old:
        assert "an exception that cannot be shown (RecursionError)" in tail(worker, 10 ** 6)
        assert "its workflow ends here: maximum recursion depth" in tail(worker, 10 ** 6)
    assert_serving(worker)


@pytest.mark.skipif(not hasattr(sys, "set_int_max_str_digits"), reason="no digit limit")
def test_ints_past_the_managers_digit_limit_fail_alone(app, start_worker):
    """A task may lift its digit limit, then raise or return an int the manager cannot
    read: the task fails alone, and a chord whose member returned it fails naming it."""
    worker = start_worker("-c", "1")
    raised = tasks.huge_int.delay(True)
    joined = chord([tasks.huge_int.s(False), tasks.add.s(1, 1)], tasks.echo.s()).apply_async()
    for result in (raised, joined):
        settle(result, worker)
    assert (raised.state, joined.state) == ("FAILURE", "FAILURE")
    assert "an exception that cannot be shown (ValueError)" in tail(worker, 10 ** 6)
    with pytest.raises(exceptions.ChordError, match="cannot be read by the worker"):
        joined.get(timeout=1, follow_parents=False)
    assert_serving(worker)


def test_an_outcome_the_disk_has_no_room_for_waits_alone(app, start_worker):
    """The outcomes written with it are stored and the worker claims on, where the same
    batch was tried again and again, its tasks STARTED for ever; the one with no room
    waits for room (a full disk may be freed: a good outcome is no failure)."""
    pages = app.broker.db.execute("PRAGMA page_count").fetchone()[0]
    worker = start_worker("-c", "2", env={"MINIQ_TEST_MAX_PAGES": str(pages + 128)})
    gate = [tasks.sleep.delay(0.3) for _ in range(2)]  # their outcomes, with the big one's
    big = tasks.text_of.delay(4 << 20)  # 4 MB, with 0.5 MB left
    assert all(r.get(timeout=20) for r in gate)
    wait_for(lambda: "no room for its outcome" in tail(worker, 10 ** 6), timeout=20,
             message="the big outcome set apart")
    assert [tasks.add.delay(i, i).get(timeout=20) for i in range(3)] == [0, 2, 4]
    assert big.state == "STARTED"
    assert_serving(worker)
    last = tasks.sleep.delay(0.5, "last")  # its outcome is written as the worker stops
    wait_for(lambda: last.state == "STARTED", timeout=20, message="the last task running")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0, worker.output()
    assert last.get(timeout=5) == "last"
    with pytest.raises(exceptions.OperationalError, match="could not be stored: .*full"):
        big.get(timeout=5)  # as it stops, a failure in its place: it would wait for ever


def test_a_task_that_sets_the_stop_signals_leaves_its_child_ignoring_them(app, start_worker):
    """Ctrl-C and a group-wide SIGTERM reach the children: the manager decides, whatever
    a task set for them."""
    start_worker("-c", "1")
    assert tasks.stop_signals_as_a_task_leaves_them.delay(True).get(timeout=15)
    assert tasks.stop_signals_as_a_task_leaves_them.delay(False).get(timeout=15)


def test_a_replacement_given_the_tasks_own_id_takes_its_place(app, start_worker):
    start_worker("-c", "1")
    assert tasks.replaced_keeping_its_id.delay(2, 3).get(timeout=15) == 5


def test_a_reply_bigger_than_a_pipe_holds_crosses_whole(app, start_worker):
    """The manager reads a child's reply as it comes: one many pipe buffers long too."""
    worker = start_worker("-c", "2")
    value = "".join(f"{i:07d}" for i in range(400_000))  # 2.8 MB, no two chunks alike
    results = [tasks.echo.delay(value) for _ in range(3)]
    assert [r.get(timeout=30) for r in results] == [value] * 3
    assert_serving(worker)


class Exits:
    """Unpickled, it would call sys.exit(7)."""

    def __reduce__(self):
        return sys.exit, (7,)


@pytest.mark.parametrize("frame", [
    "00000004ffffffff",  # a whole frame, not a pickle
    "7fffffff",          # the length of a frame that never comes: it must not hold the manager
    "ffffffff000000",    # a big frame's length, cut short
    "fffffff0",          # a negative length
    (lambda p: (len(p).to_bytes(4, "big") + p).hex())(pickle.dumps((1, False))),  # no reply's
    (lambda p: (len(p).to_bytes(4, "big") + p).hex())(pickle.dumps(  # a state no run ends in
        (("WEIRD", "1", None, 0.0, None, None, False, None), False))),
    (lambda p: (len(p).to_bytes(4, "big") + p).hex())(pickle.dumps(Exits())),  # runs nothing
    (b"02:51:07 progress\n".hex(), 40, 0.5),  # a line every half second: not read for ever
], ids=["not-a-pickle", "length-only", "big-length-cut", "negative", "a-pickle-of-another-shape",
        "a-state-of-no-run", "a-pickle-that-calls", "a-trickle"])
def test_a_task_writing_into_its_pipe_to_the_manager_fails_alone(app, start_worker, frame):
    worker = start_worker("-c", "1")
    result = tasks.write_to_manager.delay(*frame if isinstance(frame, tuple) else (frame,))
    settle(result, worker)
    with pytest.raises(exceptions.WorkerLostError, match="unreadable"):
        result.get(timeout=1)
    assert_serving(worker)


def test_a_child_can_write_to_no_pipe_but_its_own_to_the_manager(app, start_worker):
    """Forked, a child inherits the manager's ends of its own and its siblings' pipes: it
    closes them, so that no task can hand itself or a sibling a job."""
    worker = start_worker("-c", "3")
    assert [tasks.writable_pipes.delay().get(timeout=15) for _ in range(6)] == [1] * 6
    assert_serving(worker)


def test_a_forged_reply_does_not_give_the_next_task_its_outcome(app, start_worker):
    """A task that answers for itself early, and again as it ends: the second answer is
    not the next task's outcome (that task, begun meanwhile in the same child, runs again
    in a new one)."""
    worker = start_worker("-c", "1")
    forger = tasks.forges_its_reply.delay(1.0)
    wait_for(lambda: forger.ready(), timeout=15, message="the forged reply taken")
    innocent = tasks.add.delay(1, 2)
    assert innocent.get(timeout=30) == 3
    assert forger.get(timeout=1) == "forged"  # its own lie, about itself only
    assert_serving(worker)


def test_a_forged_failure_the_manager_cannot_read_fails_alone(app, start_worker):
    worker = start_worker("-c", "1")
    task_id = str(uuid.uuid4())  # a reply for the task itself, in the child's format
    forged = pickle.dumps((task_id, ("FAILURE", "not json", None, 0.0, None, None, False, None,
                                     (None, None)), False))
    result = tasks.write_to_manager.apply_async(
        ((len(forged).to_bytes(4, "big") + forged).hex(),), task_id=task_id)
    settle(result, worker)
    assert result.state == "FAILURE"
    assert_serving(worker)


@pytest.mark.parametrize("json_args", [True, False], ids=["json-args", "object-arg"])
def test_an_exception_whose_str_raises_fails_the_task_under_its_own_name(
        app, start_worker, json_args):
    worker = start_worker("-c", "1")
    result = tasks.raise_unprintable.delay(json_args)
    settle(result, worker)
    assert result.state == "FAILURE"
    assert type(result.info).__name__ == "UnprintableError", repr(result.info)
    assert_serving(worker)


def test_an_exception_whose_args_raise_fails_the_task_under_its_own_name(app, start_worker):
    worker = start_worker("-c", "1")
    result = tasks.raise_argless.delay()
    settle(result, worker)
    assert (result.state, type(result.info).__name__) == ("FAILURE", "ArglessError")
    assert_serving(worker)


@pytest.mark.slow
def test_a_silent_worker_is_taken_for_dead_at_any_heartbeat_pace(app, start_worker):
    """A heartbeat every 1.5 s against worker_lost_after=2 is this worker's pace, not a
    stall: it still judges a stopped worker dead by its silence."""
    stopped = start_worker("-c", "1", env=conf_env(**FAST))
    result = tasks.sleep.delay(30, "done")
    wait_for(lambda: result.state == "STARTED", 15, message="the task runs")
    os.kill(stopped.pid, signal.SIGSTOP)
    judge = None
    try:
        judge = start_worker("-c", "1", env=conf_env(worker_heartbeat=1.5, worker_lost_after=2))
        wait_for(lambda: "recovered 1 task(s) from 1 dead worker(s)" in judge.output(), 20,
                 message="the stopped worker's task recovered")
    finally:  # both still hold the 30 s task: no warm shutdown to wait for
        for worker in filter(None, (stopped, judge)):
            worker.kill_group()


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_a_shutdown_while_the_file_is_locked_still_writes_the_last_results(app, start_worker):
    """The main process's short wait for a lock is for its loop; its last results at a
    shutdown get the full wait, else a finished task would run again."""
    worker = start_worker("-c", "1")
    result = tasks.sleep.delay(0.5, "done")
    wait_for(lambda: result.state == "STARTED", 15, message="the task runs")
    lock = sqlite3.connect(app.broker.path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        wait_for(lambda: "succeeded in" in worker.output(), 15,
                 message="the task ended")  # its outcome now waits for the file
        worker.signal(signal.SIGTERM)
        wait_for(lambda: "warm shutdown" in worker.output(), 15, message="the shutdown began")
        time.sleep(1.5)  # the fault: locked past the loop's 1 s wait, within a shutdown's
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert worker.proc.wait(20) == 0, tail(worker)
    assert result.get(timeout=5) == "done" and row_of(app, result)[3] == 1, tail(worker)


def test_a_task_the_file_says_a_live_worker_holds_and_it_does_not_goes_back(app, start_worker):
    """A file restored from a copy made while the worker ran holds rows claimed in its
    name that it no longer runs: its heartbeat must not keep them claimed for ever."""
    worker = start_worker("-c", "1", env=conf_env(**FAST))
    stray = tasks.add.apply_async((2, 3), countdown=3600)  # not due: no claim takes it
    (worker_id,) = app.broker.db.execute("SELECT id FROM worker").fetchone()
    now = time.time()
    app.broker._write("UPDATE task SET status = 1, state = 'STARTED', worker = ?, attempts = 1,"
                      " started = ?, lease = ?, eta = 0 WHERE id = ?",
                      (worker_id, now, now + 3600, stray.id))
    assert stray.get(timeout=30) == 5
    assert row_of(app, stray)[3] == 2  # a second delivery, as after any lost run
    assert "put back 1 task(s) the file says this worker holds" in worker.output()
    assert_serving(worker)


def test_an_exception_that_cannot_be_read_fails_the_task_naming_it(app, start_worker):
    """Not a child that dies (a WorkerLostError) and a task that says nothing."""
    worker = start_worker("-c", "1")
    children = worker.children()
    result = tasks.raise_unreadable.delay()
    settle(result, worker)
    assert result.state == "FAILURE"
    with pytest.raises(TypeError, match="raised a UnreadableError that cannot be read"):
        result.get(timeout=5)
    assert worker.children() == children  # the same child: it survived
    assert_serving(worker)


@pytest.mark.parametrize("options, error, said", [
    ({"soft_time_limit": -1}, ValueError, "soft_time_limit cannot be negative: -1"),
    ({"time_limit": "abc"}, TypeError, "time_limit cannot be 'abc'"),
], ids=["negative-soft-limit", "text-hard-limit"])
def test_a_bad_time_limit_is_refused_at_the_call(app, options, error, said):
    with pytest.raises(error, match=said):
        tasks.add.apply_async((1, 1), **options)
    assert count_rows(app) == 0


def test_a_calls_soft_limit_above_its_hard_one_is_sent_and_the_hard_one_ends_it(app,
                                                                                start_worker):
    """As Celery's: only the task's own limits are checked at the call (Celery's worker
    then ends such a task by either limit, as its timers fall; miniq's by the hard one)."""
    start_worker("-c", "1")
    result = tasks.sleep.apply_async((10,), soft_time_limit=5, time_limit=0.5)
    with pytest.raises(exceptions.TimeLimitExceeded):
        result.get(timeout=20)


def test_a_task_whose_options_raise_as_they_are_read_stops_no_worker(app, start_worker):
    """The sender reads them too: sent by name from an app that lacks the task. The
    worker logs it once and takes app.conf's."""
    worker = start_worker("-c", "1")
    with pytest.raises(ZeroDivisionError):  # at the call, where the sender knows the task
        tasks.unreadable_options.delay()
    lacking = Miniq("elsewhere", broker=app.conf.broker_url, set_as_current=False)
    result = lacking.send_task(tasks.unreadable_options.name)
    settle(result, worker)
    assert result.get() == "ran"
    assert_serving(worker)
    assert worker.output().count("its option ignore_result cannot be read") == 1
    lacking.close()


# fuzz: malformed rows and bad options while a worker runs ----------------------------------------

FUZZ_SEED, FUZZ_SECONDS, FUZZ_CALLS = 20240611, 20, 1000
BAD_COLUMNS = ("name", "body", "options", "priority", "eta", "expires", "retries", "chord")
HUGE = 2 ** 63 - 1


def malformed_values(column, runs, token):
    """Wrong types, text, blobs, huge numbers, NULLs where allowed, invalid JSON, JSON of
    the wrong shape; never a future eta (a task legitimately waiting)."""
    path = str(runs)
    step = {"task": tasks.record.name, "args": [path, token + 100_000]}  # the next step's
    return {
        "name": ["", "tests.tasks.nope", "TESTS.TASKS.RECORD", b"tests.tasks.record", 12345, 1.5,
                 "x" * 10_000, "tests.tasks.record\x00", tasks.add.name, tasks.record_slow.name],
        "body": ["not json", "", "[", "null", "5", '"text"', "{}", "[]", "[1, 2, 3]", "[5, {}]",
                 "[[], 5]", "[[], []]", '[{"a": 1}, {}]', b"\xff\xfe\x00", 5, 1e308,
                 "[" * 100_000 + "]" * 100_000,
                 json.dumps([[path, token], {"token": token}]).encode(),
                 json.dumps([[], {"path": path, "token": token}]),
                 json.dumps([[path, token], {}]).encode()],
        "options": ["not json", "", "null", "5", '"s"', "[1]", "{}", '{"chain": 5}',
                    '{"chain": "abc"}', '{"chain": [5]}', '{"chain": [{}]}',
                    '{"chain": [{"foo": 1}]}', '{"chain": [{"task": 5}]}',
                    '{"chain": {"task": "x"}}', '{"soft_time_limit": "x"}',
                    '{"time_limit": "x"}', '{"soft_time_limit": -1}', '{"time_limit": -1}',
                    '{"soft_time_limit": 1e308}', '{"time_limit": [1]}', '{"immutable": "yes"}',
                    b"{}", b"\xff", 5, None,
                    json.dumps({"chain": [{**step, "options": {"priority": "high"}}]}),
                    json.dumps({"chain": [{**step, "options": {"countdown": "abc"}}]}),
                    # workflows: callbacks, errbacks, a chord's error, a group as a step
                    '{"link": 5}', '{"link": [5]}', '{"link": [{"task": 5}]}',
                    '{"link_error": "x"}', '{"link_error": [{"args": []}]}',
                    '{"chord_error": 5}', '{"chord_error": {"id": 1}}', '{"errback": true}',
                    '{"header": {"a": 1}}', '{"replaced": true}',
                    json.dumps({"chain": [{**step, "subtask_type": "group", "kwargs": {}}]}),
                    json.dumps({"chain": [{**step, "subtask_type": "chord", "kwargs": 5}]})],
        "priority": ["abc", "", b"\x01", 1e308, -1e308, 2.5, -1, 256, HUGE, -HUGE - 1, "5"],
        "eta": ["abc", "", b"x", -1e308, -1.0, "5", float("-inf"), 0],
        "expires": ["abc", "", b"x", None, -1.0, 1e308, float("inf"), float("-inf"), 0],
        "retries": ["x", "", b"x", -1, HUGE, 1.5, "5"],
        "chord": ["no-such-callback", "", b"\x00\xff", 12345, 1.5, None],
    }[column]


BAD_OPTIONS = {
    "priority": ["high", "", b"1", "1.5", 1.5, True, -1, 256, 10 ** 30, [1], {}],
    "countdown": ["abc", b"1", [1], {}, object()],
    "expires": ["abc", b"1", [1], {}, object()],
    "soft_time_limit": ["abc", b"1", [1], {}, -1],
    "time_limit": ["abc", b"1", [1], {}],
    "queue": [5, b"q", ["q"], 1.5, {}],
    "task_id": [5, b"id", ["x"], 1.5, {}],
    "retries": ["2", -1, 2 ** 40, 1.5, True],
}


@pytest.mark.slow
def test_fuzz_malformed_rows_and_bad_options_never_stop_the_worker(app, start_worker, tmp_path):
    rng = random.Random(FUZZ_SEED)
    print(f"\nfuzz seed {FUZZ_SEED}")
    runs = tmp_path / "runs.txt"
    worker = start_worker("-c", "2")
    api_runs = tmp_path / "api-runs.txt"  # a bad call that got stored and ran writes here
    good, bad, problems = {}, {}, []
    deadline = time.monotonic() + FUZZ_SECONDS
    for token in range(FUZZ_CALLS):
        if time.monotonic() > deadline:
            break
        assert worker.proc.poll() is None, f"the worker died at call {token}:\n{tail(worker)}"
        draw = rng.random()
        if draw < 0.35:
            good[token] = within(10, tasks.record.delay, str(runs), token)
        elif draw < 0.75:
            columns = rng.sample(list(BAD_COLUMNS), rng.choice([1, 1, 1, 2]))
            mutation = {c: rng.choice(malformed_values(c, runs, token)) for c in columns}
            bad[token] = (within(10, insert_raw, app, tasks.record.name, (str(runs), token),
                                 **mutation), mutation)
        else:
            option = rng.choice(sorted(BAD_OPTIONS))
            value = rng.choice(BAD_OPTIONS[option])
            marker = f"api-{token}"
            try:
                within(10, tasks.record.apply_async, (str(api_runs), marker), **{option: value})
                problems.append(f"apply_async({option}={value!r}) was accepted")
            except (TypeError, ValueError):
                pass
            except Exception as exc:  # noqa: BLE001 - reported below
                problems.append(f"apply_async({option}={value!r}) raised {exc!r}")
            like = f'%"{marker}"%'
            if count_rows(app, "body LIKE ?", (like,)):
                problems.append(f"apply_async({option}={value!r}) stored a row")
                with raw_db(app) as db, db:  # it would wait forever on a queue nobody serves
                    db.execute("DELETE FROM task WHERE body LIKE ?", (like,))
    print(f"fuzz: {len(good)} good tasks, {len(bad)} malformed rows, {len(problems)} bad calls"
          " not refused")

    def unfinished():
        return app.broker.db.execute(
            "SELECT id, name, status, state, priority, eta, expires, retries, options FROM task"
            " WHERE status != 2").fetchall()
    wait_done(app, worker, lambda: f"{unfinished()[:10]}", stall=30, timeout=90)
    assert {t: r.state for t, r in good.items()} == {t: "SUCCESS" for t in good}
    assert {t: r.get(timeout=1) for t, r in good.items()} == {t: t for t in good}
    ran = tokens_run(runs)
    assert {t: ran[t] for t in good} == {t: 1 for t in good}
    assert max(ran.values(), default=1) == 1, [t for t, n in ran.items() if n > 1]
    for token, (result, mutation) in bad.items():
        status, state, stored = row_of(app, result, "status, state, result")
        assert status == 2 and state in ("SUCCESS", "FAILURE", "REVOKED"), (mutation, state)
        if state != "SUCCESS":
            assert "exc_type" in json.loads(stored), (mutation, stored)
    assert not problems, "\n".join(problems)
    assert_serving(worker)


# chaos: children killed at random under load -----------------------------------------------------

CHAOS_SEED, CHAOS_SECONDS = 31337, 30
NOT_DONE = "SELECT id, status, state, worker, attempts FROM task WHERE status != 2 LIMIT 10"


@pytest.mark.slow
def test_children_killed_at_random_under_load_leave_every_task_done(app, start_worker):
    rng = random.Random(CHAOS_SEED)
    worker = start_worker("-c", "4")
    results, kills = [], 0
    deadline = time.monotonic() + CHAOS_SECONDS
    while time.monotonic() < deadline:
        assert worker.proc.poll() is None, f"the manager died after {kills} kills:\n{tail(worker)}"
        children = worker.children()
        for _ in range(3):  # the manager claims them now: a kill may land before hand-off
            value = len(results)
            results.append((value, tasks.sleep.delay(round(rng.uniform(0.05, 0.3), 3), value)))
        if children:
            try:
                os.kill(rng.choice(children), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        time.sleep(rng.uniform(0.05, 0.3))
    print(f"\nchaos: {len(results)} tasks, {kills} children killed")
    wait_done(app, worker, lambda: f"states {states(app)}, rows not done "
                                   f"{app.broker.db.execute(NOT_DONE).fetchall()}",
              stall=30, timeout=90)
    outcomes = Counter()
    for value, result in results:
        if result.state == "SUCCESS":
            assert result.get(timeout=1) == value
            outcomes["SUCCESS"] += 1
        else:
            assert result.state == "FAILURE", result.state
            assert isinstance(result.info, exceptions.WorkerLostError), repr(result.info)
            outcomes["WorkerLostError"] += 1
    print(f"chaos outcomes: {dict(outcomes)}")
    assert_serving(worker)


def test_a_child_killed_by_a_real_time_signal_fails_its_task_alone(app, start_worker):
    worker = start_worker("-c", "1")
    result = tasks.sleep.delay(30)
    wait_for(lambda: result.state == "STARTED", message="the task started")
    (child,) = worker.children()
    os.kill(child, signal.SIGRTMIN + 2)  # a signal with no name in signal.Signals
    with pytest.raises(exceptions.WorkerLostError, match="signal"):
        result.get(timeout=20)
    assert tasks.add.delay(1, 1).get(timeout=20) == 2


def test_a_bare_retry_fails_with_a_clear_error_and_meta_alone_keeps_the_state(app, start_worker):
    start_worker("-c", "1")
    with pytest.raises(RuntimeError, match="self.retry"):
        tasks.bare_retry.delay().get(timeout=20)
    assert tasks.state_less_meta.delay().get(timeout=20) == "STARTED"


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_a_file_locked_longer_than_a_lease_stalls_no_manager_and_kills_no_live_worker(
        app, start_worker, tmp_path):
    """Another program holds the write lock for twice worker_lost_after (a long VACUUM,
    a shell left in a transaction): each manager still enforces hard limits meanwhile,
    and no worker, nor one that starts meanwhile, takes another for dead once the file
    is free (no task runs twice)."""
    env = conf_env(**FAST, worker_disable_prefetch=True)  # none held behind a gated task
    first, second = start_worker("-c", "3", env=env), start_worker("-c", "1", env=env)
    gate = tmp_path / "gate"
    running = start_gated(gate, 3)  # a child left for busy_loop
    looping = tasks.busy_loop.delay()  # time_limit=1
    lock = sqlite3.connect(app.broker.path, isolation_level=None)
    held_until = time.monotonic() + 2 * FAST["worker_lost_after"]
    try:
        wait_for(lambda: row_of(app, looping)[1] == "STARTED", 15, message="busy_loop runs")
        lock.execute("BEGIN EXCLUSIVE")
        late = start_worker("-c", "1", env=env, ready=False)  # registers once the file is free
        wait_for(lambda: "Hard time limit (1s) exceeded" in first.output() + second.output(),
                 max(0.1, held_until - time.monotonic() - 0.5),
                 message="the hard limit enforced while the file was locked")
        time.sleep(max(0.0, held_until - time.monotonic()))  # the fault: locked this long
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
    late.wait_ready()  # its first look for dead workers is done
    gate.touch()
    assert [r.get(timeout=30) for r in running] == [0, 1, 2]
    with pytest.raises(exceptions.TimeLimitExceeded):
        looping.get(timeout=30)
    assert [row_of(app, r)[3] for r in running] == [1, 1, 1]  # each delivered once
    for worker in (first, second, late):
        assert "recovered" not in worker.output() and "taken for dead" not in worker.output()
