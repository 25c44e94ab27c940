"""Task classes as Celery projects write them: hooks on a ``base=`` class, an
overridden ``__call__``, ``task_cls``, arguments checked at the call, and
their own exception classes caught around ``get()``."""
import pytest

import miniq.app
from miniq import Miniq, Task
from miniq.exceptions import TimeLimitExceeded
from tests import tasks
from tests.conftest import wait_for


def notes(path, count=0):
    """The hooks' lines, once there are count (a hook after a hard limit runs later)."""
    wait_for(lambda: path.exists() and len(path.read_text().splitlines()) >= count,
             message=f"{count} lines in {path.name}")
    return path.read_text().splitlines()


def test_hooks_of_a_base_class_run_around_each_run(app, start_worker, tmp_path):
    start_worker("-c", "1")
    ok, failed, retried = (tmp_path / name for name in ("ok", "fail", "retry"))
    assert tasks.hooked.delay(str(ok), "ok").get(timeout=20) == "ok"
    with pytest.raises(ValueError):
        tasks.hooked.delay(str(failed), "fail").get(timeout=20)
    assert tasks.hooked.delay(str(retried), "retry").get(timeout=20) == "retry"
    assert notes(ok, 3) == ["before_start True", "on_success ok", "after_return SUCCESS 'ok'"]
    assert notes(failed, 3) == ["before_start True", "on_failure ValueError('no') ValueError True",
                                "after_return FAILURE ValueError('no')"]
    assert notes(retried, 5) == ["before_start True", "on_retry KeyError('again')", "before_start True",
                              "on_success retry", "after_return SUCCESS 'retry'"]


def test_a_hook_that_raises_is_logged_and_the_outcome_stands(app, start_worker, tmp_path):
    worker = start_worker("-c", "1")
    path = tmp_path / "notes"
    assert tasks.hooked.delay(str(path), "broken hook").get(timeout=20) == "broken hook"
    wait_for(lambda: "a bug in after_return" in worker.output(), message="the hook's error")
    assert tasks.add.delay(1, 1).get(timeout=20) == 2


@pytest.mark.slow  # on 3.11 in CI; the other Pythons skip it for time
def test_hooks_after_a_hard_time_limit_run_in_a_child_within_the_limit(app, start_worker,
                                                                      tmp_path):
    """As Celery's: on_failure and after_return, here in a fresh child, not the manager,
    and under the same limit: hooks that hang are killed, and the worker goes on."""
    worker = start_worker("-c", "1")
    hung, hooks_hung = tmp_path / "hung", tmp_path / "hooks hung"
    with pytest.raises(TimeLimitExceeded):
        tasks.hooked.apply_async((str(hung), "hang"), time_limit=1).get(timeout=20)
    with pytest.raises(TimeLimitExceeded):
        tasks.hooked.apply_async((str(hooks_hung), "hang, hooks too"), time_limit=1).get(
            timeout=20)
    assert tasks.add.delay(1, 1).get(timeout=20) == 2
    wait_for(lambda: "its hooks did not end" in worker.output())
    failure = "on_failure TimeLimitExceeded(1) TimeLimitExceeded True"
    assert notes(hung, 3) == ["before_start True", failure,
                              "after_return FAILURE TimeLimitExceeded(1)"]
    assert notes(hooks_hung, 2) == ["before_start True", failure]


def test_hooks_run_in_a_child_that_retires_after_each_task(app, start_worker, tmp_path):
    start_worker("-c", "1", "--max-tasks-per-child", "1")
    for i in range(3):
        path = tmp_path / f"notes{i}"
        assert tasks.hooked.delay(str(path), "ok").get(timeout=20) == "ok"
        assert notes(path, 3) == ["before_start True", "on_success ok", "after_return SUCCESS 'ok'"]


def test_an_overridden_call_runs_in_the_worker_as_in_celery(app, start_worker):
    start_worker("-c", "1")
    assert tasks.wrapped.delay(3).get(timeout=20) == ["wrapped", 3]
    assert tasks.wrapped(4) == ["wrapped", 4]


def test_task_cls_is_the_base_of_every_task_of_the_app(tmp_path):
    saved = miniq.app._default
    try:
        app = Miniq("own", broker=f"sqlite:///{tmp_path / 'own.db'}", task_cls=tasks.Wrapped,
                    task_always_eager=True)

        @app.task
        def double(x):
            return 2 * x
        assert isinstance(double, tasks.Wrapped) and app.gen_task_name("f", "m") == "m.f"
        assert double.delay(5).get() == ["wrapped", 10]
    finally:
        miniq.app._default = saved


@pytest.mark.parametrize("call", [lambda: tasks.add.delay(5),
                                  lambda: tasks.add.apply_async((1, 2, 3)),
                                  lambda: tasks.add.apply_async((1,), {"z": 2}),
                                  lambda: tasks.until_aborted.delay(1, 2)],
                         ids=["missing", "too-many", "unknown-keyword", "bound-extra"])
def test_arguments_the_function_cannot_take_fail_at_the_call(app, call):
    with pytest.raises(TypeError, match="tests.tasks"):
        call()
    assert app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0] == 0


def test_typing_false_sends_what_it_is_given(app):
    loose = app.task(typing=False, name="tests.loose")(lambda x: x)
    assert loose.delay(1, 2, 3).id
    assert isinstance(Task.typing, bool)


def test_a_max_retries_given_to_retry_holds_for_autoretry_in_a_worker(app, start_worker):
    """Celery's #6436 in a worker (its eager twin runs on Celery too, in the compat
    module; Celery's worker answers this one by a race, its limit kept on the task)."""
    start_worker("-c", "1")
    result = tasks.stops_itself.delay()
    with pytest.raises(ValueError, match="stop"):
        result.get(timeout=20)
    assert (result.state, result.retries) == ("FAILURE", 2)
