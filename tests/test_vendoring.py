"""miniq copied into another package, as the README's Vendoring section says:
``myproj/_vendor/miniq``, imported by that path and run with
``python -m myproj._vendor.miniq``. Its errors come back as the copy's own
classes, not as the installed miniq's or as stand-ins."""
import importlib
import os
import shutil
import sys

import pytest

import miniq
from tests.conftest import ROOT, WorkerProcess, wait_for

TASKS = """
import time

from myproj._vendor.miniq import Miniq, signals

app = Miniq("myproj", broker={url!r})


@signals.task_failure.connect
def note_failure(sender=None, exception=None, **named):
    with open({notes!r}, "a") as f:
        f.write(f"{{sender.name}} {{type(exception).__name__}}\\n")


@app.task(time_limit=1)
def stuck():
    time.sleep(60)


@app.task
def fail():
    raise ValueError("boom")
"""


@pytest.fixture
def vendored(tmp_path, monkeypatch):
    """A tree with myproj/_vendor/miniq and myproj/tasks.py; yields myproj.tasks."""
    vendor = tmp_path / "myproj" / "_vendor"
    shutil.copytree(os.path.join(ROOT, "miniq"), vendor / "miniq",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for package in (vendor.parent, vendor):
        (package / "__init__.py").write_text("")
    url = f"sqlite:///{tmp_path / 'myproj.db'}"
    notes = str(tmp_path / "failures")
    (vendor.parent / "tasks.py").write_text(TASKS.format(url=url, notes=notes))
    monkeypatch.syspath_prepend(str(tmp_path))
    tasks = importlib.import_module("myproj.tasks")
    yield tasks
    tasks.app.broker.close()
    for name in [n for n in sys.modules if n == "myproj" or n.startswith("myproj.")]:
        del sys.modules[name]


def test_a_vendored_worker_returns_the_vendored_exceptions(vendored, tmp_path):
    exceptions = importlib.import_module("myproj._vendor.miniq.exceptions")
    assert exceptions is not miniq.exceptions
    env = dict(os.environ, PYTHONPATH=str(tmp_path), PYTHONFAULTHANDLER="1")
    args = ["-A", "myproj.tasks", "worker", "-c", "1", "-l", "info"]
    worker = WorkerProcess(args, env, tmp_path / "worker.log", cwd=tmp_path,
                           module="myproj._vendor.miniq")
    try:
        worker.wait_ready()
        assert "  . myproj.tasks.stuck\n" in worker.output()  # the copy's banner
        with pytest.raises(exceptions.TimeLimitExceeded) as killed:
            vendored.stuck.delay().get(timeout=30)
        with pytest.raises(ValueError, match="boom"):
            vendored.fail.delay().get(timeout=30)
        failures = tmp_path / "failures"  # as Celery's: task_failure after the failure is stored
        wait_for(lambda: failures.exists() and len(failures.read_text().splitlines()) >= 2,
                 message="both task_failure notes")
    finally:
        worker.kill_group()
    assert not isinstance(killed.value, miniq.exceptions.TimeLimitExceeded)  # the copy's
    # the copy's signals: task_failure from the manager (a hard limit) and from a child
    assert (tmp_path / "failures").read_text().splitlines() == [
        "myproj.tasks.stuck TimeLimitExceeded", "myproj.tasks.fail ValueError"]


def test_the_installed_command_names_the_copy_a_vendored_app_needs(vendored, tmp_path):
    """``miniq -A myproj.tasks``, the installed copy's command, finds no app of its own
    there: it says which copy's command to run."""
    with pytest.raises(miniq.exceptions.ImproperlyConfigured,
                       match="another copy of miniq: run that copy, python -m myproj._vendor.miniq"):
        miniq.app.load_app("myproj.tasks")
