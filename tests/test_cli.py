"""``python -m miniq ... worker`` as a user types it: bad setup ends in one clear
line on stderr and exit status 2; the ``-A`` forms load an app from the current folder."""
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli, wait_for


def worker_cli(*args, broker_url=None, cwd=ROOT):
    env = {"MINIQ_BROKER_URL": broker_url} if broker_url else None
    return run_cli(*args, "worker", "-c", "1", env=env, cwd=cwd)


def assert_setup_error(proc, *fragments):
    """Exit 2 and one line, ``miniq: error: ...``, naming what is wrong; no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stdout == ""  # no banner either
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("miniq: error: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], proc.stderr


# 12. bad setup ---------------------------------------------------------------------------

def test_app_module_that_does_not_exist():
    proc = worker_cli("-A", "no_such_miniq_app")
    assert_setup_error(proc, "cannot import", "'no_such_miniq_app'")


def test_app_module_whose_import_fails(tmp_path):
    (tmp_path / "brokenapp.py").write_text("import no_such_dependency_of_miniq\n")
    proc = worker_cli("-A", "brokenapp", cwd=tmp_path)
    assert_setup_error(proc, "'brokenapp'", "no_such_dependency_of_miniq")


def test_module_that_holds_no_app(tmp_path):
    (tmp_path / "noapp.py").write_text("value = 1\n")
    proc = worker_cli("-A", "noapp", cwd=tmp_path)
    assert_setup_error(proc, "'noapp'", "not a miniq app")


def test_database_folder_that_does_not_exist(tmp_path):
    folder = tmp_path / "missing"
    proc = worker_cli("-A", "tests.tasks", broker_url=f"sqlite:///{folder}/x.db")
    assert_setup_error(proc, str(folder), "does not exist")
    assert not folder.exists()


def test_database_folder_that_is_not_writable(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        if os.access(folder, os.W_OK):  # root writes anyway: a regular file as the folder
            folder = tmp_path / "afile"  # fails for everyone
            folder.write_text("")
        proc = worker_cli("-A", "tests.tasks", broker_url=f"sqlite:///{folder}/x.db")
        assert_setup_error(proc, str(folder))
    finally:
        (tmp_path / "locked").chmod(0o700)


def test_broker_url_that_is_not_sqlite():
    proc = worker_cli("-A", "tests.tasks", broker_url="redis://localhost:6379/0")
    assert_setup_error(proc, "'redis://localhost:6379/0'", "not supported")


def test_missing_app_option_is_a_usage_error():
    proc = run_cli("worker")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("usage: miniq") and "-A/--app" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_concurrency_that_is_not_a_positive_integer_is_a_usage_error(value):
    proc = run_cli("-A", "tests.tasks", "worker", "-c", value)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: miniq worker"), proc.stderr
    assert proc.stderr.splitlines()[-1] == ("miniq worker: error: argument -c/--concurrency:"
                                            f" must be a positive integer, not '{value}'")


def test_worker_help_explains_every_option():
    proc = run_cli("worker", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "least severe messages logged (default: WARNING)" in proc.stdout
    assert "how children start (default: fork on Linux)" in proc.stdout


def test_worker_prints_a_banner_at_the_default_log_level(app, broker_url, start_worker):
    worker = start_worker("-c", "1", "-Q", "a,b", "--loglevel", "warning", ready=False)
    out = wait_for(lambda: "[tasks]" in worker.output() and worker.output(), message="the banner")
    path = broker_url[len("sqlite:///"):]
    assert out.splitlines()[:5] == ["miniq worker for tests.tasks", f"  database:    {path}",
                                    "  concurrency: 1", "  queues:      a,b", "[tasks]"]
    assert "  . tests.tasks.add\n" in out and "  . tests.tasks.wait_for_gate\n" in out
    assert "ready" not in out  # the INFO log line stays quiet at WARNING
    assert app.tasks["tests.tasks.add"].apply_async((2, 2), queue="b").get(timeout=30) == 4


# -A forms, from the current folder ----------------------------------------------------------

PROJ = """
from miniq import Miniq
app = Miniq("myproj", broker="sqlite:///miniq.db")  # relative: beside this module

@app.task
def add(x, y):
    return x + y
"""


@pytest.mark.parametrize("option, spec", [("--app", "myproj:app"), ("-A", "myproj.app"), ("-A", "myproj")])
def test_app_option_forms_load_the_app(app, tmp_path, option, spec):
    (tmp_path / "myproj.py").write_text(PROJ)
    log_path = tmp_path / "worker.log"
    env = dict(os.environ, PYTHONPATH=ROOT)
    with open(log_path, "w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "miniq", option, spec, "worker", "-c", "1", "-l", "info"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "ready" in log_path.read_text() or worker.poll() is not None,
                 message="worker ready")
        assert worker.poll() is None, log_path.read_text()
        # app is tests.tasks' app on tmp_path/miniq.db: the file the worker found by itself
        assert app.send_task("myproj.add", (2, 3)).get(timeout=30) == 5
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
