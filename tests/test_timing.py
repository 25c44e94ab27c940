"""When things run: retries, countdown and eta, expiry, revocation, child recycling,
result expiry, and the broker's clock-driven rules tested without sleeping."""
import json
import select
import signal
import time
import types
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from miniq import exceptions
from miniq.exceptions import SoftTimeLimitExceeded
from miniq.broker import SCHEDULED, Broker, Settle
from tests import tasks
from tests.conftest import wait_for


def conf(**values):
    """Worker settings, read by tests/tasks.py from MINIQ_TEST_CONF when the worker imports it."""
    return {"MINIQ_TEST_CONF": json.dumps(values)}


def row_of(app, task_id, columns):
    return app.broker.db.execute(f"SELECT {columns} FROM task WHERE id = ?", (task_id,)).fetchone()


# retries -----------------------------------------------------------------------------------------

def test_retry_reports_retry_while_waiting_then_succeeds(app, start_worker):
    start_worker("-c", "1")
    result = tasks.retry_twice.delay(1.0)  # the first retry waits 1 s, the second 0.05 s
    wait_for(lambda: result.state == "RETRY", timeout=30, interval=0.01, message="RETRY")
    status, retries, eta = row_of(app, result.id, "status, retries, eta")
    assert (status, retries) == (SCHEDULED, 1) and eta > time.time() - 0.5  # runs later
    assert result.info is None  # as Celery's: a retry without exc stores no exception
    assert result.get(timeout=30) == 2
    assert result.state == "SUCCESS"


def test_retry_increments_request_retries_and_waits_its_countdown(app, start_worker, tmp_path):
    start_worker("-c", "1")
    path = tmp_path / "runs"
    assert tasks.retry_record.delay(str(path), 3, 0.1).get(timeout=30) == 3
    runs = [line.split() for line in path.read_text().splitlines()]
    assert [int(r) for r, _ in runs] == [0, 1, 2, 3]
    times = [float(t) for _, t in runs]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.1 - 0.005, gaps  # never before its countdown
    (retries,) = app.broker.db.execute("SELECT retries FROM task").fetchone()
    assert retries == 3


@pytest.mark.parametrize("with_exc, error", [(False, exceptions.MaxRetriesExceededError),
                                             (True, KeyError)], ids=["max-retries", "exc"])
def test_out_of_retries_raises(app, start_worker, with_exc, error):
    start_worker("-c", "1")
    result = tasks.retry_forever.delay(with_exc)  # max_retries=1, countdown 0.05
    with pytest.raises(error) as info:
        result.get(timeout=30)
    if with_exc:
        assert "original" in str(info.value)
    assert result.state == "FAILURE"
    assert row_of(app, result.id, "retries") == (1,)  # retried once, then gave up


def test_autoretry_for_retries_then_fails_with_the_error(app, start_worker, tmp_path):
    start_worker("-c", "1")
    path = tmp_path / "runs"
    result = tasks.autoretry.delay(str(path))  # max_retries=2, default_retry_delay=0.05
    with pytest.raises(ValueError, match="always"):
        result.get(timeout=30)
    assert path.read_text().count("run") == 3  # the first run and two retries
    assert row_of(app, result.id, "retries") == (2,)


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_autoretry_backoff_grows_exponentially(app, start_worker, tmp_path):
    start_worker("-c", "1")
    path = tmp_path / "runs"
    result = tasks.autoretry_backoff.delay(str(path))  # backoff 1 s, then 2 s, no jitter
    with pytest.raises(ValueError, match="still failing"):
        result.get(timeout=60)
    times = [float(t) for t in path.read_text().split()]
    gaps = [b - a for a, b in zip(times, times[1:])]
    print(f"\nautoretry backoff gaps: {', '.join(f'{g:.2f}s' for g in gaps)}")
    assert len(times) == 3
    assert gaps[0] >= 0.99 and gaps[1] >= 1.99, gaps


def test_a_backoff_factor_under_one_counts_as_one_as_in_celery(app, start_worker, tmp_path):
    start_worker("-c", "1")
    path = tmp_path / "runs"
    with pytest.raises(ValueError, match="still failing"):
        tasks.autoretry_backoff_half.delay(str(path)).get(timeout=30)
    first, second = (float(t) for t in path.read_text().split())
    assert second - first >= 0.99


@pytest.mark.parametrize("then_raise", [False, True], ids=["returns", "raises"])
def test_retry_without_throw_retries_the_run_once_it_ends(app, start_worker, tmp_path,
                                                          then_raise):
    start_worker("-c", "1")
    path = tmp_path / "runs"
    result = tasks.retry_unthrown.delay(str(path), then_raise)
    assert result.get(timeout=30) == "run 1"
    assert path.read_text().split() == ["0", "1"]
    assert row_of(app, result.id, "retries") == (1,)


def test_retry_to_another_queue_and_priority_runs_there_as_in_celery(app, start_worker):
    """Celery's retry(queue=, priority=) sends the retry there; its other options, and a
    priority no call could take, fail the task with a clear error."""
    start_worker("-c", "1", "-Q", "celery,elsewhere")
    assert tasks.retry_elsewhere.delay("elsewhere", 7).get(timeout=30) == ["elsewhere", 7]
    assert tasks.retry_elsewhere.delay(None, 3).get(timeout=30) == ["celery", 3]  # its own
    with pytest.raises(ValueError, match="priority must be from 0 to 255, not 300"):
        tasks.retry_elsewhere.delay(None, 300).get(timeout=30)
    with pytest.raises(TypeError, match="queue and priority, not expires"):
        tasks.retry_elsewhere.delay(None, expires=5).get(timeout=30)


# countdown and eta --------------------------------------------------------------------------------

def test_countdown_is_not_run_early(app, start_worker):
    start_worker("-c", "2")
    sent = time.time()
    result = tasks.now.apply_async(countdown=1)
    ran_at = result.get(timeout=30)
    created, started = row_of(app, result.id, "created, started")
    print(f"\ncountdown=1: ran {ran_at - sent:.3f}s after sending")
    assert ran_at >= sent + 1 and started >= created + 1
    assert ran_at < sent + 10  # and not forgotten either (loose: the machine is noisy)


@pytest.mark.parametrize("hours", [0, -5, 9], ids=["utc", "utc-5", "utc+9"])
def test_an_aware_eta_is_honoured_in_any_zone(app, start_worker, hours):
    start_worker("-c", "1")
    zone = timezone(timedelta(hours=hours))
    eta = datetime.now(zone) + timedelta(seconds=1)
    result = tasks.now.apply_async(eta=eta)
    ran_at = result.get(timeout=30)  # a zone ignored would run it hours early or late
    assert eta.timestamp() <= ran_at < eta.timestamp() + 10


def test_an_eta_or_expiry_given_as_iso_text_is_read_as_celerys(app):
    sent = tasks.add.apply_async((1, 1), eta="2030-01-02T03:04:05+01:00",
                                 expires="2030-01-03T00:00:00Z")
    naive = tasks.add.apply_async((1, 1), eta="2030-01-02T03:04:05")  # UTC, as a datetime's
    assert row_of(app, sent.id, "eta, expires") == (
        datetime(2030, 1, 2, 2, 4, 5, tzinfo=timezone.utc).timestamp(),
        datetime(2030, 1, 3, tzinfo=timezone.utc).timestamp())
    assert row_of(app, naive.id, "eta")[0] == datetime(2030, 1, 2, 3, 4, 5,
                                                       tzinfo=timezone.utc).timestamp()


def test_future_tasks_do_not_block_due_ones(app, start_worker):
    start_worker("-c", "1")
    later = tasks.add.apply_async((1, 1), countdown=5)
    sent = time.monotonic()
    assert tasks.add.delay(2, 2).get(timeout=4) == 4  # well before the future one is due
    print(f"\ndue task behind a countdown=5 task: {time.monotonic() - sent:.3f}s")
    assert later.state == "PENDING" and row_of(app, later.id, "status, started") == (SCHEDULED, None)


# expiry and revocation ----------------------------------------------------------------------------

def test_an_expired_task_never_runs_and_ends_revoked(app, start_worker, tmp_path):
    start_worker("-c", "1")
    gate, record = tmp_path / "gate", tmp_path / "runs"
    blocker = tasks.wait_for_gate.delay(str(gate), "blocker")
    wait_for(lambda: (tmp_path / "gate.running.blocker").exists(), timeout=30,
             message="the blocker running")
    expiring = tasks.record.apply_async((str(record), 1), expires=0.5)
    lasting = tasks.record.apply_async((str(record), 2), expires=120)
    deadline = time.time() + 0.6
    wait_for(lambda: time.time() > deadline, message="the expiry passed")  # polls the clock
    gate.touch()
    assert blocker.get(timeout=30) == "blocker"
    assert lasting.get(timeout=30) == 2
    with pytest.raises(exceptions.TaskRevokedError):
        expiring.get(timeout=30)
    assert expiring.state == "REVOKED"
    assert record.read_text().split()[0::2] == ["2"]  # the expired one never ran


def test_a_claim_knows_when_a_revoke_may_have_changed_what_it_holds(app):
    """What the manager asks before a reserved task begins: any commit by another
    connection since its last claim (a revoke) sends it back to the database."""
    worker, other = app.broker, Broker(app.broker.path)
    ids = [tasks.add.delay(i, i).id for i in range(2)]
    assert len(worker.claim("w1", ["celery"], 2, 60.0, (), 0)) == 2  # both reserved
    assert not worker.changed_since_claim()
    held = set()
    worker.claim("w1", ["celery"], 0, 60.0, (), 0, held)
    assert held == set(ids) and not worker.changed_since_claim()
    other.revoke(ids[:1], 0)
    assert worker.changed_since_claim() and worker.held("w1", ids) == {ids[1]}
    worker.claim("w1", ["celery"], 0, 60.0, (), 0, set())
    assert not worker.changed_since_claim()
    other.close()


def test_a_terminate_a_task_shrugs_off_can_be_followed_by_another(app, start_worker, tmp_path):
    """As Celery's: each revoke(terminate=True) with a new signal sends it; the first,
    handled, ends nothing (and is not sent again at each heartbeat)."""
    start_worker("-c", "1")
    ready = tmp_path / "ready"
    running = tasks.shrugs_off_usr1.delay(str(ready))
    wait_for(ready.exists, timeout=30, message="the task running")
    running.revoke(terminate=True, signal="SIGUSR1")
    wait_for((tmp_path / "ready.usr1").exists, timeout=30, message="SIGUSR1 handled")
    assert running.state == "STARTED"
    running.revoke(terminate=True, signal="SIGKILL")
    with pytest.raises(exceptions.TaskRevokedError):
        running.get(timeout=20)


def test_a_sigusr1_inside_miniqs_own_write_is_the_soft_limit_a_moment_later():
    """The child's handler, called as SIGUSR1 lands while the task writes its state: it
    arms SIGALRM for a moment later, whose handler raises then (no word: no hard limit)."""
    from miniq.worker import _soft_signal
    broker = types.SimpleNamespace(in_transaction=lambda: True)
    app, words = types.SimpleNamespace(broker=broker), select.poll()  # none waiting
    saved = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    previous = signal.getsignal(signal.SIGALRM)
    try:
        _soft_signal(app, ["a-task"], words, signal.SIGUSR1, None)  # deferred
        later = signal.getsignal(signal.SIGALRM)
        broker.in_transaction = lambda: False
        with pytest.raises(SoftTimeLimitExceeded):
            later(signal.SIGALRM, None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)  # drops the one pending
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
        signal.signal(signal.SIGALRM, previous)


def test_revoked_queued_tasks_never_run(app, start_worker, tmp_path):
    start_worker("-c", "1")
    gate, record = tmp_path / "gate", tmp_path / "runs"
    blocker = tasks.wait_for_gate.delay(str(gate), "blocker")
    wait_for(lambda: (tmp_path / "gate.running.blocker").exists(), timeout=30,
             message="the blocker running")
    by_result = tasks.record.delay(str(record), 1)
    by_control = tasks.record.delay(str(record), 2)
    kept = tasks.record.delay(str(record), 3)
    by_result.revoke()
    app.control.revoke(by_control.id)
    assert by_result.state == by_control.state == "REVOKED"  # at once: they were queued
    gate.touch()
    assert blocker.get(timeout=30) == "blocker" and kept.get(timeout=30) == 3
    for revoked in (by_result, by_control):
        with pytest.raises(exceptions.TaskRevokedError):
            revoked.get(timeout=5)
    assert record.read_text().split()[0::2] == ["3"]


def revoke_before_sent(app, tmp_path):
    """Revoke a chain's later step, a chord's callback and an id sent after its revoke:
    (the file each would write to, their three results), all REVOKED at once."""
    from miniq import chain, chord
    record = tmp_path / "runs"
    steps = chain(tasks.add.si(1, 1), tasks.record.si(str(record), "chain"))
    later = steps.apply_async()  # its last step is no row yet
    joined = chord([tasks.add.s(2, 2)], tasks.record.si(str(record), "chord")).apply_async()
    early = app.AsyncResult("sent-after-its-revoke")
    for result in (later, joined, early):
        result.revoke()
    assert tasks.record.apply_async((str(record), "early"), task_id=early.id).id == early.id
    assert {later.state, joined.state, early.state} == {"REVOKED"}
    return record, later, joined, early


def test_what_is_revoked_before_it_is_sent_never_runs_as_in_celery(app, start_worker, tmp_path):
    record, later, joined, early = revoke_before_sent(app, tmp_path)
    start_worker("-c", "1")
    assert later.parent.get(timeout=30) == 2 and tasks.add.delay(3, 3).get(timeout=30) == 6
    assert {later.state, joined.state, early.state} == {"REVOKED"}
    with pytest.raises(exceptions.TaskRevokedError):
        later.get(timeout=5)
    assert not record.exists()  # none of them ran


def test_a_reused_task_id_runs_again_once_finished_and_is_refused_while_queued(
        app, start_worker):
    first = tasks.add.delay(1, 1)
    with pytest.raises(ValueError, match="not finished"):  # not the broker's failure
        tasks.add.apply_async((2, 2), task_id=first.id)  # refused at the call: nothing sent
    start_worker("-c", "1")
    assert first.get(timeout=30) == 2
    again = tasks.add.apply_async((5, 5), task_id=first.id)
    assert app.AsyncResult(again.id).get(timeout=30) == 10  # as Celery: it runs again


@pytest.mark.parametrize("how", ["result-sigterm", "control-sigkill"])
def test_revoke_terminate_kills_the_running_task_and_replaces_its_child(app, start_worker, how):
    worker = start_worker("-c", "1")
    before = tasks.pid.delay().get(timeout=30)
    running = tasks.sleep.delay(30)
    wait_for(lambda: running.state == "STARTED", timeout=30, message="STARTED")
    asked = time.monotonic()
    if how == "result-sigterm":
        running.revoke(terminate=True)
    else:
        app.control.revoke(running.id, terminate=True, signal="SIGKILL")
    wait_for(lambda: app.AsyncResult(running.id).state == "REVOKED", timeout=20,
             message="REVOKED")
    took = time.monotonic() - asked
    print(f"\nrevoke(terminate=True) {how}: REVOKED after {took:.2f}s")
    assert took < 10
    with pytest.raises(exceptions.TaskRevokedError):
        running.get(timeout=5)
    after = tasks.pid.delay().get(timeout=30)
    assert after != before
    assert worker.children() == [after]  # the killed child is gone, one new in its place


# recycling children -------------------------------------------------------------------------------

def test_max_tasks_per_child_recycles_children(app, start_worker):
    start_worker("-c", "1", env=conf(worker_max_tasks_per_child=2))
    pids = [tasks.pid.delay().get(timeout=30) for _ in range(6)]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5], pids
    assert sorted(Counter(pids).values()) == [2, 2, 2]


def test_a_retired_child_exits_though_its_task_left_a_thread_running(app, start_worker):
    """As Celery's: a thread a task left running neither keeps a retired child alive nor
    holds up the warm shutdown."""
    worker = start_worker("-c", "1", env=conf(worker_max_tasks_per_child=1))
    first = tasks.leave_a_thread.delay().get(timeout=30)
    assert tasks.leave_a_thread.delay().get(timeout=30) != first
    wait_for(lambda: first not in worker.children(), message="the retired child gone")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0


def test_max_memory_per_child_recycles_after_the_task(app, start_worker):
    start_worker("-c", "1", env=conf(worker_max_memory_per_child=40000))  # KiB
    first = tasks.pid.delay().get(timeout=30)
    assert tasks.pid.delay().get(timeout=30) == first  # a lean child is kept
    assert tasks.hog.delay(60).get(timeout=60) == first  # the task itself finishes
    replaced = tasks.pid.delay().get(timeout=30)
    assert replaced != first
    assert tasks.pid.delay().get(timeout=30) == replaced


# result lifetime ----------------------------------------------------------------------------------

def test_result_expires_deletes_old_results_only(app, start_worker):
    start_worker("-c", "1", env=conf(result_expires=1, worker_heartbeat=0.05))
    old = tasks.add.delay(1, 1)
    assert old.get(timeout=30) == 2
    future = tasks.add.apply_async((2, 2), countdown=300)
    assert row_of(app, old.id, "state") == ("SUCCESS",)  # kept at first
    wait_for(lambda: row_of(app, old.id, "1") is None, timeout=30,
             message="the expired result swept")
    assert app.AsyncResult(old.id).state == "PENDING"
    assert row_of(app, future.id, "status") == (SCHEDULED,)  # tasks to run are not results


def test_forget_deletes_a_finished_result(app, start_worker):
    start_worker("-c", "1")
    result = tasks.add.delay(2, 2)
    assert result.get(timeout=30) == 4
    result.forget()
    assert result.state == "PENDING" and row_of(app, result.id, "1") is None
    assert app.AsyncResult(result.id).state == "PENDING"


# the broker alone, on an injected clock -----------------------------------------------------------

def message(task_id, eta=0.0, expires=None):
    return (task_id, "n", "celery", 0, "[[],{}]", None, eta, expires, 1000.0, None, 0, 0)


def outcome(task_id, attempts, value):
    return Settle(task_id, attempts, "SUCCESS", json.dumps(value))


@pytest.fixture
def clocked(tmp_path):
    clock = [1000.0]
    broker = Broker(str(tmp_path / "unit.db"), clock=lambda: clock[0])
    yield broker, clock
    broker.close()


def test_broker_eta_waits_for_the_clock(clocked):
    broker, clock = clocked
    broker.enqueue([message("later", eta=1010.0)])
    assert broker.claim("w1", ["celery"], 1, 5.0) == []
    assert broker.next_eta(["celery"]) == 1010.0
    clock[0] = 1009.999
    assert broker.claim("w1", ["celery"], 1, 5.0) == []
    clock[0] = 1010.0
    (claimed,) = broker.claim("w1", ["celery"], 1, 5.0)
    assert claimed[0] == "later" and claimed[4] == 1  # attempts


def test_broker_lapsed_lease_is_recovered_and_heartbeat_extends_it(clocked):
    broker, clock = clocked
    broker.enqueue([message("t1")])
    broker.claim("w1", ["celery"], 1, 5.0)  # lease until 1005
    clock[0] = 1004.0
    broker.heartbeat("w1", 5.0)  # lease until 1009
    clock[0] = 1008.0
    assert broker.recover([], 3, "{}") == 0  # still held
    clock[0] = 1010.0
    assert broker.recover([], 3, "{}") == 1  # the lease lapsed: back in the queue
    assert broker.state("t1")[:2] == (0, "PENDING")
    (again,) = broker.claim("w2", ["celery"], 1, 5.0)
    assert again[4] == 2  # a second delivery


def test_broker_settle_is_fenced_by_the_delivery(clocked):
    broker, clock = clocked
    broker.enqueue([message("t1")])
    broker.claim("w1", ["celery"], 1, 5.0)
    clock[0] = 1006.0
    broker.recover([], 3, "{}")
    broker.claim("w2", ["celery"], 1, 5.0)  # attempts 2, held by w2
    broker.settle("w1", [outcome("t1", 1, "stale")])  # the presumed-dead first delivery
    assert broker.state("t1")[:2] == (1, "STARTED")
    broker.settle("w2", [outcome("t1", 1, "wrong attempt")])
    assert broker.state("t1")[:2] == (1, "STARTED")
    broker.settle("w2", [outcome("t1", 2, "fresh")])
    assert broker.state("t1")[:3] == (2, "SUCCESS", '"fresh"')
    broker.settle("w1", [outcome("t1", 1, "late")])  # nor after the fact
    assert broker.state("t1")[:3] == (2, "SUCCESS", '"fresh"')


def test_broker_recover_fails_a_task_at_the_delivery_cap(clocked):
    broker, clock = clocked
    broker.enqueue([message("t1")])
    lost = '{"exc_type": "WorkerLostError", "exc_module": "miniq.exceptions", "exc_message": []}'
    for delivery in (1, 2, 3):
        (row,) = broker.claim(f"w{delivery}", ["celery"], 1, 5.0)
        assert row[4] == delivery
        clock[0] += 10  # each worker dies silently
        requeued = broker.recover([], 3, lost)
        assert requeued == (1 if delivery < 3 else 0)
    assert broker.state("t1")[:3] == (2, "FAILURE", lost)
    assert broker.claim("w4", ["celery"], 1, 5.0) == []
