"""Task options and task-raised exceptions as Celery honours them, against one real
worker shared by the module: a base class with its own ``__init__``, ``Ignore``,
``Reject`` (with and without requeue), ``throws``, ``dont_autoretry_for``, ``expires``,
``store_errors_even_if_ignored``, ``acks_on_failure_or_timeout``, ``serializer``."""
import os
import re
import time

import pytest

import miniq.app
from miniq import project
from miniq import Miniq, Task, group
from miniq.exceptions import Ignore, Reject, TaskRevokedError, TimeLimitExceeded, TimeoutError
from tests import option_tasks as t
from tests import tasks
from tests.conftest import ROOT, WorkerProcess, wait_for

T = 20  # seconds for any one result


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    """One worker for the module, on a database of its own, serving these tasks."""
    folder = tmp_path_factory.mktemp("options")
    url, saved = f"sqlite:///{folder / 'options.db'}", tasks.app.conf.broker_url
    tasks.app.conf.broker_url = url
    env = dict(os.environ, MINIQ_BROKER_URL=url, PYTHONFAULTHANDLER="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = WorkerProcess(["-A", "tests.option_tasks", "worker", "--loglevel", "info", "-c", "2"],
                         env, folder / "worker.log")
    try:
        yield proc.wait_ready()
    finally:
        proc.stop(10)
        tasks.app.broker.close()
        tasks.app.conf.broker_url = saved


@pytest.fixture
def fresh_app(tmp_path):
    """An eager app of its own; the default app of the other tests is kept."""
    saved = miniq.app._default
    made = Miniq("fresh", broker=f"sqlite:///{tmp_path / 'fresh.db'}", task_always_eager=True)
    yield made
    miniq.app._default = saved
    project.APPS.discard(made)  # no later shared task is made on it


def row(result, columns="status, state, attempts"):
    return tasks.app.broker.db.execute(f"SELECT {columns} FROM task WHERE id = ?",
                                       (result.id,)).fetchone()


def finished(result):
    """Until the worker is done with the task, whatever it recorded."""
    wait_for(lambda: (row(result) or (2,))[0] == 2, T, message=f"{result.id} done")


def lines(path):
    return open(path).read().splitlines() if os.path.exists(path) else []


def log_record(worker, text):
    """The log record (its first line and any lines it carries) that contains text."""
    def find():
        return next((r for r in re.split(r"\n(?=\[)", worker.output()) if text in r), None)
    return wait_for(find, T, message=f"a log record with {text!r}")


def test_a_base_with_its_own_init_runs_it_once_per_task(worker, fresh_app):
    assert t.Counted.made.count(t.counted.name) == 1  # here, at decoration
    assert t.counted.delay().get(timeout=T) == [f"opened for {t.counted.name}", 1]  # worker
    assert isinstance(t.counted, t.Counted) and t.counted.__name__ == "counted"

    fresh_app.conf.task_cls = t.Counted  # Celery's task_cls: the base of every task

    @fresh_app.task(bind=True)
    def own(self):
        return self.connection
    assert t.Counted.made.count(own.name) == 1
    assert own.delay().get() == f"opened for {own.name}"


def test_ignore_records_no_state_and_calls_no_hook(worker, tmp_path):
    path = str(tmp_path / "runs")
    result = t.ignored.delay(path)
    finished(result)
    assert result.state == "PENDING"  # as Celery's: not the STARTED miniq records
    with pytest.raises(TimeoutError):
        result.get(timeout=0.3)  # as Celery: it never gets ready
    kept = t.ignored.delay(path, "SUCCESS")  # Celery's pattern: store the result by hand
    assert kept.get(timeout=T) == {"kept": "SUCCESS"}
    assert lines(path + ".hooks") == [] and len(lines(path)) == 2
    assert "INFO/MainProcess] Task tests.option_tasks.ignored[" in log_record(worker, " ignored")


def test_reject_without_requeue_is_a_failure_and_calls_no_hook(worker, tmp_path):
    path = str(tmp_path / "runs")
    result = t.rejected.delay(path, False)
    with pytest.raises(Reject, match="no thanks"):
        result.get(timeout=T)
    assert result.state == "FAILURE" and len(lines(path)) == 1 and lines(path + ".hooks") == []
    record = log_record(worker, f"[{result.id}] reject requeue=False: no thanks")
    assert "WARNING" in record and "Traceback" in record


def test_reject_with_requeue_runs_again_under_acks_late_up_to_the_delivery_cap(worker, tmp_path):
    twice, always = str(tmp_path / "twice"), str(tmp_path / "always")
    assert t.rejected_late.delay(twice, 2).get(timeout=T) == 3
    result = t.rejected_late.delay(always, 99)
    with pytest.raises(Reject, match="run 3"):  # task_max_deliveries (3): then it fails
        result.get(timeout=T)
    assert len(lines(always)) == 3 and row(result) == (2, "FAILURE", 3)


def test_reject_with_requeue_but_without_acks_late_is_dropped_as_celery(worker, tmp_path):
    path = str(tmp_path / "runs")
    result = t.rejected.delay(path, True)  # Celery acked it before the run: nothing happens
    finished(result)
    assert row(result) == (2, "PENDING", 1) and len(lines(path)) == 1
    assert lines(path + ".hooks") == []
    assert "WARNING" in log_record(worker, f"[{result.id}] not requeued: its acks_late is off")


def test_an_error_the_task_throws_is_logged_as_expected_without_traceback(worker):
    expected, unexpected = t.throwing.delay(True), t.throwing.delay(False)
    with pytest.raises(KeyError, match="expected one"):
        expected.get(timeout=T)
    with pytest.raises(ValueError, match="unexpected one"):
        unexpected.get(timeout=T)
    assert expected.state == "FAILURE" and "Traceback" in expected.traceback  # stored as ever
    record = log_record(worker, f"[{expected.id}] raised expected: KeyError('expected one')")
    assert "INFO" in record and "Traceback" not in record
    record = log_record(worker, f"[{unexpected.id}] raised unexpected: ValueError")
    assert "ERROR" in record and "Traceback" in record


def test_dont_autoretry_for_is_never_retried(worker, tmp_path):
    key, value = str(tmp_path / "key"), str(tmp_path / "value")
    with pytest.raises(KeyError, match="run 1"):
        t.picky_retry.delay(key, "key").get(timeout=T)
    with pytest.raises(ValueError, match="run 4"):  # retried max_retries (3) times
        t.picky_retry.delay(value, "value").get(timeout=T)
    assert (len(lines(key)), len(lines(value))) == (1, 4)


def test_the_task_expires_option_is_the_default_of_every_send(worker):
    single = t.long_expired.delay()
    grouped = group(t.long_expired.s() for _ in range(2)).apply_async()  # the fast path
    for result in [single, *grouped.results]:
        with pytest.raises(TaskRevokedError):
            result.get(timeout=T)
    now = time.time()
    later, sooner = t.expires_in_an_hour.delay(), t.expires_in_an_hour.apply_async(expires=60)
    assert abs(row(later, "expires")[0] - (now + 3600)) < 30
    assert abs(row(sooner, "expires")[0] - (now + 60)) < 30
    assert later.get(timeout=T) == "ran"


def test_ignore_result_drops_errors_unless_store_errors_even_if_ignored(worker):
    dropped, kept = t.fail_ignored.delay(), t.fail_ignored_but_kept.delay()
    assert kept.get(timeout=T) is None  # as Celery: a result sent ignored does not wait
    with pytest.raises(ValueError, match="kept anyway"):
        tasks.app.AsyncResult(kept.id).get(timeout=T)
    wait_for(lambda: row(dropped) is None, T, message="the ignored failure dropped")
    assert dropped.state == "PENDING"  # as Celery: nothing stored
    assert "ERROR" in log_record(worker, f"[{dropped.id}] raised unexpected: ValueError")


def test_ignore_result_drops_a_retrys_state_unless_store_errors_even_if_ignored(worker):
    """As Celery: the retry is sent all the same; only what it stores differs."""
    dropped, kept = t.retry_ignored.delay(), t.retry_ignored_but_kept.delay()
    wait_for(lambda: tasks.app.AsyncResult(kept.id).state == "RETRY", T, message="the retry")
    wait_for(lambda: row(dropped, "retries") == (1,), T, message="the ignored retry")
    assert (dropped.state, dropped.info) == ("PENDING", None)
    assert repr(tasks.app.AsyncResult(kept.id).info) == "KeyError('kept anyway')"
    tasks.app.control.revoke([dropped.id, kept.id])


def test_a_timeout_is_requeued_under_acks_late_without_acks_on_timeout(worker, tmp_path):
    """By Celery 5.7's acks_on_timeout, or by acks_on_failure_or_timeout, its older name."""
    sent = [(str(tmp_path / name), task) for name, task in (
        ("runs", t.timeout_requeued), ("runs57", t.timeout_requeued_by_57s_name))]
    results = [task.delay(path) for path, task in sent]
    for (path, _), result in zip(sent, results):
        with pytest.raises(TimeLimitExceeded):
            result.get(timeout=T)
        assert len(lines(path)) == 3 and row(result) == (2, "FAILURE", 3)


def test_options_are_taken_and_those_miniq_cannot_honour_refused_at_decoration(fresh_app):
    def f():
        return 1
    taken = fresh_app.task(name="a", track_started=True, serializer="json", no_such_option=1,
                           acks_on_failure_or_timeout=False, store_errors_even_if_ignored=True)(f)
    assert taken.no_such_option == 1 and not hasattr(Task, "no_such_option")  # as Celery's
    refused = [({"serializer": "pickle"}, "serializer 'pickle' is not supported"),
               ({"throws": ("KeyError",)}, "throws must hold exception classes"),
               ({"dont_autoretry_for": [1]}, "dont_autoretry_for must hold exception classes"),
               ({"pydantic": True}, "does not honour, for b: pydantic"),
               ({"backend": "redis://", "filter": len}, "does not honour, for b: backend, filter"),
               ({"store_eager_result": True}, "store_eager_result is not supported"),
               ({"retry_on_worker_lost": True}, "does not honour, for b: retry_on_worker_lost")]
    for options, message in refused:
        with pytest.raises(TypeError, match=message):
            fresh_app.task(name="b", **options)(f)

    class Pickled(Task):
        serializer = "pickle"
    with pytest.raises(TypeError, match="serializer"):
        fresh_app.task(name="c", base=Pickled)(f)

    class OwnRequest(Task):  # Celery's guide sets it so: refused on a base as well
        Request = "my.package:MyRequest"
    with pytest.raises(TypeError, match="does not honour, for d: Request"):
        fresh_app.task(name="d", base=OwnRequest)(f)
    assert {name for name in fresh_app.tasks if not name.startswith("celery.")} == {"a"}
    with pytest.raises(TypeError, match="serializer 'pickle' is not supported"):
        fresh_app.send_task("a", serializer="pickle")  # per call too, before storing
    assert fresh_app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone() == (0,)


def test_autoretry_options_are_read_at_decoration_as_celerys(fresh_app):
    """Not at the task's first failure: a backoff as text is a number, one that is no
    number and a retry option miniq's retry() lacks are refused then."""
    def f():
        return 1
    made = fresh_app.task(name="a", autoretry_for=(KeyError,), retry_backoff="2")(f)
    assert (made.retry_backoff, made.retry_backoff_max) == (2.0, 600)
    with pytest.raises(ValueError, match="b: retry_backoff"):
        fresh_app.task(name="b", autoretry_for=(KeyError,), retry_backoff="x")(f)
    with pytest.raises(TypeError, match="retry_kwargs take no time_limit"):
        fresh_app.task(name="c", autoretry_for=(KeyError,), retry_kwargs={"time_limit": 9})(f)
    fresh_app.task(name="d", retry_backoff="x")(f)  # as Celery's: read only to autoretry
    # a key no message option (a project's: Packit's retry_jitter) means nothing, as there
    fresh_app.task(name="e", autoretry_for=(KeyError,),
                   retry_kwargs={"max_retries": 5, "retry_jitter": False})(f)


def test_eager_ignore_and_reject_end_in_their_own_states(tmp_path):
    path = str(tmp_path / "runs")
    ignored, rejected = t.ignored.apply((path,)), t.rejected.apply((path, True))
    assert (ignored.state, ignored.get(), type(ignored.result)) == ("IGNORED", None, Ignore)
    assert (rejected.state, rejected.get(), type(rejected.result)) == ("REJECTED", None, Reject)
    assert lines(path + ".hooks") == []
