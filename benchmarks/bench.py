"""Throughput, latency, idle cost and memory of miniq, with Celery + Redis and Huey beside it.

    python benchmarks/bench.py                # miniq, plus each peer importable here
    python benchmarks/bench.py --quick        # smaller counts, for a smoke run
    python benchmarks/bench.py --full         # the issue's 100,000-task memory run
    python benchmarks/bench.py --only miniq   # one system (miniq, celery or huey)
    python benchmarks/bench.py --scale        # also miniq at scale (see scale.py)

Prints one JSON line: {"machine": ..., "miniq": ..., "celery_redis": ..., "huey": ...,
"ceiling": ...}; the ceiling is the bare pipeline of ceiling.py, with miniq's drain
(medians of three drains of each, alternating) and round trip as fractions of it
(1.0: as fast as the bare pipeline);
a peer that is not installed is {"skipped": reason}, one that fails or runs out of
its time budget is {"error": ..., plus the figures measured before}. The figures:

    batch_enqueue_per_s  n tasks in one call: group(...).apply_async() (Huey: task.map)
    enqueue_per_s        n delay() calls from one producer, no worker running yet
    drain_per_s          those n no-op tasks, from the worker's start to the last result read
    drain_cpu_us_a_task  the CPU that drain took a task: the worker's main process, its
                         other processes, and the reading process (Linux only)
    rtt_p50/95/99_ms     delay(x).get(), one at a time, against the warm idle worker
    producers_4_s        4 producer processes send per_producer tasks each at once, one
                         by one, and read every result: seconds until the last is read
    idle_cpu_percent     the worker's whole process group while nothing is sent
    manager_rss_kib_*    the worker's main process before and after long_run_tasks more
    one_second_task_s    round trip of a task that sleeps 1 s (median of 3)

Each system runs the same no-op task against a real worker started from its own
command line with two worker processes (miniq -c 2, celery prefork -c 2, huey -w 2
-k process), in a temp dir that is removed afterwards. Every process started here
runs in its own process group and is killed at the end, also on error or Ctrl-C.

Peers are optional, and never imported by miniq itself: a peer runs when it imports
in the interpreter running this script. Keep them out of the project's environment
(this script finds this checkout's miniq by itself):

    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install 'celery[redis]' redis huey  # pyproject's [bench] extra
    apt-get install -y redis-server                  # Celery's broker and result backend
    /tmp/bench-venv/bin/python benchmarks/bench.py --quick

The Redis server is started here on a free loopback port, without persistence.
Machines are shared and noisy: compare systems within one run, not across runs.
"""
import argparse
import compileall
import json
import multiprocessing
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
from datetime import datetime, timezone

import ceiling  # this folder's: the bare pipeline, and how a drain's CPU is counted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, ROOT)  # this checkout's miniq, installed or not

# Each app module defines the same tasks and the same five helpers, so measure()
# does not care which system it drives. It is written into the run's temp dir.
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
def batch(n): return list(group(noop.s(i) for i in range(n)).apply_async())  # one INSERT batch
def purge(): app.broker.purge()
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
    return 1
def send(i): return noop.delay(i)
def batch(n): return list(group(noop.s(i) for i in range(n)).apply_async().results)
def purge(): app.control.purge()
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
def batch(n): return list(noop.map(range(n)))  # Huey's batch call: one enqueue per task
def purge(): huey.flush()
def slow(): return sleep1()
def value(r, timeout): return r.get(blocking=True, timeout=timeout)
WORKER = ["-m", "huey.bin.huey_consumer", "benchapp.huey", "-w", "2", "-k", "process", "-q"]
"""

SIZES = {  # tasks per figure: enqueue, batch and drain; round trips; long run; idle seconds
    "quick": dict(n=1000, trips=200, per_producer=250, long_run=5000, idle_s=3, budget_s=240),
    "default": dict(n=5000, trips=500, per_producer=2500, long_run=20000, idle_s=20,
                    budget_s=600),
    "full": dict(n=5000, trips=500, per_producer=2500, long_run=100000, idle_s=20,
                 budget_s=1800),
}


class OutOfTime(BaseException):
    """A section ran past its time budget (BaseException, so no library swallows it)."""


def _out_of_time(signum, frame):
    raise OutOfTime()


def _interrupted(signum, frame):
    raise KeyboardInterrupt()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ps_seconds(text: str) -> float:
    """ps's cumulative CPU time: [[dd-]hh:]mm:ss[.cc] (Linux and macOS spell it differently)."""
    days, _, clock = text.strip().rpartition("-")
    seconds = 0.0
    for part in clock.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds + 86400 * int(days or 0)


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in a process group."""
    if not os.path.isdir("/proc"):  # macOS: ask ps
        lines = subprocess.run(["ps", "-A", "-o", "pgid=,time="], capture_output=True,
                               text=True, check=True).stdout.splitlines()
        return sum(ps_seconds(t) for g, t in (ln.split() for ln in lines if ln.strip())
                   if int(g) == pgid)
    return sum(ceiling.group_cpu(pgid).values())


def rss_kib(pid: int) -> int:
    if not os.path.isdir("/proc"):
        return int(subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True,
                                  text=True, check=True).stdout.strip() or 0)
    with open(f"/proc/{pid}/status") as f:
        return next((int(ln.split()[1]) for ln in f if ln.startswith("VmRSS")), 0)


def kill_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group, wait up to grace seconds, then SIGKILL whatever is left."""
    for signum, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            break  # the whole group is gone
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass


class System:
    """One system under test: its app module in a temp dir, and its worker process."""

    def __init__(self, source: str, folder: str):
        self.folder = folder
        with open(os.path.join(folder, "benchapp.py"), "w") as f:
            f.write(source)
        os.chdir(folder)  # the apps name their database files relative to here
        sys.path.insert(0, folder)
        sys.modules.pop("benchapp", None)
        import benchapp
        self.app = benchapp
        self.worker = None
        self.log = os.path.join(folder, "worker.log")

    def start(self) -> None:
        # TMPDIR: miniq's wake-up sockets go in the temp dir too (the producer side is
        # pointed there by run()).
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([self.folder, ROOT]),
                   TMPDIR=self.folder)
        with open(self.log, "ab") as log:
            self.worker = subprocess.Popen([sys.executable, *self.app.WORKER], cwd=self.folder,
                                           env=env, start_new_session=True,
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=log)

    def stop(self) -> None:
        if self.worker is not None:
            kill_group(self.worker, grace=10)
            self.worker = None

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""

    def wait_all(self, results, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        for r in results:
            self.app.value(r, max(1.0, deadline - time.monotonic()))


def rate(count: int, started: float) -> int:
    return round(count / (time.perf_counter() - started))


def measure(system: System, size: dict, out: dict) -> None:
    """Fill out with each figure as soon as it is known (a timeout keeps the earlier ones)."""
    app, n = system.app, size["n"]
    app.send(-1)  # connect (and create the schema) before any clock runs, for every system
    app.purge()
    started = time.perf_counter()
    app.batch(n)
    out["batch_enqueue_per_s"] = rate(n, started)
    app.purge()  # the drain below runs exactly the n tasks sent one by one
    started = time.perf_counter()
    queued = [app.send(i) for i in range(n)]
    out["enqueue_per_s"] = rate(n, started)

    started = time.perf_counter()  # drain: from the worker's start to the last result read
    reader = os.times()
    system.start()
    system.wait_all(queued)
    out["drain_per_s"], out["drain_tasks"] = rate(n, started), n
    out["drain_cpu_us_a_task"] = ceiling.cpu_a_task(system.worker.pid, reader, n)
    if size.get("drain_only"):
        return

    for i in range(20):  # warm-up, not counted
        app.value(app.send(i), 10)
    latencies = []
    for i in range(size["trips"]):
        t = time.perf_counter()
        app.value(app.send(i), 10)
        latencies.append((time.perf_counter() - t) * 1000)
    q = statistics.quantiles(latencies, n=100)
    out.update(rtt_p50_ms=round(q[49], 2), rtt_p95_ms=round(q[94], 2), rtt_p99_ms=round(q[98], 2))
    out["producers_4_s"] = producers(system.folder, 4, size["per_producer"])

    time.sleep(1)  # idle: nothing sent, nothing running
    pgid = system.worker.pid
    before, t = group_cpu_seconds(pgid), time.perf_counter()
    time.sleep(size["idle_s"])
    spent = group_cpu_seconds(pgid) - before
    out["idle_cpu_percent"] = round(100 * spent / (time.perf_counter() - t), 2)

    out["manager_rss_kib_before"] = rss_kib(system.worker.pid)
    sent, started = 0, time.perf_counter()
    while sent < size["long_run"]:
        chunk = min(10000, size["long_run"] - sent)
        system.wait_all(app.batch(chunk))
        sent += chunk
    out["manager_rss_kib_after"] = rss_kib(system.worker.pid)
    out["long_run_tasks"], out["long_run_per_s"] = sent, rate(sent, started)

    trips = []
    for _ in range(3):
        t = time.perf_counter()
        app.value(app.slow(), 30)
        trips.append(time.perf_counter() - t)
    out["one_second_task_s"] = round(statistics.median(trips), 3)


def produce(folder: str, count: int, start) -> None:
    """One producer process: import the app, wait for the others, send count tasks one
    by one, then read every result."""
    os.chdir(folder)
    sys.path[:0] = [folder, ROOT]
    tempfile.tempdir = folder  # where miniq's worker listens for wake-up hints
    import benchapp
    start.wait()
    results = [benchapp.send(i) for i in range(count)]
    for r in results:
        benchapp.value(r, 120)


def producers(folder: str, n: int, count: int) -> float:
    """Seconds from the moment n producer processes start sending count tasks each (all
    at once, against the warm worker) to the moment the last of them read its last result."""
    ctx = multiprocessing.get_context("spawn")  # fresh processes: no connection inherited
    start = ctx.Barrier(n + 1)
    procs = [ctx.Process(target=produce, args=(folder, count, start)) for _ in range(n)]
    for proc in procs:
        proc.start()
    try:
        start.wait(60)
        started = time.perf_counter()
        for proc in procs:
            proc.join(300)
        if any(proc.exitcode != 0 for proc in procs):
            raise RuntimeError(f"a producer failed: exit codes {[p.exitcode for p in procs]}")
        return round(time.perf_counter() - started, 2)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()


def run(source: str, size: dict, setup=None) -> dict:
    """Measure one system in a fresh temp dir, within the time budget; always clean up."""
    folder = tempfile.mkdtemp(prefix="miniq-bench-")
    out, system, cleanup = {}, None, None
    saved_tmp = tempfile.tempdir
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.setitimer(signal.ITIMER_REAL, size["budget_s"])
    try:
        tempfile.tempdir = folder  # miniq's producer looks for wake-up sockets here
        cleanup = setup(folder) if setup else None
        system = System(source, folder)
        measure(system, size, out)
    except OutOfTime:
        out["error"] = f"time budget of {size['budget_s']}s ran out"
    except Exception as exc:  # a system that fails is reported, not fatal
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        # Clean up even under a second Ctrl-C: hold those signals until it is done.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            if system is not None:
                if "error" in out and system.log_tail():
                    out["worker_log"] = system.log_tail()  # why, often
                system.stop()
            if cleanup:
                cleanup()
        finally:
            tempfile.tempdir = saved_tmp
            sys.modules.pop("benchapp", None)
            if folder in sys.path:
                sys.path.remove(folder)
            os.chdir(ROOT)
            shutil.rmtree(folder, ignore_errors=True)
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
    return out


def miniq_section(size: dict) -> dict:
    import miniq
    return {"version": miniq.__version__, **run(MINIQ_APP, size)}


def celery_section(size: dict) -> dict:
    try:
        import celery
        import redis
    except ImportError as exc:
        return {"skipped": f"not importable here: {exc.name} (see the docstring)"}
    server = shutil.which("redis-server")
    if server is None:
        return {"skipped": "no redis-server on PATH (apt-get install redis-server)"}
    port = free_port()

    def setup(folder):
        proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--dir", folder],
                                cwd=folder, start_new_session=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:  # up within 10 s, or gone
            client = redis.Redis(port=port)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            client.close()
        except BaseException:
            kill_group(proc, grace=0)
            raise
        return lambda: kill_group(proc, grace=5)
    return {"version": celery.__version__, "redis_server": _redis_version(server),
            **run(CELERY_APP.format(port=port), size, setup)}


def _redis_version(server: str) -> str:
    text = subprocess.run([server, "--version"], capture_output=True, text=True).stdout
    return next((w[2:] for w in text.split() if w.startswith("v=")), text.strip())


def huey_section(size: dict) -> dict:
    try:
        import huey
    except ImportError:
        return {"skipped": "not importable here: huey (see the docstring)"}
    return {"version": huey.__version__, **run(HUEY_APP, size)}


def ceiling_section(size: dict, miniq_figures: dict) -> dict:
    """The bare pipeline's figures (ceiling.py), and miniq's as a fraction of them."""
    out = ceiling.measure(size["n"], 2, size["trips"])
    if "drain_per_s" in miniq_figures and "rtt_p50_ms" in miniq_figures:
        out["miniq_rtt_p50_fraction"] = round(out["rtt_p50_ms"] / miniq_figures["rtt_p50_ms"], 2)
        # A noisy machine drifts over the minutes between sections: the drain fraction
        # comes from drains of both, one after the other, three times each.
        ours, bare = [miniq_figures["drain_per_s"]], [out["drain_per_s"]]
        for _ in range(2):
            bare.append(ceiling.measure(size["n"], 2, 20)["drain_per_s"])
            ours.append(run(MINIQ_APP, dict(size, drain_only=True)).get("drain_per_s", 0))
        out.update(drain_runs=bare, miniq_drain_runs=ours, miniq_drain_fraction=round(
            statistics.median(ours) / statistics.median(bare), 2))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    counts = parser.add_mutually_exclusive_group()
    counts.add_argument("--quick", action="store_true", help="smaller counts, for a smoke run")
    counts.add_argument("--full", action="store_true", help="the 100,000-task memory run")
    parser.add_argument("--only", choices=("miniq", "celery", "huey"), help="one system")
    parser.add_argument("--scale", action="store_true",
                        help="also miniq's figures at scale (scale.py: a few minutes more)")
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full" if args.full else "default"]
    # Bytecode first, as pip compiles a package it installs (the peers' are): a worker then
    # starts as an installed one would, also where PYTHONDONTWRITEBYTECODE is set.
    compileall.compile_dir(os.path.join(ROOT, "miniq"), quiet=1)
    signal.signal(signal.SIGINT, _interrupted)   # even where a shell started us ignoring it
    signal.signal(signal.SIGTERM, _interrupted)  # clean up on kill as on Ctrl-C
    report = {"machine": {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(), "platform": platform.platform(),
        "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
        "load_avg_1m": round(os.getloadavg()[0], 2), **size}}
    sections = {"miniq": ("miniq", miniq_section), "celery": ("celery_redis", celery_section),
                "huey": ("huey", huey_section)}
    try:
        for key, (name, section) in sections.items():
            if args.only in (None, key):
                report[name] = section(size)
        if args.only in (None, "miniq"):
            report["ceiling"] = ceiling_section(size, report["miniq"])
        if args.scale:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import scale
            report["miniq_scale"] = scale.measure(10 if args.quick else 1)
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    print(json.dumps(report))
    if args.only is None and not args.quick:  # every system, full counts: the README's chart
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import chart
        print(f"bench: chart written to {chart.write(report)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
