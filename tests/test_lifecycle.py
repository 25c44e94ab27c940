"""The worker command's life: shutdown, start methods, sharing a file, bad
setup (issue 2, points 9-12), and the public names."""
import ast
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

import miniq
from miniq import exceptions
from tests import tasks
from tests.conftest import ROOT, run_cli, wait_for


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# 9. warm and cold shutdown ------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_warm_shutdown_finishes_running_tasks_and_leaves_the_queue(app, start_worker, signum):
    worker = start_worker("-c", "1")
    running = tasks.sleep.delay(1.0, "finished")
    wait_for(lambda: running.state == "STARTED", message="task started")
    queued = tasks.add.delay(1, 1)
    children = worker.children()
    worker.signal(signum)
    assert worker.wait(30) == 0
    assert running.get(timeout=1) == "finished"
    assert queued.state == "PENDING"
    wait_for(lambda: all(gone(pid) for pid in children), timeout=10, message="children gone")


def test_second_signal_is_a_cold_shutdown_that_requeues(app, start_worker):
    worker = start_worker("-c", "1")
    running = tasks.sleep.delay(30, "second run")
    wait_for(lambda: running.state == "STARTED", message="task started")
    children = worker.children()
    worker.signal(signal.SIGTERM)
    wait_for(lambda: "ready" in worker.output(), timeout=5)
    time.sleep(0.2)  # let the first signal land before the second
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) != 0
    wait_for(lambda: all(gone(pid) for pid in children), timeout=10, message="children gone")
    row = app.broker.db.execute("SELECT status, state FROM task WHERE id = ?",
                                (running.id,)).fetchone()
    assert row == (0, "PENDING")


def test_group_wide_sigterm_is_still_a_warm_shutdown(app, start_worker):
    """systemd signals the whole group: children must not die under the manager."""
    worker = start_worker("-c", "1")
    running = tasks.sleep.delay(1.0, "finished")
    wait_for(lambda: running.state == "STARTED", message="task started")
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(30) == 0
    assert running.get(timeout=1) == "finished"


# 10. start methods ------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_children_work_under_every_start_method(app, start_worker, method):
    worker = start_worker("-c", "2", "--start-method", method)
    assert tasks.add.delay(2, 2).get(timeout=60) == 4
    assert tasks.soft_catch.delay(5).get(timeout=60) == "cleaned up"
    with pytest.raises(exceptions.TimeLimitExceeded):
        tasks.busy_loop.delay().get(timeout=60)
    child = tasks.pid.delay().get(timeout=60)  # under forkserver, not the manager's child
    assert child != worker.pid and os.getpgid(child) == worker.pid
    assert f"({method})" in worker.output()


# 11. two workers, one file ------------------------------------------------------------------------

def test_two_workers_share_the_work_each_task_once(app, start_worker, tmp_path):
    record = tmp_path / "runs.txt"
    results = [tasks.record.delay(str(record), i) for i in range(2000)]
    first, second = start_worker("-c", "2"), start_worker("-c", "2")
    for result in results:
        result.get(timeout=120)
    lines = record.read_text().split()
    runs = Counter(lines[0::2])
    assert len(runs) == 2000 and set(runs.values()) == {1}
    pids = {int(p) for p in lines[1::2]}
    assert pids & set(first.children()) and pids & set(second.children())


# 12. bad setup: one line, exit 2 ---------------------------------------------------------------------

def assert_one_clear_line(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert fragment in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_missing_app_module(tmp_path):
    proc = run_cli("-A", "no_such_module_here", "worker")
    assert_one_clear_line(proc, "cannot import app module 'no_such_module_here'")


def test_module_without_an_app(tmp_path):
    (tmp_path / "plain.py").write_text("x = 1\n")
    proc = run_cli("-A", "plain", "worker", cwd=tmp_path)
    assert_one_clear_line(proc, "not a miniq app")


@pytest.mark.parametrize("url, fragment", [
    ("sqlite:////nonexistent-folder-for-miniq/x.db", "does not exist"),
    ("redis://localhost:6379/0", "not supported"),
])
def test_unusable_broker_urls(tmp_path, url, fragment):
    proc = run_cli("-A", "tests.tasks", "worker", env={"MINIQ_BROKER_URL": url})
    assert_one_clear_line(proc, fragment)


def test_database_folder_not_writable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a file where a folder should be fails even for root
    proc = run_cli("-A", "tests.tasks", "worker",
                   env={"MINIQ_BROKER_URL": f"sqlite:///{blocker}/x.db"})
    assert_one_clear_line(proc, "does not exist")
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    if os.access(folder, os.W_OK):
        pytest.skip("running as root: permissions do not stop writes")
    proc = run_cli("-A", "tests.tasks", "worker", env={"MINIQ_BROKER_URL": f"sqlite:///{folder}/x.db"})
    assert_one_clear_line(proc, "cannot create database")


def test_missing_app_option_is_a_usage_error():
    proc = run_cli("worker")
    assert proc.returncode == 2 and "-A/--app" in proc.stderr


@pytest.mark.parametrize("spec", ["proj:app", "proj.app", "proj"])
def test_app_paths_and_relative_urls_from_the_current_folder(tmp_path, spec):
    (tmp_path / "proj.py").write_text(
        "from miniq import Miniq\napp = Miniq('proj', broker='sqlite:///proj.db')\n"
        "@app.task\ndef add(x, y):\n    return x + y\n")
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("MINIQ_BROKER_URL", None)
    worker = subprocess.Popen([sys.executable, "-m", "miniq", "-A", spec, "worker", "-c", "1"],
                              cwd=tmp_path, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        code = ("import sys; sys.path.insert(0, '.'); import proj; "
                "print(proj.add.delay(2, 3).get(timeout=30))")
        out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == "5", out.stderr
        assert (tmp_path / "proj.db").exists()
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)


# public names ------------------------------------------------------------------------------------------

def test_public_names_are_pinned():
    assert sorted(miniq.__all__) == sorted([
        "Miniq", "Celery", "Task", "Signature", "signature", "chain", "group", "chord",
        "AsyncResult", "EagerResult", "GroupResult", "exceptions", "MiniqError",
        "SoftTimeLimitExceeded", "TimeLimitExceeded", "WorkerLostError", "TimeoutError",
        "NotRegistered", "Retry", "MaxRetriesExceededError", "TaskRevokedError", "ChordError"])
    for name in miniq.__all__:
        value = getattr(miniq, name)
        assert value.__doc__, f"{name} has no docstring"


def test_exception_tree_has_one_base():
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.MiniqError)
    assert issubclass(exceptions.NotRegistered, KeyError)


@pytest.mark.skipif(sys.version_info < (3, 10), reason="sys.stdlib_module_names is 3.10+")
def test_package_imports_only_the_standard_library():
    folder = os.path.join(ROOT, "miniq")
    for name in os.listdir(folder):
        if name.endswith(".py"):
            tree = ast.parse(open(os.path.join(folder, name)).read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    assert module.split(".")[0] in sys.stdlib_module_names, (name, module)
