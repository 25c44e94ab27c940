"""Cost as work grows: miniq's claim and drain with a deep queue, with many tasks
scheduled for later, and the file's size under steady load with results expiring.

    python benchmarks/scale.py            # prints one JSON line (a few minutes)
    python benchmarks/scale.py --quick    # a tenth of the counts, for a smoke run
    python benchmarks/bench.py --scale    # these figures too, as "miniq_scale"

    deep_*            claim p50/p99 (ms, one task a claim, in-process through the
                      broker) and drain (a worker -c 2, the first `drained` tasks) with
                      `queued` tasks waiting
    scheduled_*       the same with `scheduled` tasks due in an hour queued ahead of
                      `due` tasks due now
    steady_*          file and WAL size (bytes) after `sent` tasks sent as fast as a
                      worker -c 2 drains them, with result_expires=10, then 15 s idle;
                      the rows left, and the manager's RSS before and after (KiB)

Each part runs in a temp dir of its own, removed afterwards. Machines are shared
and noisy: compare within one run.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from miniq import Miniq, group  # noqa: E402

APP = """
from miniq import Miniq
app = Miniq("scale", broker="sqlite:///scale.db", result_expires={expires})
@app.task
def noop(x=None):
    return x
"""


def make_app(folder, expires=None):
    with open(os.path.join(folder, "scaleapp.py"), "w") as f:
        f.write(APP.format(expires=expires))
    app = Miniq("scale", broker=f"sqlite:///{folder}/scale.db", result_expires=expires)

    @app.task(name="scaleapp.noop")
    def noop(x=None):
        return x
    return app, noop


def send_batches(noop, count, **options):
    """count tasks in batches of 10,000, each batch one transaction."""
    for start in range(0, count, 10000):
        calls = [noop.s(i).set(**options) if options else noop.s(i)
                 for i in range(start, min(count, start + 10000))]
        group(calls).apply_async()


def claim_latency(app, claims=1000):
    """p50 and p99 (ms) of claiming one task at a time, as a worker manager does."""
    broker, times = app.broker, []
    broker.register("scale-bench", "host", os.getpid(), 1, ["celery"], "machine")
    for _ in range(claims):
        t = time.perf_counter()
        claimed = broker.claim("scale-bench", ["celery"], 1, 60.0)
        times.append((time.perf_counter() - t) * 1000)
        assert claimed, "nothing to claim"
    q = statistics.quantiles(times, n=100)
    return round(q[49], 3), round(q[98], 3)


def start_worker(folder):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([folder, ROOT]), TMPDIR=folder)
    return subprocess.Popen([sys.executable, "-m", "miniq", "-A", "scaleapp", "worker", "-c", "2",
                             "-l", "warning"], cwd=folder, env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop_worker(proc):
    os.killpg(proc.pid, 15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def done_count(app):
    return app.broker.db.execute("SELECT COUNT(*) FROM task WHERE status = 2").fetchone()[0]


def drain_rate(app, folder, count):
    """Tasks a second a worker finishes, over the first count of them."""
    proc = start_worker(folder)
    try:
        started = time.perf_counter()
        while done_count(app) < count:
            time.sleep(0.05)
        return round(count / (time.perf_counter() - started))
    finally:
        stop_worker(proc)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def in_folder(part):
    def run(*args):
        folder = tempfile.mkdtemp(prefix="miniq-scale-")
        saved = tempfile.tempdir
        tempfile.tempdir = folder  # the producer's wake-up hints go where the worker listens
        try:
            return part(folder, *args)
        finally:
            tempfile.tempdir = saved
            shutil.rmtree(folder, ignore_errors=True)
    return run


@in_folder
def deep(folder, queued, drained):
    app, noop = make_app(folder)
    send_batches(noop, queued)
    p50, p99 = claim_latency(app)
    return {"deep_queued": queued, "deep_claim_p50_ms": p50, "deep_claim_p99_ms": p99,
            "deep_drained": drained, "deep_drain_per_s": drain_rate(app, folder, drained)}


@in_folder
def scheduled(folder, later, due):
    app, noop = make_app(folder)
    send_batches(noop, later, countdown=3600)
    send_batches(noop, due)
    p50, p99 = claim_latency(app)
    return {"scheduled": later, "scheduled_due": due, "scheduled_claim_p50_ms": p50,
            "scheduled_claim_p99_ms": p99,
            "scheduled_drain_per_s": drain_rate(app, folder, due // 2)}


@in_folder
def steady(folder, sent):
    app, noop = make_app(folder, expires=10)
    proc = start_worker(folder)
    try:
        noop.delay(0).get(timeout=30)
        before = rss_kib(proc.pid)
        for start in range(0, sent, 2000):  # at full speed: keep the worker busy
            results = group(noop.s(i) for i in range(2000)).apply_async()
            results.results[-1].get(timeout=120)
        time.sleep(15)
        path = app.broker.path
        sizes = {suffix: os.path.getsize(path + suffix) if os.path.exists(path + suffix) else 0
                 for suffix in ("", "-wal")}
        rows = app.broker.db.execute("SELECT COUNT(*) FROM task").fetchone()[0]
        return {"steady_sent": sent, "steady_result_expires_s": 10,
                "steady_file_bytes": sizes[""], "steady_wal_bytes": sizes["-wal"],
                "steady_rows_left": rows, "manager_rss_kib_before": before,
                "manager_rss_kib_after": rss_kib(proc.pid)}
    finally:
        stop_worker(proc)


def measure(k=1):
    """Every figure, with the counts divided by k."""
    return {**deep(1_000_000 // k, 20_000 // k), **scheduled(200_000 // k, 20_000 // k),
            **steady(100_000 // k)}


if __name__ == "__main__":
    print(json.dumps(measure(10 if "--quick" in sys.argv else 1)))
