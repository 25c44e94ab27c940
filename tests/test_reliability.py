"""Nothing lost: crash recovery, delivery caps, retries, timing, revocation,
recycling, result expiry, load and bad input (issue 3)."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from miniq import exceptions
from miniq.broker import Broker
from tests import tasks
from tests.conftest import ROOT, wait_for


def conf(**values):
    return {"MINIQ_TEST_CONF": json.dumps(values)}


def states(app):
    return dict(app.broker.db.execute("SELECT state, COUNT(*) FROM task GROUP BY state"))


# crash recovery --------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("whole_group", [True, False], ids=["group", "manager-only"])
def test_kill_9_mid_run_then_restart_loses_nothing(app, start_worker, tmp_path, whole_group):
    record = tmp_path / "runs.txt"
    results = [tasks.record_slow.delay(str(record), i, 0.002) for i in range(2000)]
    started = time.monotonic()
    worker = start_worker("-c", "2")
    wait_for(lambda: states(app).get("SUCCESS", 0) >= 300, timeout=60, message="300 done")
    if whole_group:
        os.killpg(worker.pid, signal.SIGKILL)
    else:
        os.kill(worker.pid, signal.SIGKILL)
    worker.wait(10)
    start_worker("-c", "2")
    for result in results:
        assert result.get(timeout=120) == int(result.get(timeout=1))
    runs = Counter(record.read_text().split()[0::2])
    twice = sum(1 for n in runs.values() if n > 1)
    print(f"\nkill -9 ({'group' if whole_group else 'manager'}): 2000 tasks, "
          f"{twice} ran twice, {time.monotonic() - started:.1f}s")
    assert len(runs) == 2000 and states(app) == {"SUCCESS": 2000}
    assert twice <= 2 and max(runs.values()) <= 2  # only those running at the kill


def put_running(app, task, attempts, args=()):
    """A row as a worker that died mid-task would have left it."""
    row = app.message_row(task.name, args)
    app.broker.enqueue([row])
    app.broker.db.execute("UPDATE task SET status = 1, state = 'STARTED', attempts = ?,"
                          " worker = 'dead-worker', lease = 0 WHERE id = ?", (attempts, row[0]))
    return app.AsyncResult(row[0])


def test_a_task_delivered_too_often_fails_instead_of_looping(app, start_worker):
    exhausted = put_running(app, tasks.add, 3, (1, 1))
    recovered = put_running(app, tasks.add, 1, (2, 2))
    start_worker("-c", "1")
    assert recovered.get(timeout=20) == 4
    with pytest.raises(exceptions.WorkerLostError, match="delivered 3 times"):
        exhausted.get(timeout=20)


def test_acks_late_and_reject_on_worker_lost_requeue_a_lost_task(app, start_worker, tmp_path):
    start_worker("-c", "1")
    assert tasks.die_once.delay(str(tmp_path / "died")).get(timeout=30) == "second delivery"
    with pytest.raises(exceptions.WorkerLostError):  # without them: the task fails
        tasks.exit_now.delay().get(timeout=30)


# retries ------------------------------------------------------------------------------------------

def test_retry_reports_retry_then_succeeds(app, start_worker):
    start_worker("-c", "1")
    result = tasks.retry_twice.delay(1.0)
    wait_for(lambda: result.state == "RETRY", message="RETRY")
    assert isinstance(result.info, exceptions.Retry)
    assert result.get(timeout=20) == 2


@pytest.mark.parametrize("with_exc, error", [(False, exceptions.MaxRetriesExceededError),
                                             (True, KeyError)])
def test_out_of_retries(app, start_worker, with_exc, error):
    start_worker("-c", "1")
    with pytest.raises(error):
        tasks.retry_forever.delay(with_exc).get(timeout=20)


def test_autoretry_for_retries_then_fails_with_the_error(app, start_worker, tmp_path):
    start_worker("-c", "1")
    path = tmp_path / "runs"
    with pytest.raises(ValueError, match="always"):
        tasks.autoretry.delay(str(path)).get(timeout=20)
    assert path.read_text().count("run") == 3  # the first run and max_retries=2 retries


# timing -------------------------------------------------------------------------------------------

def test_countdown_and_eta_are_not_run_early(app, start_worker):
    start_worker("-c", "2")
    sent = time.time()
    by_countdown = tasks.now.apply_async(countdown=1)
    by_eta = tasks.now.apply_async(eta=datetime.now(timezone.utc) + timedelta(seconds=1))
    assert by_countdown.get(timeout=20) >= sent + 0.99
    assert by_eta.get(timeout=20) >= sent + 0.99


def test_future_tasks_do_not_block_due_ones(app, start_worker):
    start_worker("-c", "1")
    later = tasks.add.apply_async((1, 1), countdown=30)
    assert tasks.add.delay(2, 2).get(timeout=5) == 4
    assert later.state == "PENDING"


def test_an_expired_task_never_runs_and_ends_revoked(app, start_worker):
    start_worker("-c", "1")
    blocker = tasks.sleep.delay(1.5)
    expiring = tasks.add.apply_async((1, 1), expires=0.5)
    blocker.get(timeout=20)
    with pytest.raises(exceptions.TaskRevokedError):
        expiring.get(timeout=20)
    assert expiring.state == "REVOKED"


# revocation -----------------------------------------------------------------------------------------

def test_revoked_queued_task_never_runs(app, start_worker, tmp_path):
    record = tmp_path / "runs"
    result = tasks.record.delay(str(record), 1)
    result.revoke()
    other = tasks.record.delay(str(record), 2)
    app.control.revoke(other.id)
    start_worker("-c", "1")
    assert tasks.add.delay(1, 1).get(timeout=20) == 2
    assert result.state == other.state == "REVOKED" and not record.exists()


def test_revoke_terminate_kills_the_running_task_and_replaces_its_child(app, start_worker):
    start_worker("-c", "1")
    before = tasks.pid.delay().get(timeout=20)
    running = tasks.sleep.delay(60)
    wait_for(lambda: running.state == "STARTED", message="STARTED")
    running.revoke(terminate=True)
    with pytest.raises(exceptions.TaskRevokedError):
        running.get(timeout=20)
    assert tasks.pid.delay().get(timeout=20) != before


# recycling and expiry -----------------------------------------------------------------------------

def test_max_tasks_per_child_recycles_children(app, start_worker):
    start_worker("-c", "1", env=conf(worker_max_tasks_per_child=2))
    pids = Counter(tasks.pid.delay().get(timeout=20) for _ in range(6))
    assert sorted(pids.values()) == [2, 2, 2]


def test_max_memory_per_child_recycles_after_the_task(app, start_worker):
    start_worker("-c", "1", env=conf(worker_max_memory_per_child=40000))
    first = tasks.hog.delay(80).get(timeout=30)
    assert tasks.pid.delay().get(timeout=30) != first


def test_result_expires_and_forget(app, start_worker):
    start_worker("-c", "1", env=conf(result_expires=1, worker_heartbeat=0.05))
    result = tasks.add.delay(1, 1)
    assert result.get(timeout=20) == 2
    forgotten = tasks.add.delay(2, 2)
    forgotten.get(timeout=20)
    forgotten.forget()
    assert forgotten.state == "PENDING"
    wait_for(lambda: app.AsyncResult(result.id).state == "PENDING", timeout=20,
             message="the expired result swept")


# load and bad input ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_eight_producers_two_workers_twenty_thousand_tasks(app, start_worker, broker_url, tmp_path):
    workers = [start_worker("-c", "2"), start_worker("-c", "2")]
    code = "from tests import tasks\nfor i in range(2500):\n    tasks.add.delay(i, 0)\n"
    env = dict(os.environ, MINIQ_BROKER_URL=broker_url, PYTHONPATH=ROOT)
    started = time.monotonic()
    producers = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                                  stderr=subprocess.PIPE, text=True) for _ in range(8)]
    errors = [p.communicate(timeout=120)[1] for p in producers]
    assert [p.returncode for p in producers] == [0] * 8, errors
    wait_for(lambda: states(app).get("SUCCESS", 0) == 20000, timeout=180, interval=0.2,
             message="20,000 results")
    elapsed = time.monotonic() - started
    print(f"\nload: 8 producers x 2500, 2 workers -c 2: 20000 tasks in {elapsed:.1f}s "
          f"({20000 / elapsed:.0f}/s)")
    assert states(app) == {"SUCCESS": 20000}
    values = Counter(v for (v,) in app.broker.db.execute("SELECT result FROM task"))
    assert values == Counter({str(i): 8 for i in range(2500)})  # each task once
    assert not any("locked" in e for e in errors)
    assert not any("locked" in w.output() for w in workers)


def test_corrupt_message_fails_alone_and_the_worker_keeps_serving(app, start_worker):
    row = list(app.message_row(tasks.add.name, (1, 1)))
    row[4] = "{not json"
    app.broker.enqueue([tuple(row)])
    start_worker("-c", "1")
    with pytest.raises(ValueError, match="corrupt message"):
        app.AsyncResult(row[0]).get(timeout=20)
    assert tasks.add.delay(1, 2).get(timeout=20) == 3


def test_unserializable_result_fails_clearly_and_big_values_round_trip(app, start_worker):
    start_worker("-c", "1")
    with pytest.raises(TypeError, match="set"):
        tasks.unserializable_result.delay().get(timeout=20)
    big = "x" * (10 * 1024 * 1024)
    assert tasks.echo.delay(big).get(timeout=60) == big


def test_database_file_is_owner_only(app):
    tasks.add.delay(1, 1)
    assert os.stat(app.broker.path).st_mode & 0o777 == 0o600


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_database_vanishing_is_logged_and_survived(app, start_worker):
    worker = start_worker("-c", "1")
    assert tasks.add.delay(1, 1).get(timeout=20) == 2
    for suffix in ("", "-wal", "-shm"):
        os.unlink(app.broker.path + suffix)
    wait_for(lambda: "removed or replaced" in worker.output(), timeout=20, message="the error")
    app.broker.close()  # this producer reconnects, recreating the file
    assert tasks.add.delay(2, 2).get(timeout=20) == 4
    assert worker.output().count("removed or replaced") == 1
    if os.path.exists(f"/proc/{worker.pid}/stat"):
        before = cpu_seconds(worker.pid)
        time.sleep(2)  # measuring idle CPU needs wall time to pass
        assert cpu_seconds(worker.pid) - before < 0.5


# the broker alone, with an injected clock ---------------------------------------------------------------

def test_broker_eta_lease_and_fence_without_sleeping(tmp_path):
    clock = [1000.0]
    broker = Broker(str(tmp_path / "unit.db"), clock=lambda: clock[0])
    row = ("t1", "n", "celery", 0, "[[],{}]", None, 1010.0, None, 1000.0, None, 0)
    broker.enqueue([row])
    assert broker.claim("w1", ["celery"], 1, 5.0) == []
    clock[0] = 1010.0
    (claimed,) = broker.claim("w1", ["celery"], 1, 5.0)
    assert claimed[0] == "t1" and claimed[4] == 1
    clock[0] = 1016.0  # the lease lapsed
    assert broker.recover([], 3, "{}") == 1
    (again,) = broker.claim("w2", ["celery"], 1, 5.0)
    assert again[4] == 2
    stale = ("t1", 1, "SUCCESS", '"stale"', None, 0.0, None, None, (), ())
    broker.settle("w1", [stale])  # the first delivery is fenced out
    assert broker.state("t1")[:2] == (1, "STARTED")
    broker.settle("w2", [("t1", 2, "SUCCESS", '"fresh"', None, 0.0, None, None, (), ())])
    assert broker.state("t1")[:3] == (2, "SUCCESS", '"fresh"')
