"""Workflows against a real worker: signatures (s, si, set), chain, group and
chord, and the atomicity the README promises for each of them."""
import json
import sqlite3
import threading
import time

import pytest

from miniq import GroupResult, Signature, chain, chord, exceptions, group, signature
from miniq.broker import SCHEDULED
from tests import tasks
from tests.conftest import wait_for


def count_rows(app, where="1"):
    return app.broker.db.execute(f"SELECT COUNT(*) FROM task WHERE {where}").fetchone()[0]


def row(app, task_id, columns="status, state, queue"):
    return app.broker.db.execute(f"SELECT {columns} FROM task WHERE id = ?", (task_id,)).fetchone()


# -- signatures ----------------------------------------------------------------------

def test_s_is_a_value_that_sends_nothing_until_delay_or_apply_async(app, start_worker):
    sig = tasks.add.s(2, 3)
    assert isinstance(sig, Signature) and isinstance(sig, dict)
    assert sig.name == "tests.tasks.add" and sig["args"] == (2, 3)
    assert count_rows(app) == 0
    start_worker("-c", "2")
    assert sig.delay().get(timeout=30) == 5
    assert sig.apply_async().get(timeout=30) == 5
    assert signature("tests.tasks.add", (4, 5)).delay().get(timeout=30) == 9  # by name
    assert tasks.add.signature((1, 1)).apply_async().get(timeout=30) == 2
    assert count_rows(app) == 4  # the signature was not consumed: each call sent one task


def test_partial_signature_puts_new_arguments_first_as_celery(app, start_worker):
    start_worker("-c", "2")
    assert tasks.add.s("x").delay("y").get(timeout=30) == "yx"
    assert tasks.add.s("x").apply_async(("y",)).get(timeout=30) == "yx"
    assert tasks.add.s(x="a").delay(y="b").get(timeout=30) == "ab"


def test_set_queue_and_countdown_take_effect_when_the_signature_is_sent(app, start_worker):
    sig = tasks.add.s(2, 3).set(queue="canvas_q", countdown=1.0)
    assert sig["options"] == {"queue": "canvas_q", "countdown": 1.0}
    result = sig.delay()
    status, queue, eta, created = row(app, result.id, "status, queue, eta, created")
    assert (status, queue) == (SCHEDULED, "canvas_q")
    assert 0.9 <= eta - created <= 1.5
    start_worker("-c", "1", "-Q", "canvas_q")
    assert result.get(timeout=30) == 5
    started, created = row(app, result.id, "started, created")
    assert started - created >= 0.9  # the countdown was honoured


def test_set_on_a_later_chain_step_routes_that_step(app, start_worker):
    start_worker("-c", "2", "-Q", "celery,canvas_b")
    result = chain(tasks.add.s(1, 1), tasks.add.s(1).set(queue="canvas_b")).apply_async()
    assert result.get(timeout=30) == 3
    assert row(app, result.id)[2] == "canvas_b"
    assert row(app, result.parent.id)[2] == "celery"


def test_si_ignores_the_previous_result(app, start_worker):
    start_worker("-c", "2")
    assert tasks.add.si(10, 20)["immutable"] is True
    result = chain(tasks.add.s(1, 2), tasks.add.si(10, 20), tasks.add.s(5)).apply_async()
    assert result.get(timeout=30) == 35
    assert result.parent.get(timeout=30) == 30
    assert result.parent.parent.get(timeout=30) == 3  # the first step did run


def test_immutable_is_honoured_wherever_a_signature_is_made(app, start_worker):
    made = [signature("tests.tasks.add", (10, 20), immutable=True),
            tasks.add.signature((10, 20), immutable=True),
            tasks.add.s(10, 20).set(immutable=True, priority=1)]
    assert [s["immutable"] for s in made] == [True, True, True]
    assert made[2]["options"] == {"priority": 1}  # the flag, not a call option
    taking = tasks.add.si("b").set(immutable=False)  # as Celery: set() can lift it again
    start_worker("-c", "2")
    results = [chain(tasks.add.s(1, 2), sig).apply_async() for sig in made]
    assert [r.get(timeout=30) for r in results] == [30, 30, 30]  # Celery's: [30, 30, 30]
    assert chain(tasks.add.s("a", ""), taking).apply_async().get(timeout=30) == "ab"


def test_workflows_print_as_celery_prints_them(app):
    add, echo = tasks.add, tasks.echo
    assert repr(add.s(2, y=2)) == "tests.tasks.add(2, y=2)"
    assert repr(add.si(2, 2)) == "tests.tasks.add(2, 2)"  # immutability is not shown
    assert repr(add.s(4, 4) | add.s(8)) == "tests.tasks.add(4, 4) | add(8)"
    assert repr(chain()).startswith("<chain@0x") and repr(chain()).endswith(": empty>")
    assert repr(group(add.s(1, 1) | echo.s(), add.s(3))) == (
        "group((tests.tasks.add(1, 1) | echo(), tests.tasks.add(3)))")
    assert repr(group([add.s(1, 1), add.s(2, 2)])) == "group([tests.tasks.add(1, 1), add(2, 2)])"
    assert repr(group([])) == "group(<empty>)"
    assert repr(chord([add.s(1, 1), add.s(2, 2)], tasks.tsum.s(extra=1))) == (
        "%tests.tasks.tsum([add(1, 1), add(2, 2)], extra=1)")
    assert repr(chord(group(add.s(1, 1), add.s(2, 2)))) == (
        "<chord without body: (tests.tasks.add(1, 1), tests.tasks.add(2, 2))>")
    assert repr(signature("add", (1.5,)) | signature("mul", (2.5,))) == "add(1.5) | mul(2.5)"


# -- chain ---------------------------------------------------------------------------

def test_chain_passes_each_result_on_and_links_parents(app, start_worker):
    result = chain(tasks.add.s(1, 2), tasks.add.s(10), tasks.add.s(100)).apply_async()
    assert count_rows(app) == 1  # the later steps travel inside the first message
    start_worker("-c", "2")
    assert result.get(timeout=30) == 113
    assert result.parent.get(timeout=30) == 13
    assert result.parent.parent.get(timeout=30) == 3
    assert count_rows(app) == 3


def test_pipe_operator_builds_a_chain(app, start_worker):
    start_worker("-c", "2")
    assert (tasks.add.s(1, 1) | tasks.add.s(5)).delay().get(timeout=30) == 7
    piped = tasks.add.s("a", "b") | tasks.add.s("c") | tasks.add.s("d")
    assert isinstance(piped, chain) and len(piped.tasks) == 3
    assert piped.apply_async().get(timeout=30) == "abcd"


def test_signature_piped_into_a_chain_flattens(app, start_worker):
    start_worker("-c", "1")
    piped = tasks.add.s("a", "b") | (tasks.add.s("c") | tasks.add.s("d"))
    assert piped.apply_async().get(timeout=30) == "abcd"


def test_a_result_with_no_parent_has_parent_none(app):
    assert tasks.add.delay(1, 1).parent is None


def test_chain_next_step_is_stored_with_the_result_that_releases_it(app, start_worker):
    steps = [tasks.add.s(0, 1)] + [tasks.add.s(1) for _ in range(5)]
    last = chain(*steps).apply_async()
    results = [last]
    while hasattr(results[0], "parent") and results[0].parent is not None:
        results.insert(0, results[0].parent)
    assert len(results) == 6
    ids = [r.id for r in results]
    start_worker("-c", "2")
    reader = sqlite3.connect(app.broker.path, timeout=10)
    marks = ",".join("?" * len(ids))
    deadline = time.monotonic() + 30
    while True:  # each SELECT is one snapshot: never a finished step without its successor
        seen = dict(reader.execute(f"SELECT id, state FROM task WHERE id IN ({marks})", ids))
        for done, following in zip(ids, ids[1:]):
            if seen.get(done) == "SUCCESS":
                assert following in seen, "a step finished but its successor was not stored"
        if seen.get(ids[-1]) == "SUCCESS":
            break
        assert time.monotonic() < deadline, "the chain did not finish"
        time.sleep(0.002)
    reader.close()
    assert last.get(timeout=30) == 6


def test_a_failure_stops_the_chain_and_fails_the_rest_with_the_same_error(app, start_worker,
                                                                          tmp_path):
    marker = str(tmp_path / "ran")
    result = chain(tasks.add.s(1, 2), tasks.fail.s(), tasks.record.si(marker, "after"),
                   tasks.record.si(marker, "last")).apply_async()
    start_worker("-c", "2")
    with pytest.raises(ValueError, match="^3$"):  # fail() got 3, the first step's result
        result.get(timeout=30)
    assert result.state == "FAILURE" and "ValueError" in result.traceback
    with pytest.raises(ValueError, match="^3$"):
        result.parent.get(timeout=30)
    failing = result.parent.parent
    assert failing.state == "FAILURE" and isinstance(failing.info, ValueError)
    assert failing.parent.get(timeout=30) == 3
    assert not (tmp_path / "ran").exists()  # the steps after the failure never ran


# -- group ---------------------------------------------------------------------------

def test_group_returns_a_group_result_that_collects_every_member(app, start_worker):
    result = group(tasks.add.s(i, i) for i in range(6)).apply_async()
    assert isinstance(result, GroupResult) and len(result) == 6
    assert not result.ready() and result.completed_count() == 0
    start_worker("-c", "2")
    assert result.get(timeout=30) == [0, 2, 4, 6, 8, 10]
    assert result.ready() and result.successful() and not result.failed()
    assert result.completed_count() == 6


def test_group_with_a_failing_member_is_failed_and_get_raises(app, start_worker):
    start_worker("-c", "2")
    result = group([tasks.add.s(1, 1), tasks.fail.s("bad"), tasks.add.s(2, 2)]).apply_async()
    wait_for(result.ready, timeout=30, message="group ready")
    assert result.failed() and not result.successful()
    assert result.completed_count() == 2
    with pytest.raises(ValueError, match="bad"):
        result.get(timeout=10)
    values = result.get(timeout=10, propagate=False)
    assert values[0] == 2 and values[2] == 4 and isinstance(values[1], ValueError)


def test_a_chain_in_a_group_runs_as_a_chain_and_gives_its_last_result(app, start_worker):
    fixed = group(tasks.add.si(1, 1) | tasks.add.si(2, 2), tasks.add.si(3, 3))
    assert len(fixed.tasks) == 2
    passed = group([tasks.add.s(1, 1) | tasks.add.s(10) | tasks.add.s(100), tasks.add.s(3, 3)])
    result = passed.apply_async()
    first_step = json.loads(row(app, result.results[0].parent.parent.id, "options")[0])
    assert first_step.get("group") is None  # as Celery: only a chain's last step is in the group
    start_worker("-c", "2")
    assert fixed.apply_async().get(timeout=30) == [4, 6]  # Celery's: [4, 6]
    assert result.get(timeout=30) == [112, 6]
    assert result.results[0].parent.get(timeout=30) == 12
    assert json.loads(row(app, result.results[0].id, "options")[0])["group"] == result.id
    eager = group(tasks.add.si(1, 1) | tasks.add.si(2, 2), tasks.add.si(3, 3))
    app.conf.task_always_eager = True
    try:
        assert eager.apply_async().get(timeout=30) == [4, 6]
    finally:
        app.conf.task_always_eager = False


def with_options(sig):
    return sig.set(priority=1)  # takes group's per-member path instead of its batch path


@pytest.mark.parametrize("shape", [lambda s: s, with_options], ids=["plain", "with_options"])
def test_group_inserts_all_members_in_one_transaction(app, shape):
    n = 3000
    assert count_rows(app) == 0  # opens the database: the schema exists for the reader
    path = app.broker.path
    seen, reading, stop = set(), threading.Event(), threading.Event()

    def watch():  # another connection, committed snapshots only
        reader = sqlite3.connect(path, timeout=10)
        try:
            while not stop.is_set():
                seen.add(reader.execute("SELECT COUNT(*) FROM task").fetchone()[0])
                reading.set()
        finally:
            reader.close()
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        assert reading.wait(10)
        result = group(shape(tasks.add.s(i, 1)) for i in range(n)).apply_async()
        assert count_rows(app) == n  # all present at once, with no worker running
        wait_for(lambda: n in seen, timeout=10, message="the reader to see the group")
    finally:
        stop.set()
        thread.join(10)
    assert seen <= {0, n}, f"a reader saw a partial group: {sorted(seen)[:5]}"
    assert len(result) == n and result.completed_count() == 0


@pytest.mark.parametrize("shape", [lambda s: s, with_options], ids=["plain", "with_options"])
def test_group_with_an_unserializable_member_raises_and_inserts_none(app, shape):
    members = [tasks.echo.s(1), tasks.echo.s(2), tasks.echo.s({3}), tasks.echo.s(4)]
    with pytest.raises(TypeError, match="JSON serializable"):
        group(shape(s) for s in members).apply_async()
    assert count_rows(app) == 0


# -- chord ---------------------------------------------------------------------------

def test_chord_callback_gets_the_results_in_header_order(app, start_worker):
    start_worker("-c", "3")
    # finishing order is 2, 3, 1; the callback still sees the header's order
    header = [tasks.sleep.s(0.8, 1), tasks.sleep.s(0.05, 2), tasks.sleep.s(0.4, 3)]
    assert chord(group(header), tasks.echo.s()).apply_async().get(timeout=30) == [1, 2, 3]
    assert chord(header)(tasks.tsum.s(extra=10)).get(timeout=30) == 16


def test_a_chain_in_a_chord_header_gives_its_last_result_in_header_order(app, start_worker):
    # The chain's last step is stored after the other member, and its first step is done
    # long before it: the callback waits for the whole chain and gets the chain's value.
    slow_chain = tasks.echo.s(0.5) | tasks.sleep.s("late")
    result = chord([slow_chain, tasks.add.s(1, 1)], tasks.echo.s()).apply_async()
    failing = chord([tasks.add.s(1, 1) | tasks.fail.s(), tasks.add.s(2, 2)], tasks.echo.s())
    failed = failing.apply_async()
    start_worker("-c", "2")
    assert result.get(timeout=30) == ["late", 2]  # Celery's: ["late", 2]
    with pytest.raises(ValueError):  # as Celery: the failed member's own error first
        failed.get(timeout=30)
    assert isinstance(app.AsyncResult(failed.id).result, exceptions.ChordError)


def test_an_empty_chord_runs_its_body_with_no_results(app, start_worker):
    start_worker("-c", "1")
    assert chord([], tasks.echo.s()).apply_async().get(timeout=30) == []  # Celery's: []
    assert chord([])(tasks.tsum.s(extra=5)).get(timeout=30) == 5


def test_get_of_a_chord_whose_members_are_groups_waits_for_their_results(app, start_worker):
    """get() looks at a chord's header while it waits: a member that is a group (a
    chain ending in one, chunks) is looked into, not read as a task."""
    start_worker("-c", "2")
    header = [chain(tasks.add.s(1, 1), group(tasks.add.s(1), tasks.add.s(2))),
              tasks.add.chunks([(1, 1), (2, 2)], 1), tasks.sleep.s(1, 5)]
    assert chord(header, tasks.echo.s()).apply_async().get(timeout=30) == [[3, 4], [[2], [4]], 5]


def test_a_failing_member_fails_the_chord_callback_with_chord_error(app, start_worker, tmp_path):
    start_worker("-c", "2")
    header = [tasks.add.s(1, 1), tasks.fail.s("nope"), tasks.add.s(2, 2)]
    marker = tmp_path / "callback-ran"
    result = chord(header, tasks.record.si(str(marker), "cb")).apply_async()
    with pytest.raises(ValueError, match="nope"):  # as Celery: the member's own error first,
        result.get(timeout=30)  # as soon as it shows, the callback failing meanwhile
    wait_for(lambda: result.state == "FAILURE", timeout=30, message="the callback failed")
    with pytest.raises(exceptions.ChordError, match="ValueError"):  # the callback's own
        app.AsyncResult(result.id).get(timeout=30)
    assert not marker.exists()  # failed without ever running


def test_revoking_a_queued_member_fails_the_chord_callback(app, start_worker):
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s()).apply_async()
    first, second = [r[0] for r in app.broker.db.execute(
        "SELECT id FROM task WHERE chord = ? ORDER BY seq", (result.id,))]
    app.AsyncResult(first).revoke()
    assert row(app, result.id)[:2] == (3, "PENDING")  # the other member may still succeed
    app.control.revoke(second)
    assert row(app, result.id)[:2] == (SCHEDULED, "PENDING")  # for a worker to fail it
    start_worker("-c", "1")
    with pytest.raises(exceptions.ChordError, match="TaskRevokedError"):
        app.AsyncResult(result.id).get(timeout=30)


def test_a_chords_call_options_reach_its_callback_as_in_celery(app):
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s()).apply_async(
        queue="elsewhere", priority=7)
    rows = app.broker.db.execute("SELECT queue, priority FROM task").fetchall()
    assert rows == [("elsewhere", 7)] * 3
    assert row(app, result.id)[:2] == (3, "PENDING")  # the callback, waiting


def test_an_immutable_chord_callback_gets_no_results(app, start_worker, tmp_path):
    start_worker("-c", "2")
    marker = str(tmp_path / "callback-ran")
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.record.si(marker, "cb")).apply_async()
    assert result.get(timeout=30) == "cb"


def test_chord_callback_waits_in_its_row_until_the_last_member_settles(app, start_worker):
    result = chord([tasks.sleep.s(1.5, "slow"), tasks.add.s(1, 1)], tasks.echo.s()).apply_async()
    assert row(app, result.id)[:2] == (3, "PENDING")  # status 3: waiting for its members
    members = [r[0] for r in app.broker.db.execute(
        "SELECT id FROM task WHERE chord = ? ORDER BY seq", (result.id,))]
    assert len(members) == 2 and count_rows(app) == 3
    start_worker("-c", "2")
    reader = sqlite3.connect(app.broker.path, timeout=10)
    waited_while_running = False
    deadline = time.monotonic() + 30
    while not result.ready():  # one SELECT, one snapshot: members' and callback's states
        states = dict(reader.execute("SELECT id, status FROM task WHERE id IN (?, ?, ?)",
                                     (result.id, *members)))
        callback, slow, fast = states[result.id], states[members[0]], states[members[1]]
        if slow == 2 and fast == 2:
            assert callback != 3, "every member settled but the callback still waits"
        else:
            assert callback == 3, "the callback left its waiting state too early"
            waited_while_running = waited_while_running or (fast == 2 and slow == 1)
        assert time.monotonic() < deadline, "the chord did not finish"
        time.sleep(0.005)
    reader.close()
    assert waited_while_running  # observed: one member done, the other running, callback waiting
    assert result.get(timeout=10) == ["slow", 2]
    assert count_rows(app) == 3  # no unlock or polling task was ever sent


def test_a_failure_before_a_chord_in_a_chain_fails_every_later_step(app, start_worker):
    start_worker("-c", "2")
    result = chain(tasks.fail.s("early"), chord([tasks.add.s(1), tasks.add.s(2)], tasks.tsum.s()),
                   tasks.add.s(1))()
    with pytest.raises(ValueError, match="early"):
        result.get(timeout=30)
    fresh = app.AsyncResult(result.id)  # no parents in hand: its own stored error, the same
    with pytest.raises(ValueError, match="early"):
        fresh.get(timeout=30)


def test_a_replaced_task_keeps_its_place_in_a_group_and_a_chord(app, start_worker):
    start_worker("-c", "2")
    replaced = tasks.replaced_by.s(tasks.add.s(1, 1))
    assert group(replaced, tasks.add.s(3, 3))().get(timeout=30) == [2, 6]
    assert chord([replaced.clone(), tasks.add.s(3, 3)], tasks.tsum.s())().get(timeout=30) == 8
    with pytest.raises(ValueError, match="inner"):  # its replacement's own error
        tasks.replaced_by.delay(tasks.fail.s("inner")).get(timeout=30)


def test_a_chain_step_whose_state_was_set_before_it_was_sent_still_runs(app, start_worker):
    result = chain(tasks.add.si(1, 1), tasks.add.si(2, 2)).apply_async()
    tasks.add.update_state(task_id=result.id, state="PROGRESS", meta={"at": 1})
    assert (result.state, result.info) == ("PROGRESS", {"at": 1})  # as Celery stores it
    start_worker("-c", "1")
    assert result.get(timeout=20) == 4  # sent, the step takes the place of that state


@pytest.mark.parametrize("column, value", [
    ("options", '{"header": {"not": "a shape"}}'),  # the release reads it in the settle
    ("options", '{"chord_error": 5}'),              # the claim reads it
    ("body", "not json"),
])
def test_a_corrupt_chord_callback_fails_alone_and_the_worker_keeps_serving(
        app, start_worker, column, value):
    result = chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s()).apply_async()
    with sqlite3.connect(app.broker.path) as db:  # as another program writing the file would
        db.execute(f"UPDATE task SET {column} = ? WHERE id = ?", (value, result.id))
    worker = start_worker("-c", "2")
    wait_for(lambda: app.AsyncResult(result.id).ready(), timeout=30, message="the callback done")
    assert app.AsyncResult(result.id).state == "FAILURE"
    assert tasks.add.delay(2, 3).get(timeout=30) == 5 and worker.proc.poll() is None


def test_chunks_keep_their_ids_wherever_they_travel(app, start_worker):
    start_worker("-c", "2")  # as a chain's step and inside a group there, they go as JSON
    steps = chain(tasks.echo.si(0), tasks.add.chunks([(1, 1), (2, 2), (3, 3)], 2))
    assert steps().get(timeout=30) == [[2, 4], [6]]
    nested = chain(tasks.echo.si(0), group(tasks.add.chunks([(1, 1)], 1), tasks.echo.si(5)))
    assert nested().get(timeout=30) == [[[2]], 5]


def test_calling_a_signature_runs_it_here_an_immutable_one_with_its_own_arguments_only():
    assert tasks.add.s(1)(2) == 3
    assert tasks.add.si(1, 2)(3) == 3  # as Celery's: the 3 is not passed on
    assert tasks.tsum.s(extra=1)([1, 2]) == 4


def test_a_chain_through_a_group_keeps_the_group_as_the_next_steps_parent(app, start_worker):
    start_worker("-c", "2")
    result = (tasks.add.s(1, 1) | group(tasks.add.s(1), tasks.add.s(2)) | tasks.tsum.s()).delay()
    assert result.get(timeout=30) == 7
    assert isinstance(result.parent, GroupResult)  # as Celery's
    assert result.parent.get(timeout=30) == [3, 4] and result.parent.parent.get(timeout=30) == 2


@pytest.mark.parametrize("what", ["chain", "callbacks"])
def test_a_task_that_clears_its_requests_chain_or_callbacks_ends_the_workflow(
        app, start_worker, tmp_path, what):
    start_worker("-c", "1")
    log = str(tmp_path / "after")
    if what == "chain":
        result = (tasks.stop_here.s(1, what) | tasks.record.si(log, "next")).delay()
        stopped = result.parent
    else:
        stopped = tasks.stop_here.apply_async((1, what), link=tasks.record.si(log, "next"))
    assert stopped.get(timeout=30) == 1
    kept = (tasks.add.s(1, 1) | tasks.record.si(log, "kept")).delay()  # -c 1: runs after
    assert kept.get(timeout=30) == "kept"
    assert [line.split()[0] for line in open(log)] == ["kept"]  # as Celery: "next" never ran


def test_a_task_sees_its_chain_last_step_first_as_celerys_request_keeps_it(app, start_worker):
    start_worker("-c", "1")
    result = (tasks.chain_seen.s() | tasks.add.si(1, 1) | tasks.echo.si(5)).delay()
    assert result.get(timeout=30) == 5
    assert result.parent.parent.get(timeout=30) == ["tests.tasks.echo", "tests.tasks.add"]


def test_a_chord_in_a_group_a_task_sends_stays_among_its_children(app, start_worker):
    """The callback's request names the member that ended last as its parent, while the
    task that sent the workflow still lists it in the group it sent."""
    start_worker("-c", "2")
    workflow = group(chord([tasks.add.s(1, 1), tasks.add.s(2, 2)], tasks.tsum.s()),
                     tasks.add.s(5, 5))
    sender = tasks.send_signature.delay(workflow)
    sender.get(timeout=20)
    sent = [sorted(r.get(timeout=20) for r in child.results) for child in sender.children]
    assert sorted(sent) == [[2, 4], [6, 10]]  # the header's group, and the group sent
