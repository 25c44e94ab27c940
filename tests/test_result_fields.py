"""Result objects with Celery's fields and methods, read back from a real worker's runs:
AsyncResult's name, args, kwargs, retries, queue, worker, date_done, children and
collect(); ResultSet and GroupResult, saved and restored, nested ones too; and
allow_join_result inside a task. One worker serves the whole module."""
import os
import pickle
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

import miniq.app
import miniq.project
from miniq import Miniq, chain, exceptions, group
from miniq.result import AsyncResult, GroupResult, ResultSet, allow_join_result
from miniq.task import new_id
from tests import tasks
from tests.conftest import ROOT, app_on, module_worker, wait_for

T = 20  # seconds for any one result
NODE = f"fields@{socket.gethostname()}"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    with module_worker(tmp_path_factory, "fields", "-n", "fields@%h") as worker:
        yield worker


@pytest.fixture
def app(worker, monkeypatch):
    yield from app_on(worker, monkeypatch)


# AsyncResult's fields ----------------------------------------------------------------------------

def test_a_finished_task_has_celerys_extended_fields(app):
    sent = time.time()
    result = tasks.add.apply_async((2,), {"y": 3}, queue="celery")
    assert result.get(timeout=T) == 5
    assert (result.name, result.args, result.kwargs) == ("tests.tasks.add", [2], {"y": 3})
    assert (result.retries, result.queue, result.worker) == (0, "celery", NODE)
    done = result.date_done  # as Celery's: an aware datetime, in UTC
    assert isinstance(done, datetime) and done.utcoffset() == timedelta(0)
    assert sent - 1 <= done.timestamp() <= time.time()
    assert result.date_done.tzinfo == timezone.utc
    # A fresh handle on the same id reads the same, from the database.
    again = app.AsyncResult(result.id)
    assert (again.args, again.kwargs, again.worker, again.date_done) == ([2], {"y": 3}, NODE, done)


def test_retries_counts_the_runs_before_the_last(app):
    result = tasks.retry_twice.delay(0.05)
    assert result.get(timeout=T) == 2
    assert (result.retries, result.args, result.worker) == (2, [0.05], NODE)


def test_a_task_waiting_to_retry_names_the_worker_it_ran_on(app):
    """As Celery's, which stores the worker with every state."""
    result = tasks.retry_twice.delay(30)
    wait_for(lambda: result.state == "RETRY", timeout=T, message="the first retry")
    assert (result.worker, result.retries) == (NODE, 0)  # the run that asked to retry
    result.revoke()


def test_an_unknown_task_has_none_for_every_field(app):
    result = app.AsyncResult(new_id())
    fields = (result.name, result.args, result.kwargs, result.retries, result.queue,
              result.worker, result.date_done, result.children)
    assert fields == (None,) * 8


def test_a_running_tasks_info_is_celerys_started_meta(app, tmp_path):
    """As Celery's with track_started: a dict, so that a view's ``info.get(...)`` works;
    the child's pid is not kept."""
    gate = tmp_path / "gate"
    running = tasks.wait_for_gate.delay(str(gate), "info")
    wait_for((tmp_path / "gate.running.info").exists, timeout=T, message="the task running")
    assert (running.state, running.info) == ("STARTED", {"pid": None, "hostname": NODE})
    gate.touch()
    assert running.get(timeout=T) == "info" and running.info == "info"


def test_a_custom_state_has_no_date_done_as_celerys(app):
    """Celery dates only a ready state: not one set by update_state, from outside too."""
    result = app.AsyncResult(new_id())
    tasks.add.update_state(task_id=result.id, state="PROGRESS", meta={"step": 1})
    seen = []
    with pytest.raises(exceptions.TimeoutError):
        result.get(timeout=0.2, on_message=seen.append)
    assert (result.state, result.info, result.date_done) == ("PROGRESS", {"step": 1}, None)
    assert [meta["date_done"] for meta in seen] == [None]


def test_an_unpickled_result_reads_its_own_database(app, tmp_path, monkeypatch):
    """As Celery's, which pickles its backend: where another app is current too, and in a
    process that has no app (no database of its own is made there)."""
    blob = pickle.dumps(tasks.add.delay(1, 2))  # queued: PENDING, its name kept
    monkeypatch.setattr(miniq.app, "_default", None)
    other = Miniq("other", broker=f"sqlite:///{tmp_path / 'other.db'}")  # the current app
    miniq.project.APPS.discard(other)  # no later shared task is made on it
    assert pickle.loads(blob).name == "tests.tasks.add"
    read = subprocess.run([sys.executable, "-c", "import pickle, sys; print(pickle.loads("
                           f"{blob!r}).name)"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=60)
    assert read.stdout.split() == ["tests.tasks.add"], read.stderr
    assert not (tmp_path / "miniq.db").exists()


def test_a_failure_stored_by_hand_without_an_exception_is_refused_when_read(app):
    """As Celery's: FAILURE's meta must be an exception's (exc_type, exc_message)."""
    result = app.AsyncResult(new_id())
    tasks.add.update_state(task_id=result.id, state="FAILURE", meta={"why": "by hand"})
    assert result.ready() and result.state == "FAILURE"
    with pytest.raises(ValueError, match="must include the exception type"):
        result.get(timeout=T)


def test_a_queued_task_has_its_call_but_no_worker_or_date(app):
    result = tasks.add.apply_async((1, 1), queue="nobody-serves-this")
    assert (result.args, result.queue, result.worker, result.date_done) == (
        [1, 1], "nobody-serves-this", None, None)
    assert result.children is None  # as Celery's: known once the task is ready
    result.revoke()


# children and collect ----------------------------------------------------------------------------

def test_children_are_what_the_task_sent_a_group_as_one_result(app):
    root = tasks.family.delay(1)
    assert root.get(timeout=T) == 1
    single, sent_group = root.children
    assert type(single) is AsyncResult and single.get(timeout=T) == 2
    assert single.args == [1, 1] and single.children == []
    assert isinstance(sent_group, GroupResult) and len(sent_group) == 2
    assert sent_group.get(timeout=T) == [2, 0]
    assert [r.name for r in sent_group] == ["tests.tasks.add", "tests.tasks.family"]
    assert tasks.add.delay(1, 2).get(timeout=T) == 3


def test_collect_walks_the_task_then_what_each_one_sent(app):
    root = tasks.family.delay(2)
    walked = [(type(node).__name__, value) for node, value in root.collect(timeout=T)]
    # family(2) sends add(2, 2) and group(add(1, 1), family(1)); family(1) sends add(1, 1)
    # and group(add(1, 1), family(0)): breadth first, a group before its members.
    assert walked == [
        ("AsyncResult", 2), ("AsyncResult", 4), ("GroupResult", [2, 1]),
        ("AsyncResult", 2), ("AsyncResult", 1),
        ("AsyncResult", 2), ("GroupResult", [2, 0]), ("AsyncResult", 2), ("AsyncResult", 0)]


# ResultSet and GroupResult -----------------------------------------------------------------------

def test_a_result_set_is_a_list_of_results_to_wait_for(app):
    one, two, three = (tasks.add.delay(i, i) for i in range(3))
    results = ResultSet([one])
    results.add(two)
    results.add(one)  # a member already
    results.update([two, three])
    assert results.results == [one, two, three] and len(results) == 3 and results[1] == two
    seen = []  # as Celery's: a callback takes the values, join() returns none of them
    assert results.join(timeout=T, callback=lambda *pair: seen.append(pair)) == []
    assert seen == [(one.id, 0), (two.id, 2), (three.id, 4)]
    assert results.get(timeout=T) == [0, 2, 4] and results.completed_count() == 3
    assert results.ready() and not results.waiting() and results.successful()
    results.remove(two.id)  # by id, as Celery's
    with pytest.raises(KeyError):
        results.remove(two)
    results.discard(two)
    assert results.results == [one, three]
    results.clear()
    assert len(results) == 0 and results.app is app


def test_a_waiting_group_result_says_so(app):
    slow = group(tasks.sleep.s(0.5, "late"), tasks.add.s(1, 1)).apply_async()
    assert slow.waiting() and not slow.ready() and slow.completed_count() < 2
    assert slow.get(timeout=T) == ["late", 2] and not slow.waiting()
    assert slow.children == slow.results and str(slow) == slow.id and slow == slow.id


def test_a_nested_group_result_saves_and_restores(app):
    inner = group(tasks.add.s(1, 1), tasks.add.s(2, 2)).apply_async()
    steps = chain(tasks.add.s(1, 2), tasks.add.s(3)).apply_async()
    saved = GroupResult(new_id(), [inner, tasks.add.delay(3, 3), steps], app=app)
    assert saved.save() is saved
    tasks.app.broker.close()  # read back from the file, through a new connection
    back = GroupResult.restore(saved.id, app=app)
    assert back == saved and back is not saved
    assert [type(r).__name__ for r in back] == ["GroupResult", "AsyncResult", "AsyncResult"]
    assert back[0].id == inner.id and back[0].results == inner.results
    assert back[2].parent == steps.parent and back[2].parent.parent is None
    assert back.get(timeout=T) == [[2, 4], 6, 6]
    assert back.app is app and back[1].app is app
    # The saved row is no task's: the group's id still reads as an unknown task.
    assert app.AsyncResult(saved.id).state == "PENDING" and app.AsyncResult(saved.id).info is None
    saved.save()  # again: replaces, not a second copy
    back.delete()
    assert GroupResult.restore(saved.id, app=app) is None
    assert GroupResult.restore(new_id(), app=app) is None


def test_group_results_compare_by_id_members_and_parent(app):
    a, b = AsyncResult("a", app=app), AsyncResult("b", app=app)
    assert GroupResult("g", [a, b]) == GroupResult("g", [a, b])
    assert GroupResult("g", [a, b]) != GroupResult("g", [b, a])
    assert GroupResult("g", [a], parent=b) != GroupResult("g", [a])
    assert GroupResult("g", []) and not ResultSet([])  # as Celery's: an id makes it true
    assert len({GroupResult("g", [a]), GroupResult("g", [a])}) == 1


# allow_join_result -------------------------------------------------------------------------------

def test_allow_join_result_lets_a_task_wait_for_another_for_the_block_only(app):
    assert tasks.join_allowed.delay(21).get(timeout=T) == [42, "refused again"]
    with pytest.raises(RuntimeError, match="Never call result.get"):
        tasks.nested_get.delay().get(timeout=T)


def test_allow_join_result_restores_the_flag_it_found(monkeypatch):
    import miniq.result
    monkeypatch.setattr(miniq.result, "join_will_block", True)
    with allow_join_result():
        assert miniq.result.join_will_block is False
        with allow_join_result():
            pass
        assert miniq.result.join_will_block is False
    assert miniq.result.join_will_block is True
