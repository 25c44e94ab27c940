"""miniq's public surface: the names ``__all__`` promises, their docstrings, and a
package that imports nothing beyond the standard library (it is meant to be vendored)."""
import ast
import inspect
import os
import pkgutil
import sys
import sysconfig

import pytest

import miniq

PACKAGE = os.path.dirname(os.path.abspath(miniq.__file__))
PUBLIC = [
    "AsyncResult", "Celery", "ChordError", "EagerResult", "GroupResult",
    "MaxRetriesExceededError", "Miniq", "MiniqError", "NotRegistered", "Retry",
    "Signature", "SoftTimeLimitExceeded", "Task", "TaskRevokedError", "TimeLimitExceeded",
    "TimeoutError", "WorkerLostError", "chain", "chord", "exceptions", "group", "signature",
]


def test_all_is_pinned():
    assert sorted(miniq.__all__) == PUBLIC
    assert len(miniq.__all__) == len(set(miniq.__all__))


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_exists_and_classes_and_functions_have_a_docstring(name):
    value = getattr(miniq, name)
    if inspect.isclass(value) or inspect.isfunction(value):
        assert (value.__doc__ or "").strip(), f"miniq.{name} has no docstring"


def test_star_import_gives_exactly_all():
    namespace = {}
    exec("from miniq import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


def test_every_exception_has_one_base_class():
    for name in miniq.exceptions.__all__:
        assert issubclass(getattr(miniq.exceptions, name), miniq.MiniqError), name
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
    files = sorted(f for f in os.listdir(PACKAGE) if f.endswith(".py"))
    assert "worker.py" in files
    outside = [(f, m) for f in files for m in imported_modules(os.path.join(PACKAGE, f))
               if m.split(".")[0] not in stdlib]
    assert outside == []
