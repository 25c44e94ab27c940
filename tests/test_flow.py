"""The basic flow against a real worker: definition, submission, execution,
time limits, child death, exceptions and waiting (issue 2, points 1-8)."""
import datetime
import time

import pytest

from miniq import exceptions
from miniq.result import EagerResult
from tests import tasks
from tests.conftest import wait_for


def count_rows(app):
    return app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0]


# 1. definition runs nothing; delay stores JSON and returns at once --------------

def test_delay_stores_a_message_and_nothing_runs_without_a_worker(app):
    result = tasks.add.delay(2, 3)
    assert result.state == "PENDING" and not result.ready()
    body, state = app.broker.db.execute("SELECT body, state FROM task WHERE id = ?",
                                        (result.id,)).fetchone()
    assert body == "[[2,3],{}]" and state == "PENDING"


@pytest.mark.parametrize("bad", [{1, 2}, object(), datetime.datetime(2026, 1, 1)])
def test_arguments_json_cannot_carry_fail_at_the_call_and_store_nothing(app, bad):
    with pytest.raises(TypeError, match="JSON serializable"):
        tasks.echo.delay(bad)
    assert count_rows(app) == 0


def test_task_runs_in_a_child_never_in_the_manager(app, start_worker):
    worker = start_worker("-c", "2")
    pid = tasks.pid.delay().get(timeout=20)
    assert pid != worker.pid and pid in worker.children()


def test_calling_the_task_object_runs_it_here(app):
    assert tasks.add(2, 2) == 4 and count_rows(app) == 0


# 2. concurrency: N children truly in parallel, no hoarding -------------------------

def test_concurrency_runs_tasks_in_parallel_in_distinct_processes(app, start_worker):
    start_worker("-c", "3")
    started = time.monotonic()
    results = [tasks.sleep.delay(1.5) for _ in range(3)]
    pids = {r.get(timeout=30) for r in results}
    assert len(pids) == 3
    assert time.monotonic() - started < 4.0  # serial would take 4.5 s


def test_claims_only_as_many_as_idle_children(app, start_worker):
    results = [tasks.sleep.delay(0.4) for _ in range(6)]
    start_worker("-c", "2")
    peak, deadline = 0, time.monotonic() + 30
    while not all(r.ready() for r in results):
        assert time.monotonic() < deadline, "the tasks did not finish"
        held = app.broker.db.execute("SELECT COUNT(*) FROM task WHERE status = 1").fetchone()[0]
        peak = max(peak, held)
        time.sleep(0.01)
    assert peak == 2


# 3. soft limit -----------------------------------------------------------------------

def test_soft_limit_raises_inside_a_sleeping_task_which_may_catch_it(app, start_worker):
    start_worker("-c", "1")
    before = tasks.pid.delay().get(timeout=20)
    assert tasks.soft_catch.delay(10).get(timeout=20) == "cleaned up"
    assert tasks.pid.delay().get(timeout=20) == before  # the same child lives on


def test_soft_limit_uncaught_fails_with_soft_time_limit_exceeded(app, start_worker):
    start_worker("-c", "1")
    with pytest.raises(exceptions.SoftTimeLimitExceeded):
        tasks.soft_raise.delay(10).get(timeout=20)


def test_per_call_soft_limit_beats_the_task_option(app, start_worker):
    start_worker("-c", "1")
    result = tasks.sleep.apply_async((10,), soft_time_limit=0.3)
    with pytest.raises(exceptions.SoftTimeLimitExceeded):
        result.get(timeout=20)


# 4. hard limit -----------------------------------------------------------------------

def test_hard_limit_kills_the_child_skipping_finally_and_replaces_it(app, start_worker, tmp_path):
    worker = start_worker("-c", "2")
    marker = tmp_path / "finally"
    wait_for(lambda: len(worker.children()) == 2, message="two children")
    before = set(worker.children())
    neighbour = tasks.sleep.delay(2.5, "neighbour")
    result = tasks.hard_limited.delay(str(marker))
    with pytest.raises(exceptions.TimeLimitExceeded):
        result.get(timeout=20)
    assert result.state == "FAILURE" and not marker.exists()
    assert neighbour.get(timeout=20) == "neighbour"  # the rest of the pool never noticed
    wait_for(lambda: len(worker.children()) == 2 and set(worker.children()) != before,
             message="a fresh child in place of the killed one")
    assert len(before & set(worker.children())) == 1


@pytest.mark.parametrize("task", [tasks.busy_loop, tasks.stuck_in_c])
def test_hard_limit_ends_busy_loops_and_c_calls(app, start_worker, task):
    start_worker("-c", "1")
    with pytest.raises(exceptions.TimeLimitExceeded):
        task.delay().get(timeout=20)
    assert tasks.add.delay(1, 1).get(timeout=20) == 2


# 5. children dying on their own --------------------------------------------------------

@pytest.mark.parametrize("task", [tasks.exit_now, tasks.segfault, tasks.kill_self])
def test_a_child_that_dies_gives_worker_lost_error_and_is_replaced(app, start_worker, task):
    start_worker("-c", "1")
    before = tasks.pid.delay().get(timeout=20)
    with pytest.raises(exceptions.WorkerLostError, match="exited prematurely"):
        task.delay().get(timeout=20)
    assert tasks.pid.delay().get(timeout=20) != before


# 6. exceptions --------------------------------------------------------------------------

def test_builtin_exception_comes_back_as_itself_with_traceback(app, start_worker):
    start_worker("-c", "1")
    result = tasks.fail.delay("bad input")
    with pytest.raises(ValueError, match="bad input"):
        result.get(timeout=20)
    assert result.state == result.status == "FAILURE"
    assert result.ready() and result.failed() and not result.successful()
    assert 'raise ValueError(message)' in result.traceback
    exc = result.get(propagate=False)
    assert isinstance(exc, ValueError) and isinstance(result.info, ValueError)


def test_other_exceptions_come_back_as_a_generated_class_of_that_name(app, start_worker):
    start_worker("-c", "1")
    result = tasks.fail_custom.delay("no import")
    with pytest.raises(Exception) as caught:
        result.get(timeout=20)
    assert type(caught.value).__name__ == "CustomError"
    assert type(caught.value) is not tasks.CustomError and "no import" in str(caught.value)


def test_success_state_and_values(app, start_worker):
    start_worker("-c", "1")
    result = tasks.echo.delay({"a": [1, 2]})
    assert result.get(timeout=20) == {"a": [1, 2]}
    assert result.successful() and result.result == result.info == {"a": [1, 2]}
    assert app.AsyncResult(result.id).get(timeout=1) == {"a": [1, 2]}


# 7. waiting ----------------------------------------------------------------------------------

def test_get_timeout_raises_miniq_timeout_error(app):
    result = tasks.add.delay(1, 2)  # no worker: never done
    started = time.monotonic()
    with pytest.raises(exceptions.TimeoutError):
        result.get(timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 3


def test_get_inside_a_task_raises_runtime_error(app, start_worker):
    start_worker("-c", "2")
    with pytest.raises(RuntimeError, match="within a task"):
        tasks.nested_get.delay().get(timeout=20)


# 8. unknown names ---------------------------------------------------------------------------

def test_unknown_task_name_fails_alone_and_the_worker_keeps_serving(app, start_worker):
    start_worker("-c", "1")
    result = app.send_task("no.such.task", args=(1,))
    with pytest.raises(exceptions.NotRegistered, match="no.such.task"):
        result.get(timeout=20)
    assert app.send_task("tests.tasks.add", args=(6, 7)).get(timeout=20) == 13


# bound tasks: request, progress, abort ---------------------------------------------------------

def test_bound_task_sees_its_request(app, start_worker):
    start_worker("-c", "1")
    result = tasks.request_info.delay(1, 2, k="v")
    assert result.get(timeout=20) == {"id": result.id, "args": [1, 2], "kwargs": {"k": "v"},
                                      "retries": 0}


def test_update_state_progress_is_visible_while_running(app, start_worker):
    start_worker("-c", "1")
    result = tasks.progress.delay(40, 0.05)
    meta = wait_for(lambda: result.state == "PROGRESS" and result.info, message="PROGRESS")
    assert meta["total"] == 40 and 0 <= meta["current"] < 40
    assert result.get(timeout=20) == {"id": result.id, "done": 40}


def test_abort_is_seen_by_is_aborted(app, start_worker):
    start_worker("-c", "1")
    result = tasks.until_aborted.delay(20)
    wait_for(lambda: result.state == "STARTED", message="STARTED")
    result.abort()
    assert result.get(timeout=20) == "stopped"


def test_eager_mode_runs_in_process_with_the_same_api(app, monkeypatch):
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    result = tasks.add.delay(2, 2)
    assert isinstance(result, EagerResult) and result.get() == 4 and result.successful()
    assert count_rows(app) == 0
    failed = tasks.fail.delay("eager")
    assert failed.failed() and isinstance(failed.info, ValueError)
    monkeypatch.setitem(app.conf, "task_eager_propagates", True)
    with pytest.raises(ValueError):
        tasks.fail.delay("eager")
    with pytest.raises(TypeError):
        tasks.echo.delay({1})


def test_worker_module_never_imports_from_the_database(app, start_worker):
    """A message naming a module must not make the worker import it."""
    start_worker("-c", "1")
    result = app.send_task("os.system", args=("echo pwned",))
    with pytest.raises(exceptions.NotRegistered):
        result.get(timeout=20)
