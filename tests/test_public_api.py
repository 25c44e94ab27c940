"""miniq's public surface: the names ``__all__`` promises, their docstrings, a
package that imports nothing beyond the standard library (it is meant to be vendored),
and one clear line, not a traceback, on a Python older than 3.9."""
import ast
import glob
import importlib
import inspect
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import sysconfig
import typing

import pytest

import miniq
from tests import tasks
from tests.conftest import ROOT, wait_for

PACKAGE = os.path.dirname(os.path.abspath(miniq.__file__))
PUBLIC = [
    "AsyncResult", "Celery", "ChordError", "EagerResult", "GroupResult",
    "MaxRetriesExceededError", "Miniq", "MiniqError", "NotRegistered", "Retry",
    "Signature", "SoftTimeLimitExceeded", "Task", "TaskRevokedError", "TimeLimitExceeded",
    "TimeoutError", "WorkerLostError", "chain", "chord", "chunks", "current_app", "current_task",
    "exceptions", "group", "maybe_signature", "shared_task", "signature", "states", "subtask",
    "uuid",
]


def test_all_is_pinned():
    assert sorted(miniq.__all__) == PUBLIC
    assert len(miniq.__all__) == len(set(miniq.__all__))


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_exists_and_classes_and_functions_have_a_docstring(name):
    value = getattr(miniq, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        assert (value.__doc__ or "").strip(), f"miniq.{name} has no docstring"


SIGNALS = [  # Celery's names, of the signals miniq sends
    "after_setup_logger", "after_setup_task_logger", "after_task_publish", "beat_embedded_init",
    "beat_init", "before_task_publish", "celeryd_after_setup", "celeryd_init", "heartbeat_sent", "import_modules", "setup_logging",
    "task_failure", "task_postrun", "task_prerun", "task_received", "task_retry", "task_revoked",
    "task_success", "task_unknown", "worker_before_create_process", "worker_init",
    "worker_process_init", "worker_process_shutdown", "worker_ready", "worker_shutdown",
    "worker_shutting_down",
]


def test_signals_are_a_module_of_celerys_signal_names():
    from miniq import signals  # a module beside the package's names, as celery.signals
    sent = sorted(name for name, value in vars(signals).items()
                  if isinstance(value, signals.Signal))
    assert sent == SIGNALS == sorted(signals.__all__[1:]) and signals.__all__[0] == "Signal"
    assert all(getattr(signals, name).name == name for name in sent)
    assert "signals" not in miniq.__all__  # not in Celery's either


def test_star_import_gives_exactly_all():
    namespace = {}
    exec("from miniq import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


def test_every_exception_has_celerys_base_class():
    # as Celery's: its broker's error and its pool's are not CeleryErrors
    apart = {"OperationalError", "SoftTimeLimitExceeded", "TimeLimitExceeded", "WorkerLostError"}
    for name in miniq.exceptions.__all__:  # and its warnings, Celery's CeleryWarning
        base = miniq.exceptions.CeleryWarning if name.endswith(("Warning", "Ignored")) else (
            Exception if name in apart else miniq.MiniqError)
        assert issubclass(getattr(miniq.exceptions, name), base), name
        assert (name in apart) != issubclass(getattr(miniq.exceptions, name),
                                             (miniq.MiniqError, Warning)), name
    assert issubclass(miniq.NotRegistered, KeyError)  # as Celery's


def imported_modules(path):
    """Every absolute import in a file, top level or inside functions."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def stdlib_module_names():
    """Top-level names of the standard library (sys.stdlib_module_names is new in 3.10)."""
    if hasattr(sys, "stdlib_module_names"):
        return set(sys.stdlib_module_names)
    stdlib = sysconfig.get_paths()["stdlib"]  # the base interpreter's, also in a venv
    found = pkgutil.iter_modules([stdlib, os.path.join(stdlib, "lib-dynload")])
    return set(sys.builtin_module_names) | {module.name for module in found}


def test_package_imports_only_the_standard_library():
    stdlib = stdlib_module_names()
    assert {"json", "sqlite3", "select"} <= stdlib and "pytest" not in stdlib
    files = sorted(os.path.relpath(os.path.join(folder, f), PACKAGE)
                   for folder, _, names in os.walk(PACKAGE) for f in names if f.endswith(".py"))
    assert "worker.py" in files and os.path.join("utils", "log.py") in files
    outside = [(f, m) for f in files for m in imported_modules(os.path.join(PACKAGE, f))
               if m.split(".")[0] not in stdlib]
    # but the project's own Django, only where DJANGO_SETTINGS_MODULE says it is one
    assert [(f, m) for f, m in outside if (f, m.split(".")[0]) != ("fixups.py", "django")] == []


def old_python(version):
    """pyenv's newest interpreter of a minor version, or None when there is none."""
    pyenv = shutil.which("pyenv")
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
    found = glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", "python"))

    def release(path):  # .../versions/3.8.18/bin/python → [3, 8, 18]
        return [int(n) for n in re.findall(r"\d+", path.split(os.sep)[-3])]
    return max(found, key=release, default=None)


@pytest.mark.parametrize("version", ["3.6", "3.7", "3.8"])
def test_an_older_python_is_refused_in_one_line(version, tmp_path):
    python = old_python(version)
    if python is None:
        pytest.skip(f"no Python {version} under pyenv")
    env = dict(os.environ, PYTHONPATH=ROOT)
    imported = subprocess.run([python, "-c", "import miniq"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
    last = imported.stderr.strip().splitlines()[-1]
    assert imported.returncode == 1
    needs = rf"miniq needs Python 3\.9 or newer, not {version}\.\d+"
    assert re.fullmatch(f"ImportError: {needs}", last), imported.stderr
    command = subprocess.run([python, "-m", "miniq", "-A", "proj", "worker"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=60)
    assert command.returncode == 1
    lines = command.stderr.strip().splitlines()
    assert len(lines) == 1, command.stderr  # no traceback: runpy prints the message alone
    assert re.search(rf"\(ImportError: {needs}\)$", lines[0]), command.stderr


def test_celery_s_states_and_task_logger_are_where_task_modules_look(app, start_worker):
    from miniq import states
    assert states.READY_STATES == {"SUCCESS", "FAILURE", "REVOKED"}
    assert states.PROPAGATE_STATES <= states.EXCEPTION_STATES <= states.ALL_STATES
    assert states.ALL_STATES == {"PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE",
                                 "RETRY", "REVOKED"}  # Celery's: not IGNORED or REJECTED
    # as Celery's: a custom state ranks below SUCCESS and FAILURE, above the others
    assert states.state(states.PENDING) < states.state(states.SUCCESS)
    assert states.state("PROGRESS") > states.state(states.STARTED)
    assert not states.state("PROGRESS") > states.state(states.SUCCESS)
    assert states.state(states.RETRY) >= states.state(states.PENDING) >= "PENDING"
    assert [states.precedence(s) for s in ("SUCCESS", "PROGRESS", "PENDING")] == [0, 2, 8]
    worker = start_worker("-c", "1")
    result = tasks.log_line.delay("a line")
    assert result.get(timeout=20) == states.SUCCESS
    wait_for(lambda: f"a line from {result.id}" in worker.output(), message="the task's log line")


def test_the_package_gives_its_signals_and_schedules_as_celerys_does():
    """Celery's guide writes ``import celery`` then ``@celery.signals.<signal>.connect``."""
    shown = subprocess.run(
        [sys.executable, "-c", "import miniq; print(miniq.signals.after_setup_logger.name,"
         " miniq.schedules.crontab.__name__); miniq.nothing"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert shown.stdout == "after_setup_logger crontab\n"
    assert "AttributeError: module 'miniq' has no attribute 'nothing'" in shown.stderr


@pytest.mark.parametrize("impl", ["miniq", "celery"])
def test_tasks_results_and_signatures_take_type_parameters_as_celerys_do(impl):
    """Typed projects write ``class Base(Task[Any, Any])`` and ``-> AsyncResult[int]``."""
    package = importlib.import_module(impl) if impl == "miniq" else pytest.importorskip(impl)
    if not hasattr(package.Task, "__class_getitem__"):
        pytest.skip("Celery before 5.7 takes no type parameters")

    class Base(package.Task[typing.Any, typing.Any]):
        abstract = True

    assert Base.__mro__[1] is package.Task
    results = importlib.import_module(f"{impl}.result")
    assert typing.get_origin(results.AsyncResult[int]) is results.AsyncResult
    assert typing.get_args(package.Signature[int]) == (int,)
