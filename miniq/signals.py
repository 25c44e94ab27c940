"""Celery's signals: ``Signal`` (connect, disconnect, send) and the signals that
producers, the worker and its children send. The core never imports this
module; it calls the hooks at the end through ``task.emit`` once an app has.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import socket
import threading
import time
import weakref
from typing import Any, Callable

from .exceptions import ImproperlyConfigured, NotRegistered
from .task import Context, ExceptionInfo, call_shown, iso_time
from .utils.json import dumps, loads

__all__ = ["Signal", "before_task_publish", "after_task_publish", "task_prerun", "task_postrun",
           "task_success", "task_retry", "task_failure", "task_revoked", "celeryd_init",
           "import_modules", "worker_init", "worker_process_init", "worker_process_shutdown",
           "worker_ready", "worker_shutdown", "setup_logging", "after_setup_logger",
           "after_setup_task_logger", "task_received", "task_unknown", "worker_shutting_down",
           "celeryd_after_setup", "heartbeat_sent", "worker_before_create_process",
           "beat_init", "beat_embedded_init"]
log = logging.getLogger("miniq.signals")


def _key(obj):
    """What names a receiver or a sender, as in Celery: a string by its value, a
    bound method by its object and function, anything else by its identity."""
    if hasattr(type(obj), "_get_current_object"):  # shared_task: the task it stands for
        obj = obj._get_current_object()
    if isinstance(obj, (str, bytes)):
        return obj
    if hasattr(obj, "__func__"):
        return id(getattr(obj, "__self__", None)), id(obj.__func__)
    return id(obj)


ANY = _key(None)  # a receiver connected without a sender hears every sender


class Signal:
    """Receivers called on ``send``: ``@sig.connect``, ``@sig.connect(sender=...)``
    or ``sig.connect(fun, sender=None, weak=True, dispatch_uid=None, retry=False)``."""

    def __init__(self, providing_args: Any = None, use_caching: bool = False, name: str = None):
        self.receivers = []  # ((receiver key, sender key), what gives the receiver or None)
        self.name = name
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Signal: {self.name}>"

    def connect(self, *args: Any, **options: Any) -> Callable:
        """Connect a receiver; called with options only, return the decorator that does."""
        if args and callable(args[0]):
            return self._connect(*args, **options)
        return lambda fun: self._connect(fun, *args, **options)

    def _connect(self, fun, sender=None, weak=True, dispatch_uid=None, retry=False):
        if not _takes_keywords(fun):
            raise ValueError("Signal receiver must accept keyword arguments.")
        if retry:  # as Celery: held strongly, and known by the function it calls
            fun, weak = _retrying(fun, dispatch_uid or _key(fun)), False
        key = _lookup(fun, sender, dispatch_uid)
        ref = weakref.WeakMethod if hasattr(fun, "__func__") else weakref.ref
        receiver = ref(fun) if weak else lambda: fun
        with self.lock:
            self.receivers = [r for r in self.receivers if r[1]() is not None]
            if all(k != key for k, _ in self.receivers):
                self.receivers.append((key, receiver))
        return fun

    def disconnect(self, receiver: Callable = None, sender: Any = None, weak: Any = None,
                   dispatch_uid: Any = None) -> bool:
        """Disconnect a receiver (or the one of ``dispatch_uid``) from sender; True if it was."""
        key = _lookup(receiver, sender, dispatch_uid)
        with self.lock:
            kept = [r for r in self.receivers if r[0] != key]
            found, self.receivers = len(kept) < len(self.receivers), kept
        return found

    def has_listeners(self, sender: Any = None) -> bool:
        return bool(self._live(sender))

    def send(self, sender: Any, **named: Any) -> list:
        """Call the receivers of this sender (and of any sender); ``[(receiver, response)]``.
        A receiver that raises is logged and its exception is its response, as in Celery."""
        responses = []
        for receiver in self._live(sender):
            try:
                response = receiver(signal=self, sender=sender, **named)
            except Exception as exc:  # noqa: BLE001 - a receiver's bug never stops a sender
                log.exception("signal receiver %r raised %r", receiver, exc)
                response = exc
            responses.append((receiver, response))
        return responses

    send_robust = send

    def _live(self, sender):
        keys = (ANY, _key(sender))
        found = [r() for (_, wanted), r in self.receivers if wanted in keys]
        return [r for r in found if r is not None]


def _takes_keywords(fun):
    """Whether fun takes ``**kwargs``; read from its code where it has some, as Celery."""
    code = getattr(fun, "__code__", None)
    if code is not None:
        return bool(code.co_flags & inspect.CO_VARKEYWORDS)
    kinds = [p.kind for p in inspect.signature(fun).parameters.values()]
    return inspect.Parameter.VAR_KEYWORD in kinds


def _lookup(receiver, sender, dispatch_uid):
    uid = dispatch_uid or getattr(receiver, "_dispatch_uid", None)
    return uid or _key(receiver), _key(sender)


def _retrying(fun, uid):
    """Celery's ``connect(retry=True)``: call fun until it returns, 2 s more between tries
    up to 30 s."""
    def call(*args, **kwargs):
        pause = 0
        while True:
            try:
                return fun(*args, **kwargs)
            except Exception:  # noqa: BLE001 - retried, as asked
                pause = min(pause + 2, 30)
                log.exception("signal receiver %r raised; retrying in %d s", fun, pause)
                time.sleep(pause)
    call._dispatch_uid = uid
    return call


# Tasks: sent where Celery sends them, with the same sender and arguments.
before_task_publish = Signal(name="before_task_publish")
after_task_publish = Signal(name="after_task_publish")
task_prerun = Signal(name="task_prerun")
task_postrun = Signal(name="task_postrun")
task_success = Signal(name="task_success")
task_retry = Signal(name="task_retry")
task_failure = Signal(name="task_failure")
task_revoked = Signal(name="task_revoked")
# The worker command, its manager and its children.
celeryd_init = Signal(name="celeryd_init")
import_modules = Signal(name="import_modules")
worker_init = Signal(name="worker_init")
worker_process_init = Signal(name="worker_process_init")
worker_process_shutdown = Signal(name="worker_process_shutdown")
worker_ready = Signal(name="worker_ready")
worker_shutdown = Signal(name="worker_shutdown")
setup_logging = Signal(name="setup_logging")
after_setup_logger = Signal(name="after_setup_logger")
after_setup_task_logger = Signal(name="after_setup_task_logger")
task_received = Signal(name="task_received")
beat_init = Signal(name="beat_init")  # sender: the Beat, as it starts
beat_embedded_init = Signal(name="beat_embedded_init")  # then, in a worker's -B
task_unknown = Signal(name="task_unknown")
worker_shutting_down = Signal(name="worker_shutting_down")
celeryd_after_setup = Signal(name="celeryd_after_setup")
heartbeat_sent = Signal(name="heartbeat_sent")
worker_before_create_process = Signal(name="worker_before_create_process")


# -- hooks: the core calls these through task.emit(), by name -----------------

HEADERS = {"lang", "task", "id", "shadow", "eta", "expires", "group", "group_index", "retries",
           "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr", "origin",
           "ignore_result", "replaced_task_nesting", "stamped_headers", "stamps"}  # Celery's
# own (protocol 2); any other header is custom


def _publishing(rows):
    """before_task_publish for each message row; the arguments and custom headers its
    receivers add, change or remove travel with the message, as in Celery."""
    if not before_task_publish.receivers:
        return rows
    sent = []
    for row in rows:
        body, headers, options = _message(row)
        before_task_publish.send(sender=row[1], body=body, exchange="", routing_key=row[2],
                                 headers=headers, properties={"correlation_id": row[0]},
                                 declare=[], retry_policy=None)
        custom = {key: value for key, value in headers.items() if key not in HEADERS}
        if custom != (options.get("headers") or {}):
            options["headers"] = custom or None
            row = (*row[:5], dumps(options), *row[6:])
        args = dumps(list(body[:2]))  # as a receiver left them
        sent.append((*row[:4], args, *row[5:]) if args != row[4] else row)
    return sent


def _published(rows):
    if not after_task_publish.receivers:
        return
    for row in rows:
        body, headers, _ = _message(row)
        after_task_publish.send(sender=row[1], body=body, headers=headers, exchange="",
                                routing_key=row[2])


@functools.lru_cache(maxsize=1)
def _host():
    return socket.gethostname()


def _message(row):
    """(body, headers, options) of a message row, as Celery's publish signals see them."""
    task_id, name, _queue, _priority, body, options, eta, expires = row[:8]
    args, kwargs = loads(body)
    options = loads(options or "{}")
    args_shown, kwargs_shown = call_shown(args, kwargs)
    headers = {**(options.get("headers") or {}),
               "lang": "py", "task": name, "id": task_id, "eta": iso_time(eta),
               "expires": iso_time(expires), "group": options.get("group"), "retries": row[11],
               "timelimit": [options.get("time_limit"), options.get("soft_time_limit")],
               "root_id": options.get("root_id") or task_id,
               "parent_id": options.get("parent_id"), "shadow": options.get("shadow"),
               "group_index": None,
               "argsrepr": options.get("argsrepr") or args_shown,
               "kwargsrepr": options.get("kwargsrepr") or kwargs_shown,
               "origin": f"gen{os.getpid()}@{_host()}",
               "ignore_result": bool(options.get("ignore_result")),
               "replaced_task_nesting": options.get("replaced_task_nesting", 0),
               "stamped_headers": None, "stamps": {}}
    embed = {"callbacks": None, "errbacks": None, "chain": options.get("chain"), "chord": None}
    return (args, kwargs, embed), headers, options


_started = {}  # id(request) -> when its run started: task_success's runtime


def _task_started(task, request):
    _started[id(request)] = time.monotonic()
    task_prerun.send(sender=task, task_id=request.id, task=task, args=request.args,
                     kwargs=request.kwargs)


def _task_outcome(task, request, outcome, value):
    """task_success, task_failure or task_retry, after the task's own hook."""
    runtime = time.monotonic() - _started.pop(id(request), time.monotonic())
    exc = outcome.exc
    if exc is None:
        task_success.send(sender=task, result=value, runtime=runtime)
    elif outcome.state == "RETRY":
        einfo = ExceptionInfo(exc, outcome.traceback)  # the Retry, as Celery's reason
        task_retry.send(sender=task, request=request, reason=exc, einfo=einfo)
    else:
        _failed(task, request, exc, outcome.traceback)


def _failed(task, request, exc, traceback=None):
    task_failure.send(sender=task, task_id=request.id, exception=exc, args=request.args,
                      kwargs=request.kwargs, traceback=exc.__traceback__,
                      einfo=ExceptionInfo(exc, traceback))


def _task_finished(task, request, state, value):
    """task_postrun; after a Reject that does not requeue, task_failure too, as Celery's
    worker sends it for the message it rejects (an eager run has none)."""
    task_postrun.send(sender=task, task_id=request.id, task=task, args=request.args,
                      kwargs=request.kwargs, retval=value,
                      state="REJECTED" if state == "PENDING" else state)
    if state == "REJECTED" and not request.is_eager:
        _failed(task, request, value)


def _task_settled(worker, message, state, exc):
    """In the manager: task_failure or task_revoked for an outcome it decided itself (a
    hard time limit, a lost child, a revoke that terminated it, an expiry)."""
    if state not in ("FAILURE", "REVOKED") or getattr(exc, "announced", False):
        return
    task, request = worker.app.tasks.get(message.name), _request_of(worker, message)
    if state == "FAILURE":
        return _failed(task, request, exc)
    task_revoked.send(sender=task, request=request, terminated=exc.args == ("terminated",),
                      signum=getattr(exc, "signum", None), expired=exc.args == ("expired",))


def _request_of(worker, message, **fields):
    """A request for a message the manager holds, with the fields it can give: as
    Celery's worker Request, also by the names task_id and task_name."""
    try:
        args, kwargs = loads(message.body)
    except (ValueError, TypeError, RecursionError):  # a corrupt row fails too: its
        args = kwargs = None  # arguments are unknown
    options = message.options or {}
    return Context(id=message.id, task_id=message.id, task=message.name, name=message.name,
                   task_name=message.name, args=args, kwargs=kwargs,
                   hostname=worker.hostname, called_directly=False,
                   delivery_info=message.delivery_info(), eta=iso_time(message.eta),
                   expires=iso_time(message.expires), root_id=options.get("root_id")
                   or message.id, parent_id=options.get("sent_by") or options.get("parent_id"),
                   **fields)


def _tasks_claimed(worker, messages, now):
    """In the manager, as Celery's consumer: task_received for each task a claim took,
    with a request whose ``task`` is the task and ``name`` its name, as Celery's; for
    one whose name no task has, task_unknown (the task then fails as it runs). None for
    one revoked or expired."""
    if not (task_received.receivers or task_unknown.receivers):
        return
    for message in messages:  # as the worker's _refusal judges them, at the same time
        expired = message.expires is not None and message.expires < now
        if expired or (message.revoked or -1) >= 0:
            continue  # as Celery's consumer: discarded, announced as revoked, not received
        task = worker.app.tasks.get(message.name)
        if task is None:
            task_unknown.send(sender=worker, message=message, name=message.name,
                              id=message.id, exc=NotRegistered(message.name))
        else:
            request = _request_of(worker, message)
            request.task = task
            task_received.send(sender=worker, request=request)


def _stopping(worker, sig, how, exitcode):
    worker_shutting_down.send(sender=worker.hostname, sig=sig, how=how, exitcode=exitcode)


def _worker_set_up(worker):
    _starting(celeryd_after_setup, sender=worker.hostname, instance=worker,
              conf=worker.app.conf)


def _starting(signal, **named):
    """Send one of a worker's start-up signals. A receiver that met what miniq refuses
    (a setting, or a part of Celery's such as app.amqp) stops the worker, where Celery's
    would log it and go on: a worker set up without what the receiver meant to add (its
    own queue, say) would otherwise serve as if nothing had been asked."""
    for receiver, response in signal.send(**named):
        if isinstance(response, ImproperlyConfigured):
            name = getattr(receiver, "__qualname__", repr(receiver))
            raise ImproperlyConfigured(f"{signal.name} receiver {name}: {response}")


_taken = None  # whether a setup_logging receiver took logging over; a forked child knows


def _setup_logging(loglevel, logfile, format, configure):
    """setup_logging, once a process line, as Celery; unless a receiver took logging over,
    configure() it as miniq does (a child, its own part again), then after_setup_logger.
    True: the caller has nothing left to do."""
    global _taken
    if _taken or not loglevel:
        return True
    if _taken is False:  # a forked child of a process that set it up: what it did stays
        configure(inherited=True)
        return True
    named = {"loglevel": logging.getLevelName(loglevel.upper()), "logfile": logfile,
             "format": format, "colorize": False}
    responses = setup_logging.send(sender=None, **named)
    for _, response in responses:
        if isinstance(response, Exception):  # as Celery 5.7: logging setup fails loudly
            raise response
    _taken = bool(responses)
    if not responses:
        task_format = configure()
        after_setup_logger.send(sender=None, logger=logging.getLogger(), **named)
        after_setup_task_logger.send(sender=None, logger=logging.getLogger("celery.task"),
                                     **{**named, "format": task_format})
    return True


def _child_started(hostname, loglevel, format, configure):
    _setup_logging(loglevel, None, format, configure)
    worker_process_init.send(sender=hostname)
    return True


def _child_stopped(hostname):
    worker_process_shutdown.send(sender=hostname, pid=os.getpid(), exitcode=0)


def _worker_init(worker, options):
    level = logging.getLevelName(str(options.get("loglevel")).upper())  # a number, as Celery's
    options = {**options, "loglevel": level if isinstance(level, int) else options["loglevel"]}
    _starting(celeryd_init, sender=worker.hostname, instance=worker, conf=worker.app.conf,
              options=options)


def _worker_initialised(worker):
    """worker_init, as Celery's: once its queues and concurrency are set."""
    _starting(worker_init, sender=worker)


def _beat_started(beat, embedded):
    beat_init.send(sender=beat)
    if embedded:
        beat_embedded_init.send(sender=beat)


_import_modules = import_modules.send  # each called with its sender alone
_worker_ready = worker_ready.send
_worker_shutdown = worker_shutdown.send
_heartbeat_sent = heartbeat_sent.send
_creating_child = worker_before_create_process.send
