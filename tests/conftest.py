"""Fixtures: a temp database per test, and real ``python -m miniq worker`` processes."""
import contextlib
import faulthandler
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests import tasks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
faulthandler.enable()


def wait_for(predicate, timeout=20.0, interval=0.02, message="condition"):
    """Poll until predicate() is truthy; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def broker_url(tmp_path, monkeypatch):
    """A fresh database for this test, seen by the test process and its workers."""
    url = f"sqlite:///{tmp_path / 'miniq.db'}"
    monkeypatch.setenv("MINIQ_BROKER_URL", url)
    tasks.app.conf.broker_url = url
    yield url
    tasks.app.broker.close()


@pytest.fixture
def app(broker_url):
    return tasks.app


class WorkerProcess:
    """A real worker command in its own process group, killed on teardown."""

    def __init__(self, args, env, log_path, cwd=ROOT, module="miniq"):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(  # module: a vendored copy's path runs the same way
            [sys.executable, "-m", module, *args], cwd=cwd, env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        with open(self.log_path) as f:
            return f.read()

    def wait_ready(self, timeout=20.0):
        """Until this worker has registered and its log says ready."""
        wait_for(lambda: "ready" in self.output() or self.proc.poll() is not None,
                 timeout, message="worker ready")
        assert self.proc.poll() is None, self.output()
        return self

    def children(self):
        """Pids of this worker's child processes (Linux and macOS)."""
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True)
        return sorted(int(p) for p in out.stdout.split())

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout=30.0):
        return self.proc.wait(timeout)

    def stop(self, timeout=5):
        """A warm shutdown given timeout seconds, then nothing of the group is left."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill_group()

    def kill_group(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


@pytest.fixture
def start_worker(broker_url, tmp_path):
    """start_worker("-c", "2", ...) → a running WorkerProcess on this test's database."""
    started = []

    def start(*extra, app_path="tests.tasks", ready=True, env=None):
        environ = dict(os.environ, MINIQ_BROKER_URL=broker_url, PYTHONFAULTHANDLER="1")
        environ["PYTHONPATH"] = ROOT + os.pathsep + environ.get("PYTHONPATH", "")
        environ.update(env or {})
        args = ["-A", app_path, "worker", "--loglevel", "info", *extra]
        worker = WorkerProcess(args, environ, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker.wait_ready() if ready else worker

    yield start
    for worker in started:
        worker.stop()


def run_cli(*args, env=None, timeout=30, cwd=ROOT):
    """Run ``python -m miniq ...`` to completion; returns the CompletedProcess."""
    environ = dict(os.environ, **(env or {}))
    environ["PYTHONPATH"] = ROOT + os.pathsep + environ.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "miniq", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def module_worker(tmp_path_factory, name, *options):
    """(broker URL, WorkerProcess): one worker of tests.tasks with two children, on a
    database of its own, shared by a module's tests."""
    folder = tmp_path_factory.mktemp(name)
    url = f"sqlite:///{folder / 'miniq.db'}"
    env = dict(os.environ, MINIQ_BROKER_URL=url, PYTHONFAULTHANDLER="1")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = WorkerProcess(["-A", "tests.tasks", "worker", "-c", "2", *options, "--loglevel", "info"],
                         env, folder / "worker.log")
    try:
        yield url, proc.wait_ready()
    finally:
        proc.stop(5)


def app_on(worker, monkeypatch):
    """tests.tasks' app, sending to the shared worker's database for one test."""
    monkeypatch.setitem(tasks.app.conf, "broker_url", worker[0])
    yield tasks.app
    tasks.app.broker.close()


def start_dashboard(url, log_path, *options, env=None):
    """(process, its base URL): a real ``miniq dashboard`` of tests.tasks on the
    database at url, on a port the system picks; stop() it when done."""
    environ = dict(os.environ, MINIQ_BROKER_URL=url, **(env or {}))
    environ["PYTHONPATH"] = ROOT + os.pathsep + environ.get("PYTHONPATH", "")
    proc = WorkerProcess(["-A", "tests.tasks", "dashboard", "--port", "0", *options], environ,
                         log_path)
    found = wait_for(lambda: re.search(r"http://\S+/", proc.output()) or proc.proc.poll() is not None,
                     message="dashboard listening")
    if proc.proc.poll() is not None:
        proc.kill_group()
        raise AssertionError(proc.output())
    return proc, found[0]
