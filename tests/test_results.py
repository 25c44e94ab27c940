"""Results as Celery gives them: ``ignore_result`` (task option, per call, conf) makes
get() return None at once and stores nothing; get(on_message=, callback=) sees the
states on the way; datetime, date, time, UUID, Decimal and bytes travel as
themselves in arguments, results and meta. One worker serves the whole module."""
import json
import pickle
import sys
import threading
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from miniq import Miniq, chain, chord, exceptions, group
from miniq.signals import before_task_publish
from tests import tasks
from tests.conftest import app_on, module_worker, run_cli, wait_for

VALUES = [  # one of each type Celery's JSON carries, naive and aware, text and binary bytes
    datetime(2030, 1, 2, 3, 4, 5, 678901),
    datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
    date(2030, 1, 2),
    datetime(2030, 1, 2).time().replace(microsecond=5),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Decimal("1.10"),
    b"text bytes",
    b"\xff\x00binary",
    {"nested": [Decimal("-0"), b""]},
]
TYPES = ["datetime", "datetime", "date", "time", "UUID", "Decimal", "bytes", "bytes", "dict"]


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    with module_worker(tmp_path_factory, "results") as worker:
        yield worker


@pytest.fixture
def app(worker, monkeypatch):
    yield from app_on(worker, monkeypatch)


def gone(app, result):
    """True once the database holds no row for the result: nothing was stored."""
    return app.broker.state(result.id) is None


def ran(path, token):
    return path.exists() and f"{token} " in path.read_text()


def quick_none(result):
    """get() of an ignored result: None, without waiting for the worker."""
    started = time.monotonic()
    assert result.ignored and result.get(timeout=10) is None
    assert time.monotonic() - started < 1.0


# ignore_result -----------------------------------------------------------------------------------

def test_an_ignore_result_task_gets_none_at_once_and_stores_nothing(app, tmp_path):
    path = tmp_path / "ran"
    result = tasks.ignored_record.delay(str(path), "option")
    quick_none(result)
    wait_for(lambda: ran(path, "option"), message="the ignored task ran")
    wait_for(lambda: gone(app, result), message="its row deleted")
    # As Celery: a result made from the id alone does not know, and waits for a result.
    with pytest.raises(exceptions.TimeoutError):
        app.AsyncResult(result.id).get(timeout=0.2)


def test_date_done_is_in_the_apps_timezone_as_celerys(app, monkeypatch):
    result = tasks.add.delay(1, 1)
    assert result.get(timeout=30) == 2
    utc = result.date_done
    monkeypatch.setitem(app.conf, "timezone", "Asia/Tokyo")
    tokyo = app.AsyncResult(result.id).date_done
    assert (utc.utcoffset(), tokyo.utcoffset(), tokyo == utc) == (
        timedelta(0), timedelta(hours=9), True)


def test_an_ignored_result_keeps_the_state_its_run_reported_as_celerys(app):
    result = tasks.ignored_progress.delay()
    quick_none(result)
    wait_for(lambda: (app.broker.state(result.id) or [0])[0] == 2, message="the run ended")
    later = app.AsyncResult(result.id)
    assert (later.state, later.info, later.ready()) == ("PROGRESS", {"done": 1}, False)


def test_ignore_result_per_call_and_by_conf_store_nothing(app, tmp_path, monkeypatch):
    path = tmp_path / "ran"
    per_call = tasks.record.apply_async((str(path), "per-call"), ignore_result=True)
    quick_none(per_call)
    monkeypatch.setitem(app.conf, "task_ignore_result", True)  # the producer's conf decides
    by_conf = tasks.record.delay(str(path), "conf")
    quick_none(by_conf)
    members = group(tasks.record.s(str(path), f"member{i}") for i in range(2)).apply_async()
    wait_for(lambda: all(ran(path, t) for t in ["per-call", "conf", "member0", "member1"]),
             message="all of them ran")
    for result in [per_call, by_conf, *members]:
        wait_for(lambda: gone(app, result), message=f"no row for {result.id}")


def test_a_call_keeps_what_the_task_option_would_drop_a_send_by_name_not(app, tmp_path):
    path = str(tmp_path / "ran")
    kept = tasks.ignored_record.apply_async((path, "kept"), ignore_result=False)
    assert not kept.ignored and kept.get(timeout=30) == "kept"
    told = app.send_task("tests.tasks.ignored_record", args=(path, "told"), ignore_result=False)
    assert told.get(timeout=30) == "told"
    # As Celery 5.7's: unless the call says, the task's own option decides, in the worker
    # where the sender lacks the task.
    quick_none(app.send_task("tests.tasks.ignored_record", args=(str(tmp_path / "x"), "a")))
    lacking = Miniq("elsewhere", broker=app.conf.broker_url, set_as_current=False)
    unsaid = lacking.send_task("tests.tasks.ignored_record", args=(path, "unsaid"))
    assert not unsaid.ignored
    wait_for(lambda: ran(tmp_path / "ran", "unsaid"), message="the send by name ran")
    wait_for(lambda: gone(app, unsaid), message="its result is not kept")
    # A chain step and a chord member pass their value on, whatever their option.
    steps = chain(tasks.ignored_record.s(path, "step"), tasks.echo.s()).apply_async()
    assert steps.get(timeout=30) == "step"
    members = [tasks.ignored_record.s(path, f"chord{i}") for i in range(2)]
    assert chord(members, tasks.echo.s()).apply_async().get(timeout=30) == ["chord0", "chord1"]


# get(on_message=, callback=) ---------------------------------------------------------------------

def test_on_message_is_told_the_state_that_ends_the_wait(app, monkeypatch):
    """A task that ends between two reads of its row within one look: the state that ends
    get() is told all the same, as Celery's last message is, never only the one before."""
    rows = iter([(0, "PENDING"), (1, "PROGRESS"), (2, "SUCCESS")])
    row = (0, "PENDING")

    def state(task_id):  # each read of the row sees the task one step further
        nonlocal row
        row = next(rows, row)
        return (*row, '"done"' if row[1] == "SUCCESS" else None, None, "t", None, None)
    versions = iter(range(1, 1000))
    monkeypatch.setattr(app.broker, "state", state)
    monkeypatch.setattr(app.broker, "data_version", lambda: next(versions))
    seen = []
    assert app.AsyncResult("raced").get(timeout=5, on_message=seen.append) == "done"
    assert seen[-1]["status"] == "SUCCESS"


def test_on_message_sees_progress_then_success_and_callback_the_value(app, tmp_path):
    gate, seen, called = tmp_path / "gate", [], []

    def on_message(meta):
        seen.append(meta)
        if meta["status"] == "PROGRESS":
            gate.touch()  # the task finishes only once its progress has been seen

    meta = {"step": 1, "at": VALUES[1]}
    result = tasks.progress_gated.delay(str(gate), meta)
    value = result.get(timeout=30, on_message=on_message, interval=0.05,
                       callback=lambda *args: called.append(args))
    assert value == "done" and called == [(result.id, "done")]
    told = [m for m in seen if m["status"] != "STARTED"]  # miniq always tracks STARTED
    assert [m["status"] for m in told] == ["PROGRESS", "SUCCESS"], seen
    progress, success = told
    assert progress == {"status": "PROGRESS", "result": meta, "traceback": None,
                        "date_done": None, "task_id": result.id}
    assert success["result"] == "done" and success["traceback"] is None
    done = datetime.fromisoformat(success["date_done"])
    assert abs(done - datetime.now(timezone.utc)) < timedelta(seconds=60)
    # Already done: nothing to tell, as Celery's; a failure's result is the exception.
    again = []
    assert app.AsyncResult(result.id).get(timeout=5, on_message=again.append) == "done"
    assert again == []
    failed, told = tasks.progress_gated.delay(str(tmp_path / "shut"), meta, timeout=0.5), []
    with pytest.raises(TimeoutError):
        failed.get(timeout=30, on_message=told.append)
    assert told[-1]["status"] == "FAILURE" and isinstance(told[-1]["result"], TimeoutError)
    assert "Traceback" in told[-1]["traceback"]


# the types Celery's JSON carries ------------------------------------------------------------------

def test_each_type_travels_as_itself_as_args_kwargs_result_and_meta(app):
    kwargs = {f"k{i}": value for i, value in enumerate(VALUES)}
    result = tasks.describe.delay(*VALUES, **kwargs)
    got = result.get(timeout=30)
    assert got["types"] == TYPES + TYPES  # what the child received
    expected = {"args": VALUES, "kwargs": kwargs}
    assert repr(got["meta"]) == repr(expected)  # repr: the same types, not just equal values
    assert repr({"args": got["args"], "kwargs": got["kwargs"]}) == repr(expected)


def test_chain_and_chord_pass_such_values_on(app):
    steps = chain(tasks.echo.s(VALUES[0]), tasks.describe.s(VALUES[4])).apply_async()
    got = steps.get(timeout=30)
    assert got["types"] == ["datetime", "UUID"] and got["args"] == [VALUES[0], VALUES[4]]
    header = [tasks.echo.s(VALUES[2]), tasks.echo.s(VALUES[6])]
    got = chord(header, tasks.describe.s(VALUES[5])).apply_async().get(timeout=30)
    assert got["types"] == ["list", "Decimal"]
    assert repr(got["args"]) == repr([[VALUES[2], VALUES[6]], VALUES[5]])


def test_publish_signals_see_such_values_and_keep_them_when_headers_change(app):
    seen = []

    def note(body=None, headers=None, **_):
        seen.append(body)
        headers["x_note"] = 1  # a changed header rewrites the message's options

    before_task_publish.connect(note)
    try:
        got = chain(tasks.add.s(1, 1), tasks.describe.s(VALUES[0])).apply_async().get(timeout=30)
    finally:
        before_task_publish.disconnect(note)
    assert seen[0][2]["chain"][0]["args"] == [VALUES[0]]  # the next step, as it waits
    assert got["types"] == ["int", "datetime"]


def test_the_result_command_prints_such_a_value(app, worker):
    result = tasks.echo.delay(VALUES[0])
    assert result.get(timeout=30) == VALUES[0]
    shown = run_cli("-A", "tests.tasks", "result", result.id, env={"MINIQ_BROKER_URL": worker[0]})
    assert shown.returncode == 0 and shown.stdout == "2030-01-02 03:04:05.678901\n"


def test_eager_mode_carries_the_same_types(app, monkeypatch):
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    got = tasks.echo.delay(VALUES).get()
    assert repr(got) == repr(VALUES)


@pytest.mark.parametrize("bad", [{1, 2}, frozenset(), object(), bytearray(b"x"), 1j,
                                 {"in": [timedelta(1)]}],
                         ids=["set", "frozenset", "object", "bytearray", "complex", "timedelta"])
def test_other_types_fail_at_the_call_and_store_nothing(app, bad):
    before = app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0]
    with pytest.raises(TypeError, match="JSON serializable"):
        tasks.echo.delay(bad)
    with pytest.raises(TypeError, match="JSON serializable"):
        tasks.echo.apply_async(kwargs={"value": bad})
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0] == before


def test_an_exception_no_class_of_it_can_make_again_is_celerys_wrapper():
    from miniq.result import exception_from_json
    from miniq.utils.serialization import UnpickleableExceptionWrapper

    class NeedsTwo(Exception):
        def __init__(self, text, code):
            super().__init__(text)

    module = sys.modules[__name__]
    module.NeedsTwo = NeedsTwo  # importable where the result is read
    try:
        data = {"exc_type": "NeedsTwo", "exc_module": __name__, "exc_message": ["foo"]}
        wrapper = exception_from_json(data)
    finally:
        del module.NeedsTwo
    assert isinstance(wrapper, UnpickleableExceptionWrapper)
    assert (str(wrapper), wrapper.exc_cls_name, wrapper.exc_args) == ("NeedsTwo('foo')",
                                                                      "NeedsTwo", ("foo",))
    restored = wrapper.restore()
    assert (type(restored).__name__, type(restored).__module__, restored.args) == (
        "NeedsTwo", __name__, ("foo",))


class _Tagged:
    """A mixin that takes anything (and calls no base): not an exception."""

    def __init__(self, *args):
        self.tags = args


class _Fault(Exception):
    pass


class _NeedsTwoFault(_Fault):
    def __init__(self, text, code):
        super().__init__(text)


class _TaggedError(_Tagged, Exception):
    def __init__(self, text, code):
        Exception.__init__(self, text)


def _holding_a_lock(exc):
    exc.lock = threading.Lock()  # as an attribute: the exception does not pickle
    return exc


@pytest.mark.parametrize("exc, stored, answer", [
    (_NeedsTwoFault("foo", 1), "_Fault", "_Fault('foo')"),
    (_holding_a_lock(_Fault("foo")), "_Fault", "_Fault('foo')"),  # made anew, as Celery's
    (_TaggedError("foo", 1), "UnpickleableExceptionWrapper", "_TaggedError('foo')"),
    (ValueError({1}, 2), "ValueError", "ValueError('{1}', 2)"),
], ids=["nearest-base", "an-attribute-that-does-not-pickle", "a-mixin-is-no-base",
        "args-json-cannot-carry"])
def test_an_exception_is_stored_as_the_class_that_makes_it_again(exc, stored, answer):
    """Decided where it was raised, as a Celery worker does: a reader that never
    imported its module gets the same answer."""
    from miniq.result import exception_from_json, exception_to_json
    data = json.loads(exception_to_json(exc))
    assert data["exc_type"] == stored
    made = exception_from_json(data, imported=False)
    assert isinstance(made, BaseException)
    text = str(made) if stored == "UnpickleableExceptionWrapper" else repr(made)
    assert text == answer


def test_an_exception_of_a_class_nested_in_a_module_not_imported_keeps_its_name():
    """As Celery's stand-in class (create_exception_cls): ``Outer.Inner``, which a log
    line built from ``type(exc).__name__`` shows."""
    from miniq.result import exception_from_json
    made = exception_from_json({"exc_type": "Outer.Inner", "exc_module": "not_imported_here",
                                "exc_message": ["inner!"]}, imported=False)
    assert (type(made).__name__, type(made).__module__) == ("Outer.Inner", "not_imported_here")
    assert str(made) == "inner!"
    made.announced = True  # an attribute the worker sets on it
    again = pickle.loads(pickle.dumps(made))  # as hooks and receivers may pickle it
    assert type(again) is type(made) and again.args == ("inner!",) and again.announced


def test_threads_that_send_their_first_tasks_at_once_open_the_file_once(tmp_path):
    """A web server's threads, say: one of them closed what another had half opened."""
    for attempt in range(20):
        app = Miniq(f"threads{attempt}", broker=f"sqlite:///{tmp_path / f'{attempt}.db'}")
        add = app.task(name="add")(lambda x, y: x + y)
        start, errors = threading.Barrier(8), []

        def send():
            start.wait()
            try:
                add.delay(1, 1)
            except Exception as exc:  # noqa: BLE001 - what a thread met is the answer
                errors.append(exc)
        threads = [threading.Thread(target=send) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors
        assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone() == (8,)
        app.close()
