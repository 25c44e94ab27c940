"""The worker: a manager process that claims tasks, and a pool of child
processes that run them. Nothing here writes SQL; the broker does.

    producers ─INSERT─▶ db ◀─claim, settle, heartbeat─ Manager ──pipe──▶ child 1
         │                                              ▲  │  ──pipe──▶ child 2
         └────── wake hint (datagram) ─────────────────┘  │      ...
               a word, then SIGKILL past time_limit; SIGCHLD tells any death

Each child runs one message at a time and reports back over its pipe; only
the manager writes a task's lifecycle. Soft limits are a timer inside the
child; hard limits, dead children and revocations are the manager's job.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import io
import json
import logging
import math
import multiprocessing
import multiprocessing.resource_tracker
import multiprocessing.util
import os
import pickle
import resource
import select
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from datetime import timedelta

from . import result as results
from .app import PAUSING, load_app
from .broker import FINAL, SWEEP, Message, Settle
from .canvas import chord_error, next_steps
from .exceptions import (ImproperlyConfigured, InvalidTaskError, MiniqError, OperationalError,
                         SoftTimeLimitExceeded, TaskRevokedError, TimeLimitExceeded,
                         WorkerLostError)
from .result import exception_text, exception_to_json
from .task import Outcome, emit, execute, failed, timed_out
from .utils.log import log_as_celery
from .wake import TERMINATE, drain, machine_id, pid_alive

log = logging.getLogger("miniq.worker")
# Celery's loggers of the lines about each task, by name: a project's logging config that
# quiets or routes them (celery.app.trace, say) holds here too
received_log = logging.getLogger("celery.worker.strategy")
request_log = logging.getLogger("celery.worker.request")
trace_log = logging.getLogger("celery.app.trace")
POLL = 0.05             # fallback poll of the database when no hint arrives
IDLE_POLL = 1.0         # the slowest it gets, once hints are known to reach this worker
TERMINATE_GRACE = 1.0   # revoke(terminate=True): SIGKILL if the signal did not end the task
FLUSH = 0.002           # the longest an outcome waits to be written with others
# what sending a task's next steps may raise: a step that cannot take the value, say
WORKFLOW_FAULTS = (TypeError, ValueError, KeyError, AttributeError, OverflowError, RecursionError)
# the states a child's run ends in (None: a success not kept)
TEXT = (str, type(None))  # what a reply's text fields may be: exactly, no subclass
CHILD_STATES = {None, "SUCCESS", "FAILURE", "RETRY", "IGNORED", "REPLACED", "PENDING", "REJECTED"}
REPLY_WITHIN = 2.0      # a child's reply still coming this long after it began is not one,
REPLY_RATE = 1 << 20    # unless this many bytes a second more came meanwhile (a big one)
MAX_REPLY = 1 << 30     # nor one longer than SQLite stores (its default SQLITE_MAX_LENGTH
# is 10 ** 9: an outcome between the two fails as the database refuses it)
# the classes a message or a reply may hold: those JSON values come back as (utils.json)
REVIVED = {("datetime", kind) for kind in ("datetime", "date", "time", "timezone", "timedelta")}
REVIVED |= {("decimal", "Decimal"), ("uuid", "UUID")}
ORPHAN_AFTER = 1.0      # a child outlives its manager by at most this, running a task or not
HARD_GRACE = 0.1        # as billiard's: from the word to end to SIGKILL at a hard limit
UNFIT_WAIT = 60.0       # an outcome the disk has no room for waits this long, then fails
LOCK_WAIT = 1.0         # a locked file: the manager tends its children, then tries again
LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
BOOT_SIGNALS = {*STOP_SIGNALS, signal.SIGUSR1}  # ignored by a child until it takes them
# Their default would end the manager: they are logged and ignored (but SIGHUP, which
# restarts a worker without a terminal, as Celery's; its SIGUSR1 and SIGUSR2 debug it). Those a fault raises
# (SIGSEGV, SIGBUS, ...) keep their default: a handler that returns would fault again.
NOTED_SIGNALS = (*(getattr(signal, name) for name in (
    "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGPROF", "SIGVTALRM", "SIGIO", "SIGXCPU",
    "SIGPWR", "SIGSTKFLT") if hasattr(signal, name)),
    *range(getattr(signal, "SIGRTMIN", 0), getattr(signal, "SIGRTMAX", -1) + 1))
SIGNAL_NAMES = {number.value: number.name for number in signal.Signals}


def _whole(least):
    return lambda v: v is None or type(v) is int and v >= least


def _seconds(least, optional=True, delta=False):
    """None (if optional) or a finite number of seconds from least (or a timedelta)."""
    def fits(value):
        value = value.total_seconds() if delta and isinstance(value, timedelta) else value
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return optional and value is None
        return least <= value < math.inf
    return fits


# Settings a worker reads as it runs: refused as it starts, rather than met by each task
SETTINGS = (("worker_concurrency", _whole(0), "a whole number"),
            ("worker_max_tasks_per_child", _whole(0), "a whole number"),
            ("worker_max_memory_per_child", _whole(0), "a whole number of KiB"),
            ("task_max_deliveries", _whole(1), "a whole number of 1 or more"),
            ("worker_heartbeat", _seconds(0.01, False), "a number of seconds, at least 0.01"),
            ("worker_lost_after", _seconds(0.01, False), "a number of seconds, at least 0.01"),
            ("result_expires", _seconds(0, delta=True), "None or a number of seconds, at least 0"),
            ("task_time_limit", _seconds(0), "None or a number of seconds, at least 0"),
            ("task_soft_time_limit", _seconds(0), "None or a number of seconds, at least 0"),
            ("task_default_queue", lambda v: isinstance(v, str) and v, "a queue name"),
            ("worker_redirect_stdouts_level",  # else every task that prints would fail
             lambda v: v is None or isinstance(v, str) and isinstance(
                 logging.getLevelName(v.upper()), int), "a logging level's name"),
            ("sqlite_synchronous", lambda v: str(v).upper() in ("NORMAL", "FULL"),
             "NORMAL or FULL"),
            ("worker_start_method", lambda v: v in (None, *multiprocessing.get_all_start_methods()),
             f"one of {', '.join(multiprocessing.get_all_start_methods())}"))


def check_settings(conf):
    """Refuse a worker setting that no worker could use, naming it."""
    for key, fits, wanted in SETTINGS:
        if not fits(conf.get(key)):
            raise ImproperlyConfigured(f"{key} must be {wanted}, not {conf.get(key)!r}")
    if conf.worker_lost_after <= conf.worker_heartbeat:
        raise ImproperlyConfigured(
            f"worker_lost_after ({conf.worker_lost_after}) must be longer than"
            f" worker_heartbeat ({conf.worker_heartbeat}): live workers would be taken for dead")


def _sigterm_as():
    """The signal SIGTERM acts as: SIGQUIT (a cold shutdown) with Celery's
    REMAP_SIGTERM=SIGQUIT, as on Heroku; else itself."""
    name = os.environ.get("REMAP_SIGTERM")
    if name not in (None, "", "SIGQUIT"):
        raise ImproperlyConfigured(f"REMAP_SIGTERM={name!r}: miniq takes SIGQUIT only")
    return signal.SIGQUIT if name else signal.SIGTERM


def _rss_kib():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def _signal(value):
    """The signal a stored value names; SIGKILL for one no caller could have sent."""
    try:
        signum = signal.Signals(value)
    except (ValueError, TypeError):
        return signal.SIGKILL
    return signal.SIGKILL if signum in PAUSING else signum


def _step(fn):
    """Which database step fn is, seen through bound methods and the broker's wrapper."""
    fn = getattr(fn, "__func__", fn)
    return getattr(fn, "__wrapped__", fn).__code__


def _put(conn, item):
    """Send over a pipe, pickled plainly: multiprocessing's pickler copies a table a call.
    Records cross as plain tuples: a named tuple pickles through a Python method."""
    _write(conn, pickle.dumps(item, pickle.HIGHEST_PROTOCOL))


def _write(conn, data):
    """Bytes in the frame conn.recv_bytes() reads, straight to the pipe: in one write,
    but for a big one, not copied to join its length."""
    size, fd = len(data), conn.fileno()
    head = size.to_bytes(4, "big") if size < 1 << 31 else b"\xff" * 4 + size.to_bytes(8, "big")
    for part in [head + data] if size < 1 << 16 else [head, data]:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


class _Plain(pickle.Unpickler):
    """Loads plain data only: tuples, strings, numbers, dicts, lists, and the types
    miniq's JSON brings back (datetime, Decimal, UUID). A pickle that names another
    class or a function (to call it: sys.exit, say) is refused, never run."""

    def find_class(self, module, name):
        if (module, name) not in REVIVED:
            raise pickle.UnpicklingError(f"{module}.{name} in a pickle of plain data")
        return super().find_class(module, name)


def _loaded(data):
    """The plain data a pickle's bytes hold (see _Plain)."""
    return _Plain(io.BytesIO(data)).load()


def _reply(conn):
    """What _put sent (a child's reply, a job), as a list: most often one, but every whole
    frame that came, in order. Read without trusting the pipe: a task can write there too.
    A frame (a 4-byte length; -1, then 8 bytes, for a big one) is read as it comes: one
    still coming after REPLY_WITHIN (longer for a big one, by REPLY_RATE), one that claims
    more than MAX_REPLY bytes, and a pickle of more than plain data are an error
    (ValueError, UnpicklingError), so that nothing a task writes holds the manager or
    runs in it."""
    fd = conn.fileno()
    data = os.read(fd, 65536)  # most replies: whole in one read
    frame = _frame(data)
    if frame is not None and len(data) == frame[1]:
        return [_loaded(memoryview(data)[frame[0]:])]
    if not data:
        raise EOFError
    data, since, frames = bytearray(data), time.monotonic(), []
    watch = select.poll()
    watch.register(fd, select.POLLIN)
    while True:
        while frame is not None and len(data) >= frame[1]:  # each whole one, in order
            frames.append(_loaded(bytes(data[frame[0]:frame[1]])))
            del data[:frame[1]]
            if not data:
                return frames
            frame = _frame(data)
        left = since + REPLY_WITHIN + len(data) / REPLY_RATE - time.monotonic()
        if left <= 0 or not watch.poll(left * 1000):  # a trickle too: not forever
            raise ValueError("a reply stopped midway")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise EOFError
        data += chunk
        frame = _frame(data)


def _outcome(fields):
    """An Outcome from a reply's fields, only in the shape a child sends: a task can
    write a well-framed pickle of anything into its pipe."""
    outcome = Outcome._make(fields)
    state, result, trace, eta, body, exc, _, flows, moved = outcome
    if not (state in CHILD_STATES and type(result) in TEXT and type(trace) in TEXT
            and type(body) in TEXT and type(eta) in (int, float) and exc is None
            and type(flows) in (dict, type(None)) and _moves(moved)):
        raise ValueError("not a reply of its child's")
    return outcome


def _moves(moved):
    """Whether a reply's (queue, priority) is of retry()'s making."""
    return (type(moved) is tuple and len(moved) == 2 and type(moved[0]) in TEXT
            and (moved[1] is None or type(moved[1]) is int and 0 <= moved[1] <= 255))


def _shown(result):
    """An exception stored as JSON, named in a line, not made: its class's code runs in
    tasks only. What the manager cannot read (nested past its recursion limit, an int
    past its digit limit, a reply a task forged) is named as such."""
    try:
        return exception_text(json.loads(result))
    except Exception as exc:  # noqa: BLE001 - a task's data never stops the manager
        return f"an exception that cannot be shown ({type(exc).__name__})"


def _value_shown(result, most=1024):
    """A task's value as Celery's log line shows it, its repr cut to ``most``; a value
    too long to read cheaply, or one the manager cannot read, as its JSON; nothing for
    a value not kept (its child sends none)."""
    if result is None:
        return ""
    try:
        shown = repr(json.loads(result)) if len(result) <= 4 * most else result
    except Exception:  # noqa: BLE001 - a task's data never stops the manager
        shown = result
    return shown if len(shown) <= most else f"{shown[:most]}..."


def _emit(hook, *args):
    """Send a signal from the manager: a receiver's BaseException (sys.exit() in it,
    say) is logged, as an Exception is, and stops nothing."""
    try:
        emit(hook, *args)
    except BaseException:  # noqa: BLE001 - nothing a receiver does stops the manager
        log.exception("a receiver of a signal the worker sends raised")


def _frame(data):
    """(start, end) of the pickle in a frame's bytes; None until its length is in."""
    if len(data) < 4:
        return None
    size = int.from_bytes(data[:4], "big", signed=True)
    if size < -1:
        raise ValueError("a reply of negative length")
    if size == -1 and len(data) < 12:
        return None
    start = 4 if size >= 0 else 12
    size = size if size >= 0 else int.from_bytes(data[4:12], "big")
    if size > MAX_REPLY:
        raise ValueError(f"a reply of {size} bytes")
    return start, start + size


def _reply_of(message, outcome, retire):
    """A child's reply to the manager, pickled as _put sends it, its exception left out."""
    return pickle.dumps((message.id, tuple(outcome._replace(exc=None)), retire),
                        pickle.HIGHEST_PROTOCOL)


def child_main(app_path, pipes, loglevel, max_tasks, max_memory_kib, manager, hostname):
    """A child's whole life: import the app, then run messages until told to stop.
    ``manager`` is the manager's pid, as the manager gave it; ``hostname`` its node name."""
    signal.set_wakeup_fd(-1)
    # Ctrl-C and a group-wide SIGTERM (systemd's default) reach us too: the manager decides.
    # They came blocked (see Worker._spawn): ignored now, what waits dropped (and SIGUSR1
    # until _serve takes it).
    for signum in BOOT_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, BOOT_SIGNALS)
    for signum in (signal.SIGQUIT, signal.SIGCHLD, *NOTED_SIGNALS):  # the manager's are not ours
        if getattr(signal.getsignal(signum), "__func__", None) is Worker._on_signal:
            signal.signal(signum, signal.SIG_DFL)  # (the app's, inherited by fork, stay)
    results.join_will_block = True
    app = load_app(app_path)
    vars(app.broker).pop("lock_wait", None)  # forked: the manager's shorter wait is not ours
    # Where the app uses signals: setup_logging (logging as below unless a receiver takes
    # it over), then worker_process_init. A receiver's setup (fork: inherited) stays.
    fmt = app.conf.get("worker_log_format") or LOG_FORMAT
    configure = functools.partial(log_as_celery, app.conf, loglevel, fmt)
    if not emit("_child_started", hostname, loglevel, fmt, configure) and loglevel:
        configure()
    try:
        _serve(app, *pipes, max_tasks, max_memory_kib, manager, hostname)
    finally:
        emit("_child_stopped", hostname)
    if any(not thread.daemon for thread in threading.enumerate()
           if thread is not threading.current_thread()):
        # A thread its task left running: multiprocessing would wait for it, and this
        # child would never end. Run what its exit runs but that wait, then exit.
        for step in (multiprocessing.util._exit_function, logging.shutdown,
                     getattr(sys.stdout, "flush", None), getattr(sys.stderr, "flush", None)):
            with contextlib.suppress(Exception):
                step()
        os._exit(0)


def _serve(app, jobs, replies, max_tasks, max_memory_kib, manager, hostname):
    """Run the messages the manager sends until it says stop, or is gone."""
    parent, done, watch, me = os.getppid(), 0, select.poll(), os.getpid()
    orphaned, running = functools.partial(_orphaned, parent, manager), [None]
    _watch_manager(orphaned, running)
    # As billiard's children: set once (a task that sets its own leaves it, as there)
    signal.signal(signal.SIGUSR1, functools.partial(_soft_signal, app, running, watch))
    watch.register(jobs.fileno(), select.POLLIN)  # kept: conn.poll() builds one a call
    while True:
        if not watch.poll(ORPHAN_AFTER * 1000):
            if orphaned():
                return  # idle: stop cleanly (mid-task, the watch thread kills us)
            continue
        try:
            (job,) = _reply(jobs)  # one read, where recv_bytes() takes two
        except (EOFError, OSError, ValueError, pickle.UnpicklingError):
            return
        if job is None:
            return
        message, soft_limit = Message._make(job[0]), job[1]
        running[0] = message.id
        try:
            outcome = (execute(app, message, soft_limit, hostname=hostname) if len(job) < 3
                       else timed_out(app, message, job[2], hostname))
        except (SystemExit, KeyboardInterrupt):  # as Celery's: the child ends, the task is lost
            raise
        except BaseException as exc:  # noqa: BLE001 - as Celery's: a failure, and no hook ran
            outcome = failed(exc)
        running[0] = None
        if os.getpid() != me:  # a process the task forked came back here: we answer, not it
            os._exit(0)
        for stream in (sys.stdout, sys.stderr):  # what it printed, a last line too, now
            with contextlib.suppress(Exception):
                stream.flush()
        _reset_signals()
        done += 1
        retire = ((max_tasks and done >= max_tasks)
                  or (max_memory_kib and _rss_kib() > max_memory_kib))
        reply = _reply_of(message, outcome, retire)
        if len(reply) > MAX_REPLY:  # more than SQLite stores: the task fails, not its child
            error = ValueError(f"its outcome is {len(reply)} bytes: more than can be stored")
            reply = _reply_of(message, failed(error, False), retire)
        try:
            _write(replies, reply)
        except OSError:
            return  # the manager died meanwhile; recovery will run the task again
        if retire:
            return


def _soft_signal(app, running, watch, signum, frame):
    """SIGUSR1 while a task runs (``revoke(terminate=True, signal="SIGUSR1")``) raises
    SoftTimeLimitExceeded in it, as Celery's children take it, so that it may clean up;
    never inside miniq's own write: a moment later then. With a word from the manager
    waiting in the pipe, its hard limit struck: as billiard's children at their SIGTERM,
    the task ends by SystemExit, its finally blocks run, until the SIGKILL."""
    if running[0] is None:
        return
    if watch.poll(0):
        raise SystemExit(1)
    if app.broker.in_transaction():
        signal.signal(signal.SIGALRM, functools.partial(_soft_signal, app, running, watch))
        signal.setitimer(signal.ITIMER_REAL, 0.001)
        return
    raise SoftTimeLimitExceeded()


def _join(process, timeout):
    """Wait at most timeout for a child to end. By its exit status, not its sentinel: a
    process its task forked may hold the sentinel open long after the child died."""
    deadline, pause = time.monotonic() + timeout, 0.0005
    while process.exitcode is None and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 0.002)


def _orphaned(parent, manager):
    """True once the manager is gone; its pid came from the manager itself (a fork
    server, not the manager, may be our parent)."""
    return os.getppid() != parent or not pid_alive(manager)


def _on_terminal():
    """Whether the worker's output goes to a terminal (else it runs as a service)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # none, or closed
        return False


def _watch_manager(orphaned, running):
    """A thread that kills this child within ORPHAN_AFTER of its manager's death while
    it runs a task (``running[0]``, its id): no one would record the outcome, another
    worker runs the task again, and no one else enforces its hard limit. Idle, the
    child stops by itself, cleanly. The thread blocks every signal, so that they reach
    the task's thread (a soft limit must interrupt a sleep there)."""
    def watch():
        while running[0] is None or not orphaned():
            time.sleep(ORPHAN_AFTER)
        os.kill(os.getpid(), signal.SIGKILL)

    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:  # the thread starts with the mask it is created under
        threading.Thread(target=watch, name="miniq-orphan-watch", daemon=True).start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _reset_signals():
    """What a task did with SIGALRM (a timer, a handler, a block) ends with it: the
    next task in this child must not get its signal. Ctrl-C and a group-wide SIGTERM
    stay ignored, whatever a task set: the manager decides (and the programs a task
    starts inherit them ignored)."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # drops one that is pending
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, signal.SIG_IGN)


def _pool_size(concurrency):
    """How many children: as asked, else one a CPU; refused past what this user may run."""
    concurrency = concurrency or os.cpu_count() or 1
    most = os.sysconf("SC_CHILD_MAX") if "SC_CHILD_MAX" in os.sysconf_names else -1
    if most < 1 or os.geteuid() == 0:  # no limit known, or root's, which has none
        most = 2 ** 31
    if concurrency > most:
        raise ImproperlyConfigured(f"concurrency {concurrency}: more processes than this"
                                   f" user may run ({most})")
    return concurrency


class Child:
    """The manager's view of one child process and the task it runs."""

    message = None  # the Message it runs
    started = 0.0
    deadline = None
    hard = None  # its hard time limit, as given
    killed_for = None  # (state, exception) to record when it dies
    revoked = None  # the TaskRevokedError of a terminate whose signal it may handle
    retiring = False
    late = False  # its message's acks_late: unacknowledged until it ends
    hooks = False  # it runs the failure hooks of a run its hard limit ended, not a run

    def __init__(self, process, conn, out):
        self.process, self.conn, self.out = process, conn, out  # its replies; its jobs


class Worker:
    """The manager: claims as many tasks as it has idle children, watches limits."""

    # The loop's state as it starts; each worker assigns its own as it runs.
    warm = cold = False  # shutting down: warm lets running tasks finish, cold does not
    told_warm = False  # the warm shutdown was logged
    want = True  # worth a claim: a child freed, or the database changed
    news = False  # the database changed since the last claim
    seen = None  # the database's data_version when last looked
    hints_muted_until, empty_hints = 0.0, 0  # a flood is heard once a poll
    poll, hinted = POLL, False  # quiet polls grow slower once a hint has come through
    hearing = False  # the wake-up socket is among the watched
    next_due = None  # the earliest scheduled task
    next_heartbeat, heartbeats = 0.0, 0
    beat_landed = 0.0  # when its last heartbeat (or its registration) was written
    beating_since = float("-inf")  # when its heartbeats last began to land after a stall
    sweep_due = 0.0  # when to delete expired results next
    flush_at = 0.0  # when the buffered outcomes must be written, at the latest
    idle_deaths = 0
    recheck = False  # a dead worker's tasks are due back at the next heartbeat
    strays = frozenset()  # ids the file said it held, and it did not, at the last look
    db_error, db_failing = None, frozenset()  # the last error logged; the steps that failed
    db_retry_at = db_delay = 0.0
    beat = None  # -B: periodic tasks from this loop; the database keeps each run unique
    beat_due = 0.0
    noted = None  # a NOTED_SIGNALS signal came: the loop logs it
    restart = False  # SIGHUP came to a worker with no terminal: a warm shutdown, then again
    called_off = False  # a stop signal came as it restarted: the loop logs it
    child_exited = False  # SIGCHLD came (or a heartbeat is due): look for dead children

    def __init__(self, app, app_path, concurrency=None, queues=None, start_method=None,
                 loglevel=None, beat=False, hostname=None, options=None):
        """``options``: the command's, for celeryd_init, which comes (as Celery's) before
        any setting is read, so that its receivers may still change app.conf; ``queues``
        may then be a function that gives them once they have. worker_init comes once
        the worker is set up."""
        self.hostname = hostname  # the node name (-n): in replies to inspect(), to tasks
        self.app, self.app_path, self.loglevel = app, app_path, loglevel
        self.stopping = []  # (signal, how, exit status) of each stop signal, to tell
        if options is not None:
            emit("_worker_init", self, options)
        queues = queues() if callable(queues) else queues
        conf = self.conf = app.conf
        check_settings(conf)
        self.sigterm_as = _sigterm_as()
        self.concurrency = _pool_size(concurrency or conf.worker_concurrency)
        self.queues = list(queues or [conf.task_default_queue])
        method = start_method or conf.worker_start_method or conf.get("worker_pool_start_method")
        if method is None and sys.platform.startswith("linux"):
            method = "fork"  # fastest; children start with a fresh connection of their own
        self.ctx = multiprocessing.get_context(method)
        # Its node name ends its id: a task's row keeps the id (AsyncResult.worker reads it).
        self.id = " ".join(filter(None, (uuid.uuid4().hex, hostname)))
        self.machine = machine_id()
        self.broker = app.broker
        self.lease = float(conf.worker_lost_after)
        self.ahead = self._prefetch(conf.worker_prefetch_multiplier)
        self.limited = False  # a rate-limited task came ahead: none until a child is idle
        # outcomes written together while children run: until only a task a child is left
        # ahead (each transaction costs about four tasks' claim and settle)
        self.batch = max(1, self.ahead // 2, self.ahead - self.concurrency)
        self.reserve = collections.deque()  # (Message, reserved): claimed, not yet begun
        self.begun = {}  # id → (attempts, unix time, start state, write by): reserved, begun
        self.children = []
        self.settings = {}  # (task name, option) → its value: see _setting
        self.poller, self.watched = select.poll(), {}  # fd → (what to read, its child)
        self.outcomes = []  # Settle records for the next transaction
        self.unfit = {}  # id → (Settle, since): outcomes the disk had no room for
        self.timed_out = collections.deque()  # (Message, limit): hooks for a child to run
        self.unwritten = []  # the same, until the next write stores their failure
        if beat:
            from .beat import Beat
            self.beat = Beat(app)
        if options is not None:
            emit("_worker_initialised", self)
        # read after worker_init, as Celery's backend and tasks read them: a receiver's stand
        self.expires, self.acks_late = conf.result_expires, conf.task_acks_late  # read often
        self.rates = app.rate_intervals()  # task name → seconds between its starts

    def _prefetch(self, multiplier):
        """How many tasks it may hold unacknowledged, as Celery counts them: concurrency
        × multiplier; none ahead with worker_disable_prefetch."""
        if isinstance(multiplier, bool) or not isinstance(multiplier, int) or multiplier < 1:
            raise ImproperlyConfigured(
                f"worker_prefetch_multiplier must be a whole number of 1 or more, not"
                f" {multiplier!r}: miniq has no unlimited prefetch (one worker would take"
                " the whole queue)")
        return 0 if self.conf.worker_disable_prefetch else self.concurrency * multiplier

    # -- life cycle --------------------------------------------------------

    def run(self):
        """Serve until shut down; 0 after a warm shutdown, 1 after a cold one."""
        self.beat_landed = time.time()
        self._register()
        self._landed()
        self._signals_r, signals_w = socket.socketpair()
        for sock in (self._signals_r, signals_w):
            sock.setblocking(False)
        signal.set_wakeup_fd(signals_w.fileno(), warn_on_full_buffer=False)  # a flag is set
        stops = (*STOP_SIGNALS, signal.SIGQUIT)
        for signum in (*stops, signal.SIGCHLD, *NOTED_SIGNALS):
            if signum in stops or signal.getsignal(signum) == signal.SIG_DFL:
                signal.signal(signum, self._on_signal)  # not over a handler the app set
        self.wake = self.app.waker.listen()
        self._watch(self._signals_r)
        self.app.waker.notify()  # if this hint reaches us, hints work: quiet polls may slow
        try:
            self._recover()
            self.broker.release([name for name in self.app.tasks if name not in self.rates])
            for index in range(self.concurrency):  # each kept at once: stopped if one fails
                if self.warm or self.cold:  # told to stop as they start (-c 1000, say)
                    log.warning("%s shutdown as its children started: %d of %d started,"
                                " none ran a task", "cold" if self.cold else "warm",
                                index, self.concurrency)
                    return 1 if self.cold else 0
                self.children.append(self._start_child(index))
            log.info("miniq worker %s ready: %d %s (%s), queues %s, database %s",
                     self.id[:8], self.concurrency,
                     "child" if self.concurrency == 1 else "children", self.ctx.get_start_method(),
                     ",".join(self.queues), self.broker.path)
            if self.beat:  # as Celery's -B: its beat announces itself
                _emit("_beat_started", self.beat, True)
            _emit("_worker_ready", self)
            self.broker.lock_wait = LOCK_WAIT  # from now on it has children to tend
            self.broker.close()  # its connection waits as long: opened anew
            self._loop()
        finally:
            vars(self.broker).pop("lock_wait", None)  # its last results: worth the full wait
            self.broker.close()
            self._tell_stopping()
            self._shutdown()
            signal.set_wakeup_fd(-1)
            self.app.waker.unlisten(self.wake)
            signals_w.close()
            self._signals_r.close()
        return 1 if self.cold else 0

    def _register(self):
        self.broker.register(self.id, socket.gethostname(), os.getpid(), self.concurrency,
                             self.queues, self.machine, self.hostname,
                             sorted(t for t in self.app.tasks if not t.startswith("celery.")))

    def _on_signal(self, signum, frame):
        """Only set flags: the loop acts. As Celery's: SIGTERM and a first SIGINT are warm,
        a second SIGINT or a SIGQUIT cold."""
        if signum == signal.SIGCHLD:  # a child ended: the loop looks which
            self.child_exited = True
            return
        if signum == signal.SIGHUP and not _on_terminal():  # as Celery's, which restarts
            self.restart = self.warm = True  # only where closing a terminal cannot send it
            return
        if signum in NOTED_SIGNALS:
            self.noted = signum
            return
        as_signum = self.sigterm_as if signum == signal.SIGTERM else signum
        if self.warm and not self.restart and as_signum == signal.SIGINT \
                or as_signum == signal.SIGQUIT:  # a restart's warm shutdown is no first Ctrl-C
            self.cold = True
        self.called_off = self.called_off or self.restart
        self.warm, self.restart = True, False  # a stop during a restart: no restart
        # told by the loop, as Celery's handler tells worker_shutting_down: how, exit status
        self.stopping.append((signal.Signals(signum).name, "Cold" if self.cold else "Warm",
                              int(self.cold or signum == signal.SIGINT)))

    def _tell_stopping(self):
        while self.stopping:
            _emit("_stopping", self, *self.stopping.pop(0))

    def _start_child(self, index):
        why = "its fork server went away"
        for _ in range(3):
            try:
                return self._spawn(index)
            except (EOFError, ConnectionError, FileNotFoundError):  # a fork server killed,
                time.sleep(0.1)  # not yet reaped: a new one, once it is
            except OSError as exc:  # no process left to this user, no memory: no task's fault
                why = exc
                break
        raise ImproperlyConfigured(f"cannot start child process {index + 1} of"
                                   f" {self.concurrency}: {why}")

    def _spawn(self, index):
        # A pipe each way: cheaper a message than one socket both ways
        jobs, job_pipe = self.ctx.Pipe(duplex=False)
        reply_pipe, replies = self.ctx.Pipe(duplex=False)
        for ours in (job_pipe, reply_pipe):  # forked, a child closes the manager's ends of
            multiprocessing.util.register_after_fork(ours, type(ours).close)  # every pipe
        process = self.ctx.Process(
            target=child_main, name=f"ForkPoolWorker-{index + 1}", daemon=True,
            args=(self.app_path, (jobs, replies), self.loglevel, self.conf.worker_max_tasks_per_child,
                  self.conf.worker_max_memory_per_child, os.getpid(), self.hostname))
        # A signal to the whole group must not kill a child (or the fork server) still
        # booting, nor a SIGUSR1 (a hard limit's, a terminate's) before it can take one:
        # they start with it blocked, which fork and exec keep, until child_main ignores
        # it. Blocked, not ignored, here: one that comes meanwhile waits for the manager,
        # where setting SIG_IGN would drop it (a Ctrl-C lost as -c 1000 boots). Started
        # first, the resource tracker: its start unblocks them again.
        _emit("_creating_child", self)
        if self.ctx.get_start_method() != "fork":
            multiprocessing.resource_tracker.ensure_running()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, BOOT_SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        jobs.close()
        replies.close()
        child = Child(process, reply_pipe, job_pipe)
        self._watch(reply_pipe, child)
        self._watch(process.sentinel, child)
        return child

    def _watch(self, item, child=None):
        fd = item if isinstance(item, int) else item.fileno()
        self.watched[fd] = item, child
        self.poller.register(fd, select.POLLIN)

    def _unwatch(self, item):
        fd = item if isinstance(item, int) else item.fileno()
        del self.watched[fd]
        self.poller.unregister(fd)

    def _shutdown(self):
        """Cold: kill the children and put their tasks back. Then stop the rest."""
        if self.cold:  # else a SIGQUIT to an idle worker seems to do nothing
            log.warning("cold shutdown: stopping now, %d running task(s) put back in the"
                        " queue", sum(1 for c in self.children if c.message and not c.hooks))
        for message, reserved in self.reserve:  # never begun: back in line, no delivery
            self._buffer(Settle(message.id, message.attempts,
                                "RESERVED" if reserved else "PENDING"))
        for child in self.children:
            if child.message:
                child.process.kill()
                _join(child.process, 5)
            if child.message and not child.hooks:
                log.warning("cold shutdown: task %s put back in the queue", child.message)
                self._put_back(child.message)
        for child in self.children:
            with contextlib.suppress(OSError):
                _put(child.out, None)
        deadline = time.monotonic() + 5
        for child in self.children:
            _join(child.process, max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                child.process.kill()
                _join(child.process, 1)
        try:
            self.broker.settle(self.id, self._starts(every=True) + self.outcomes)
            self._retry_unfit(give_up=True)  # each alone: the others are written
            self.broker.unregister(self.id)
        except (MiniqError, OperationalError, OSError) as exc:
            log.error("could not record the last results: %s", exc)

    # -- the loop: named steps ---------------------------------------------

    def _loop(self):
        """Heartbeat (and now and then recover), sweep, send periodic tasks, settle and
        claim, dispatch, then wait and collect outcomes, then enforce limits."""
        while not self.cold:
            self._tell_stopping()
            if self.noted:
                log.warning("%s ignored: a worker stops on SIGTERM (warm) or SIGQUIT (cold)",
                            SIGNAL_NAMES.get(self.noted, f"signal {self.noted}"))
                self.noted = None
            if self.called_off:
                log.warning("restart called off: stopping")
                self.called_off = False
            if self.timed_out:  # before any task: Celery calls them as the limit strikes
                for child in [c for c in self.children if not c.message][:len(self.timed_out)]:
                    self._after_limit(child, *self.timed_out.popleft())
            busy = [c for c in self.children if c.message]
            if self.warm and not self.told_warm:  # else a Ctrl-C seems to do nothing
                self.told_warm = True
                log.warning("warm shutdown: waiting for %d running task(s) to end; Ctrl-C"
                            " again (or SIGQUIT) puts them back in the queue now" if busy
                            else "warm shutdown: %d tasks running, stopping now", len(busy))
            if self.warm and not busy and not (self.children and (self.unwritten
                                                                  or self.timed_out)):
                break
            now = time.time()
            if now >= self.next_heartbeat:
                self._heartbeat()
            if self.expires and now >= self.sweep_due:
                self._sweep(now)
            if self.beat and now >= self.beat_due:
                wait_s = self._db(self.beat.tick)
                self.beat_due = now + (1.0 if wait_s is None else max(0.01, wait_s))
                self.want = True  # what it sent: our own commit does not move data_version
            idle = 0 if self.warm else len(self.children) - len(busy)
            if self._claim(idle, bool(busy), now):
                continue
            busy = [c for c in self.children if c.message]  # as the claim left them
            idle = 0 if self.warm else len(self.children) - len(busy)
            hungry = idle + self._room_ahead(idle)  # tasks it would claim: look for them
            self._collect(self._timeout(now, hungry, busy), hungry, bool(busy))
            self._enforce_time_limits()

    def _timeout(self, now, idle, busy):
        """Until the nearest deadline: a poll, a heartbeat, a sweep, a due task, a hard limit."""
        waits = [self.poll if idle else 1.0, self.next_heartbeat - now]
        if self.expires:  # a backlog of expired results goes pass after pass
            waits.append(self.sweep_due - now)
        if self.beat:
            waits.append(self.beat_due - now)
        if self.next_due is not None:
            waits.append(self.next_due - now)
        if self.outcomes or self.begun:  # not before the database may be tried again
            waits.append(max(self.flush_at - time.monotonic(), self.db_retry_at - now))
        waits += [c.deadline - time.monotonic() for c in busy if c.deadline is not None]
        return max(0.0, min(waits))

    def _claim(self, idle, busy, now):
        """Idle children take reserved tasks first. Else, in one transaction, write the
        buffered outcomes (a few at a time while children run, each within FLUSH) and
        claim tasks for idle children and the reserve. True if it wrote or claimed."""
        if self.next_due is not None and now >= self.next_due:
            self.want, self.next_due = True, None
        if idle and self.reserve and self._begin(now):  # then on, in the same pass
            idle = sum(1 for child in self.children if not child.message)
            busy = idle < len(self.children)
        room = idle + self._room_ahead(idle) if self.want else 0
        flush = (self.outcomes and (idle or not busy or len(self.outcomes) >= self.batch)
                 or (self.outcomes or self.begun) and time.monotonic() >= self.flush_at
                 or self.unwritten)
        claim = room and (idle or self.news or not self.reserve)
        if not (flush or claim) or now < self.db_retry_at:
            return False
        starts, revoked = self._starts(), []
        held = set() if starts or any(reserved for _, reserved in self.reserve) else None
        messages = self._db(lambda: self._claim_tx(room, starts, idle, held, revoked))
        if messages is None:
            return False
        self._announce(revoked)
        self.outcomes, self.news = [], False
        self.timed_out.extend(self.unwritten)  # their hooks may read the failure now
        self.unwritten = []
        for start in starts:
            del self.begun[start.id]
        self.flush_at = min((by for *_, by in self.begun.values()), default=0.0)
        self._stop_revoked([start.id for start in starts if start.id not in held])
        if held is not None:  # a revoke (or a recovery) took those it no longer holds
            gone = [m for m, reserved in self.reserve if reserved and m.id not in held]
            self.reserve = collections.deque(
                (m, reserved) for m, reserved in self.reserve if not reserved or m.id in held)
            self._revoked_before_begin(gone)
        self.want = room > 0 and len(messages) == room or len(revoked) == SWEEP
        if room and not self.want:
            self.next_due = self._db(lambda: self.broker.next_eta(self.queues))
        for message in messages:  # as Celery's, as its worker takes them
            received_log.info("Task %s received", message)
        _emit("_tasks_claimed", self, messages, now)
        begun = {message.id for message in messages[:idle]}
        later = {m.id for m in messages[idle:] if m.name in self.rates}
        for message in messages[idle:]:  # a turn is booked as its task begins: not ahead
            if message.id in later:
                self._buffer(Settle(message.id, message.attempts, "RESERVED"))
        self.limited = bool(later) or (self.limited and not idle)
        self.reserve.extend((m, m.id not in begun) for m in self.app.admit(
            self, [m for m in messages if m.id not in later]))
        if idle:  # none while shutting down: what is held goes back
            self._begin(now)
        return True

    def _own_ignore(self, message):
        """As Celery's worker: where the sender did not say, the task's own ignore_result
        (or task_ignore_result) decides; a chord's member keeps its result."""
        options = message.options or {}
        if (message.fault or message.chord or options.get("ignore_result") is not None
                or not self._setting(message, "ignore_result")):
            return message
        return message._replace(options={**options, "ignore_result": True})

    def _claim_tx(self, room, starts, idle, held, revoked):
        """The claim's transaction; the messages it took. Outcomes the database refuses (a
        value too big, or against a constraint) would refuse it every time: each is
        written alone then."""
        claim = functools.partial(self.broker.claim, self.id, self.queues, room, self.lease)
        claim = functools.partial(claim, revoked=revoked)
        try:
            messages = claim(starts + self.outcomes, idle, held)
        except OperationalError as exc:
            if not ((exc.refused or exc.full) and self.outcomes):
                raise
            self.outcomes = [settle for settle in map(self._alone, self.outcomes) if settle]
            if exc.full:  # those with no room wait apart: the claims and the rest go on
                for settle in self.outcomes:
                    log.error("Task %s: no room for its outcome (%s): tried again each"
                              " heartbeat", settle.id, exc)
                self.unfit.update((settle.id, (settle, time.time())) for settle in self.outcomes)
                self.outcomes = []
            messages = claim(starts + self.outcomes, idle, held)
        return list(map(self._own_ignore, messages))

    def _announce(self, revoked):
        """The tasks revoked while queued that a claim took: announced, as Celery's worker
        announces a revoked task as it reaches it."""
        for message in revoked:
            request_log.info("Discarding revoked task: %s", message)
            _emit("_task_settled", self, message, "REVOKED", TaskRevokedError("revoked"))

    def _alone(self, settle, give_up=False):
        """Write one outcome by itself: None once written, the FAILURE to write in its
        place if the database refuses it (or, with give_up, has no room for it), itself
        if the file failed."""
        try:
            self.broker.settle(self.id, [settle])
            return None
        except OperationalError as exc:
            if not (exc.refused or give_up and exc.full):
                return settle
            log.error("Task %s: its outcome cannot be stored: %s", settle.id, exc)
            error = OperationalError(f"its outcome could not be stored: {exc}")
            return Settle(settle.id, settle.attempts, "FAILURE", exception_to_json(error),
                          chord=settle.chord)

    def _retry_unfit(self, give_up=False):
        """Each outcome the disk had no room for, alone (one too big holds up no other);
        one that waited UNFIT_WAIT (or with give_up, as the worker stops) is a FAILURE
        if that fits: a disk freed meanwhile took the others."""
        now = time.time()
        for task_id, (settle, since) in list(self.unfit.items()):
            left = self._alone(settle, give_up or now - since > UNFIT_WAIT)
            if left is not None and left is not settle:  # its failure, to write in its place
                left = self._alone(left)
            if left is None:
                del self.unfit[task_id]

    def _stop_revoked(self, ids):
        """Begun reserved tasks whose start could not be written: a revoke took their
        row meanwhile. Those revoked with terminate are killed, as if running then."""
        for task_id, signum in ids and self._db(lambda: self.broker.terminating(ids)) or ():
            self._terminate(task_id, signum)

    def _room_ahead(self, idle):
        """How many more it may claim for the reserve: a running task of an acks_late
        task is unacknowledged too, as are those idle children take now if acks_late
        is the rule."""
        if self.warm or self.limited and not idle:
            return 0
        late = sum(1 for c in self.children if c.message and c.late)
        late += idle if self.acks_late else 0
        return max(0, self.ahead - late - len(self.reserve))

    def _begin(self, now):
        """Hand claimed messages to idle children; a reserved one only if this worker
        still holds it (a revoke ends a reserved task at once), and noted as begun.
        False if the database could not say which it holds."""
        free = [c for c in self.children if not c.message]
        take = [self.reserve.popleft() for _ in range(min(len(free), len(self.reserve)))]
        ids = [message.id for message, reserved in take if reserved]
        held = set(ids)  # as the last claim found, if no one committed since (a revoke)
        if ids and self.broker.changed_since_claim():
            held = now >= self.db_retry_at and self._db(lambda: self.broker.held(self.id, ids))
        if held is None or held is False:  # the database failed: they wait
            self.reserve.extendleft(reversed(take))
            return False
        free = iter(free)
        for message, reserved in take:
            refusal = self._refusal(message, now)
            if reserved and message.id not in held:
                self._revoked_before_begin([message])
            elif refusal is not None:
                if refusal[0] == "REVOKED":  # as Celery's: expired too
                    request_log.info("Discarding revoked task: %s", message)
                else:
                    log.warning("Task %s not run: %s", message, refusal[1])
                self._settle_row(message, *refusal)
            else:
                if reserved:  # written with its outcome, or alone if it runs past FLUSH
                    by = self._flush_by(FLUSH)
                    ignored = (message.options or {}).get("ignore_result")  # shows no STARTED
                    self.begun[message.id] = (message.attempts, time.time(),
                                              "UNTRACKED" if ignored else "STARTED", by)
                self._dispatch(next(free), message)
        return True

    def _revoked_before_begin(self, messages):
        """Reserved tasks this worker no longer holds: those a revoke ended (not those
        recovered for another worker) are announced, as Celery's worker does when it
        reaches a revoked task it holds."""
        ids = [message.id for message in messages]
        revoked = ids and self._db(lambda: self.broker.revoked(ids)) or ()
        for message in messages:
            if message.id in revoked:
                log.info("Task %s revoked before it began", message)
                _emit("_task_settled", self, message, "REVOKED", TaskRevokedError("revoked"))

    def _refusal(self, message, now):
        """(state, error) for a claimed message that must not run, else None."""
        if message.fault:
            return "FAILURE", InvalidTaskError(f"corrupt message {message.id}: {message.fault}")
        if (message.revoked or 0) > 0:  # revoked with terminate, then put back
            return "REVOKED", TaskRevokedError("terminated")
        if message.revoked == 0:  # revoked as it ran, then put back: Celery's workers
            return "REVOKED", TaskRevokedError("revoked")  # remember the id, so does the row
        if message.expires is not None and message.expires < now:
            return "REVOKED", TaskRevokedError("expired")
        if message.options.get("chord_error"):  # a chord's callback whose member failed
            error = chord_error(message)
            with contextlib.suppress(AttributeError):  # as Celery's: no task_failure for a
                error.announced = True  # callback that never ran (its member had one)
            return "FAILURE", error
        return None

    def _dispatch(self, child, message):
        """Hand a message to an idle child; one that died meanwhile gives it back."""
        try:
            soft, hard = self._limits(message)
            job = pickle.dumps((tuple(message), soft), pickle.HIGHEST_PROTOCOL)
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            error = (InvalidTaskError(f"corrupt message {message.id}: options nested too deep")
                     if isinstance(exc, RecursionError)  # a newer json reads them: no pickle
                     else ValueError(f"bad time limit for {message.name}: {exc}"))
            log.error("Task %s not run: %s", message, error)
            self._settle_row(message, "FAILURE", error)
            return
        child.message, child.started = message, time.monotonic()
        child.late = self._setting(message, "acks_late")
        child.deadline, child.hard = child.started + hard if hard else None, hard
        try:
            _write(child.out, job)  # written whole: once for all but a big one
        except OSError:  # it never got the task: a fresh child will
            child.killed_for = ("PENDING", None)
            self._kill(child)

    def _after_limit(self, child, message, limit):
        """Have a child call the failure hooks of a run whose hard limit ended it, as
        Celery's main process does; within the same limit, as its hooks are the task's."""
        child.message, child.hooks, child.late = message, True, False
        child.started = time.monotonic()
        child.deadline, child.hard = child.started + limit, limit
        with contextlib.suppress(OSError):  # it died: its sentinel will say so
            _put(child.out, (tuple(message), None, limit))

    def _limits(self, message):
        """(soft, hard): the message's time limits; read once a name where its call set
        neither."""
        if "soft_time_limit" in message.options or "time_limit" in message.options:
            return self._limit(message, "soft_time_limit"), self._limit(message, "time_limit")
        known = self.settings.get((message.name, "limits"))
        if known is None:
            known = self._limit(message, "soft_time_limit"), self._limit(message, "time_limit")
            self.settings[message.name, "limits"] = known
        return known

    def _limit(self, message, key):
        """A time limit in seconds, as given: the call's option over the task's over
        app.conf. One that is not a number is a TypeError or ValueError."""
        value = message.options.get(key)
        value = self._setting(message, key) if value is None else value
        seconds = None if value is None else float(value)  # 10 ** 400: OverflowError
        return value if isinstance(value, (int, float)) else seconds

    def _setting(self, message, key):
        """The task's own option if it has one, else app.conf's ``task_<key>``: read
        once a name, as the loop asks for each task several times."""
        known = self.settings.get((message.name, key), self)
        if known is self:
            try:
                known = getattr(self.app.tasks.get(message.name), key, None)
            except Exception as exc:  # noqa: BLE001 - a task's code never stops the manager
                log.error("Task %s: its option %s cannot be read (%r): app.conf's is used",
                          message.name, key, exc)
                known = None
            known = self.conf[f"task_{key}"] if known is None else known
            self.settings[message.name, key] = known
        return known

    def _collect(self, timeout, idle, busy):
        """Wait for outcomes, deaths, hints and signals. A hint (or a quiet poll) only
        reads the cheap data_version; hints that bring no change are muted for a poll.
        A busy worker hears them too, for a terminate: it acts at once, not at its beat."""
        hear = bool(self.wake and (idle or busy) and time.time() >= self.hints_muted_until)
        if hear != self.hearing:
            self.hearing = hear
            (self._watch if hear else self._unwatch)(self.wake)
        ready = [self.watched[fd] for fd, _ in self.poller.poll(timeout * 1000)]
        look = not ready  # a quiet poll, or a hint
        for item, child in ready:
            if child is None:
                kinds = drain(item)
                if item is self.wake and TERMINATE in kinds:
                    self.next_heartbeat = 0.0  # whose revokes the heartbeat reads
                elif item is self.wake and not idle:  # a task sent: no child to take it
                    self.hints_muted_until = time.time() + POLL
                look = look or item is self.wake
                self.hinted = self.hinted or item is self.wake
            elif item is child.conn:
                self.want = self._receive(child) or self.want
            elif not child.process.is_alive() and child in self.children:
                self._reap(child)
                self.want = True
        if self.child_exited:  # a death its sentinel may not show: a process its task
            self.child_exited = False  # forked holds the sentinel open
            for child in [c for c in self.children if not c.process.is_alive()]:
                if child in self.children:
                    self._reap(child)
                    self.want = True
        if idle and look and time.time() >= self.db_retry_at:
            version = self._db(self.broker.data_version)
            if version is not None and version != self.seen:
                self.want, self.seen, self.empty_hints, self.poll = True, version, 0, POLL
                self.news = True  # others sent tasks: worth a claim for the reserve too
            elif ready:  # hints with no news, again: hear the next ones a poll later
                self.empty_hints += 1
                if self.empty_hints > 1:
                    self.hints_muted_until = time.time() + POLL
            elif self.hinted:  # quiet: the poll is only the net under the hints
                self.poll = min(IDLE_POLL, self.poll * 2)

    # -- outcomes ------------------------------------------------------------

    def _receive(self, child):
        """Take the replies a child sent; False if it died, or was killed for bytes that
        are no reply of its task's."""
        try:
            replies = [(task_id, _outcome(outcome), retire)
                       for task_id, outcome, retire in _reply(child.conn)]
        except (EOFError, OSError):
            return False  # it died: its sentinel will say so
        except Exception as exc:  # noqa: BLE001 - not our framing: its task wrote to the pipe
            child.killed_for = child.killed_for or ("FAILURE", WorkerLostError(
                f"its child's reply to the worker was unreadable ({type(exc).__name__})"))
            child.process.kill()  # reaped by its sentinel, as any death
            return False
        for task_id, outcome, retire in replies:
            if child.message is None:  # no task of its own: bytes its last task left writing
                child.process.kill()
                return False
            if task_id != child.message.id:  # a task that answered for itself early: its
                log.warning("a reply for task %.100r, which this child no longer runs:"
                            " ignored", task_id)  # real one, late
                continue
            if not self._settled(child, outcome, retire):
                return True
        return True

    def _settled(self, child, outcome, retire):
        """Record its task's outcome; False once the child is retired (replaced)."""
        if child.hooks:
            child.message = child.deadline = child.killed_for = None
            child.hooks = False
        else:
            self._finish(child, outcome)
        self.idle_deaths = 0
        if retire:
            child.retiring = True
            _join(child.process, 5)
            if child.process.is_alive():  # held up as it exits: not left behind
                child.process.kill()
                _join(child.process, 1)
            self._reap(child)
            return False
        return True

    def _finish(self, child, outcome):
        message, runtime = child.message, time.monotonic() - child.started
        terminated = child.killed_for if child.killed_for and child.killed_for[0] == "REVOKED" \
            else None
        child.message = child.deadline = child.killed_for = child.revoked = None
        if terminated:  # as Celery's: a terminated task is REVOKED, whatever it did since
            log.info("Task %s revoked: it ended before its kill", message)
            self._settle_row(message, *terminated)
            return
        state = outcome.state
        if state in ("SUCCESS", None):
            if trace_log.isEnabledFor(logging.INFO):
                trace_log.info("Task %s succeeded in %.4fs: %s", message, runtime,
                               _value_shown(outcome.result))
        elif state == "RETRY":  # as Celery's: retry: Retry in 2s: KeyError('k')
            cause = outcome.result and f": {_shown(outcome.result)}"
            left = max(0.0, outcome.eta - time.time())  # 2s, 1.5s, 3600s: not 3.6e+03s
            trace_log.info("Task %s retry: Retry in %ss%s", message,
                           f"{left:.3g}" if left < 100 else f"{left:.0f}", cause or "")
        elif state in ("IGNORED", "REPLACED"):
            trace_log.info("Task %s %s", message, state.lower())
        else:
            exc, trace = _shown(outcome.result), f"\n{outcome.traceback or ''}"
            if state != "FAILURE":  # Celery's Reject
                trace_log.warning("Task %s %s%s", message, exc, trace)
            elif outcome.expected:  # one of its throws: no traceback
                trace_log.info("Task %s raised expected: %s", message, exc)
            else:
                trace_log.error("Task %s raised unexpected: %s%s", message, exc, trace)
        # Reject(requeue=True): as Celery, only under acks_late (else the message was
        # acknowledged before the run). Each delivery counts: at the last, it is a FAILURE.
        if state == "PENDING" and not self._setting(message, "acks_late"):
            log.warning("Task %s not requeued: its acks_late is off", message)
            state = "IGNORED"
        if state == "PENDING":
            self._put_back(message, outcome._replace(state="FAILURE"))
        else:  # as Celery, Reject(requeue=False) stores a FAILURE
            state = "FAILURE" if state == "REJECTED" else state
            self._record(message, outcome if state == outcome.state else outcome._replace(
                state=state))

    def _settle_row(self, message, state, exc=None):
        """End a task that did not run. As Celery's for a chord's callback failed by a
        member, a failure stores its error's line as its traceback; errbacks get none."""
        _emit("_task_settled", self, message, state, exc)
        trace = None
        if state == "FAILURE":
            with contextlib.suppress(Exception):  # a member's error class, made from data
                trace = "".join(traceback.format_exception_only(type(exc), exc))
        self._record(message, Outcome(state, exception_to_json(exc) if exc else None), trace)

    def _put_back(self, message, last=None):
        """Back to the queue, unless it had all its deliveries: every put-back counts.
        Then the ``last`` outcome is final, by default a WorkerLostError."""
        if message.attempts >= self.conf.task_max_deliveries:
            self._record(message, last or Outcome("FAILURE", self._too_often()))
        else:
            self._settle_row(message, "PENDING")
            self.want = True  # our own commit does not move data_version

    def _too_often(self):
        """The error, as JSON, of a task whose worker died at every one of its deliveries."""
        cap = self.conf.task_max_deliveries
        return exception_to_json(WorkerLostError(
            f"task was delivered {cap} times and its worker died each time"))

    def _record(self, message, outcome, stored_trace=None):
        """Buffer an outcome for the next transaction, with a chain's next step if any."""
        state, result = outcome.state, outcome.result
        if outcome.flows is not None:  # the task changed its request's chain or callbacks
            message = message._replace(options={**message.options, **outcome.flows})
        follow = failed = ()
        flows = ("chain", "link", "link_error")
        if state == "REPLACED" or state in FINAL and any(map(message.options.get, flows)):
            try:  # the claim checked the chain's shape; this is the net
                follow, failed = next_steps(self.app, message, state, result, outcome.traceback)
            except WORKFLOW_FAULTS as exc:
                log.error("Task %s: its workflow ends here: %s", message, exc)
                if state in ("SUCCESS", "REPLACED"):  # as Celery's: a task whose next steps
                    state, result = "FAILURE", exception_to_json(exc)  # cannot be sent fails
                for errbacks in (True, False):  # the chain's later steps fail with it
                    with contextlib.suppress(*WORKFLOW_FAULTS):
                        follow, failed = next_steps(self.app, message, state, result,
                                                    outcome.traceback, errbacks)
                        break
        ignored = message.options.get("ignore_result") and not (
            state != "SUCCESS" and self._setting(message, "store_errors_even_if_ignored"))
        if ignored and state in ("SUCCESS", "FAILURE", "RETRY"):
            # as Celery: sent on, called back, not stored (errors and retries too, unless told)
            state = "RETRY_UNSTORED" if state == "RETRY" else None
        # our own commit does not move data_version: claim after it if it sends a step
        # or may release a chord's callback
        self.want = self.want or bool(follow or message.chord)
        began = self.begun.pop(message.id, (0, None))[1]  # written with its outcome
        self._buffer(Settle(message.id, message.attempts, state, result,
                            stored_trace or outcome.traceback,
                            outcome.eta, outcome.body, message.chord, follow, failed, began,
                            outcome.moved))

    def _buffer(self, settle):
        self._flush_by(FLUSH)
        self.outcomes.append(settle)

    def _flush_by(self, seconds):
        """Buffered records (outcomes, starts) are written by the earliest deadline."""
        by = time.monotonic() + seconds
        if not (self.outcomes or self.begun) or by < self.flush_at:
            self.flush_at = by
        return by

    def _starts(self, every=False):
        """Settle records of the begun reserved tasks whose start is due to be written."""
        now = time.monotonic()
        return [Settle(task_id, attempts, state, eta=when)
                for task_id, (attempts, when, state, by) in self.begun.items()
                if every or by <= now]

    def _reap(self, child):
        """A child exited: account for its task, then start a new one in its place."""
        limit = child.killed_for and isinstance(child.killed_for[1], TimeLimitExceeded)
        if child.message and not limit and child.conn.poll():  # past its hard limit, a
            self._receive(child)  # reply is too late; else it reported before exiting
            if child not in self.children:  # its reply retired it: reaped meanwhile
                return
        if child.message:
            self._lost(child)
        elif not child.retiring:
            code = child.process.exitcode
            log.error("child %s exited unexpectedly (exitcode %s)", child.process.pid, code)
            # SIGKILL comes from outside (a user, the OOM killer): those are only replaced
            self.idle_deaths += code != -signal.SIGKILL
            if self.idle_deaths > 3 * self.concurrency:
                log.critical("children keep dying before they run anything: stopping")
                self.cold = True
        self._unwatch(child.conn)
        self._unwatch(child.process.sentinel)
        child.conn.close()
        child.out.close()
        index = self.children.index(child)
        try:
            if not self.cold:
                self.children[index] = self._start_child(index)
                return
        except ImproperlyConfigured as exc:
            log.critical("%s: stopping when the running tasks end", exc)
            self.warm = True
        self.children.pop(index)

    def _lost(self, child):
        message, child.message = child.message, None
        if child.hooks:  # its outcome is stored already, or soon
            log.error("Task %s: its hooks did not end (exitcode %s)", message,
                      child.process.exitcode)
            return
        if child.killed_for:
            state, exc = child.killed_for
        elif child.revoked and child.process.exitcode == -child.revoked.signum:
            state, exc = "REVOKED", child.revoked  # its terminate's signal ended it
        else:
            code = child.process.exitcode
            name = SIGNAL_NAMES.get(-code, "a real-time signal")
            how = f"signal {-code} ({name})" if code < 0 else f"exitcode {code}"
            state, exc = "FAILURE", WorkerLostError(f"Worker exited prematurely: {how}")
            if self._setting(message, "acks_late") and self._setting(message,
                                                                    "reject_on_worker_lost"):
                state = "PENDING"
        if state == "PENDING" and exc and message.attempts >= self.conf.task_max_deliveries:
            state = "FAILURE"  # delivered too often: the last reason it was put back is final
        log.error("Task %s %s: %s", message, "requeued" if state == "PENDING" else state, exc)
        if state == "FAILURE" and isinstance(exc, TimeLimitExceeded):  # hooks, once written
            self.unwritten.append((message, child.hard))
        if state == "PENDING":
            self._put_back(message)
        else:
            self._settle_row(message, state, exc)

    def _enforce_time_limits(self):
        """Past its hard limit, a child is told to end its task (a word, and SIGUSR1:
        billiard's send SIGTERM, which miniq's children leave to the manager), so that
        its finally blocks run (a SystemExit), then killed HARD_GRACE later: all together.
        One whose reply waits ended in time: the next collect takes it."""
        now = time.monotonic()
        ending = [c for c in self.children if c.deadline is not None and now >= c.deadline
                  and not c.conn.poll()]
        for child in ending:
            if not (child.killed_for or child.hooks):  # else revoked, and it ignored that
                message = child.message
                # as Celery: acks_late without acks_on_timeout puts it back
                acks = self._setting(message, "acks_on_timeout")  # Celery 5.7's name
                if acks is None:
                    acks = self._setting(message, "acks_on_failure_or_timeout")
                back = self._setting(message, "acks_late") and not acks
                child.killed_for = ("PENDING" if back else "FAILURE",
                                    TimeLimitExceeded(child.hard))  # as Celery's: the limit
                log.error("Hard time limit (%gs) exceeded for %s", child.hard, message)
            with contextlib.suppress(OSError):  # it died: its sentinel will say so
                _put(child.out, None)
                os.kill(child.process.pid, signal.SIGUSR1)
        by = time.monotonic() + HARD_GRACE
        for child in ending:
            _join(child.process, by - time.monotonic())
            self._kill(child)

    def _kill(self, child):
        child.process.kill()
        _join(child.process, 5)
        self._reap(child)

    # -- housekeeping ----------------------------------------------------------

    def _heartbeat(self):
        """Prove this worker alive and end revoked tasks; now and then recover the tasks
        of dead workers."""
        _emit("_heartbeat_sent", self)
        self.child_exited = True  # in case the app took SIGCHLD: a look a heartbeat
        if self.unfit:
            self._retry_unfit()
        self.heartbeats += 1
        self.next_heartbeat = time.time() + self.conf.worker_heartbeat
        kills = self._db(self._beat_file)
        if kills is None:
            return
        self._landed()
        self._db(self.broker.checkpoint)
        for task_id, signum in kills:
            self._terminate(task_id, signum)
        if self.heartbeats % 5 == 1 or self.recheck:
            self.recheck = False
            self._db(self._recover)

    def _landed(self):
        """Its heartbeat (or registration) is written. After a stall (the file locked,
        say), others may have been stalled too: their silence counts from now on."""
        now, every = time.time(), self.conf.worker_heartbeat
        if now - self.beat_landed > max(self.lease / 2, every + self.lease / 4):  # not its pace
            self.beating_since = now
        self.beat_landed = now

    def _beat_file(self):
        """Heartbeat, registering again where this worker has no row: the file was deleted
        or replaced (the broker follows the path), or others took it for dead. Returns
        the revoked tasks to kill."""
        kills = self.broker.heartbeat(self.id, self.lease)
        if kills is None:  # said once: the row is back after this
            log.error("database %s was removed or replaced, or this worker was taken for"
                      " dead: registering again", self.broker.path)
            self._register()
        return kills or []

    def _terminate(self, task_id, signum):
        signum = _signal(signum)
        for child in self.children:
            if child.message and child.message.id == task_id and not (
                    child.killed_for or child.hooks) and (
                    getattr(child.revoked, "signum", None) != signum):
                error = TaskRevokedError("terminated")  # sent once a signal: another, again
                error.signum = signum  # for the task_revoked signal
                if signum in STOP_SIGNALS or signum == signal.SIGKILL:
                    child.killed_for = ("REVOKED", error)  # children ignore a stop signal:
                    child.deadline = time.monotonic() + TERMINATE_GRACE  # SIGKILL after this
                else:  # one the task may handle: as Celery's, its outcome stands if it lives
                    child.revoked = error
                with contextlib.suppress(ProcessLookupError):  # it has just ended
                    os.kill(child.process.pid, signum)
                _emit("_task_settled", self, child.message, "REVOKED", error)  # task_revoked
                error.announced = True  # now, as Celery's: not again when it ends

    def _recover(self):
        """Put back the tasks of workers that died (pid gone here, or silent too long:
        counted from when this worker's own heartbeats last began to land)."""
        now, dead = time.time(), []
        heard = now - self.beating_since > self.lease  # else their silence may be ours
        found = self.broker.held(self.id) - self._held()  # a restored copy of the file, say
        strays, self.strays = found & self.strays, found  # twice in a row: no passing state
        for worker in self.broker.workers():
            if worker.id == self.id:
                continue
            gone = worker.machine == self.machine and not pid_alive(worker.pid)
            if gone and now - worker.heartbeat < self.conf.worker_heartbeat + 2 * ORPHAN_AFTER:
                self.recheck = True  # its children may still run its tasks: wait for them
            elif gone or heard and now - worker.heartbeat > self.lease:
                dead.append(worker.id)
        count = self.broker.recover(dead, self.conf.task_max_deliveries, self._too_often(),
                                    heard, self.id, sorted(strays))
        if strays:
            log.warning("put back %d task(s) the file says this worker holds and it does"
                        " not (was the file restored from a copy?)", len(strays))
        if count or dead:
            log.warning("recovered %d task(s) from %d dead worker(s)", count, len(dead))
        self.want = self.want or count > 0  # our own commit does not move data_version

    def _held(self):
        """The ids of the tasks this worker holds: running, reserved, or whose outcome
        is still to be written."""
        return ({c.message.id for c in self.children if c.message} | set(self.begun)
                | {m.id for m, _ in (*self.reserve, *self.unwritten, *self.timed_out)}
                | {settle.id for settle in self.outcomes} | set(self.unfit))

    def _sweep(self, now):
        """Delete expired results: a short transaction a pass while some are left (other
        workers' claims come between), else once a heartbeat."""
        expires = self.expires
        seconds = expires.total_seconds() if hasattr(expires, "total_seconds") else expires
        more = self._db(lambda: self.broker.sweep(now - seconds))
        self.sweep_due = now if more else now + self.conf.worker_heartbeat

    def _db(self, fn):
        """Run a database step; on failure log once, reopen later with backoff, and
        return None. Only a step that failed succeeding proves the file usable again: a
        full disk still answers the reads between two refused claims."""
        try:
            value = fn()
        except (MiniqError, OperationalError, OSError) as exc:
            text = str(exc)
            self.broker.close()  # the next step opens the file afresh
            self.db_delay = min(5.0, max(0.1, 2 * self.db_delay))
            self.db_retry_at = time.time() + self.db_delay
            self.db_failing |= {_step(fn)}
            if text != self.db_error:
                log.error("database error (retrying with backoff): %s", text)
                self.db_error = text
            return None
        if self.db_failing and _step(fn) in self.db_failing:
            log.warning("database usable again")
            self.db_error, self.db_failing, self.db_retry_at, self.db_delay = (
                None, frozenset(), 0.0, 0.0)
            self.want = True
        return value


