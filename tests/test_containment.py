"""One task's fault stays with it, against a real worker: an outcome the database refuses,
a row it cannot read, options no worker can use, a task that forks or leaves a timer
behind, a stray signal or a forged worker row. Each fails that task alone (or nothing),
and the worker goes on serving."""
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from miniq import chain, chord, exceptions
from miniq.utils.serialization import UnpickleableExceptionWrapper
from miniq.wake import machine_id
from tests import tasks
from tests.conftest import ROOT, wait_for
from tests.test_faults import assert_serving, get_or_fail, insert_raw, raw_db, settle, tail


def failure_of(result, timeout=15):
    """The exception a task failed with (the test fails if it succeeded)."""
    with pytest.raises(Exception) as caught:
        get_or_fail(result, timeout)
    assert result.state == "FAILURE", result.state
    return caught.value


def test_an_outcome_the_database_refuses_fails_that_task_alone(app, start_worker):
    app.broker.db  # the schema, for the trigger
    with raw_db(app) as db, db:  # another program's rule: this one value is refused
        db.execute("CREATE TRIGGER no_such_result BEFORE UPDATE OF result ON task"
                   " WHEN NEW.result = '\"refused\"' BEGIN SELECT RAISE(ABORT, 'not this'); END")
    worker = start_worker("-c", "2")
    results = [tasks.echo.delay(value) for value in ("a", "refused", "b", "c")]
    error = failure_of(results[1])
    assert isinstance(error, exceptions.OperationalError) and "not this" in str(error)
    assert [r.get(timeout=15) for r in results[::2] + results[3:]] == ["a", "b", "c"]
    assert "its outcome cannot be stored" in tail(worker)
    assert_serving(worker)


def test_an_outcome_larger_than_can_be_stored_fails_that_task_not_its_child(app, start_worker):
    """Over SQLite's limit (here lowered to 64 KiB), its child sends a FAILURE instead, where
    the manager took the reply for garbage and killed the child."""
    worker = start_worker("-c", "1", env={"MINIQ_TEST_MAX_REPLY": str(1 << 16)})
    first = tasks.pid.delay().get(timeout=15)
    error = failure_of(tasks.text_of.delay(1 << 17))
    assert isinstance(error, ValueError) and "more than can be stored" in str(error), error
    assert tasks.pid.delay().get(timeout=15) == first  # the same child: none was killed
    assert_serving(worker)


def test_a_retry_at_no_finite_time_fails_at_the_call(app, start_worker):
    worker = start_worker("-c", "1")
    error = failure_of(tasks.retry_nan.delay())
    assert isinstance(error, ValueError) and "finite" in str(error)
    assert_serving(worker)


def test_a_failing_chain_whose_later_step_reuses_a_task_id_keeps_both_results(
        app, start_worker):
    worker = start_worker("-c", "1")
    earlier = tasks.add.delay(1, 1)
    assert earlier.get(timeout=15) == 2
    failed = chain(tasks.fail.si("first"), tasks.add.si(2, 2).set(task_id=earlier.id)).apply_async()
    error = failure_of(failed.parent)
    assert "first" in str(error)
    assert app.AsyncResult(earlier.id).get(timeout=5) == 2  # the id's row is its first task's
    assert_serving(worker)


def test_a_row_whose_text_is_not_utf8_fails_alone(app, start_worker):
    before = tasks.add.delay(1, 2)
    bad = insert_raw(app, tasks.add.name, (3, 4))
    with raw_db(app) as db, db:
        db.execute("UPDATE task SET body = CAST(X'5b5b315d2c7b7dff' AS TEXT) WHERE id = ?",
                   (bad.id,))
    after = tasks.add.delay(5, 6)
    worker = start_worker("-c", "1")
    settle(bad, worker)
    error = failure_of(bad)
    assert isinstance(error, exceptions.InvalidTaskError) and "UTF-8" in str(error)
    assert (before.get(timeout=15), after.get(timeout=15)) == (3, 11)
    assert_serving(worker)


def test_a_row_whose_id_is_not_utf8_fails_under_a_readable_id(app, start_worker):
    """Its outcome is written by id: the claim renames it (its bytes, U+FFFD for what
    is not UTF-8, then its place in the queue), else it would run for ever."""
    app.broker.db  # the schema
    bad = insert_raw(app, tasks.add.name, (3, 4))
    with raw_db(app) as db, db:
        (seq,) = db.execute("SELECT seq FROM task WHERE id = ?", (bad.id,)).fetchone()
        db.execute("UPDATE task SET id = CAST(X'6261642dff' AS TEXT) WHERE seq = ?", (seq,))
    after = [tasks.add.delay(i, i) for i in range(20)]
    worker = start_worker("-c", "1")
    assert [r.get(timeout=15) for r in after] == [2 * i for i in range(20)]
    renamed = app.AsyncResult(f"bad-\ufffd-{seq}")
    settle(renamed, worker)
    assert "UTF-8" in str(failure_of(renamed))
    assert_serving(worker)


def test_a_claim_reads_rows_not_utf8_in_either_part_once_each(app):
    """Among the rows begun now and those reserved: each comes back once, in order, the
    undecodable ones with their fault, and every one is claimed."""
    sent = [tasks.add.delay(n, n) for n in range(5)]
    with raw_db(app) as db, db:
        for bad in (sent[1], sent[3]):
            db.execute("UPDATE task SET body = CAST(X'5b5b315d2c7b7dff' AS TEXT) WHERE id = ?",
                       (bad.id,))
    claimed = app.broker.claim("w", ["celery"], 5, 60.0, start=2)
    assert [m.id for m in claimed] == [r.id for r in sent]
    assert [m.fault for m in claimed] == [None, "text that is not UTF-8", None,
                                          "text that is not UTF-8", None]
    states = app.broker.db.execute("SELECT state, status FROM task ORDER BY seq").fetchall()
    assert states == [("STARTED", 1)] * 2 + [("PENDING", 1)] * 3
    assert app.broker.claim("w", ["celery"], 5, 60.0) == []


def test_a_claim_that_meets_text_not_utf8_returns_only_its_own_rows(app, monkeypatch):
    """Rows this worker claimed before at the same clock reading are not given again."""
    monkeypatch.setattr(app.broker, "clock", lambda: 1000.0)
    sent = [tasks.add.delay(n, n) for n in range(4)]
    first = app.broker.claim("w", ["celery"], 2, 60.0, start=0)
    with raw_db(app) as db, db:
        db.execute("UPDATE task SET body = CAST(X'5b5b315d2c7b7dff' AS TEXT) WHERE id = ?",
                   (sent[3].id,))
    second = app.broker.claim("w", ["celery"], 2, 60.0, start=0)
    assert [m.id for m in first + second] == [r.id for r in sent]
    assert [m.fault for m in second] == [None, "text that is not UTF-8"]


def test_a_scheduled_row_whose_eta_is_not_a_number_fails_alone(app, start_worker):
    app.broker.db  # the schema
    bad = insert_raw(app, tasks.add.name, (1, 2), eta="tomorrow", status=-2)
    later = tasks.add.apply_async((3, 4), countdown=3600)  # a real one stays scheduled
    worker = start_worker("-c", "1")
    settle(bad, worker)
    error = failure_of(bad)
    assert isinstance(error, exceptions.InvalidTaskError) and "bad eta" in str(error)
    assert later.state == "PENDING"
    assert_serving(worker)


def test_a_running_row_whose_lease_is_not_a_number_is_recovered(app, start_worker):
    app.broker.db  # the schema
    lost = [insert_raw(app, tasks.add.name, (1, n), status=1, worker="gone", lease=lease)
            for n, lease in enumerate(("soon", None, b"\x00"))]
    worker = start_worker("-c", "1")
    assert [r.get(timeout=15) for r in lost] == [1, 2, 3]
    assert_serving(worker)


def test_options_nested_too_deep_to_read_fail_that_task_alone(app, start_worker):
    worker = start_worker("-c", "1")
    deep = insert_raw(app, tasks.add.name, (1, 2),
                      options='{"headers": {"h": ' + "[" * 5000 + "]" * 5000 + "}}")
    assert isinstance(failure_of(deep), exceptions.InvalidTaskError)
    assert_serving(worker)


def test_a_time_limit_too_big_for_a_float_fails_that_task_alone(app, start_worker):
    worker = start_worker("-c", "1")
    error = failure_of(tasks.add.apply_async((1, 2), time_limit=10 ** 400))
    assert isinstance(error, ValueError) and "time limit" in str(error)
    assert_serving(worker)


def test_a_callback_with_a_countdown_too_big_ends_the_workflow_not_the_worker(
        app, start_worker, tmp_path):
    """As Celery's, the task whose callback cannot be sent fails with that error, and its
    errback is sent."""
    worker = start_worker("-c", "1")
    log = str(tmp_path / "errback")
    first = tasks.add.apply_async((1, 1), link=tasks.add.s(1).set(countdown=10 ** 400),
                                  link_error=tasks.record.si(log, "errback"))
    assert isinstance(failure_of(first), OverflowError)
    wait_for(lambda: os.path.exists(log), 15, message="the errback ran")
    wait_for(lambda: "its workflow ends here" in tail(worker), 15,
             message="the workflow ending logged")
    assert_serving(worker)


def test_the_manager_never_runs_the_code_of_a_tasks_exception(app, start_worker):
    worker = start_worker("-c", "1")
    error = failure_of(tasks.raise_repr_bomb.delay())
    assert type(error).__name__ == "ReprBomb"
    wait_for(lambda: "raised unexpected: ReprBomb('bomb')" in tail(worker), 15, message="the log line")
    assert_serving(worker)


def test_the_manager_never_builds_the_error_of_a_replaced_chord_member(app, start_worker):
    worker = start_worker("-c", "2")
    member = tasks.replaced_by.s(tasks.raise_exit_on_init.s())
    result = chord([member, tasks.add.s(1, 1)], tasks.tsum.s()).apply_async()
    with pytest.raises(UnpickleableExceptionWrapper, match=r"ExitOnInit\('bomb'\)"):
        result.get(timeout=20)  # its class cannot be made again: Celery's wrapper
    assert_serving(worker)


@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "with-hooks"])
def test_a_process_a_task_forked_cannot_answer_for_the_next_task(app, start_worker, tmp_path,
                                                                 hooked):
    """Nor ask, for a task with hooks, that its outcome be written before they run."""
    worker = start_worker("-c", "1")
    sent = (tasks.fork_with_hooks.delay(str(tmp_path / "notes"), "x") if hooked
            else tasks.fork_and_return.delay())
    assert get_or_fail(sent, 15) == "parent"
    assert [get_or_fail(tasks.echo.delay(i), 15) for i in range(3)] == [0, 1, 2]
    assert_serving(worker)


@pytest.mark.parametrize("block", [False, True], ids=["timer-armed", "signal-blocked"])
def test_sigalrm_left_by_a_task_does_not_reach_the_next_one(app, start_worker, block):
    worker = start_worker("-c", "1")
    assert get_or_fail(tasks.leave_alarm.delay(block), 15) == "left"
    if block:  # the next task's soft limit still fires
        error = failure_of(tasks.soft_raise.delay(3))
        assert isinstance(error, exceptions.SoftTimeLimitExceeded)
    else:  # the timer left behind fires in no task
        assert get_or_fail(tasks.sleep.delay(0.6, "slept"), 15) == "slept"
    assert_serving(worker)


STRAY = [(getattr(signal, name), name) for name in (  # SIGHUP restarts a worker
    "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPROF", "SIGVTALRM", "SIGIO", "SIGXCPU",
    "SIGPWR", "SIGSTKFLT") if hasattr(signal, name)]
if hasattr(signal, "SIGRTMIN"):  # real-time signals: numbers without a name of their own
    STRAY += [(signal.SIGRTMIN, "SIGRTMIN"), (signal.SIGRTMIN + 5, f"signal {signal.SIGRTMIN + 5}")]


def test_a_stray_signal_to_the_manager_is_logged_and_ignored(app, start_worker):
    """Signals whose default would end the manager, as a task can send them to it."""
    worker = start_worker("-c", "1")
    for signum, name in STRAY:
        os.kill(worker.proc.pid, signum)
        wait_for(lambda: f"{name} ignored" in tail(worker), 15, message=f"{name} logged")
        assert_serving(worker)


def test_text_that_is_not_utf8_in_a_worker_row_or_a_revoked_mark_stops_nothing(
        app, start_worker, tmp_path):
    """Another program's bytes: a dead worker's row is still recovered, and a revoked
    mark that is not a number terminates its running task, as a claim reads it."""
    app.broker.db  # the schema
    with raw_db(app) as db, db:  # a dead worker (pid 2**30 is no process) with a bad host
        db.execute("INSERT INTO worker (id, host, pid, concurrency, queues, started,"
                   " heartbeat, machine) VALUES ('bad-host', CAST(X'68ff' AS TEXT), ?, 1,"
                   " 'celery', 0, 0, ?)", (2 ** 30, machine_id()))
    worker = start_worker("-c", "1", env={"MINIQ_TEST_CONF": '{"worker_heartbeat": 0.2}'})
    wait_for(lambda: not app.broker.db.execute(
        "SELECT 1 FROM worker WHERE id = 'bad-host'").fetchall(), 15, message="recovered")
    gate = str(tmp_path / "gate")
    running = tasks.wait_for_gate.delay(gate, 1)
    wait_for(lambda: os.path.exists(f"{gate}.running.1"), 15, message="the task running")
    with raw_db(app) as db, db:
        db.execute("UPDATE task SET revoked = CAST(X'ff' AS TEXT) WHERE id = ?", (running.id,))
    with pytest.raises(exceptions.TaskRevokedError, match="terminated"):
        running.get(timeout=15)
    assert_serving(worker)


@pytest.mark.parametrize("where", ["callback", "member"])
def test_a_chord_whose_rows_hold_text_that_is_not_utf8_fails_alone(
        app, start_worker, tmp_path, where):
    """Its callback fails with a ChordError; the transaction that settles the last member
    (and other tasks' outcomes) goes through."""
    gate = str(tmp_path / "gate")
    done = tasks.add.s(1, 1).freeze()
    result = chord([tasks.wait_for_gate.s(gate, 1), tasks.add.s(1, 1).set(task_id=done.id)],
                   tasks.tsum.s()).apply_async()
    bad_row, column = (result.id, "body") if where == "callback" else (done.id, "result")
    worker = start_worker("-c", "2")
    wait_for(lambda: os.path.exists(f"{gate}.running.1") and done.ready(), 15,
             message="one member done, one running")
    with raw_db(app) as db, db:
        db.execute(f"UPDATE task SET {column} = CAST(X'5b5bff5d2c7b7d5d' AS TEXT) WHERE id = ?",
                   (bad_row,))
    open(gate, "w").close()
    with pytest.raises(exceptions.ChordError, match="not UTF-8"):  # not via the bad row
        app.AsyncResult(result.id).get(timeout=15)
    assert_serving(worker)


def test_a_handler_the_app_sets_at_import_stays_its_own(app, start_worker, tmp_path):
    """The manager notes a stray signal only where nothing handles it: a handler the
    app module set stays, in the manager and in its forked children."""
    (tmp_path / "sigapp.py").write_text(
        "import signal\nfrom miniq import Miniq\napp = Miniq('sigapp')\n"
        "def noted(signum, frame):\n    pass\n\nsignal.signal(signal.SIGPROF, noted)\n"
        "@app.task\ndef handler():\n    return signal.getsignal(signal.SIGPROF).__name__\n")
    worker = start_worker("-c", "1", app_path="sigapp",
                          env={"PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"})
    assert app.send_task("sigapp.handler").get(timeout=15) == "noted"
    os.kill(worker.proc.pid, signal.SIGPROF)  # the app's handler takes it
    assert app.send_task("sigapp.handler").get(timeout=15) == "noted"
    assert worker.proc.poll() is None and "SIGPROF ignored" not in tail(worker)


SHUTDOWN = """
from tests import tasks
print(sorted(node for reply in tasks.app.control.shutdown(reply=True) for node in reply))
"""


@pytest.mark.parametrize("pid, heartbeat", [(0, None), ("abc", None), (2 ** 62, None),
                                            (1, "abc")])
def test_a_forged_worker_row_is_taken_for_dead_and_signals_nothing(
        app, start_worker, broker_url, pid, heartbeat):
    """pid 0 would name the caller's process group to os.kill (-1, every process: not
    tried here, as a regression would kill the test run).
    One forged row is there as the worker starts (it recovers at once), one after."""
    def forge(worker_id):
        now = time.time()
        with raw_db(app) as db, db:
            db.execute("INSERT INTO worker (id, host, pid, concurrency, queues, started,"
                       " heartbeat, machine) VALUES (?, 'h', ?, 1, 'celery', ?, ?, ?)",
                       (worker_id, pid, now, now if heartbeat is None else heartbeat,
                        machine_id()))
    app.broker.db  # the schema
    forge("forged-before")
    worker = start_worker("-c", "1")
    forge("forged-after")
    env = dict(os.environ, MINIQ_BROKER_URL=broker_url, PYTHONPATH=ROOT)
    shut = subprocess.run([sys.executable, "-c", SHUTDOWN], env=env, cwd=ROOT, text=True,
                          capture_output=True, timeout=60, start_new_session=True)
    assert shut.returncode == 0, shut.stderr
    assert shut.stdout.count("celery@") == 1  # the real worker's reply only
    worker.proc.wait(15)  # it was told to shut down, and did
    assert worker.proc.returncode == 0, tail(worker)


@pytest.mark.parametrize("link", [5, "tests.tasks.add", [5], [{"args": []}]],
                         ids=["int", "name", "list-of-int", "dict-without-task"])
@pytest.mark.parametrize("key", ["link", "link_error", "chain"])
def test_a_callback_that_is_no_signature_is_refused_at_the_call(app, key, link):
    with pytest.raises(TypeError, match=f"{key} takes signatures"):
        tasks.add.apply_async((1, 1), **{key: link})
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone() == (0,)


def test_links_nested_too_deep_for_json_are_refused_at_the_call(app):
    sig = tasks.add.s(1)
    for _ in range(100_000):  # past any Python's limit: 3.13's JSON goes deeper than 1,000
        sig = tasks.add.s(1).set(link=sig)
    with pytest.raises(ValueError, match="nest too deep for JSON"):
        tasks.add.apply_async((1, 1), link=sig)
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone() == (0,)


def test_a_uuid_task_id_is_read_as_its_text(app):
    """As a Django UUIDField's value comes: the task of that id, not a TypeError."""
    task_id = uuid.uuid4()
    sent = tasks.add.apply_async((1, 2), task_id=str(task_id))
    assert app.AsyncResult(task_id).id == sent.id and app.AsyncResult(task_id).state == "PENDING"


def test_a_returned_result_with_no_ids_to_store_fails_the_task_alone(app):
    """A ResultSet has no as_tuple(): not JSON either, so the task fails, naming it."""
    eager = tasks.returns_a_result_set.apply()
    assert eager.state == "FAILURE" and "not JSON serializable" in str(eager.result)


@pytest.mark.parametrize("call", [
    lambda app: app.send_task(object()),
    lambda app: tasks.add.apply_async((1, 1), chord=object()),
    lambda app: app.AsyncResult(object()).state,
    lambda app: app.AsyncResult(b"bytes").get(timeout=1)], ids=["name", "chord", "id", "bytes"])
def test_a_name_or_id_that_is_no_text_is_refused_at_the_call(app, call):
    """Not the OperationalError of a value the database cannot bind: that one says the
    file failed, and callers retry it."""
    with pytest.raises(TypeError, match="is text|chord cannot be"):
        call(app)
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone() == (0,)


BOOT_FAILS = '''
import os
from miniq import Miniq, signals
app = Miniq("boot_fails")
@signals.worker_process_init.connect
def _exit_at_once(**named):
    os._exit(3)
'''


def test_children_that_exit_as_they_start_stop_the_worker(start_worker, tmp_path):
    (tmp_path / "boot_fails.py").write_text(BOOT_FAILS)
    worker = start_worker("-c", "2", app_path="boot_fails", ready=False,
                          env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})
    assert worker.wait(30) == 1, tail(worker)
    assert "children keep dying before they run anything" in worker.output()


FORKS_RUN_OUT = '''
import os
from miniq import Miniq
app = Miniq("forks_run_out")
left = [int(os.environ["FORKS_LEFT"])]
real_fork = os.fork


def fork():  # as when the user's process limit or memory runs out
    left[0] -= 1
    if left[0] < 0:
        raise BlockingIOError(11, "Resource temporarily unavailable")
    return real_fork()


os.fork = fork
'''


def start_forks_run_out(start_worker, tmp_path, forks, *options):
    (tmp_path / "forks_run_out.py").write_text(FORKS_RUN_OUT)
    return start_worker(*options, app_path="forks_run_out", ready=False, env={
        "FORKS_LEFT": str(forks), "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"})


def test_a_worker_that_cannot_start_its_children_says_so_and_exits(start_worker, tmp_path):
    worker = start_forks_run_out(start_worker, tmp_path, 2, "-c", "4")
    assert worker.wait(30) == 2, tail(worker)  # not a hang on the children it did start
    assert "cannot start child process 3 of 4: [Errno 11]" in worker.output()
    assert "Traceback" not in worker.output() and worker.children() == []


def test_a_child_that_cannot_be_replaced_stops_the_worker_warm(start_worker, tmp_path):
    worker = start_forks_run_out(start_worker, tmp_path, 2, "-c", "2").wait_ready()
    os.kill(wait_for(worker.children, message="children")[0], signal.SIGKILL)
    assert worker.wait(30) == 0, tail(worker)
    assert re.search(r"cannot start child process [12] of 2: \[Errno 11\]", worker.output())
    assert "stopping when the running tasks end" in worker.output()


def test_idle_children_killed_from_outside_are_replaced_every_time(app, start_worker):
    worker = start_worker("-c", "1")
    for _ in range(5):  # more deaths than stop a worker whose children exit as they start
        [pid] = wait_for(worker.children, message="a child")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: worker.children() not in ([], [pid]), message="a new child")
    assert_serving(worker)
    assert worker.output().count("exited unexpectedly") == 5
