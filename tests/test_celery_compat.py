"""The road to Celery: tests/compat/celery_api.py, written only in Celery's
API, gives the same results on miniq and, when Celery is installed, on
Celery itself (its filesystem transport and file result backend: no server).

Each scenario is one function of the module (imported for the chosen
implementation) run against a real worker of that implementation.
"""
import importlib
import os
import signal
import subprocess
import sys

import pytest

import miniq.app
from tests.conftest import ROOT

MODULE = "tests.compat.celery_api"
T = 60  # seconds for any one result: the machine may be slow and noisy
WORKERS = {
    "miniq": ["-m", "miniq", "-A", MODULE, "worker", "-c", "2", "--loglevel", "info"],
    "celery": ["-m", "celery", "-A", MODULE, "worker", "--pool", "prefork", "-c", "2",
               "--loglevel", "warning", "--without-gossip", "--without-mingle",
               "--without-heartbeat"],
}


def import_for(impl, env):
    """The compat module, imported afresh with the environment of this implementation."""
    saved_env = {key: os.environ.get(key) for key in env}
    saved_default = miniq.app._default  # importing makes a Miniq app, the default one
    os.environ.update(env)
    sys.modules.pop(MODULE, None)
    try:
        return importlib.import_module(MODULE)
    finally:
        miniq.app._default = saved_default  # tests elsewhere rely on tests.tasks' app
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module", params=["miniq", "celery"])
def api(request, tmp_path_factory):
    """(impl name, the compat module) with a worker of that implementation running."""
    impl = request.param
    if impl == "celery":
        pytest.importorskip("celery")
    folder = tmp_path_factory.mktemp(f"compat-{impl}")
    env = {"MINIQ_COMPAT_IMPL": impl, "COMPAT_DIR": str(folder),
           "MINIQ_BROKER_URL": f"sqlite:///{folder / 'compat.db'}"}
    module = import_for(impl, env)
    assert module.impl.__name__ == impl
    worker_env = dict(os.environ, **env)
    worker_env["PYTHONPATH"] = ROOT + os.pathsep + worker_env.get("PYTHONPATH", "")
    log_path = folder / "worker.log"
    with open(log_path, "w") as log:
        worker = subprocess.Popen([sys.executable, *WORKERS[impl]], cwd=ROOT, env=worker_env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:  # ready when it has run something
            assert module.add.delay(0, 0).get(timeout=T) == 0
        except Exception:
            pytest.fail(f"{impl} worker did not run a task:\n{log_path.read_text()[-3000:]}")
        yield impl, module
    finally:
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait(30)
        sys.modules.pop(MODULE, None)


def raised(call):
    """The call's value, or the name of the exception type it raised."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - the type is what we compare
        return f"raised {type(exc).__name__}"


def delay_and_get(c):
    return c.add.delay(2, 3).get(timeout=T)


def bind_sees_its_request_id(c):
    result = c.whoami.delay()
    return result.get(timeout=T) == result.id


def retry_runs_again(c):
    return c.flaky.delay().get(timeout=T)


def retry_gives_up_after_max_retries(c):
    return raised(lambda: c.always_retry.delay().get(timeout=T))


def soft_limit_is_caught_by_the_task(c):
    return c.polite.delay().get(timeout=T)


def hard_limit_raises_time_limit_exceeded(c):
    with pytest.raises(c.TimeLimitExceeded):
        c.stubborn.delay().get(timeout=T)
    return "TimeLimitExceeded"


def failure_comes_back_as_its_type(c):
    with pytest.raises(ValueError, match="as expected"):
        c.fail.delay().get(timeout=T)
    return "ValueError"


def soft_limit_above_hard_limit_is_refused(c):
    return raised(lambda: c.contradictory.delay())


def chain_passes_results_on(c):
    return c.chain(c.add.s(1, 2), c.add.s(3), c.add.s(4)).apply_async().get(timeout=T)


def group_collects_results_in_order(c):
    return c.group(c.add.s(i, i) for i in range(4)).apply_async().get(timeout=T)


SCENARIOS = [
    (delay_and_get, 5),
    (bind_sees_its_request_id, True),
    (retry_runs_again, 2),
    (retry_gives_up_after_max_retries, "raised MaxRetriesExceededError"),
    (soft_limit_is_caught_by_the_task, "cleaned up"),
    (hard_limit_raises_time_limit_exceeded, "TimeLimitExceeded"),
    (failure_comes_back_as_its_type, "ValueError"),
    (soft_limit_above_hard_limit_is_refused, "raised ValueError"),
    (chain_passes_results_on, 10),
    (group_collects_results_in_order, [0, 2, 4, 6]),
]


@pytest.mark.parametrize("scenario, expected", SCENARIOS, ids=[s.__name__ for s, _ in SCENARIOS])
def test_the_same_module_gives_the_same_result(api, scenario, expected):
    impl, module = api
    assert scenario(module) == expected, impl
