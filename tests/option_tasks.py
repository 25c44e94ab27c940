"""Tasks for tests/test_task_options.py, on the app of tests/tasks.py; a worker started
with ``-A tests.option_tasks`` knows these and those."""
import os
import time
from datetime import datetime

from miniq import Task
from miniq.exceptions import Ignore, Reject
from tests.tasks import app


def runs(path):
    """How many times a task wrote to path: one line a run."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(path) as f:
        return len(f.read().splitlines())


class Counted(Task):
    """A base with its own ``__init__(self)``, as Celery projects write them."""
    made = []

    def __init__(self):
        Counted.made.append(self.name)
        self.connection = f"opened for {self.name}"

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if args:
            runs(args[0] + ".hooks")

    def after_return(self, status, retval, task_id, args, kwargs, einfo):
        if args:
            runs(args[0] + ".hooks")


@app.task(base=Counted, bind=True)
def counted(self):
    return [self.connection, Counted.made.count(self.name)]


@app.task(base=Counted, bind=True)
def ignored(self, path, state=None):
    runs(path)
    if state:
        self.update_state(state=state, meta={"kept": state})
    raise Ignore()


@app.task(base=Counted)
def rejected(path, requeue):
    runs(path)
    raise Reject("no thanks", requeue=requeue)


@app.task(acks_late=True)
def rejected_late(path, times):
    """Rejects its message back to the queue ``times`` times, then returns its run count."""
    count = runs(path)
    if count <= times:
        raise Reject(f"run {count}", requeue=True)
    return count


@app.task(throws=(KeyError,))
def throwing(expected):
    if expected:
        raise KeyError("expected one")
    raise ValueError("unexpected one")


@app.task(autoretry_for=(Exception,), dont_autoretry_for=(KeyError,), max_retries=3,
          default_retry_delay=0)
def picky_retry(path, error):
    count = runs(path)
    raise {"key": KeyError, "value": ValueError}[error](f"run {count}")


@app.task(expires=datetime(2000, 1, 1))
def long_expired():
    return "ran"


@app.task(expires=3600)
def expires_in_an_hour():
    return "ran"


@app.task(ignore_result=True)
def fail_ignored():
    raise ValueError("not kept")


@app.task(ignore_result=True, store_errors_even_if_ignored=True)
def fail_ignored_but_kept():
    raise ValueError("kept anyway")


@app.task(bind=True, ignore_result=True)
def retry_ignored(self):
    raise self.retry(exc=KeyError("not kept"), countdown=60)


@app.task(bind=True, ignore_result=True, store_errors_even_if_ignored=True)
def retry_ignored_but_kept(self):
    raise self.retry(exc=KeyError("kept anyway"), countdown=60)


@app.task(acks_late=True, acks_on_failure_or_timeout=False, time_limit=0.5)
def timeout_requeued(path):
    runs(path)
    time.sleep(30)


@app.task(acks_late=True, acks_on_timeout=False, time_limit=0.5)
def timeout_requeued_by_57s_name(path):
    runs(path)
    time.sleep(30)
