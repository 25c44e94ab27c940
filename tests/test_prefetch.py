"""worker_prefetch_multiplier: a worker claims tasks ahead of its idle children, as
Celery's reserves messages. A reserved task is PENDING, listed by inspect().reserved(),
ends REVOKED at once when revoked, and goes back without a delivery at shutdown."""
import multiprocessing
import os
import signal
import sqlite3
import time

import pytest

from miniq import group
from miniq.exceptions import ImproperlyConfigured, TaskRevokedError, WorkerLostError
from miniq.broker import Message, Settle
from miniq.result import exception_to_json
from miniq.worker import Child, Worker
from tests import tasks
from tests.conftest import run_cli, wait_for


def _reserved(app):
    replies = app.control.inspect().reserved() or {}
    return [info["id"] for infos in replies.values() for info in infos]


def _row(app, result):
    return app.broker.task(result.id)


def _hold_one_child(start_worker, app, gate):
    """A worker of one child, prefetch multiplier 2, whose child runs a task until the
    gate opens; returns (worker, that task)."""
    worker = start_worker("-c", "1", "--prefetch-multiplier", "2")
    blocker = tasks.wait_file.delay(str(gate))
    wait_for(lambda: blocker.state == "STARTED", message="the blocking task to start")
    return worker, blocker


def test_reserved_tasks_wait_pending_and_a_revoke_ends_them_at_once(start_worker, app,
                                                                    tmp_path):
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    _, blocker = _hold_one_child(start_worker, app, gate)
    quick = [tasks.record.delay(str(runs), f"t{i}") for i in range(4)]
    held = wait_for(lambda: len(_reserved(app)) == 2 and _reserved(app), message="a reserve")
    assert held == [quick[0].id, quick[1].id]  # one child × 2, oldest first
    assert [r.state for r in quick] == ["PENDING"] * 4
    assert [_row(app, r)["status"] for r in quick] == [1, 1, 0, 0]  # the rest stay queued
    actives = app.control.inspect().active()
    assert [info["id"] for infos in actives.values() for info in infos] == [blocker.id]

    quick[0].revoke()
    assert quick[0].state == "REVOKED"  # at once, as a queued task's
    gate.touch()
    assert [r.get(timeout=20) for r in quick[1:]] == ["t1", "t2", "t3"]
    with pytest.raises(TaskRevokedError):
        quick[0].get(timeout=5)
    assert sorted(line.split()[0] for line in runs.read_text().splitlines()) == ["t1", "t2", "t3"]
    assert _row(app, quick[1])["started"] is not None  # written when it began


def test_terminate_stops_a_reserved_task_revoked_as_it_begins(start_worker, app, tmp_path,
                                                              monkeypatch):
    """The revoke can land after a reserved task began and before its start is written
    (the write waits for another writer): its row ends REVOKED at once, and the signal
    must still reach the child, as Celery terminates a task revoked as it is accepted."""
    gate, never = tmp_path / "gate", tmp_path / "never"
    _hold_one_child(start_worker, app, gate)
    late = tasks.wait_for_gate.delay(str(never), "late", 60)
    wait_for(lambda: _reserved(app) == [late.id], message="a reserve")
    real_tx = app.broker._tx

    def revoke_once_it_began(run, db=None):
        """The revoke's own transaction frees the child and holds the file until the task
        began: the worker's write of its start waits for the revoke, every time."""
        def then_revoke(tx):
            gate.touch()
            wait_for(lambda: os.path.exists(f"{never}.running.late"), message="the task to begin")
            return run(tx)
        return real_tx(then_revoke, db)

    with monkeypatch.context() as patched:
        patched.setattr(app.broker, "_tx", revoke_once_it_began)
        late.revoke(terminate=True)
    assert late.state == "REVOKED"
    assert tasks.echo.delay(1).get(timeout=20) == 1  # its one child is free again


def test_a_warm_shutdown_puts_reserved_tasks_back_with_no_delivery(start_worker, app,
                                                                    tmp_path):
    gate = tmp_path / "gate"
    worker, blocker = _hold_one_child(start_worker, app, gate)
    quick = [tasks.echo.delay(i) for i in range(2)]
    wait_for(lambda: len(_reserved(app)) == 2, message="a reserve")
    worker.signal(signal.SIGTERM)
    gate.touch()
    assert worker.wait(20) == 0
    assert blocker.get(timeout=5) is True
    rows = [_row(app, r) for r in quick]
    assert [(row["status"], row["attempts"], row["worker"]) for row in rows] == [(0, 0, None)] * 2
    start_worker("-c", "1")
    assert [r.get(timeout=20) for r in quick] == [0, 1]


@pytest.mark.slow
def test_a_killed_worker_s_reserved_tasks_go_back_with_no_delivery(start_worker, app,
                                                                   tmp_path):
    """Only the task that began counts one: else each kill of a whole worker (out of
    memory, a restarted container) would take reserved tasks that never ran toward
    task_max_deliveries, and fail them as lost after three."""
    gate = tmp_path / "gate"
    worker, blocker = _hold_one_child(start_worker, app, gate)
    quick = [tasks.record_attempt.delay(str(tmp_path / f"runs{i}"), 0) for i in range(2)]
    wait_for(lambda: len(_reserved(app)) == 2, message="a reserve")
    for _ in range(2):  # the blocker begins a third time; they are reserved again
        worker.kill_group()
        worker = start_worker("-c", "1", "--prefetch-multiplier", "2")
        wait_for(lambda: len(_reserved(app)) == 2, message="the reserve claimed again")
    worker.kill_group()
    start_worker("-c", "1")
    with pytest.raises(WorkerLostError, match="delivered 3 times"):  # task_max_deliveries
        blocker.get(timeout=20)
    assert [r.get(timeout=20) for r in quick] == [1, 1]  # each ran on its first delivery


@pytest.mark.parametrize("multiplier, late, disabled, running, idle, room", [
    (4, False, False, ["echo", "echo"], 0, 8),  # Celery's default: concurrency × 4
    (1, False, False, ["echo", "echo"], 0, 2),
    (1, True, False, ["echo", "echo"], 0, 0),  # acks_late: a running task is unacknowledged
    (1, False, False, ["die_once", "echo"], 0, 1),  # the task's own acks_late counts
    (1, True, False, ["acked_early", "acked_early"], 0, 2),  # so does its acks_late=False
    (1, True, False, ["echo"], 1, 0),  # what the idle child takes now runs unacknowledged
    (4, False, True, ["echo", "echo"], 0, 0),  # worker_disable_prefetch: only for idle children
])
def test_how_many_a_worker_claims_ahead(app, monkeypatch, multiplier, late, disabled,
                                         running, idle, room):
    """Celery's count: concurrency × multiplier messages unacknowledged, reserved ones
    and the running ones of acks_late tasks."""
    monkeypatch.setitem(app.conf, "worker_prefetch_multiplier", multiplier)
    monkeypatch.setitem(app.conf, "task_acks_late", late)
    monkeypatch.setitem(app.conf, "worker_disable_prefetch", disabled)
    worker = Worker(app, "tests.tasks", concurrency=2)
    pipes = [multiprocessing.Pipe(duplex=False) for _ in range(2)]  # what children would read
    worker.children = [Child(None, None, ours) for _, ours in pipes]
    for child, name in zip(worker.children, running):  # given out as the worker does
        worker._dispatch(child, Message(name, getattr(tasks, name).name, "[[], {}]", options={}))
    assert worker._room_ahead(idle) == room


@pytest.mark.parametrize("value", [0, -1, 1.5, "4", True])
def test_a_prefetch_multiplier_miniq_cannot_honour_is_refused(app, monkeypatch, value):
    monkeypatch.setitem(app.conf, "worker_prefetch_multiplier", value)
    with pytest.raises(ImproperlyConfigured, match="worker_prefetch_multiplier"):
        Worker(app, "tests.tasks", concurrency=2)


def test_the_command_line_refuses_a_prefetch_multiplier_of_none(broker_url):
    done = run_cli("-A", "tests.tasks", "worker", "--prefetch-multiplier", "0")
    assert done.returncode == 2
    assert "--prefetch-multiplier: must be a positive integer" in done.stderr


@pytest.mark.skipif(not hasattr(sqlite3.Connection, "setlimit"), reason="Python 3.11+")
def test_a_claim_of_more_rows_than_an_old_sqlite_takes_parameters_claims_them_all(app):
    """SQLite before 3.32 takes 999 parameters a statement: a big claim still fits."""
    app.broker.db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
    sent = group(tasks.add.s(n, n) for n in range(1200)).apply_async()
    claimed = app.broker.claim("w", ["celery"], 1200, 60.0, start=1000)
    assert len(claimed) == 1200 and {m.id for m in claimed} == {r.id for r in sent.results}


def test_a_retried_task_leaves_its_retry_behind_as_it_starts_not_while_held_ahead(app):
    """A retry's row keeps RETRY and its exception until the retry begins: at once for a
    task claimed to start now, when its start is written for one held ahead."""
    now = [tasks.add.delay(n, n) for n in range(2)]
    for result in now:
        app.broker.db.execute("UPDATE task SET state = 'RETRY', result = ?, traceback = 'tb'"
                              " WHERE id = ?", (exception_to_json(KeyError("k")), result.id))
    begun, held = app.broker.claim("w1 n@h", ["celery"], 2, 60.0, start=1)
    meta = {"pid": None, "hostname": "n@h"}  # Celery's STARTED meta: the retry's is gone
    assert (now[0].state, now[0].info, now[0].traceback) == ("STARTED", meta, None)
    assert (now[1].state, repr(now[1].info), now[1].traceback) == ("RETRY", "KeyError('k')", "tb")
    app.broker.settle("w1 n@h", [Settle(held.id, held.attempts, "STARTED", eta=time.time())])
    assert (now[1].state, now[1].info, now[1].traceback) == ("STARTED", meta, None)


def test_the_tasks_claimed_to_start_now_are_the_first_given_out(app):
    """The claim marks the first ``start`` rows STARTED and gives them out first; each part
    by priority, then oldest first. A malformed priority is claimed where SQLite's index
    puts text (above every number) and counts as 0 in its part: it fails as it is given out."""
    plain, urgent, malformed, later = (tasks.echo.apply_async((i,), priority=p)
                                       for i, p in enumerate((0, 5, 0, 0)))
    app.broker.db.execute("UPDATE task SET priority = '' WHERE id = ?", (malformed.id,))
    claimed = app.broker.claim("w", ["celery"], 3, 60.0, start=2)
    assert [m.id for m in claimed] == [urgent.id, malformed.id, plain.id]
    assert claimed[1].fault == "bad priority"
    started = [app.broker.task(m.id)["started"] is not None for m in claimed]
    assert started == [True, True, False]
    assert [app.broker.task(m.id)["state"] for m in claimed] == ["STARTED", "STARTED", "PENDING"]
    assert [m.id for m in app.broker.claim("w", ["celery"], 3, 60.0)] == [later.id]


def test_a_claim_takes_the_tasks_of_its_queues_revoked_while_queued_once(app):
    """Revoked while queued (or waiting for its eta): a worker of its queue takes it to
    announce with its next claim, once; another queue's worker does not."""
    mine = [tasks.add.delay(1, 1), tasks.add.apply_async((2, 2), countdown=600)]
    other = tasks.add.apply_async((3, 3), queue="other")
    for result in (*mine, other):
        result.revoke()
    runs = tasks.add.delay(4, 4)
    revoked = []
    assert [m.id for m in app.broker.claim("w", ["celery"], 5, 60.0, revoked=revoked)] == [
        runs.id]
    assert sorted(m.id for m in revoked) == sorted(r.id for r in mine)
    assert app.broker.claim("w", ["celery"], 5, 60.0, revoked=revoked) == [] and revoked == []
    assert app.broker.claim("w", ["other"], 5, 60.0, revoked=revoked) == []
    assert [m.id for m in revoked] == [other.id]
    assert [r.state for r in (*mine, other)] == ["REVOKED"] * 3


def test_a_warm_shutdown_begins_no_reserved_task_while_a_child_still_runs(start_worker, app,
                                                                          tmp_path):
    """One child frees while the other runs on: its outcome is written, and the reserve
    still goes back untouched."""
    worker = start_worker("-c", "2")
    first, second = tmp_path / "first", tmp_path / "second"
    running = [tasks.wait_for_gate.delay(str(gate), i) for i, gate in enumerate((first, second))]
    wait_for(lambda: all(os.path.exists(f"{gate}.running.{i}")
                         for i, gate in enumerate((first, second))), message="both running")
    queued = [tasks.echo.delay(i) for i in range(3)]
    wait_for(lambda: len(_reserved(app)) == 3, message="a reserve")
    worker.signal(signal.SIGTERM)
    first.touch()
    assert running[0].get(timeout=10) == 0  # written while the other child still runs
    second.touch()
    assert worker.wait(20) == 0
    assert running[1].get(timeout=5) == 1
    rows = [_row(app, r) for r in queued]
    assert [(row["status"], row["attempts"], row["state"]) for row in rows] == [(0, 0, "PENDING")] * 3
