"""Throughput and latency of miniq, and of Celery + Redis and Huey beside it.

    python benchmarks/bench.py            # miniq, plus each peer that is importable
    python benchmarks/bench.py --quick    # smaller counts, for a smoke run
    python benchmarks/bench.py --only miniq

Prints one JSON line. Every system runs the same no-op task with a real
worker started from its own command line at concurrency 2. Peers are
optional: `pip install -e '.[bench]'` and a `redis-server` binary on PATH
(Celery's broker and result backend are a Redis started here on loopback).
Machines are shared and noisy: compare ratios within one run.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, ROOT)  # this checkout's miniq, installed or not

MINIQ_APP = """
import time
from miniq import Miniq, group
app = Miniq("benchapp", broker="sqlite:///bench.db")
@app.task
def noop(x=None):
    return x
@app.task
def sleep1():
    time.sleep(1)
    return 1  # a value: Huey stores no None results
def send(i): return noop.delay(i)
def batch(n): return list(group(noop.s(i) for i in range(n)).apply_async())
def slow(): return sleep1.delay()
def value(r, timeout): return r.get(timeout=timeout)
WORKER = ["-m", "miniq", "-A", "benchapp", "worker", "-c", "2"]
"""

CELERY_APP = """
import time
from celery import Celery, group
app = Celery("benchapp", broker="redis://127.0.0.1:{port}/0", backend="redis://127.0.0.1:{port}/1")
app.conf.update(worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
@app.task
def noop(x=None):
    return x
@app.task
def sleep1():
    time.sleep(1)
    return 1  # a value: Huey stores no None results
def send(i): return noop.delay(i)
def batch(n): return list(group(noop.s(i) for i in range(n)).apply_async().results)
def slow(): return sleep1.delay()
def value(r, timeout): return r.get(timeout=timeout)
WORKER = ["-m", "celery", "-A", "benchapp", "worker", "-c", "2", "--pool", "prefork",
          "--loglevel", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"]
"""

HUEY_APP = """
import time
from huey import SqliteHuey
huey = SqliteHuey(filename="bench-huey.db")
@huey.task()
def noop(x=None):
    return x
@huey.task()
def sleep1():
    time.sleep(1)
    return 1  # a value: Huey stores no None results
def send(i): return noop(i)
batch = None  # Huey has no batch enqueue
def slow(): return sleep1()
def value(r, timeout): return r.get(blocking=True, timeout=timeout)
WORKER = ["-m", "huey.bin.huey_consumer", "benchapp.huey", "-w", "2", "-k", "process", "-q"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_cpu_seconds(pgid: int) -> float:
    """CPU time of every process in a process group (Linux /proc; None elsewhere)."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


class System:
    """One system under test: its app module in a temp dir, and its worker command."""

    def __init__(self, name: str, source: str, folder: str):
        self.name, self.folder = name, folder
        with open(os.path.join(folder, "benchapp.py"), "w") as f:
            f.write(source)
        sys.path.insert(0, folder)
        os.chdir(folder)
        for module in [m for m in sys.modules if m == "benchapp"]:
            del sys.modules[module]
        import benchapp
        self.app = benchapp
        self.worker = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([self.folder, ROOT]))
        self.worker = subprocess.Popen([sys.executable, *self.app.WORKER], cwd=self.folder,
                                       env=env, start_new_session=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.worker is not None:
            try:
                os.killpg(self.worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.worker.wait(10)
            self.worker = None

    def wait_all(self, results, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        for r in results:
            self.app.value(r, max(1.0, deadline - time.monotonic()))


def measure(system: System, n: int, long_run: int) -> dict:
    app, out = system.app, {}
    started = time.perf_counter()
    queued = [app.send(i) for i in range(n)]
    out["enqueue_per_s"] = round(n / (time.perf_counter() - started))
    if app.batch is not None:
        started = time.perf_counter()
        queued += app.batch(n)
        out["batch_enqueue_per_s"] = round(n / (time.perf_counter() - started))
    started = time.perf_counter()  # drain: from the worker's start to the last result read
    system.start()
    system.wait_all(queued)
    out["drain_per_s"] = round(len(queued) / (time.perf_counter() - started))
    latencies = []
    for i in range(300):
        t = time.perf_counter()
        app.value(app.send(i), 10)
        latencies.append((time.perf_counter() - t) * 1000)
    q = statistics.quantiles(latencies, n=100)
    out.update(rtt_p50_ms=round(q[49], 3), rtt_p95_ms=round(q[94], 3), rtt_p99_ms=round(q[98], 3))
    if os.path.exists("/proc"):
        before, t = group_cpu_seconds(system.worker.pid), time.perf_counter()
        time.sleep(5)  # idle: nothing sent
        spent = group_cpu_seconds(system.worker.pid) - before
        out["idle_cpu_percent"] = round(100 * spent / (time.perf_counter() - t), 2)
        out["manager_rss_kib_before"] = rss_kib(system.worker.pid)
        sent = 0
        while sent < long_run:
            chunk = min(10000, long_run - sent)
            system.wait_all(app.batch(chunk) if app.batch else [app.send(i) for i in range(chunk)])
            sent += chunk
        out["manager_rss_kib_after"] = rss_kib(system.worker.pid)
        out["long_run_tasks"] = long_run
    t = time.perf_counter()
    app.value(app.slow(), 30)
    out["one_second_task_s"] = round(time.perf_counter() - t, 3)
    return out


def run(name: str, source: str, n: int, long_run: int, setup=None) -> dict:
    folder = tempfile.mkdtemp(prefix=f"bench-{name}-")
    cleanup = setup(folder) if setup else None
    system = None
    try:
        system = System(name, source, folder)
        return measure(system, n, long_run)
    except Exception as exc:  # a peer that fails is reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if system is not None:
            system.stop()
        if cleanup:
            cleanup()
        sys.path.remove(folder) if folder in sys.path else None
        os.chdir(ROOT)
        shutil.rmtree(folder, ignore_errors=True)


def celery_peer(n: int, long_run: int) -> dict:
    try:
        import celery  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        return {"skipped": f"not installed: {exc.name}"}
    server = shutil.which("redis-server")
    if server is None:
        return {"skipped": "no redis-server on PATH"}
    port = free_port()

    def setup(folder):
        proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no"], cwd=folder, start_new_session=True,
                                stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        return lambda: (os.killpg(proc.pid, signal.SIGKILL), proc.wait(10))
    result = run("celery", CELERY_APP.format(port=port), n, long_run, setup)
    result["version"] = __import__("celery").__version__
    return result


def huey_peer(n: int, long_run: int) -> dict:
    try:
        import huey
    except ImportError:
        return {"skipped": "not installed: huey"}
    result = run("huey", HUEY_APP, n, long_run)
    result["version"] = huey.__version__
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--full", action="store_true", help="the 100,000-task memory run")
    parser.add_argument("--only", choices=("miniq", "celery", "huey"))
    args = parser.parse_args()
    n = 1000 if args.quick else 5000
    long_run = 100000 if args.full else (5000 if args.quick else 20000)
    report = {"machine": {"date": date.today().isoformat(), "cpus": os.cpu_count(),
                          "platform": platform.platform(), "python": platform.python_version(),
                          "sqlite": sqlite3.sqlite_version, "tasks": n}}
    if args.only in (None, "miniq"):
        report["miniq"] = run("miniq", MINIQ_APP, n, long_run)
    if args.only in (None, "celery"):
        report["celery_redis"] = celery_peer(n, min(long_run, 20000))
    if args.only in (None, "huey"):
        report["huey"] = huey_peer(n, min(long_run, 20000))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
