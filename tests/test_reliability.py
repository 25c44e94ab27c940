"""Nothing lost, nothing looping: kill -9 recovery, the delivery cap, dead children,
many producers at once, bad rows and values, file mode, and a database that vanishes."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import pytest

from miniq import exceptions
from tests import tasks
from tests.conftest import ROOT, wait_for


def states(app):
    """{state: count} over every row of the test's database."""
    return dict(app.broker.db.execute("SELECT state, COUNT(*) FROM task GROUP BY state"))


def tokens_run(path):
    """How many times each token's task ran, from its one line per execution."""
    if not os.path.exists(path):
        return Counter()
    with open(path) as f:
        return Counter(int(line.split()[0]) for line in f if line.strip())


# crash recovery ------------------------------------------------------------------------------

KILL_TASKS, KILL_CONCURRENCY = 2000, 4


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
@pytest.mark.parametrize("whole_group", [True, False], ids=["group", "manager-only"])
def test_kill_9_mid_run_then_restart_loses_nothing(app, start_worker, tmp_path, whole_group):
    record = tmp_path / "runs.txt"
    rows = [app.message_row(tasks.record_slow.name, (str(record), i, 0.005))
            for i in range(KILL_TASKS)]
    app.broker.enqueue(rows)
    started = time.monotonic()
    worker = start_worker("-c", str(KILL_CONCURRENCY))
    wait_for(lambda: states(app).get("SUCCESS", 0) >= KILL_TASKS // 4, timeout=90,
             message="a quarter of the tasks done")
    if whole_group:  # the manager and its children at once
        os.killpg(worker.pid, signal.SIGKILL)
    else:  # the manager only: its orphaned children must notice and stop
        os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    running = {json.loads(body)[0][1] for (body,) in app.broker.db.execute(
        "SELECT body FROM task WHERE status = 1")}  # held: running, or reserved ahead
    begun = {json.loads(body)[0][1] for (body,) in app.broker.db.execute(
        "SELECT body FROM task WHERE status = 1 AND started IS NOT NULL")}
    done_at_kill = states(app).get("SUCCESS", 0)
    assert 1 <= len(running) <= KILL_CONCURRENCY * 5  # killed mid-run; at most c × (1 + 4)
    assert done_at_kill < KILL_TASKS

    start_worker("-c", "2")
    wait_for(lambda: states(app) == {"SUCCESS": KILL_TASKS}, timeout=120, interval=0.1,
             message=f"all {KILL_TASKS} tasks SUCCESS after the restart")
    elapsed = time.monotonic() - started
    if not whole_group:  # an orphan still finishing its task could append one more line
        wait_for(lambda: not group_alive(worker.pid), timeout=15,
                 message="the orphaned children gone")
    runs = tokens_run(record)
    twice = {token for token, n in runs.items() if n > 1}
    redelivered = {json.loads(body)[0][1] for (body,) in app.broker.db.execute(
        "SELECT body FROM task WHERE attempts > 1")}
    print(f"\nkill -9 ({'group' if whole_group else 'manager only'}), -c {KILL_CONCURRENCY}: "
          f"{KILL_TASKS} tasks, {done_at_kill} done at the kill, {len(running)} held, "
          f"{len(twice)} ran twice, {elapsed:.1f}s")
    assert set(runs) == set(range(KILL_TASKS))  # none lost
    assert redelivered == begun  # a delivery counted for exactly those known to have begun
    assert twice <= running and max(runs.values()) <= 2  # only those could run twice
    assert len(twice) <= KILL_CONCURRENCY * 3  # running, or done and not yet written (<= 8)


def group_alive(pgid):
    """Pids still running in a killed worker's process group (orphans; zombies left out)."""
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    if not os.path.isdir("/proc"):  # macOS: no way to tell zombies apart here
        return pids
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except FileNotFoundError:  # gone meanwhile
            pass
    return alive


def put_running(app, task, attempts, args=()):
    """A row as a worker that died mid-task leaves it: running, lease lapsed, worker gone."""
    row = app.message_row(task.name, args)
    app.broker.enqueue([row])
    app.broker.db.execute(
        "UPDATE task SET status = 1, state = 'STARTED', attempts = ?, worker = 'dead-worker',"
        " lease = ?, started = ? WHERE id = ?", (attempts, time.time() - 60, time.time() - 70,
                                                 row[0]))
    return app.AsyncResult(row[0])


def test_a_task_delivered_too_often_fails_instead_of_looping(app, start_worker, tmp_path):
    record = tmp_path / "runs.txt"
    assert app.conf.task_max_deliveries == 3
    exhausted = put_running(app, tasks.record, 3, (str(record), 3))
    recovered = put_running(app, tasks.record, 1, (str(record), 1))
    start_worker("-c", "1")
    assert recovered.get(timeout=30) == 1
    with pytest.raises(exceptions.WorkerLostError, match="delivered 3 times"):
        exhausted.get(timeout=30)
    assert exhausted.state == "FAILURE"
    assert tokens_run(record) == Counter({1: 1})  # the exhausted one never ran again
    attempts = dict(app.broker.db.execute("SELECT id, attempts FROM task"))
    assert attempts == {exhausted.id: 3, recovered.id: 2}


def test_a_task_revoked_as_it_ran_stays_revoked_when_its_worker_dies(app, start_worker,
                                                                      tmp_path):
    """As Celery's workers remember a revoked id: the run its dead worker left is not
    started again. An abort is only a request to the task: that one runs again."""
    record = tmp_path / "runs.txt"
    revoked = put_running(app, tasks.record, 1, (str(record), 1))
    aborted = put_running(app, tasks.record, 1, (str(record), 2))
    revoked.revoke()
    aborted.abort()
    start_worker("-c", "1")
    assert aborted.get(timeout=30) == 2
    with pytest.raises(exceptions.TaskRevokedError, match="revoked"):
        revoked.get(timeout=30)
    assert tokens_run(record) == Counter({2: 1})


def test_a_child_that_always_dies_stops_at_the_delivery_cap(app, start_worker):
    worker = start_worker("-c", "1")
    result = tasks.die_always.delay()  # acks_late + reject_on_worker_lost: requeued each time
    with pytest.raises(exceptions.WorkerLostError):
        result.get(timeout=60)
    (attempts,) = app.broker.db.execute("SELECT attempts FROM task WHERE id = ?",
                                        (result.id,)).fetchone()
    assert attempts == app.conf.task_max_deliveries
    assert worker.output().count("requeued") == app.conf.task_max_deliveries - 1
    assert tasks.add.delay(1, 2).get(timeout=30) == 3  # and the worker still serves


def test_acks_late_and_reject_on_worker_lost_requeue_a_lost_task(app, start_worker, tmp_path):
    worker = start_worker("-c", "1")
    marker = tmp_path / "died-once"
    result = tasks.die_once.delay(str(marker))
    assert result.get(timeout=30) == "second delivery"
    assert marker.exists()  # the first delivery did die
    (attempts,) = app.broker.db.execute("SELECT attempts FROM task WHERE id = ?",
                                        (result.id,)).fetchone()
    assert attempts == 2
    assert "requeued" in worker.output()


def test_without_acks_late_a_dead_child_fails_its_task(app, start_worker):
    worker = start_worker("-c", "1")
    result = tasks.exit_now.delay(3)
    with pytest.raises(exceptions.WorkerLostError, match="exitcode 3"):
        result.get(timeout=30)
    (attempts,) = app.broker.db.execute("SELECT attempts FROM task WHERE id = ?",
                                        (result.id,)).fetchone()
    assert attempts == 1  # not delivered again
    assert tasks.add.delay(2, 2).get(timeout=30) == 4
    assert worker.proc.poll() is None


# many producers at once -------------------------------------------------------------------------

PRODUCERS, PER_PRODUCER = 8, 2500
PRODUCER = """
import sys
from tests import tasks
k = int(sys.argv[1])
for i in range({n}):
    tasks.echo.delay(f"{{k}}-{{i}}")
""".format(n=PER_PRODUCER)


@pytest.mark.slow
def test_eight_producers_two_workers_each_task_once(app, start_worker, broker_url):
    workers = [start_worker("-c", "2"), start_worker("-c", "2")]
    env = dict(os.environ, MINIQ_BROKER_URL=broker_url, PYTHONPATH=ROOT)
    total = PRODUCERS * PER_PRODUCER
    started = time.monotonic()
    producers = [subprocess.Popen([sys.executable, "-c", PRODUCER, str(k)], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for k in range(PRODUCERS)]
    try:
        outputs = [p.communicate(timeout=240) for p in producers]
    finally:
        for p in producers:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    sent = time.monotonic() - started
    errors = "".join(err for _out, err in outputs)
    assert [p.returncode for p in producers] == [0] * PRODUCERS, errors
    wait_for(lambda: states(app).get("SUCCESS", 0) == total, timeout=240, interval=0.2,
             message=f"{total} results")
    elapsed = time.monotonic() - started
    per_worker = dict(app.broker.db.execute("SELECT worker, COUNT(*) FROM task GROUP BY worker"))
    print(f"\nload: {PRODUCERS} producers x {PER_PRODUCER}, 2 workers -c 2: {total} tasks in "
          f"{elapsed:.1f}s ({total / elapsed:.0f} tasks/s; all sent after {sent:.1f}s), "
          f"per worker {sorted(per_worker.values())}")
    assert states(app) == {"SUCCESS": total}
    values = Counter(json.loads(v) for (v,) in app.broker.db.execute("SELECT result FROM task"))
    assert values == Counter({f"{k}-{i}": 1 for k in range(PRODUCERS) for i in range(PER_PRODUCER)})
    assert app.broker.db.execute("SELECT COUNT(*) FROM task WHERE attempts != 1").fetchone()[0] == 0
    assert len(per_worker) == 2  # both workers drained the queue
    assert "locked" not in errors.lower()
    for worker in workers:
        assert "locked" not in worker.output().lower()


# bad rows and bad values ------------------------------------------------------------------------

@pytest.mark.parametrize("body", ["{not json", "[1, 2, 3]"], ids=["not-json", "not-args-kwargs"])
def test_corrupt_message_fails_alone_and_the_worker_keeps_serving(app, start_worker, body):
    before = tasks.add.delay(1, 1)
    row = list(app.message_row(tasks.add.name, (1, 1)))
    row[4] = body
    app.broker.enqueue([tuple(row)])
    after = tasks.add.delay(2, 2)
    worker = start_worker("-c", "1")
    corrupt = app.AsyncResult(row[0])
    with pytest.raises(exceptions.InvalidTaskError, match="corrupt"):
        corrupt.get(timeout=30)
    assert corrupt.state == "FAILURE"
    assert (before.get(timeout=30), after.get(timeout=30)) == (2, 4)
    assert tasks.add.delay(3, 3).get(timeout=30) == 6
    assert worker.proc.poll() is None


def test_corrupt_options_fail_that_task_alone(app, start_worker):
    row = list(app.message_row(tasks.add.name, (1, 1)))
    row[5] = "{not json"  # the per-call options column
    app.broker.enqueue([tuple(row)])
    worker = start_worker("-c", "1")
    corrupt = app.AsyncResult(row[0])
    wait_for(lambda: corrupt.ready() or worker.proc.poll() is not None, timeout=30,
             message="the corrupt task settled or the worker gone")
    assert worker.proc.poll() is None, worker.output()[-2000:]
    assert corrupt.state == "FAILURE"
    assert tasks.add.delay(2, 2).get(timeout=30) == 4


def test_unregistered_task_fails_with_not_registered_and_the_worker_keeps_serving(
        app, start_worker):
    worker = start_worker("-c", "1")
    unknown = app.send_task("tests.tasks.no_such_task", (1,))
    with pytest.raises(exceptions.NotRegistered, match="no_such_task"):
        unknown.get(timeout=30)
    assert unknown.state == "FAILURE"
    assert tasks.add.delay(1, 2).get(timeout=30) == 3
    assert worker.proc.poll() is None


def test_unserializable_result_fails_with_a_type_error(app, start_worker):
    start_worker("-c", "1")
    result = tasks.unserializable_result.delay()
    with pytest.raises(TypeError, match="set"):
        result.get(timeout=30)
    assert result.state == "FAILURE"
    with pytest.raises(TypeError, match="JSON"):  # refused at the call, nothing stored
        tasks.echo.delay({1, 2})
    assert states(app) == {"FAILURE": 1}
    assert tasks.add.delay(1, 1).get(timeout=30) == 2


def test_a_ten_megabyte_argument_round_trips(app, start_worker):
    start_worker("-c", "1")
    big = "x" * (10 * 1024 * 1024) + "end"
    assert tasks.echo.delay(big).get(timeout=90) == big


# the file itself ---------------------------------------------------------------------------------

def file_modes(path):
    return {suffix: os.stat(path + suffix).st_mode & 0o777
            for suffix in ("", "-wal", "-shm") if os.path.exists(path + suffix)}


@pytest.mark.parametrize("creator", ["producer", "worker"])
def test_database_file_is_owner_only(app, start_worker, creator):
    path = app.broker.path
    assert not os.path.exists(path)
    old = os.umask(0)  # a permissive umask: only an explicit mode keeps the file private
    try:
        if creator == "producer":
            tasks.add.delay(1, 1)
        else:
            start_worker("-c", "1")  # inherits the umask; creates the file at start
    finally:
        os.umask(old)
    modes = file_modes(path)
    assert "" in modes and set(modes.values()) == {0o600}, modes


def cpu_seconds(pid):
    """utime + stime of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def delete_database(path):
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_database_vanishing_is_logged_once_and_survived(app, start_worker):
    worker = start_worker("-c", "1")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    delete_database(app.broker.path)
    wait_for(lambda: "removed or replaced" in worker.output(), timeout=30,
             message="the worker's error line")
    app.broker.close()  # as a new producer would: connect again, (re)creating the file
    results = [tasks.add.delay(i, i) for i in range(5)]
    assert [r.get(timeout=30) for r in results] == [2 * i for i in range(5)]
    log = worker.output()
    assert log.count("removed or replaced") == 1, log
    assert "Traceback" not in log
    assert worker.proc.poll() is None
    if not os.path.exists(f"/proc/{worker.pid}/stat"):
        pytest.skip("CPU time needs /proc (Linux)")
    before = cpu_seconds(worker.pid)
    time.sleep(2)  # idle CPU can only be measured over wall time
    spent = cpu_seconds(worker.pid) - before
    print(f"\nidle worker after the file vanished: {spent:.2f}s CPU in 2s")
    assert spent < 0.5


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_an_unusable_database_is_logged_once_retried_without_spinning_and_survived(
        app, start_worker, tmp_path):
    """A folder where the file was: no one can open it, root included (chmod would not do)."""
    worker = start_worker("-c", "1")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    running = tasks.sleep.delay(1.0, "kept")  # its outcome waits for the file, unspun
    wait_for(lambda: running.state == "STARTED", message="the task to start")
    path, aside = app.broker.path, tmp_path / "aside"
    app.broker.close()
    aside.mkdir()
    files = [suffix for suffix in ("", "-wal", "-shm") if os.path.exists(path + suffix)]
    for suffix in files:
        os.rename(path + suffix, aside / f"db{suffix}")
    os.mkdir(path)
    wait_for(lambda: "database error" in worker.output(), timeout=30, message="the error line")
    if os.path.exists(f"/proc/{worker.pid}/stat"):
        before = cpu_seconds(worker.pid)
        time.sleep(3)  # a spinning retry shows only over wall time
        assert cpu_seconds(worker.pid) - before < 0.3
    os.rmdir(path)
    for suffix in files:
        os.rename(aside / f"db{suffix}", path + suffix)
    assert tasks.add.delay(2, 2).get(timeout=30) == 4
    assert running.get(timeout=30) == "kept"
    log = worker.output()
    assert log.count("database error") == 1 and "database usable again" in log, log
    assert "Traceback" not in log and worker.proc.poll() is None


def test_a_database_that_reads_but_refuses_writes_is_logged_once_until_writes_succeed(
        app, start_worker):
    """As a full disk does: the reads between two refused claims used to count as
    recovery, and the worker logged an error and "usable again" every 100 ms."""
    worker = start_worker("-c", "1")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    db = sqlite3.connect(app.broker.path, isolation_level=None)
    db.execute("CREATE TRIGGER refuse BEFORE UPDATE ON task BEGIN"
               " SELECT RAISE(ABORT, 'writes refused'); END")
    result = tasks.add.delay(2, 2)
    wait_for(lambda: "writes refused" in worker.output(), timeout=30, message="the error line")
    time.sleep(1)  # a retry loop shows only over wall time
    assert "usable again" not in worker.output()
    db.execute("DROP TRIGGER refuse")
    assert result.get(timeout=30) == 4
    log = worker.output()
    assert log.count("database error") == 1 and log.count("usable again") == 1, log
    assert "Traceback" not in log and worker.proc.poll() is None


def test_a_long_lived_producer_follows_a_recreated_database(app, start_worker):
    worker = start_worker("-c", "1")
    assert tasks.add.delay(1, 1).get(timeout=30) == 2
    delete_database(app.broker.path)
    wait_for(lambda: "removed or replaced" in worker.output() and os.path.exists(app.broker.path),
             timeout=30, message="the worker reopened the file")
    result = tasks.add.delay(2, 2)  # the same producer, no close(): as a web app would send
    assert result.get(timeout=5) == 4  # the worker serves tasks in milliseconds
