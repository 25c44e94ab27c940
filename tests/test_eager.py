"""Eager mode (``task_always_eager``): tasks run in this process at delay(),
no worker and no row, with the same result API; arguments still go through
JSON; retries and workflows run through."""
import os
import time
from decimal import Decimal
from unittest import mock

import pytest

from miniq import EagerResult, GroupResult, chain, chord, exceptions, group
from tests import tasks


@pytest.fixture
def eager(app, monkeypatch):
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    return app


def count_rows(app):
    return app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0]


def test_delay_runs_here_at_once_and_returns_an_eager_result(eager):
    result = tasks.add.delay(2, 3)
    assert isinstance(result, EagerResult)
    assert result.state == result.status == "SUCCESS"
    assert result.get() == result.result == 5
    assert result.ready() and result.successful() and not result.failed()
    assert result.traceback is None
    assert tasks.pid.apply_async().get() == os.getpid()  # in this very process
    assert tasks.add.apply_async((1, 1), task_id="fixed-id").id == "fixed-id"
    assert count_rows(eager) == 0  # nothing stored, no worker needed


def test_a_failing_task_gives_a_failed_result_with_its_traceback(eager):
    result = tasks.fail.delay("bad")
    assert result.state == "FAILURE" and result.failed() and not result.successful()
    assert isinstance(result.result, ValueError)
    with pytest.raises(ValueError, match="bad"):
        result.get()
    assert isinstance(result.get(propagate=False), ValueError)
    assert "ValueError: bad" in result.traceback and "tasks.py" in result.traceback


def test_an_exception_that_does_not_pickle_reaches_hooks_as_the_result_keeps_it(eager):
    """As Celery's get_pickleable_exception: the nearest base that pickles, for the
    result, on_failure and task_failure alike; propagated, the task's own."""
    from miniq.signals import task_failure
    seen = []
    receiver = lambda exception, **kw: seen.append(type(exception).__name__)  # noqa: E731
    task_failure.connect(receiver)
    try:
        with mock.patch.object(tasks.fail_local, "on_failure",
                               lambda exc, *a: seen.append(type(exc).__name__)):
            result = tasks.fail_local.delay()
    finally:
        task_failure.disconnect(receiver)
    assert (type(result.result), seen) == (KeyError, ["KeyError", "KeyError"])
    with pytest.raises(KeyError) as raised:
        tasks.fail_local.apply(throw=True)
    assert type(raised.value).__name__ == "Local"


def test_eager_propagates_raises_at_the_call(eager, monkeypatch):
    monkeypatch.setitem(eager.conf, "task_eager_propagates", True)
    with pytest.raises(ValueError, match="now"):
        tasks.fail.delay("now")
    with pytest.raises(tasks.CustomError):
        tasks.fail_custom.apply_async()  # the real type: it never left this process


def test_eager_propagates_raises_a_retry_at_the_call(eager, monkeypatch):
    """As Celery's: the Retry a task raises reaches the caller; no retry runs."""
    monkeypatch.setitem(eager.conf, "task_eager_propagates", True)
    with pytest.raises(exceptions.Retry) as raised:
        tasks.retry_twice.delay(0.05)
    assert float(raised.value.when) == 0.05
    assert tasks.retry_twice.apply((0.05,), throw=False).get() == 2  # retried here, as Celery


def test_the_request_names_the_time_limits_app_conf_gives(eager, monkeypatch):
    monkeypatch.setitem(eager.conf, "task_time_limit", 50)

    @eager.task(bind=True, soft_time_limit=20, name="tests.eager.limits")
    def limits(self):
        return self.request.timelimit, self.request.time_limit
    try:
        assert limits.delay().get() == [[50, 20], 50]  # as Celery's: the task's, else conf's
    finally:
        eager.tasks.pop(limits.name)


def test_storing_eager_results_is_refused_at_the_call(eager):
    """Celery's task_store_eager_result writes the result for AsyncResult(id) to read:
    here a get() by id would wait forever, so the call is refused."""
    with pytest.raises(exceptions.ImproperlyConfigured, match="task_store_eager_result"):
        eager.conf.task_store_eager_result = True  # as code sets it
    dict.__setitem__(eager.conf, "task_store_eager_result", True)  # behind that check
    try:
        with pytest.raises(exceptions.ImproperlyConfigured, match="task_store_eager_result"):
            tasks.add.delay(2, 3)
    finally:
        dict.pop(eager.conf, "task_store_eager_result")
    assert eager.broker.db.execute("SELECT COUNT(*) FROM task").fetchone() == (0,)


def test_what_a_worker_refuses_an_eager_call_refuses_too(eager):
    """As Celery's eager calls: a serializer other than JSON, per call or set in code,
    progress meta JSON cannot carry, a retry's countdown that is no number."""
    with pytest.raises(TypeError, match="serializer 'pickle' is not supported"):
        tasks.add.apply_async((1, 2), serializer="pickle")
    with pytest.raises(exceptions.ImproperlyConfigured, match="task_serializer='pickle'"):
        eager.conf.task_serializer = "pickle"

    def meta(self, countdown=None):
        if countdown is not None:
            self.retry(countdown=countdown)
        self.update_state(state="PROGRESS", meta={"s": {1}})
    task = eager.task(bind=True, name="t.meta")(meta)
    try:
        results = task.delay(), task.delay("2")
    finally:
        eager.tasks.unregister("t.meta")
    assert [r.state for r in results] == ["FAILURE", "FAILURE"]
    assert "meta must be JSON serializable" in str(results[0].result)
    assert str(results[1].result) == "t.meta: countdown cannot be '2'"


def test_replace_eagerly_gives_the_replacements_value_returned_or_raised(eager):
    """Celery's guide writes ``raise self.replace(sig)``; others return it."""
    def returned(self):
        return self.replace(tasks.add.s(1, 2))

    def raised(self):
        raise self.replace(tasks.add.s(3, 4))
    made = [eager.task(bind=True, name=f"t.{f.__name__}")(f) for f in (returned, raised)]
    try:
        assert [(r.state, r.get()) for r in (t.delay() for t in made)] == [
            ("SUCCESS", 3), ("SUCCESS", 7)]
    finally:
        for task in made:
            eager.tasks.unregister(task)


def test_values_travel_as_kombus_json_takes_them(eager):
    """A dict shaped as kombu's tag is read as the value it tags, alone or beside
    another; an object's own __json__ is what it sends."""
    class Point:
        def __json__(self):
            return {"x": 1}
    tag = {"__type__": "decimal", "__value__": "1.5"}
    assert tasks.echo.delay(tag).get() == Decimal("1.5")
    assert tasks.echo.delay([Decimal(2), tag]).get() == [Decimal(2), Decimal("1.5")]
    assert tasks.echo.delay({"__type__": "x", "__value__": 1}).get() == {"__type__": "x",
                                                                     "__value__": 1}
    assert tasks.echo.delay([Point()]).get() == [{"x": 1}]


def test_apply_runs_eagerly_without_the_setting(app):
    assert not app.conf.task_always_eager
    assert tasks.add.apply((1, 2)).get() == 3
    assert count_rows(app) == 0


def test_apply_takes_celerys_throw_retries_and_headers(app):
    with pytest.raises(ValueError, match="thrown"):
        tasks.fail.apply(("thrown",), throw=True)
    assert tasks.fail.apply(("kept",), throw=False).state == "FAILURE"
    info = tasks.request_fields.apply(retries=2, headers={"x_a": 1}).get()
    assert (info["retries"], info["headers"]) == (2, {"x_a": 1})


def test_an_eager_run_calls_its_links_as_celerys(eager):
    """Callbacks get the value (a group of them for several), errbacks that take more
    than an id get (request, exc, traceback), the others the id; a propagated
    failure calls none."""
    seen = []

    @eager.task(name="tests.eager_note")
    def note(*args):
        seen.append(args)

    @eager.task(name="tests.eager_by_id")
    def by_id(task_id):
        seen.append((task_id,))

    @eager.task(name="tests.eager_errback")
    def errback(request, exc, traceback):
        seen.append((request.id, request.task, type(exc).__name__, "ValueError: bad" in traceback))

    assert tasks.add.apply_async((2, 3), link=note.s("x")).get() == 5
    assert tasks.add.apply_async((2, 3), link=[note.s(), note.s(1)]).get() == 5
    assert seen == [(5, "x"), (5,), (5, 1)]
    seen.clear()
    result = tasks.fail.apply_async(("bad",), link_error=[errback.s(), by_id.s()], link=note.s())
    assert seen == [(result.id, tasks.fail.name, "ValueError", True), (result.id,)]
    seen.clear()
    with pytest.raises(ValueError):
        tasks.fail.apply(("bad",), link_error=errback.s(), throw=True)
    assert seen == []

    @eager.task(name="tests.eager_broken_errback")
    def broken(request, exc, traceback):
        raise RuntimeError("errback broke")

    with mock.patch("miniq.task.log") as log:  # as Celery's: logged, the result stands
        assert tasks.fail.apply(("bad",), link_error=broken.s()).state == "FAILURE"
    assert "Errback" in log.exception.call_args[0][0]


def test_bound_task_sees_its_request(eager):
    result = tasks.request_info.delay(1, k=2)
    assert result.get() == {"id": result.id, "args": [1], "kwargs": {"k": 2}, "retries": 0}
    progress = tasks.progress.delay(3)
    assert progress.get()["done"] == 3
    # as Celery's: the state it reported is stored, where AsyncResult reads it
    assert tasks.app.AsyncResult(progress.id).state == "PROGRESS"


def test_a_bare_or_mocked_retry_ends_an_eager_run_in_retry():
    """As Celery's apply(): a Retry no retry() made (a test's mock of retry, say) ends the
    run in RETRY, its value None; with throw, it raises the Retry."""
    with mock.patch.object(tasks.retry_twice, "retry", side_effect=exceptions.Retry()):
        result = tasks.retry_twice.apply()
        assert (result.state, result.failed(), result.get()) == ("RETRY", False, None)
        assert isinstance(result.result, exceptions.Retry)
        with pytest.raises(exceptions.Retry):
            tasks.retry_twice.apply(throw=True)


def test_a_retry_at_no_time_a_date_holds_fails_as_celerys(eager):
    """A unix time is no eta (Celery's AttributeError); past the year 9999, OverflowError."""
    for kwargs, error in (({"eta": time.time() + 60}, TypeError), ({"countdown": 1e12},
                                                                 OverflowError)):
        assert type(tasks.retry_at.apply(kwargs=kwargs).result) is error


def test_a_retry_has_celerys_fields():
    retry = exceptions.Retry(exc=KeyError("k"), when=5)
    assert (str(retry), retry.humanize(), retry.excs, retry.message, retry.sig,
            retry.is_eager) == ("Retry in 5s: KeyError('k')", "in 5s", "KeyError('k')",
                                None, None, False)


def test_retries_run_through_at_once(eager, tmp_path):
    started = time.monotonic()
    assert tasks.retry_twice.delay(first_delay=30).get() == 2
    assert time.monotonic() - started < 10  # as Celery: eager retries do not wait
    log = tmp_path / "runs"
    result = tasks.autoretry.delay(str(log))
    assert result.failed() and isinstance(result.result, ValueError)
    assert log.read_text().count("run") == 3  # the first run and max_retries=2 retries
    with pytest.raises(KeyError):
        tasks.retry_forever.delay(with_exc=True).get()
    with pytest.raises(exceptions.MaxRetriesExceededError):
        tasks.retry_forever.delay().get()


def test_arguments_still_go_through_json(eager, tmp_path):
    with pytest.raises(TypeError, match="JSON serializable"):
        tasks.echo.delay({1, 2})
    with pytest.raises(TypeError, match="JSON serializable"):
        tasks.record.delay(str(tmp_path / "never"), token=object())
    assert not (tmp_path / "never").exists()
    assert tasks.echo.delay((1, 2)).get() == [1, 2]  # what a worker would have received
    unserializable = tasks.unserializable_result.delay()
    assert unserializable.failed() and isinstance(unserializable.result, TypeError)


def test_chain_runs_eagerly(eager):
    assert chain(tasks.add.s(1, 2), tasks.add.s(10), tasks.add.s(100)).apply_async().get() == 113
    assert (tasks.add.s(1, 2) | tasks.add.si(5, 5) | tasks.add.s(1)).delay().get() == 11
    assert count_rows(eager) == 0


def test_eager_chain_links_parents(eager):
    result = chain(tasks.add.s(1, 2), tasks.add.s(10)).apply_async()
    assert result.parent.get() == 3


def test_group_runs_eagerly(eager):
    result = group(tasks.add.s(i, i) for i in range(4)).apply_async()
    assert isinstance(result, GroupResult)
    assert result.get() == [0, 2, 4, 6]
    assert result.ready() and result.successful() and result.completed_count() == 4
    mixed = group([tasks.add.s(1, 1), tasks.fail.s("no")]).apply_async()
    assert mixed.failed() and not mixed.successful() and mixed.completed_count() == 1
    assert count_rows(eager) == 0


def test_chunks_apply_runs_them_now_and_gives_their_group_result(eager):
    chunked = tasks.add.chunks([(1, 2), (3, 4), (5, 6)], 2).apply()
    assert [r.get() for r in chunked.get().results] == [[3, 7], [11]]  # as Celery's apply()
    assert count_rows(eager) == 0


def test_chord_runs_eagerly_and_the_callback_gets_the_list(eager):
    header = [tasks.add.s(1, 1), tasks.add.s(2, 2), tasks.add.s(3, 3)]
    assert chord(header, tasks.echo.s()).apply_async().get() == [2, 4, 6]
    assert chord(header)(tasks.tsum.s(extra=1)).get() == 13
    partial = chord([tasks.add.s(1)], tasks.echo.s(), kwargs={"kwargs": {"y": 2}})
    assert partial.apply_async().get() == [3]  # the chord's own, as Celery's eager call
    with pytest.raises(ValueError):  # as Celery's eager chord: the member's error, at the call
        chord([tasks.add.s(1, 1), tasks.fail.s("no")], tasks.tsum.s()).apply_async()
    assert count_rows(eager) == 0


def test_a_tasks_request_outside_any_call_is_celerys_empty_one():
    request = tasks.add.request
    assert (request.id, request.args, request.kwargs, request.called_directly) == (
        None, None, None, True)


def test_popping_an_empty_request_stack_is_no_error_as_celerys():
    tasks.add.pop_request()
    assert tasks.add.request.id is None


def test_a_request_shows_as_celerys():
    assert repr(tasks.add.request) == "<Context: {}>"
    assert repr(type(tasks.add.request)(id="x", args=[1])) == "<Context: {'id': 'x', 'args': [1]}>"


def test_a_request_says_why_it_has_no_chord_or_group_index_in_a_member():
    """Outside a chord or group they are None, as Celery's, and outside a run; a member's
    are not kept."""
    from miniq.task import Context
    assert (Context().chord, Context().group_index) == (None, None)  # as task.request's
    for field, why in (("chord", "callback stays in the database"), ("group_index", "place")):
        with pytest.raises(AttributeError, match=f"request.{field}: miniq has none .*{why}"):
            getattr(Context(called_directly=False), field)  # a run's, as a member's lacks it
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        Context().nothing  # noqa: B018
