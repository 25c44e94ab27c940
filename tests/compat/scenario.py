"""Start a worker of the chosen implementation, run the same calls, print JSON."""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.getcwd())
from tests.compat import celery_api as c  # noqa: E402

COMMANDS = {"miniq": ["-m", "miniq", "-A", "tests.compat.celery_api", "worker", "-c", "2"],
            "celery": ["-m", "celery", "-A", "tests.compat.celery_api", "worker", "-c", "2",
                       "--pool", "prefork", "--loglevel", "error", "--without-gossip",
                       "--without-mingle", "--without-heartbeat"]}


def outcome(call):
    try:
        return call()
    except Exception as exc:
        if os.environ.get("COMPAT_DEBUG"):
            print(repr(exc), file=sys.stderr)
        return f"raised {type(exc).__name__}"


def main():
    for sub in ("queue", "done", "results"):
        os.makedirs(os.path.join(os.environ.get("COMPAT_DIR", "."), sub), exist_ok=True)
    worker = subprocess.Popen([sys.executable, *COMMANDS[c.impl.__name__]], start_new_session=True)
    try:
        t = 60
        sent = c.whoami.delay()
        report = {
            "add": outcome(lambda: c.add.delay(2, 3).get(timeout=t)),
            "request_id": outcome(lambda: sent.get(timeout=t) == sent.id),
            "retry": outcome(lambda: c.flaky.delay().get(timeout=t)),
            "soft_limit": outcome(lambda: c.polite.delay().get(timeout=t)),
            "hard_limit": outcome(lambda: c.stubborn.delay().get(timeout=t)),
            "failure": outcome(lambda: c.fail.delay().get(timeout=t)),
            "soft_over_hard": outcome(lambda: c.contradictory.delay().get(timeout=t)),
            "chain": outcome(lambda: c.chain(c.add.s(1, 2), c.add.s(3)).apply_async().get(timeout=t)),
            "group": outcome(lambda: c.group(c.add.s(i, i) for i in range(4)).apply_async().get(timeout=t)),
        }
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    print(json.dumps(report))


if __name__ == "__main__":
    started = time.monotonic()
    main()
