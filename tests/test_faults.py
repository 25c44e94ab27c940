"""Faults a hostile caller, another program or the system can cause, each against a real
worker: one bad call, row, signal or file fails alone (at the call, or as that task's
FAILURE) and never stops the worker or leaves a task waiting forever."""
import random
import signal
import subprocess
import threading
import time
from collections import Counter

import pytest

from tests import tasks
from tests.test_reliability import states


def tail(worker, chars=3000):
    return worker.output()[-chars:]


def count_rows(app, where="1", args=()):
    return app.broker.db.execute(f"SELECT COUNT(*) FROM task WHERE {where}", args).fetchone()[0]


def within(seconds, fn, *args, what=None, **kwargs):
    """fn(*args, **kwargs), failing the test if it takes longer than seconds: a call stuck on
    a locked database fails the test instead of hanging it. A stuck call's thread finishes
    once teardown has stopped the worker that holds the lock."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            box["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"{what or getattr(fn, '__qualname__', fn)} still running after "
                             f"{seconds}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def not_done(app, worker):
    """Rows not done yet, while the worker lives."""
    assert worker.proc.poll() is None, f"the worker died:\n{tail(worker)}"
    return count_rows(app, "status != 2")


def wait_done(app, worker, explain, stall=15.0, timeout=120.0, interval=0.1):
    """Until every row is done; fails once none got done for stall seconds (a stuck worker
    fails fast), or after timeout, with the text explain() gives then."""
    started = last_change = time.monotonic()
    seen = None
    while True:
        left = not_done(app, worker)
        if not left:
            return
        now = time.monotonic()
        if left != seen:
            seen, last_change = left, now
        if now - last_change > stall or now - started > timeout:
            pytest.fail(f"{left} rows not done after {now - started:.0f}s, none done in the "
                        f"last {now - last_change:.0f}s: {explain()}")
        time.sleep(interval)


# a soft limit that lands inside miniq's own database calls ---------------------------------------

def test_soft_limits_landing_inside_database_calls_leave_the_database_usable(app, start_worker):
    rng = random.Random(0)
    worker = start_worker("-c", "2")
    results = [within(5, tasks.progress_forever.apply_async, what=f"delay() number {n + 1}",
                      soft_time_limit=round(rng.uniform(0.02, 0.2), 3)) for n in range(100)]
    wait_done(app, worker, lambda: f"states {states(app)}\n{tail(worker)}")
    assert Counter(type(r.info).__name__ for r in results) == {"SoftTimeLimitExceeded": 100}
    assert {r.state for r in results} == {"FAILURE"}
    started = time.monotonic()
    assert within(5, lambda: tasks.add.delay(1, 1).get(timeout=5), what="add(1, 1)") == 2
    assert time.monotonic() - started < 5
    worker.signal(signal.SIGTERM)
    try:
        code = worker.wait(10)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 0, f"SIGTERM: exit code {code} after 10s (None: still running)\n{tail(worker)}"
