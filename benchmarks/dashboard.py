"""Does a running dashboard slow the workers? Drains of no-op tasks with and without it.

    python benchmarks/dashboard.py            # 10,000 tasks, 5 runs each way, alternating
    python benchmarks/dashboard.py --quick    # 2,000 tasks, 2 runs each way (a smoke run)

Each run: a fresh database with n no-op tasks queued, then a worker (-c 2) starts and
drains them. In the runs "with", a ``miniq dashboard`` serves the same file and a
client polls what the page polls, the overview and the task list, once a second.
The drain rate is n over the time from the first task's start to the last one's
finish, as the database recorded them (worker start-up is not counted).

Prints one JSON line: the rates of each run, their medians, and the ratio
with/without (1.0: no cost; the target is at least 0.95); the time the API took to
answer; and the CPU the dashboard process used during the drains "with", as a
percentage of one core (Linux: from /proc), a figure the machine's noise does not blur.
Runs alternate so a noisy machine hurts both sides alike; every process started here
is killed at the end.
"""
import argparse
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, ROOT)  # this checkout's miniq, installed or not

APP = """
from miniq import Miniq
app = Miniq("dashapp")  # the broker: MINIQ_BROKER_URL, one file a run
@app.task
def noop(x=None):
    return x
"""


def start(folder, *args):
    """A ``python -m miniq -A dashapp ...`` process in its own group, logging to a file."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join((folder, ROOT)))
    log = open(os.path.join(folder, f"{args[0]}.log"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "miniq", "-A", "dashapp", *args], cwd=folder,
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    return proc


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)
    proc.log.close()


def dashboard_url(proc, deadline=20.0):
    """The URL the dashboard prints once it listens."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        proc.log.seek(0)
        found = re.search(r"http://\S+/", proc.log.read())
        if found:
            return found[0]
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError("the dashboard did not start")


def poll(url, stop_event, counts):
    """What the page asks for, once a second: the overview and the task list."""
    while not stop_event.wait(1.0):
        for path in ("api/overview", "api/tasks?limit=50"):
            started = time.perf_counter()
            with urllib.request.urlopen(url + path, timeout=10) as response:
                response.read()
            counts.append(time.perf_counter() - started)


def cpu_seconds(pid):
    """User and system CPU seconds a process used so far; None where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(folder, app, n, run, with_dashboard):
    """(tasks a second, poll times, dashboard CPU seconds, drain seconds) of one drain."""
    db = os.path.join(folder, f"run{run}.db")
    os.environ["MINIQ_BROKER_URL"] = app.conf.broker_url = f"sqlite:///{db}"
    from miniq import group
    group(app.tasks["dashapp.noop"].s(i) for i in range(n)).apply_async()
    started, stopping, polls = [], threading.Event(), []
    if with_dashboard:
        started.append(start(folder, "dashboard", "--port", "0"))
        poller = threading.Thread(target=poll, args=(dashboard_url(started[0]), stopping, polls))
        poller.start()
        cpu_before = cpu_seconds(started[0].pid)
    try:
        started.append(start(folder, "worker", "-c", "2", "--loglevel", "warning"))
        reader = sqlite3.connect(db)
        while reader.execute("SELECT COUNT(*) FROM task WHERE status = 2").fetchone()[0] < n:
            time.sleep(0.1)
        first, last = reader.execute("SELECT MIN(started), MAX(finished) FROM task").fetchone()
        reader.close()
        used = with_dashboard and cpu_seconds(started[0].pid)
        used = used and used - cpu_before
    finally:
        stopping.set()
        if with_dashboard:
            poller.join()
        for proc in started:
            stop(proc)
    return round(n / (last - first)), polls, used or 0.0, last - first


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 tasks, 2 runs each way")
    parser.add_argument("-n", type=int, help="tasks a drain (default 10,000)")
    parser.add_argument("--runs", type=int, help="runs each way (default 5)")
    options = parser.parse_args()
    n = options.n or (2000 if options.quick else 10000)
    runs = options.runs or (2 if options.quick else 5)
    with tempfile.TemporaryDirectory(prefix="miniq-dash-bench-") as folder:
        with open(os.path.join(folder, "dashapp.py"), "w") as f:
            f.write(APP)
        sys.path.insert(0, folder)
        from dashapp import app
        rates, requests, cpu, seconds = {"without": [], "with": []}, [], 0.0, 0.0
        for run in range(2 * runs):
            side = ("without", "with")[run % 2]
            rate, polls, used, took = drain(folder, app, n, run, side == "with")
            rates[side].append(rate)
            requests += polls
            cpu, seconds = cpu + used, seconds + took * (side == "with")
        app.broker.close()
    without, with_ = statistics.median(rates["without"]), statistics.median(rates["with"])
    print(json.dumps({"tasks": n, "runs_each": runs, "without_per_s": rates["without"],
                      "with_per_s": rates["with"], "median_without_per_s": without,
                      "median_with_per_s": with_, "ratio": round(with_ / without, 3),
                      "requests": len(requests),
                      "request_ms_p50": round(1000 * statistics.median(requests or [0]), 1),
                      "request_ms_max": round(1000 * max(requests or [0]), 1),
                      "dashboard_cpu_percent": round(100 * cpu / seconds, 1)}))


if __name__ == "__main__":
    main()
