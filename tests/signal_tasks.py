"""An app with signal receivers, for tests/test_signals.py: each receiver appends one
JSON line (signal, pid, sender, arguments) to the file named by ``LOG`` (taken from
MINIQ_SIGNAL_LOG in a worker, set directly by the test process). Some receivers
raise on purpose: nothing they touch may stop."""
import json
import logging
import os
import time
from types import SimpleNamespace

from miniq import Miniq, Task, signals
from miniq.exceptions import Ignore, Reject
from miniq.utils.log import get_task_logger

app = Miniq("signal_tasks")  # the broker comes from MINIQ_BROKER_URL
LOG = os.environ.get("MINIQ_SIGNAL_LOG")
WATCHED = ["before_task_publish", "after_task_publish", "task_prerun", "task_postrun",
           "task_success", "task_retry", "task_failure", "task_revoked", "celeryd_init",
           "import_modules", "worker_init", "worker_process_init", "worker_process_shutdown",
           "worker_ready", "worker_shutdown", "after_setup_logger",
           "after_setup_task_logger", "task_received", "task_unknown", "celeryd_after_setup",
           "heartbeat_sent", "worker_before_create_process", "worker_shutting_down",
           "beat_init", "beat_embedded_init"]


def describe(value):
    """A receiver's argument as JSON can carry it, telling tasks, requests and errors apart."""
    if isinstance(value, Task):
        return f"task {value.name}"
    if isinstance(value, SimpleNamespace):  # self.request
        return {"id": value.id, "task": value.task, "hostname": value.hostname,
                "delivery_info": getattr(value, "delivery_info", None),
                "eta": getattr(value, "eta", None), "expires": getattr(value, "expires", None),
                **{key: getattr(value, key, None) for key in (
                    "task_id", "task_name", "name", "root_id", "parent_id")}}
    if hasattr(value, "_fields"):  # a named tuple: einfo
        return type(value).__name__
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, (str, int, float, list, tuple, dict, type(None))):
        return value
    return type(value).__name__


def note(signal_name, sender, **named):  # task_unknown's arguments include a name
    if LOG:
        line = {"signal": signal_name, "pid": os.getpid(), "sender": describe(sender),
                **{key: describe(value) for key, value in named.items()}}
        with open(LOG, "a") as f:
            f.write(json.dumps(line, default=repr) + "\n")


def record(signal=None, sender=None, **named):
    note(signal.name, sender, **named)


for _name in WATCHED:
    getattr(signals, _name).connect(record)


def take_logging_over(signal=None, sender=None, loglevel=None, format=None, **named):
    """Connected only where a test asks: then the worker leaves logging to it."""
    note("setup_logging", sender, loglevel=loglevel, format=format, **named)
    logging.basicConfig(level=loglevel, format=f"custom {format}")


if os.environ.get("MINIQ_TAKE_LOGGING"):
    signals.setup_logging.connect(take_logging_over)


def log_to_a_file_too(logger=None, **named):
    """The usual recipe for a log file (or JSON, or Sentry) beside the worker's own: the
    task loggers' lines in a file of their own."""
    own = "" if logger is logging.getLogger() else ".tasks"
    logger.addHandler(logging.FileHandler(os.environ["MINIQ_LOG_FILE_TOO"] + own))


if os.environ.get("MINIQ_LOG_FILE_TOO"):
    signals.after_setup_logger.connect(log_to_a_file_too)
    signals.after_setup_task_logger.connect(log_to_a_file_too)


def broken(signal=None, **named):
    raise RuntimeError(f"a bug in a {signal.name} receiver")


for _name in ["worker_process_init", "worker_ready", "task_prerun", "task_postrun",
              "task_success", "task_failure", "before_task_publish"]:
    getattr(signals, _name).connect(broken)


def exits(signal=None, **named):
    """Connected only where a test asks: a receiver that ends the process it runs in."""
    raise SystemExit(f"a {signal.name} receiver exits")


if os.environ.get("MINIQ_EXITING_RECEIVERS"):
    for _name in ["worker_ready", "task_failure", "task_revoked"]:
        getattr(signals, _name).connect(exits)


@app.task
def add(x, y):
    return x + y


@app.task
def dies():
    os._exit(9)


@signals.task_success.connect(sender=add)
def add_only(sender=None, result=None, **named):
    note("task_success of add", sender, result=result)


@signals.task_success.connect(sender="tests.signal_tasks.add")
def by_name(sender=None, **named):
    note("task_success of the name add", sender)  # never: a task's sender is the task


@signals.before_task_publish.connect(sender="tests.signal_tasks.add")
def publish_of_add(sender=None, headers=None, **named):
    note("before_task_publish of add", sender)


@signals.before_task_publish.connect
def tag(sender=None, headers=None, **named):
    """Adds a header to the messages of request_fields, as tracing tools do."""
    if sender == "tests.signal_tasks.request_fields":
        headers["x_trace"] = "t-1"


@app.task
def fail(text="boom"):
    raise ValueError(text)


@app.task
def prints():
    print("printed by task")
    get_task_logger(__name__).info("logged by task")
    logging.getLogger("plain").info("logged by a plain logger")


@app.task(bind=True, max_retries=1, default_retry_delay=0.05)
def retry_once(self):
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("again"))
    return "retried"


@app.task(time_limit=0.5)
def stuck():
    time.sleep(30)


@app.task
def sleep(seconds):
    time.sleep(seconds)


@app.task
def wait_for_gate(gate, value, timeout=60.0):
    """Return value once the file gate exists (at most timeout seconds)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


@app.task(bind=True)
def request_fields(self):
    r = self.request
    return {"id": r.id, "task": r.task, "hostname": r.hostname, "delivery_info": r.delivery_info,
            "root_id": r.root_id, "parent_id": r.parent_id, "group": r.group, "eta": r.eta,
            "expires": r.expires, "timelimit": r.timelimit, "time_limit": r.time_limit,
            "soft_time_limit": r.soft_time_limit, "headers": r.headers,
            "x_trace": r.get("x_trace"), "retries": r.retries}


@app.task(bind=True)
def spawn(self):
    """Sends a task from inside a task, and an eager one too; returns what they saw."""
    return {"id": self.request.id, "sent": request_fields.delay().id,
            "eager": request_fields.apply().result}


@app.task(bind=True, max_retries=1, default_retry_delay=0.05, time_limit=30)
def retry_fields(self):
    if self.request.retries == 0:
        raise self.retry()
    r = self.request
    return {"id": r.id, "parent_id": r.parent_id, "root_id": r.root_id, "eta": r.eta,
            "timelimit": r.timelimit}


@app.task(bind=True, acks_late=True, reject_on_worker_lost=True)
def die_once(self, marker):
    """Kills its child on the first delivery; the second returns its delivery_info."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return self.request.delivery_info


@app.task
def ignored():
    raise Ignore()


@app.task
def rejected():
    raise Reject("no thanks", requeue=False)
