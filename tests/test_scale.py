"""Cost stays flat as work grows: a claim reads no task that is not due, the due ones
are promoted in bounded steps, an older file is upgraded, and expiry keeps up."""
import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from miniq import broker as broker_module
from miniq.broker import (APPLICATION_ID, QUEUED, SCHEDULED, SCHEMA, SCHEMA_VERSION, SWEEP,
                          Broker, Settle)
from tests import tasks
from tests.conftest import wait_for
from tests.test_inspect_cli import on_shared, shared  # noqa: F401 - one worker for the module
from tests.test_timing import clocked  # noqa: F401 - a broker on a clock the test moves


def row(task_id, eta=0.0, priority=0):
    """A message row as app.message_row() makes it, sent at unix time 1000."""
    return (task_id, "n", "celery", priority, "[[],{}]", None, eta, None, 1000.0, None, 0, 0)


def statuses(broker):
    return dict(broker.db.execute("SELECT id, status FROM task").fetchall())


def steps(broker, fn):
    """fn()'s value and how many SQLite instructions it ran: its work, not its time."""
    count = [0]

    def tick():
        count[0] += 1
        return 0
    broker.db.set_progress_handler(tick, 1)
    try:
        return fn(), count[0]
    finally:
        broker.db.set_progress_handler(None, 1)


# the broker alone, on an injected clock -----------------------------------------------------------

def test_a_claim_and_its_promotion_read_no_task_that_is_not_due(clocked):
    """Not-due tasks sent first sit ahead of the due ones in priority order; the work
    of a claim (with the promotion of three due scheduled tasks) does not grow with them."""
    broker, clock = clocked

    def claim_behind(ahead):
        clock[0] = 1000.0
        broker.enqueue([row(f"later-{i}", eta=9000.0, priority=9) for i in range(ahead)]
                       + [row(f"due-{ahead}-{i}", eta=1001.0) for i in range(3)])
        clock[0] = 1010.0
        claimed, work = steps(broker, lambda: broker.claim("w", ["celery"], 1, 60.0))
        assert [m.id for m in claimed] == [f"due-{ahead}-0"]  # the oldest of equals
        now = statuses(broker)
        assert [t for t, s in now.items() if "later" in t and s != SCHEDULED] == []
        assert [t for t, s in now.items() if s == QUEUED] == [f"due-{ahead}-1", f"due-{ahead}-2"]
        broker.purge()
        return work

    few, many = claim_behind(10), claim_behind(5000)
    assert many < 1.5 * few, (few, many)  # reading past 5,000 rows would be 10x the work


def test_due_tasks_are_promoted_a_bounded_number_a_claim_in_priority_then_fifo_order(
        clocked, monkeypatch):
    broker, clock = clocked
    broker.enqueue([row("now", priority=1), row("later", eta=9000.0)]
                   + [row(f"s{i}", eta=1001.0 + i % 3, priority=i % 2) for i in range(8)])
    assert [m.id for m in broker.claim("w", ["celery"], 5, 60.0)] == ["now"]
    assert broker.next_eta(["celery"]) == 1001.0
    monkeypatch.setattr(broker_module, "PROMOTE", 3)
    clock[0] = 1010.0
    first = broker.claim("w", ["celery"], 1, 60.0)  # promotes three, runs one of them
    assert list(statuses(broker).values()).count(QUEUED) == 2
    monkeypatch.undo()
    order = [m.id for m in first + broker.claim("w", ["celery"], 20, 60.0)]
    assert sorted(order) == [f"s{i}" for i in range(8)]
    assert statuses(broker)["later"] == SCHEDULED
    broker.enqueue([row(f"p{i}", eta=1011.0, priority=i % 2) for i in range(6)])
    clock[0] = 1012.0  # all due at once: by priority, then in the order sent
    order = [m.id for m in broker.claim("w", ["celery"], 20, 60.0)]
    assert order == ["p1", "p3", "p5", "p0", "p2", "p4"]


def test_a_retry_with_a_countdown_waits_scheduled_and_then_runs(clocked):
    broker, clock = clocked
    broker.enqueue([row("t")])
    (first,) = broker.claim("w", ["celery"], 1, 60.0)
    broker.settle("w", [Settle("t", first.attempts, "RETRY", eta=1005.0)])
    assert statuses(broker)["t"] == SCHEDULED and broker.next_eta(["celery"]) == 1005.0
    assert broker.claim("w", ["celery"], 1, 60.0) == []
    clock[0] = 1005.0
    assert [m.retries for m in broker.claim("w", ["celery"], 1, 60.0)] == [1]


def test_a_file_of_schema_4_moves_its_future_tasks_out_of_the_queue(tmp_path):
    path = tmp_path / "v4.db"
    old = sqlite3.connect(path)
    v4 = SCHEMA.replace("task_scheduled ON task(queue, eta) WHERE status = -2",
                        "task_due ON task(queue, eta) WHERE status = 0")
    v4 = v4.replace("CREATE INDEX IF NOT EXISTS task_unannounced ON task(queue) WHERE"
                    " revoked = -2;", "")  # schema 6's
    old.executescript(v4 + f"PRAGMA user_version = 4; PRAGMA application_id = {APPLICATION_ID};")
    now = time.time()
    old.executemany("INSERT INTO task (id, name, queue, body, eta, created) VALUES"
                    " (?, 'n', 'celery', '[[],{}]', ?, ?)",
                    [("due", 0.0, now), ("later", now + 600, now)])
    old.commit()
    old.close()
    upgraded = Broker(str(path))
    try:
        assert upgraded.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        indexes = {r[0] for r in upgraded.db.execute("SELECT name FROM sqlite_master")}
        assert {"task_scheduled", "task_unannounced"} <= indexes and "task_due" not in indexes
        assert statuses(upgraded) == {"due": QUEUED, "later": SCHEDULED}
        assert [m.id for m in upgraded.claim("w", ["celery"], 5, 60.0)] == ["due"]
        assert [r[0] for r in upgraded.scheduled()] == ["later"]
    finally:
        upgraded.close()


def test_a_backlog_of_expired_results_goes_in_a_bounded_number_of_sweeps(clocked):
    broker, clock = clocked
    backlog = 3 * SWEEP + 7
    broker.enqueue([row(f"t{i}") for i in range(backlog + 1)])
    claimed = broker.claim("w", ["celery"], backlog + 1, 60.0)
    broker.settle("w", [Settle(m.id, m.attempts, "SUCCESS", "1") for m in claimed[1:]])
    clock[0] = 1100.0
    broker.settle("w", [Settle(claimed[0].id, 1, "SUCCESS", "1")])  # finished after the cut
    more = [broker.sweep(1050.0)]
    assert len(statuses(broker)) == backlog + 1 - SWEEP  # at most SWEEP rows a transaction
    while more[-1]:
        more.append(broker.sweep(1050.0))
    assert more == [True, True, True, False] and list(statuses(broker)) == [claimed[0].id]


# a real worker, shared by the tests below (results kept a day, the default) ---------------------

def test_tasks_scheduled_for_later_delay_nothing_and_can_be_revoked_and_purged(on_shared):
    later = [tasks.add.apply_async((i, i), countdown=3600) for i in range(2000)]
    sent = time.time()
    soon = tasks.now.apply_async(countdown=0.5)
    at = tasks.now.apply_async(eta=datetime.now(timezone.utc) + timedelta(seconds=0.5))
    retried = tasks.retry_twice.delay(0.5)  # runs again 0.5 s later, then 0.05 s later
    assert tasks.add.delay(1, 2).get(timeout=10) == 3
    for result in (soon, at):
        assert sent + 0.5 <= result.get(timeout=10) < sent + 5  # woken for it, on time
    assert retried.get(timeout=10) == 2 and time.time() - sent >= 0.55
    listed = tasks.app.control.inspect().scheduled()
    assert sum(len(rows) for rows in listed.values()) == 2000
    later[0].revoke()
    assert later[0].state == "REVOKED" and later[1].state == "PENDING"
    assert tasks.app.broker.purge() == 1999
    assert tasks.app.control.inspect().scheduled() == {node: [] for node in listed}


def test_the_worker_deletes_a_backlog_of_expired_results_in_seconds(on_shared):
    kept = tasks.add.delay(2, 2)
    assert kept.get(timeout=10) == 4
    backlog = 6 * SWEEP  # finished long ago: a sweep of 1,000 a minute would take minutes
    with sqlite3.connect(tasks.app.broker.path) as db:
        db.executemany("INSERT INTO task (id, name, queue, body, status, state, created, finished)"
                       " VALUES (?, 'n', '', '[]', 2, 'SUCCESS', 1000, 1000)",
                       [(f"old-{i}",) for i in range(backlog)])
    old = "SELECT COUNT(*) FROM task WHERE id LIKE 'old-%'"
    wait_for(lambda: tasks.app.broker.db.execute(old).fetchone()[0] == 0, timeout=15,
             message="the backlog swept")
    assert kept.get(timeout=1) == 4  # finished within result_expires: kept


def test_a_waiting_chords_members_outlive_expiry_and_forget(app):
    """Expiry (and forget()) leave a member whose chord's callback waits: the callback
    takes its result. A member deleted anyway (by hand, a purge) fails the callback with
    ChordError, never a None in its place."""
    from miniq import chord
    broker = app.broker
    for lost in (False, True):
        sent = chord([tasks.add.s(1, 0), tasks.add.s(2, 0)], tasks.tsum.s()).apply_async()
        first, second = broker.claim("w", ["celery"], 2, 60.0)
        broker.settle("w", [Settle(first.id, 1, "SUCCESS", "1", chord=first.chord)])
        if lost:
            broker.db.execute("DELETE FROM task WHERE id = ?", (first.id,))
        broker.forget(first.id)
        assert not broker.sweep(time.time() + 3600)  # all but the waiting chord's member
        assert (first.id in statuses(broker)) is not lost
        broker.settle("w", [Settle(second.id, 1, "SUCCESS", "2", chord=second.chord)])
        (callback,) = broker.claim("w", ["celery"], 1, 60.0)
        assert callback.id == sent.id
        if lost:
            assert callback.options["chord_error"]["id"] == first.id
            assert callback.options["chord_error"]["error"]["exc_type"] == "ChordError"
        else:
            assert "chord_error" not in callback.options
            assert json.loads(callback.body)[0] == [[1, 2]]
        broker.settle("w", [Settle(callback.id, 1, "SUCCESS", "3")])
        assert not broker.sweep(time.time() + 3600) and not statuses(broker)


def test_a_chord_that_can_never_run_lets_its_members_expire_and_a_purged_one_fails(app):
    """A member that ends ignored (Ignore) never releases the callback, as Celery's: it
    stays PENDING, and no longer holds its members from expiry. A chord whose members
    are all purged fails its callback with ChordError, rather than wait for ever."""
    from miniq import chord
    broker = app.broker
    never = chord([tasks.add.s(1, 0), tasks.add.s(2, 0)], tasks.tsum.s()).apply_async()
    first, second = broker.claim("w", ["celery"], 2, 60.0)
    broker.settle("w", [Settle(first.id, 1, "SUCCESS", "1", chord=first.chord),
                        Settle(second.id, 1, "IGNORED", chord=second.chord)])
    assert (never.state, never.ready()) == ("PENDING", False)
    assert not broker.sweep(time.time() + 3600) and not statuses(broker)
    inner = chord([tasks.add.s(1, 0), tasks.add.s(2, 0)], tasks.tsum.s())  # in a header
    outer = chord([inner, tasks.add.s(3, 0)], tasks.tsum.s()).apply_async()
    first, second, third = broker.claim("w", ["celery"], 3, 60.0)
    broker.settle("w", [Settle(m.id, 1, "SUCCESS" if m.id != first.id else "IGNORED", "1",
                               chord=m.chord) for m in (third, second, first)])  # last
    assert (outer.state, outer.ready()) == ("PENDING", False)  # nor does the outer one run
    assert not broker.sweep(time.time() + 3600) and not statuses(broker)
    purged = chord([tasks.add.s(1, 0), tasks.add.s(2, 0)], tasks.tsum.s()).apply_async()
    assert broker.purge() == 2
    (callback,) = broker.claim("w", ["celery"], 1, 60.0)
    assert callback.id == purged.id and callback.options["chord_error"]["error"]["exc_type"] \
        == "ChordError"


def test_a_sweep_reads_as_few_rows_with_many_chord_members_waiting(app):
    """Members held for a waiting callback, oldest of all, are not read again at each
    pass: a pass costs what one over SWEEP plain results does."""
    from miniq import chord
    broker = app.broker

    def finished(count, prefix):
        broker.enqueue([row(f"{prefix}{i}") for i in range(count)])
        claimed = broker.claim("w", ["celery"], count, 60.0)
        broker.settle("w", [Settle(m.id, 1, "SUCCESS", "1") for m in claimed])

    finished(SWEEP, "a")
    more, plain = steps(broker, lambda: broker.sweep(time.time() + 3600))
    assert not statuses(broker)
    chord([tasks.add.s(i, 0) for i in range(4 * SWEEP)], tasks.tsum.s()).apply_async()
    members = broker.claim("w", ["celery"], 4 * SWEEP, 60.0)
    broker.settle("w", [Settle(m.id, 1, "SUCCESS", "1", chord=m.chord) for m in members[1:]])
    finished(SWEEP, "b")  # behind the held members in the index
    left = "SELECT COUNT(*) FROM task WHERE status = 2 AND chord IS NULL"
    for _ in range(10):
        more, work = steps(broker, lambda: broker.sweep(time.time() + 3600))
        assert work < 2 * plain  # the held ones, 4 × SWEEP, are not read again each pass
        if not more and not broker.db.execute(left).fetchone()[0]:
            break
    else:
        raise AssertionError("the results behind the held members were never deleted")
    assert len(statuses(broker)) == 4 * SWEEP + 1  # the members, and their callback
