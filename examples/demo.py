"""End to end in one command: start a worker, send tasks, print results, stop.

    python examples/demo.py

Uses examples/proj.db (a local SQLite file); needs nothing installed.
"""
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]
os.chdir(HERE)  # the broker URL sqlite:///proj.db is relative to here

import proj  # noqa: E402
from miniq.exceptions import TimeLimitExceeded  # noqa: E402


def main() -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, ROOT, os.environ.get("PYTHONPATH", "")]))
    worker = subprocess.Popen([sys.executable, "-m", "miniq", "-A", "proj", "worker", "-c", "2",
                               "--loglevel", "info"], env=env, start_new_session=True)
    try:
        started = time.monotonic()
        result = proj.add.delay(4, 5)
        print(f"add.delay(4, 5) -> {result.id} state={result.state}")
        print(f"  get() = {result.get(timeout=30)}  ({time.monotonic() - started:.3f} s incl. worker start)")
        print(f"  by name: send_task('proj.add', (6, 7)).get() = "
              f"{proj.app.send_task('proj.add', args=(6, 7)).get(timeout=10)}")
        print(f"  crunch.delay(1000).get() = {proj.crunch.delay(1000).get(timeout=30)}")
        print(f"  polite.delay(5).get() = {proj.polite.delay(5).get(timeout=30)!r}")
        try:
            proj.stubborn.delay(10).get(timeout=30)
        except TimeLimitExceeded as exc:
            print(f"  stubborn.delay(10) -> {exc}")
        print(f"  add.delay(1, 2) after the kill = {proj.add.delay(1, 2).get(timeout=30)}")
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: finish running tasks, exit 0
        try:
            code = worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            code = worker.wait()
    print(f"worker stopped with exit status {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
