"""Task, what ``@app.task`` makes (delay, apply_async, retry, update_state,
request), and ``execute()``: the one place a message is run, by worker
children, by eager mode and by tests alike.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import logging
import math
import random
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from datetime import datetime, timezone
from types import GenericAlias, SimpleNamespace
from typing import Any, NamedTuple

from .broker import NUMBER, Message, printable
from .exceptions import (ChordError, Ignore, ImproperlyConfigured, InvalidTaskError,
                         MaxRetriesExceededError, NotRegistered, OperationalError, Reject,
                         Retry, SoftTimeLimitExceeded, TimeLimitExceeded)
from .canvas import (Signature, _listed, _mapped, chunks, group, maybe_signature, new_style,
                     steps_after)
from .result import (EagerResult, ResultBase, allow_join_result, denied_join_result,
                     exception_from_json, exception_to_json, new_id, pickleable)
from .utils.json import dumps, loads

log = logging.getLogger("miniq.worker")
# as Celery's: the lines of its loggers are the program's to show, or not (no last resort)
logging.getLogger("celery").addHandler(logging.NullHandler())

UNHOOKED = {"IGNORED", "REPLACED", "REJECTED", "PENDING"}  # Ignore and Reject: Celery calls no hook
SIGNALS = f"{__package__}.signals"  # by its path in this copy, vendored or not
# Celery's task options that would change what a task does, and that miniq lacks
NOT_HONOURED = {"backend", "filter", "pydantic", "pydantic_context", "pydantic_dump_kwargs",
                "pydantic_strict", "Request", "Strategy"}


class Outcome(NamedTuple):
    """What running a message produced, ready to store."""
    state: str | None                 # SUCCESS, FAILURE, RETRY; None: success not kept
    result: str | None                # JSON value or exception info
    traceback: str | None = None
    eta: float = 0.0                  # RETRY: when to run again
    body: str | None = None           # RETRY with new arguments
    exc: BaseException | None = None  # in-process only; never crosses a pipe
    expected: bool = False            # FAILURE: one of the task's ``throws``
    flows: dict | None = None         # chain, link, link_error as the run left them, if changed
    moved: tuple = (None, None)       # RETRY: the queue and priority retry() names, if any


# Celery's Task members for machinery miniq has not: named where asked for
CELERY_ONLY = {"backend": "result backend (miniq's results are read by AsyncResult)",
               "send_event": "event sender (miniq sends no events)",
               "signature_from_request": "signature of a request (retry() makes miniq's)",
               "add_to_chord": "way to grow a running chord (a chord's header is fixed as"
                               " it is sent)"}
# the options of Celery's retry() that its new message would honour: miniq's retry is the
# same row, run again (queue and priority aside)
RESENT = {"expires", "time_limit", "soft_time_limit", "headers", "link", "link_error",
          "exchange", "routing_key", "shadow", "ignore_result", "argsrepr", "kwargsrepr"}
UNKEPT = {"chord": "a chord member's callback stays in the database",  # Celery's fields
          "group_index": "a group member's place is not kept"}  # a member's request lacks
# what the headers of Celery's messages give a worker's run (and an eager one lacks), made
# as a task reads them: how the logs show its call, where its sender did not say
HEADERS = {"argsrepr": lambda request: call_shown(request.args, request.kwargs)[0],
           "kwargsrepr": lambda request: call_shown(request.args, request.kwargs)[1],
           "lang": lambda request: "py"}


def call_shown(args, kwargs):
    """(argsrepr, kwargsrepr): a call's arguments as Celery's message headers show them."""
    return repr(tuple(args or ()))[:1024], repr(kwargs or {})[:1024]


class Context(SimpleNamespace):
    """``self.request``: what a running task knows about its own call. A field not
    given has its class default, as in Celery's."""

    id = task = hostname = root_id = parent_id = group = eta = expires = origin = None
    kwargs = delivery_info = headers = timelimit = time_limit = soft_time_limit = None
    chain = callbacks = errbacks = correlation_id = reply_to = properties = shadow = None
    loglevel = logfile = stamps = stamped_headers = utc = args = taskset = None
    retries, attempts, is_eager, called_directly, replaced_task_nesting = 0, 1, False, True, 0
    ignore_result = False

    def get(self, key, default=None):
        return getattr(self, key, default)

    def update(self, *args, **kwargs):  # as Celery's Context
        vars(self).update(*args, **kwargs)

    def clear(self):
        vars(self).clear()

    @property
    def children(self) -> list:
        """As Celery's: the results of the tasks this run sent (unless its task's trail
        is off, or a call said add_to_parent=False)."""
        return vars(self).setdefault("_children", [])

    def __getattr__(self, name):  # a field it lacks: say why for those Celery's has
        if name in UNKEPT and self.called_directly:  # no run of its own: none, as Celery's
            return None
        if name in HEADERS and not (self.called_directly or self.is_eager):
            return HEADERS[name](self)
        raise AttributeError(f"self.request.{name}: miniq has none ({UNKEPT[name]})"
                             if name in UNKEPT else f"'Context' object has no attribute {name!r}")

    def __repr__(self):  # as Celery's: what a task's print(self.request) shows
        return f"<Context: {vars(self)!r}>"


class _Running(threading.local):
    request = None  # the run this thread is in: the parent of the messages it sends
    task = None  # its task: Celery's current_task


_running = _Running()


def emit(hook, *args):
    """Call the signals module's hook if this process imported that module (the core
    never does): an app that does not use signals pays one dict lookup a call."""
    module = sys.modules.get(SIGNALS)
    return module and getattr(module, hook)(*args)


def lineage():
    """The parent_id and root_id of a message sent from inside a running task, and
    whether that task's result lists it as a child (its ``trail``), kept with it."""
    parent = _running.request
    if not parent:
        return {}
    trail = getattr(_running.task.app.tasks.get(parent.task), "trail", True)
    return {"parent_id": parent.id, "root_id": parent.root_id, "untrailed": not trail}


def add_trail(result, add_to_parent=True):
    """As Celery's: a task sent from inside a running task joins its request's children."""
    if _running.request and add_to_parent and getattr(_running.task, "trail", True):
        _running.request.children.append(result)


def running_priority():
    """The priority of the task running here, if any: task_inherit_parent_priority."""
    parent = _running.request
    return parent and (parent.delivery_info or {}).get("priority")


# apply_async checks calls against it: the function's own, not one a decorator wraps (as
# Celery's: a decorator may supply arguments, say a database session)
_signature = functools.cache(functools.partial(inspect.signature, follow_wrapped=False))
def encode_args(name, args, kwargs):
    """JSON of the call's arguments; what JSON cannot carry fails here, at the call."""
    if not isinstance(args, (list, tuple, type(None))):  # as Celery's: "ab" is not ("a", "b")
        raise TypeError(f"{name}: task args must be a list or tuple, not {args!r}")
    if not isinstance(kwargs, (Mapping, type(None))):
        raise TypeError(f"{name}: task keyword arguments must be a mapping, not {kwargs!r}")
    try:
        return dumps([list(args or ()), dict(kwargs or {})])
    except (TypeError, ValueError, RecursionError) as exc:
        raise TypeError(f"{name}: arguments must be JSON serializable: {exc}") from None


def _retry_call(task, request, args, kwargs):
    """A retry's (args, kwargs), as Celery 5.7's retry() merges them with the call's:
    new args replace keywords the call gave the same parameters; new kwargs replace
    positional values the call gave theirs. The call's own stand where none are given."""
    try:
        params = list(_signature(task.__wrapped__).parameters.values())[bool(task.bind):]
        sig = inspect.Signature(params)
    except (TypeError, ValueError):  # no signature to read: the values as given
        params = None
    if params and args is not None and kwargs is None and request.kwargs:
        taken = {p.name for p in params[:len(args)] if p.kind is p.POSITIONAL_OR_KEYWORD}
        kwargs = {k: v for k, v in request.kwargs.items() if k not in taken}
    elif params and kwargs is not None and args is None and request.args:
        with contextlib.suppress(TypeError):  # a call it cannot take fails as it runs
            bound, kwargs = sig.bind_partial(*request.args), dict(kwargs)
            for name in [k for k in kwargs if k in bound.arguments]:
                if sig.parameters[name].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
                    bound.arguments[name] = kwargs.pop(name)
            args, kwargs = bound.args, {**bound.kwargs, **kwargs}
    return (request.args if args is None else args), (request.kwargs if kwargs is None else kwargs)


def json_only(name, serializer):
    """Celery's serializers other than JSON: refused, never ignored."""
    if serializer != "json":
        raise TypeError(f"{name}: serializer {serializer!r} is not supported: miniq speaks JSON only")


YEAR_1, YEAR_10000 = -62135596800, 253402300800  # unix times a datetime can hold


def check_dates(name, *times):
    """OverflowError for a unix time no datetime holds, as Celery's dates raise it."""
    if not all(YEAR_1 <= when < YEAR_10000 for when in times):
        raise OverflowError(f"{name}: countdown, eta and expires must fall within years"
                            " 1 to 9999, as Celery's dates")


def to_timestamp(when):
    """A datetime or its ISO 8601 text (naive means UTC, as Celery), as unix time."""
    if isinstance(when, str):  # as Celery's, which puts such text in its message as it is
        when = datetime.fromisoformat(when.replace("Z", "+00:00"))
    if not isinstance(when, datetime):  # as Celery's, which refuses a number too
        raise TypeError(f"a time is a datetime or its ISO 8601 text, not {when!r}"
                        " (seconds from now are a countdown, or expires)")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


class _Conf:
    """A task option that a task does not set: as Celery's, read as app.conf's setting."""

    def __init__(self, setting, default=None):
        self.setting, self.default = setting, default

    def __get__(self, task, cls):
        app = getattr(cls, "app", None)
        return self.default if app is None else app.conf.get(self.setting, self.default)


class Task:
    """A registered function with Celery's calling API and options."""

    name = None  # as Celery's: a class's own, or its function's module and name
    __class_getitem__ = classmethod(GenericAlias)  # as Celery's: Task[Any, Any]
    abstract = True  # as Celery's, which keeps it for old code
    # The options @app.task takes, besides name: every annotated attribute here.
    bind: bool = False
    soft_time_limit: float | None = _Conf("task_soft_time_limit")
    time_limit: float | None = _Conf("task_time_limit")
    ignore_result: bool | None = _Conf("task_ignore_result", False)
    max_retries: int | None = 3
    default_retry_delay: float = 180
    autoretry_for: tuple = ()
    retry_kwargs: dict = {}
    retry_backoff: Any = False
    retry_backoff_max: float = 600
    retry_jitter: bool = True
    acks_late: bool | None = _Conf("task_acks_late", False)
    reject_on_worker_lost: bool | None = _Conf("task_reject_on_worker_lost")
    queue: str | None = None
    priority: int | None = _Conf("task_default_priority")
    # "10/s", "100/m", "1000/h" or a number a second, in all workers
    rate_limit: Any = _Conf("task_default_rate_limit")
    typing: bool = True  # check the arguments against the function's at the call
    trail: bool = True  # its result lists the tasks it sent as its children
    expires: Any = None  # seconds or a datetime: apply_async's default
    serializer: str | None = _Conf("task_serializer", "json")  # JSON only
    throws: tuple = ()  # expected errors: logged at INFO, without a traceback
    dont_autoretry_for: tuple = ()
    store_errors_even_if_ignored: bool | None = _Conf("task_store_errors_even_if_ignored", False)
    track_started: bool | None = _Conf("task_track_started", False)  # miniq always records STARTED
    acks_on_failure_or_timeout: bool | None = _Conf("task_acks_on_failure_or_timeout", True)
    acks_on_timeout: bool | None = _Conf("task_acks_on_timeout")
    # as Celery's: ``except self.MaxRetriesExceededError`` in a task
    MaxRetriesExceededError = MaxRetriesExceededError
    OperationalError = OperationalError

    @classmethod
    def _subclass(cls, app, fun, name: str, options: dict) -> type:
        """Celery's way: a class of the task's own, options as its attributes (a base's own
        ones too), made with no arguments (a base's own ``__init__(self)`` runs once per task)."""
        # run is the function's, as Celery's: a base's own run never stands in for it
        run = fun if options.get("bind", cls.bind) else staticmethod(fun)
        task = type(fun.__name__, (cls,), {**options,
                                          "app": app,
                                          "name": name,
                                          "run": run,
                                          "__wrapped__": fun,
                                          "__module__": fun.__module__,
                                          "__qualname__": fun.__qualname__,
                                          "_requests": threading.local()})
        task.on_bound(app)
        return task._checked()

    @classmethod
    def on_bound(cls, app) -> None:
        """As Celery's: called as a task class is made for an app; a base overrides it."""

    @classmethod
    def _checked(cls) -> type:
        """The class, its options in the shapes the worker uses (also after
        ``task_annotations`` set them); TypeError for one that cannot be, or that miniq
        does not honour (given to the decorator or set on a base: any other option is an
        attribute, as Celery's)."""
        refused = sorted(key for key in NOT_HONOURED if getattr(cls, key, None))
        refused += ["retry_on_worker_lost=True"] * bool(getattr(cls, "retry_on_worker_lost", 0))
        if refused:
            raise TypeError(f"task option(s) miniq does not honour, for {cls.name}: "
                            f"{', '.join(refused)}")
        for key in ("autoretry_for", "dont_autoretry_for", "throws"):
            classes = tuple(getattr(cls, key))
            if not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
                raise TypeError(f"{cls.name}: {key} must hold exception classes, not {classes!r}")
            setattr(cls, key, classes)
        if cls.autoretry_for:  # as Celery's, at decoration: not at the first failure
            cls._check_autoretry()
        json_only(cls.name, cls._own("serializer") or "json")  # app.conf's: refused elsewhere
        if getattr(cls, "store_eager_result", False):  # as task_store_eager_result is
            raise TypeError(f"{cls.name}: store_eager_result is not supported: an eager run"
                            " stores no result")
        return cls

    @classmethod
    def _check_autoretry(cls) -> None:
        """retry_backoff a number, retry_backoff_max an int, as Celery reads them;
        retry_kwargs only what miniq's retry() takes."""
        try:
            cls.retry_backoff, cls.retry_backoff_max = (
                float(cls.retry_backoff), int(cls.retry_backoff_max))
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"{cls.name}: retry_backoff and retry_backoff_max must be"
                            f" numbers: {exc}") from None
        taken = inspect.signature(cls.retry).parameters
        given = sorted(key for key, value in dict(cls.retry_kwargs).items()
                       if key not in taken and key in RESENT and value is not None)
        if given:
            raise TypeError(f"{cls.name}: miniq's retry() keeps the task's queue and options,"
                            f" its retry_kwargs take no {', '.join(given)}")

    @classmethod
    def _own(cls, key: str) -> Any:
        """An option as the task (or its base) set it: None where app.conf's stands in."""
        value = inspect.getattr_static(cls, key)
        return None if isinstance(value, _Conf) else value

    def run(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Tasks must define the run method.")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run in this process, now, as a plain function call (as Celery): the current
        task meanwhile, but not the parent of what it sends (a worker's run is)."""
        outer, _running.task = _running.task, self
        self.push_request(args=args, kwargs=kwargs)
        try:
            return self.run(*args, **kwargs)
        finally:
            self.pop_request()
            _running.task = outer

    def __getattr__(self, name: str) -> Any:  # named, not a bare AttributeError
        if name in CELERY_ONLY:
            raise AttributeError(f"Task.{name} is Celery's {CELERY_ONLY[name]}: miniq has none")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:  # as Celery's
        return f"<@task: {self.name} of {self.app.main or '__main__'} at {id(self.app):#x}>"

    def __reduce__(self):  # as Celery's: by name, found where it is unpickled
        return _unpickled, (self.name, type(self).__module__)

    # Celery's hooks, called in the worker around each run; a base class overrides them.
    def before_start(self, task_id, args, kwargs) -> None:
        """Before the function runs."""

    def on_success(self, retval, task_id, args, kwargs) -> None:
        """After it returned."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        """After it raised (einfo: the exception and its traceback text)."""

    def on_retry(self, exc, task_id, args, kwargs, einfo) -> None:
        """After it asked to be retried."""

    def after_return(self, status, retval, task_id, args, kwargs, einfo) -> None:
        """After any of those, with the final state."""

    @property
    def request(self) -> Context:
        stack = getattr(self._requests, "stack", None)
        return stack[-1] if stack else Context()

    def push_request(self, *args: Any, **fields: Any) -> None:
        """As Celery's: the request on top of the current one, with these fields."""
        self._push(Context(**{**vars(self.request), **dict(*args, **fields)}))

    def _push(self, request: Context) -> None:
        self._requests.__dict__.setdefault("stack", []).append(request)

    def pop_request(self) -> None:
        """As Celery's: nothing to pop is no error."""
        stack = getattr(self._requests, "stack", None)
        if stack:
            stack.pop()

    def delay(self, *args: Any, **kwargs: Any):
        """Send the task with these arguments; returns an AsyncResult at once."""
        return self.apply_async(args, kwargs)

    def apply_async(self,
                    args: Any = None,
                    kwargs: Any = None,
                    **options: Any):
        """Send with options: countdown, eta, expires, task_id, queue, priority, time limits."""
        self._check_arguments(args, kwargs)
        json_only(self.name, options.get("serializer") or "json")  # eagerly too, as Celery's
        soft, hard = self.soft_time_limit, self.time_limit
        if soft and hard and soft > hard:  # as Celery's: refused eagerly too
            raise ValueError("soft_time_limit must be less than or equal to time_limit")
        if self.app.conf.task_always_eager:  # as Celery: get() refused in it, as in a worker
            with denied_join_result():
                return self.apply(args, kwargs, **options)
        options.setdefault("ignore_result", None)  # None: the task's own option decides
        options["shadow"] = options.get("shadow") or self.shadow_name(args, kwargs, options)
        return self.app.send_task(self.name, args, kwargs, **options)

    def shadow_name(self, args: Any, kwargs: Any, options: dict) -> str | None:
        """As Celery's: the name a worker's log lines give this call; a base sets it."""
        return None

    def _check_arguments(self, args: Any = None, kwargs: Any = None) -> None:
        """As Celery's (typing=True): a call the function cannot take is a TypeError at
        the call, not in the worker."""
        if self.typing:
            own = (self,) if self.bind else ()
            fun = getattr(self, "__wrapped__", None) or self.run  # a fresh Mul(): its run
            try:
                _signature(fun).bind(*own, *(args or ()), **(kwargs or {}))
            except TypeError as exc:
                raise TypeError(f"{self.name}: {exc}") from None

    def apply(self,
              args: Any = None,
              kwargs: Any = None,
              link: Any = None,
              link_error: Any = None,
              task_id: str | None = None,
              retries: int | None = None,
              throw: bool | None = None,
              logfile: Any = None,
              loglevel: Any = None,
              headers: dict | None = None,
              **_options: Any) -> EagerResult:
        """Run now in this process, retries included, and return an EagerResult; throw
        (task_eager_propagates by default) raises a failure, or a retry, instead.
        Celery's parameters, in its order (logfile and loglevel change nothing)."""
        if self.app.conf.get("task_store_eager_result"):  # a get() by id would wait forever
            raise ImproperlyConfigured("task_store_eager_result is not supported: an eager"
                                       " run stores no result")
        body = encode_args(self.name, args, kwargs)
        delivery = {"is_eager": True, **{key: _options.get(key)  # as Celery's eager request
                                         for key in ("exchange", "routing_key", "priority")}}
        ignore = _options.get("ignore_result")  # as Celery's: else the task's own
        ignore = self.ignore_result if ignore is None else ignore
        message = Message(task_id or new_id(), self.name, body, retries or 0,
                          options={**lineage(), "headers": headers, "delivery_info": delivery,
                                   "ignore_result": ignore, "link": _listed(link) or None,
                                   "link_error": _listed(link_error) or None})
        throw = self.app.conf.task_eager_propagates if throw is None else throw
        run = functools.partial(execute, self.app, eager=True, propagate=throw)
        outcome = run(message)  # a failure or a retry propagates, with throw, as Celery's
        while outcome.state == "RETRY" and outcome.eta is not None:  # None: a bare Retry
            message = message._replace(retries=message.retries + 1,
                                       body=outcome.body or message.body)
            outcome = run(message)
        if throw and outcome.state == "FAILURE":  # one that never ran (not registered)
            raise outcome.exc
        state = "REJECTED" if outcome.state == "PENDING" else outcome.state
        # eager: a success always keeps its result
        value = loads(outcome.result) if state == "SUCCESS" else outcome.exc
        _eager_links(self, message, outcome, value)
        return EagerResult(message.id, value, state, outcome.traceback, self.name, self.app)

    def AsyncResult(self, task_id: str):
        return self.app.AsyncResult(task_id)

    def s(self, *args: Any, **kwargs: Any):
        """A signature: this call as a value, for chain, group and chord."""
        return Signature(self, args, kwargs)

    def si(self, *args: Any, **kwargs: Any):
        """An immutable signature: a chain does not pass it the previous result."""
        return Signature(self, args, kwargs, immutable=True)

    def signature(self, args: Any = (), *more: Any, **options: Any):
        """Celery's: Signature's arguments, ``options=`` and loose options merged."""
        return Signature(self, args or (), *more, **options)

    subtask = signature

    def map(self, it: Any) -> Signature:
        """One message that calls this task for each item: ``[task(x) for x in it]``."""
        return _mapped("celery.map", self.s(), it)

    def starmap(self, it: Any) -> Signature:
        """One message that calls this task with each item's arguments: ``task(*x)``."""
        return _mapped("celery.starmap", self.s(), it)

    def chunks(self, it: Any, n: int) -> chunks:
        """The calls ``task(*x)`` for each item, in messages of ``n``, as a group."""
        return chunks(self.s(), it, n)

    def replace(self, sig: Signature) -> Any:
        """End this run; ``sig`` runs in its place and its result becomes this task's.
        As Celery's, it raises Ignore (the worker sends ``sig``); eager, it runs it."""
        if sig.get("subtask_type") == "chain" and not sig.tasks:  # as Celery's
            raise ImproperlyConfigured("Cannot replace with an empty chain")
        nesting = self.request.replaced_task_nesting + 1  # as Celery's: how deep it is
        return self.on_replace(sig.set(replaced_task_nesting=nesting))

    def on_replace(self, sig: Signature) -> Any:
        """Celery's hook as replace() ends: a base that overrides it calls this one."""
        if self.request.is_eager:  # its value is the run's, replace() returned or raised
            with allow_join_result():  # Celery's trips its own check here
                raise _Replaced(sig.apply().get())
        ignore = Ignore("Replaced by new task")
        ignore.replacement = sig
        raise ignore

    def retry(self,
              args: Any = None,
              kwargs: Any = None,
              exc: BaseException | None = None,
              throw: bool = True,
              eta: Any = None,
              countdown: float | None = None,
              max_retries: int | None = None,
              **options: Any) -> Retry:
        """Ask for another run later; raises Retry (or exc / MaxRetriesExceededError when out).
        With throw=False it returns the Retry, and the run, once it returns, is retried
        (Celery stores what it returned first; here the retry's outcome is the only one)."""
        moved = _moved(self.name, options.pop("queue", None), options.pop("priority", None))
        given = sorted(key for key, value in options.items() if value is not None
                       and key in RESENT)  # as Celery's apply_async, others mean nothing
        if given:  # Celery sends the retry with them; here it stays the same row
            raise TypeError(f"{self.name}: of the options of Celery's retry(), miniq's takes"
                            f" queue and priority, not {', '.join(given)}")
        request = self.request
        if max_retries is not None:  # as Celery's: autoretry_for, on the error it raises, too
            request.override_max_retries = max_retries
        limit = self.max_retries if max_retries is None else max_retries
        if request.called_directly:
            raise exc or Retry("Task can be retried", None)
        new_args, new_kwargs = _retry_call(self, request, args, kwargs)
        if limit is not None and request.retries >= limit:  # Celery's text, with the
            new_args = tuple(new_args)  # arguments the retry would have run with
            raise exc or MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{new_args} kwargs:{new_kwargs}",
                task_args=new_args, task_kwargs=new_kwargs)
        if isinstance(countdown, bool) or not isinstance(countdown, (*NUMBER, type(None))):
            raise TypeError(f"{self.name}: countdown cannot be {countdown!r}")  # as a call's
        if countdown is None and eta is None:
            countdown = self.default_retry_delay
        if countdown:  # as Celery's (and a call's): a countdown over an eta
            when = time.time() + countdown
        else:  # no eta: due now, and its request shows none, as Celery's
            when = to_timestamp(eta) if eta else 0.0
        if not math.isfinite(when):  # as a call's own: else no row could store it
            raise ValueError(f"{self.name}: a retry's countdown and eta must be finite times")
        check_dates(self.name, when)
        retry = Retry(exc=exc, when=eta or countdown, is_eager=bool(request.is_eager),
                      sig=self.signature(new_args, new_kwargs, task_id=request.id))  # as Celery's
        retry.eta, retry.body, retry.moved = when, None, moved
        if args is not None or kwargs is not None:
            retry.body = encode_args(self.name, new_args, new_kwargs)
        if throw:
            raise retry
        if not request.is_eager:  # as Celery's: an eager run is not retried so
            request.retry_after_return = retry
        return retry

    def update_state(self,
                     task_id: str | None = None,
                     state: str | None = None,
                     meta: Any = None,
                     **_ignored: Any) -> None:
        """Store a custom state (e.g. PROGRESS) and meta: this run's, or any task's."""
        task_id = task_id or self.request.id
        try:  # eagerly too: a test sees what a worker would refuse
            # as Celery's: an exception stored as a failure, a retry or a revoke is the
            # exception, which get() raises
            meta_json = (exception_to_json(meta) if state in ("FAILURE", "RETRY", "REVOKED")
                         and isinstance(meta, Exception) else dumps(meta))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"update_state meta must be JSON serializable: {exc}") from None
        if task_id is not None:  # eagerly too, as Celery's: a test reads the progress back
            self.app.broker.update_state(task_id, state, meta_json)

    def is_aborted(self) -> bool:
        """True once someone called ``abort()`` or ``revoke()`` on this task."""
        task_id = self.request.id
        if task_id is None or self.request.is_eager:
            return False
        return self.app.broker.is_aborted(task_id)


def _call(task, args, kwargs, soft_limit):
    """The function itself, under its soft time limit, with autoretry_for applied."""
    if soft_limit:
        def expire(signum, frame):
            if task.app.broker.in_transaction():  # never inside miniq's own write: a moment later
                signal.setitimer(signal.ITIMER_REAL, 0.001)
                return
            log.warning("Soft time limit (%gs) exceeded for %s[%s]", soft_limit, task.name,
                        task.request.id)
            raise SoftTimeLimitExceeded()  # as Celery's: no message
        signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, soft_limit)
    custom = type(task).__call__ is not Task.__call__  # as Celery: a base's __call__ runs
    try:
        return (task if custom else task.run)(*args, **kwargs)
    except (Retry, Ignore, *task.dont_autoretry_for):  # as Celery: never retried
        raise
    except task.autoretry_for as exc:
        options = dict(task.retry_kwargs)
        if task.retry_backoff:  # Celery's: factor * 2**retries, capped, maybe full jitter
            countdown = int(max(1.0, task.retry_backoff)) * 2 ** task.request.retries
            countdown = min(int(task.retry_backoff_max), countdown)
            if task.retry_jitter:
                countdown = random.randrange(countdown + 1)
            options["countdown"] = countdown
        if task.request.get("override_max_retries") is not None:
            options["max_retries"] = task.request.override_max_retries
        task.retry(exc=exc, **options)
    finally:
        if soft_limit:
            signal.setitimer(signal.ITIMER_REAL, 0)


def _moved(name, queue, priority):
    """(queue, priority) a retry goes to, as Celery's retry() sends it: each checked as a
    call's, None where it keeps its own."""
    queue = getattr(queue, "name", queue)  # a kombu Queue, by its name
    if queue is not None and not isinstance(queue, str):
        raise TypeError(f"{name}: retry()'s queue cannot be {queue!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not 0 <= priority <= 255):
        raise ValueError(f"{name}: retry()'s priority must be from 0 to 255, not {priority!r}")
    return queue, priority


def _unpickled(name, module):
    """A pickled task: its module imported, then found by name in the current app."""
    from .app import default_app  # app imports this module
    importlib.import_module(module)
    return default_app().tasks[name]


def execute(app, message, soft_limit=None, eager=False, hostname=None, propagate=False):
    """Run one Message and return its Outcome; never raises for the task's errors but,
    eagerly, with ``propagate``, a failure or retry, and a hook's error."""
    task = app.tasks.get(message.name)
    try:
        if task is None:
            raise NotRegistered(message.name)  # as Celery's worker: the name alone
        try:
            args, kwargs = loads(message.body)
        except (ValueError, TypeError) as exc:
            raise InvalidTaskError(
                f"corrupt message {message.id}: body is not [args, kwargs] JSON ({exc})")
        if message.options and message.options.get("errback"):  # canvas sent its arguments as data
            where = socket.gethostname() if eager else hostname  # Celery runs errbacks where
            args = [Context(**{"hostname": where, **args[0]}),  # the task failed
                    exception_from_json(args[1]), *args[2:]]
        if message.options and "header" in message.options and not eager:  # a chord's callback
            try:  # as Celery's: one its function cannot take fails the chord, and never runs
                task._check_arguments(args, kwargs)
            except TypeError as exc:
                raise ChordError(f"Callback error: {exc!r}") from None
    except Exception as exc:
        return failed(exc)
    request = _request(task, message, args, kwargs, eager, hostname)
    given = _flows(request)
    parent = _running.request, _running.task
    _running.request, _running.task = request, task
    task._push(request)
    try:
        emit("_task_started", task, request)
        started = time.monotonic()
        outcome, value = _run(task, message.id, args, kwargs, soft_limit)
        flows = _flows(request)
        outcome = outcome or _kept(message, value, eager, flows)
        if flows != given:  # self.request.chain = None, say
            outcome = _with_flows(outcome, request)
        if propagate and outcome.state in ("FAILURE", "RETRY"):  # as Celery's: no hook, no
            emit("_task_finished", task, request, None, None)  # outcome signal, no state
            raise outcome.exc
        if eager:  # as Celery's eager run: the lines a worker logs, where a test sees them
            _log_eager(message, outcome, value, time.monotonic() - started)
        if outcome.state not in UNHOOKED:
            outcome = _hooks(task, outcome, value, request)
        else:  # as Celery: no hook, but task_postrun
            state = "IGNORED" if outcome.state == "REPLACED" else outcome.state  # Celery's Ignore
            emit("_task_finished", task, request, state, outcome.exc)
        return outcome
    finally:
        task.pop_request()
        _running.request, _running.task = parent


def _log_eager(message, outcome, value, runtime):
    """An eager run's outcome, logged as Celery's tracer logs it, on its logger."""
    trace, named = logging.getLogger("celery.app.trace"), f"{message.name}[{message.id}]"
    if outcome.state in ("SUCCESS", None):
        trace.info("Task %s succeeded in %ss: %r", named, runtime, value)
    elif outcome.state == "RETRY":
        trace.info("Task %s retry: %s", named, outcome.exc)
    elif outcome.state == "FAILURE":
        expected = "expected" if outcome.expected else "unexpected"
        trace.log(logging.INFO if outcome.expected else logging.ERROR, "Task %s raised %s: %r",
                  named, expected, outcome.exc, exc_info=None if outcome.expected else outcome.exc)


def timed_out(app, message, limit, hostname=None):
    """Celery's hooks for a run that its hard time limit ended (its child was killed):
    on_failure, then after_return, as Celery's main process calls them. Its outcome is
    stored already, and task_failure sent."""
    task = app.tasks.get(message.name)
    try:
        args, kwargs = loads(message.body)
        raise TimeLimitExceeded(limit)
    except TimeLimitExceeded as exc:
        outcome = failed(exc)
    except (ValueError, TypeError):  # it could not have run
        return Outcome(None, None)
    if task is None:
        return outcome
    call, request = (message.id, args, kwargs), _request(task, message, args, kwargs, False,
                                                         hostname)
    _running.request, _running.task = request, task  # what it sends is its children
    task._push(request)
    try:
        for hook, *hook_args in ((task.on_failure, outcome.exc, *call,
                                  ExceptionInfo(outcome.exc, outcome.traceback)),
                                 (task.after_return, "FAILURE", outcome.exc, *call, None)):
            try:
                hook(*hook_args)
            except Exception:  # noqa: BLE001 - as any hook's: logged
                log.exception("%s of %s[%s] raised", hook.__name__, task.name, message.id)
    finally:
        task.pop_request()
        _running.request = _running.task = None
    return outcome


def _flows(request):
    """The workflow a request names, as message options: Celery's request keeps its
    chain last step first, and a task may change it (to None, to stop there)."""
    chain = request.chain and list(reversed(request.chain))
    return {"chain": chain or None, "link": request.callbacks, "link_error": request.errbacks}


def _with_flows(outcome, request):
    """The outcome, with the workflow its run left in its request, as JSON values."""
    try:
        return outcome._replace(flows=loads(dumps(_flows(request))))
    except (TypeError, ValueError, RecursionError) as exc:
        return failed(TypeError(f"request.chain, callbacks and errbacks hold signatures: {exc}"))


def _request(task, message, args, kwargs, eager, hostname):
    """``self.request`` for one run, with the fields of Celery's."""
    options = message.options or {}
    hard, soft = (  # the call's, else the task's, else conf's
        next((v for v in (options.get(key), getattr(task, key), task.app.conf.get(f"task_{key}"))
              if v is not None), None) for key in ("time_limit", "soft_time_limit"))
    # as Celery: a retry is a message sent by the run before it
    retried = message.retries > (options.get("retries") or 0)
    parent = (options.get("sent_by") or options.get("parent_id")  # sent_by: a chord's member
              or (message.id if retried and not eager else None))
    delivery = options.get("delivery_info") if eager else message.delivery_info()
    headers = options.get("headers")
    shown = {} if eager else {key: options[key] for key in ("argsrepr", "kwargsrepr")
                              if key in options}  # the sender's: else made as read
    # as Celery: custom headers are attributes too, where they name no field of its own
    return Context(**{**(headers or {}), **shown,
                      "id": message.id,
                      "task": message.name,
                      "args": args,
                      "kwargs": kwargs,
                      "retries": message.retries,
                      "attempts": message.attempts,
                      "is_eager": eager,
                      "called_directly": False,
                      "hostname": socket.gethostname() if eager else hostname,
                      "delivery_info": delivery,
                      "root_id": options.get("root_id") or message.id,
                      "parent_id": parent,
                      "group": options.get("group"),
                      "eta": iso_time(message.eta),
                      "expires": iso_time(message.expires),
                      # as Celery's: none, eagerly, where no limit is set
                      "timelimit": None if eager and hard is soft is None else [hard, soft],
                      "time_limit": hard,
                      "soft_time_limit": soft,
                      "chain": steps_after(options),
                      "callbacks": options.get("link"),
                      "errbacks": options.get("link_error"),
                      "ignore_result": bool(options.get("ignore_result")),
                      "replaced_task_nesting": options.get("replaced_task_nesting", 0),
                      "shadow": options.get("shadow"),
                      **({} if message.chord else {"chord": None}),  # a member's: not kept
                      **({} if options.get("group") and "header" not in options  # a member
                         else {"group_index": None}),
                      "correlation_id": None if eager else message.id,  # no reply queue
                      "properties": None if eager else {"correlation_id": message.id,
                                                        "priority": message.priority},
                      # as Celery's: a custom header named "headers" stands for them all
                      # (tracers put theirs there), else they are the request's headers
                      "headers": (headers or {}).get("headers", headers)})


def iso_time(when):
    """A unix time as Celery's messages carry eta and expires: ISO 8601 in UTC; None if
    unset, or where another program stored a time no datetime holds."""
    try:
        return datetime.fromtimestamp(when, timezone.utc).isoformat() if when else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


class _Replaced(Ignore):
    """An eager replace(): the replacement ran, its value is the run's."""

    def __init__(self, value):
        super().__init__("Replaced by new task")
        self.value = value


def _run(task, task_id, args, kwargs, soft_limit):
    """(Outcome, value) of calling the task, before_start first; None for a success."""
    try:
        task.before_start(task_id, args, kwargs)
        try:
            value = _call(task, args, kwargs, soft_limit)
        except Exception as exc:  # after retry(throw=False) the retry stands, as Celery's,
            if isinstance(exc, Retry) or not task.request.get("retry_after_return"):
                raise  # which sent it already
        if task.request.get("retry_after_return"):  # retry(throw=False) was called
            raise task.request.retry_after_return
        if task.request.is_eager and isinstance(value, Retry) and hasattr(value, "eta"):
            raise value  # as Celery's apply(): a retry returned runs again
        return None, value
    except Retry as retry:
        if not hasattr(retry, "eta") and task.request.is_eager:  # by hand, or a mock's: as
            return Outcome("RETRY", None, _traceback(), None, exc=retry), None  # Celery's, ends
        if not hasattr(retry, "eta"):  # raised by hand: only Task.retry() says when
            error = RuntimeError("a bare Retry says neither when nor how often: raise self.retry()")
            return failed(error), None
        return _retried(retry), None
    except _Replaced as done:
        return None, done.value
    except Ignore as exc:  # also how replace() ends the run: canvas sends the replacement
        sig = getattr(exc, "replacement", None)
        if sig is None:
            return Outcome("IGNORED", None, exc=exc), None
        return Outcome("REPLACED", dumps(sig), exc=exc), None  # (an empty group is falsy)
    except Reject as exc:  # the worker requeues it (under acks_late) or records FAILURE
        state = "PENDING" if exc.requeue else "REJECTED"
        return failed(exc)._replace(state=state), None
    except Exception as exc:
        return failed(exc)._replace(expected=isinstance(exc, task.throws)), None


def _retried(retry):
    """The outcome of a ``self.retry()``: run again at its eta, with its arguments."""
    cause = None if retry.exc is None else exception_to_json(retry.exc)  # as Celery stores
    return Outcome("RETRY", cause, _traceback(), retry.eta, retry.body, retry,
                   moved=getattr(retry, "moved", (None, None)))


def _kept(message, value, eager, flows):
    """A success as stored: nothing if the call said ignore_result and no step or link
    (as the run left them) takes the value, else the value as JSON."""
    ignored = not eager and message.options.get("ignore_result")
    if ignored and not (flows["chain"] or flows["link"]):
        return Outcome(None, None)
    if isinstance(value, ResultBase) and hasattr(value, "as_tuple"):  # as Celery's backend
        value = value.as_tuple()  # stores a result: its ids (a ResultSet has none)
    try:
        return Outcome("SUCCESS", dumps(value))
    except (TypeError, ValueError, RecursionError) as exc:
        error = TypeError(f"result of {message.name} is not JSON serializable: {exc}")
        return failed(error, trace=False)


def _eager_links(task, message, outcome, value):
    """As Celery's eager run: its callbacks get the value it returned (sent, or run here
    under task_always_eager), its errbacks its failure, called here."""
    app, flows = task.app, outcome.flows or message.options
    lineage = {"parent_id": message.id, "root_id": message.options.get("root_id") or message.id}
    if outcome.state == "SUCCESS":
        links = [maybe_signature(sig, app) for sig in _listed(flows.get("link"))]
        for sig in [group(links, app=app)] if len(links) > 1 else links:
            sig.apply_async((value,), **lineage)
    elif outcome.state == "FAILURE":
        errbacks = [maybe_signature(sig, app) for sig in _listed(flows.get("link_error"))]
        called = [errback for errback in errbacks if new_style(app, errback)]
        for errback in called:
            request = _request(task, message, *loads(message.body), True, None)
            try:
                errback(request, value, outcome.traceback)
            except Exception:  # noqa: BLE001 - as Celery's: logged, the result stands
                log.exception("Errback %r raised an exception", errback)
        later = [errback for errback in errbacks if errback not in called]
        if later:  # as Celery's: those that take the task's id, as one group
            group(later, app=app).apply((message.id,), **lineage)


def _hooks(task, outcome, value, request):
    """Celery's hooks and signals after a run, and its outcome as they saw it; one that
    raises is logged, never the task's outcome, but a self.retry() in on_failure."""
    exc, state = outcome.exc, outcome.state or "SUCCESS"
    call = (request.id, request.args, request.kwargs)
    if exc is None:
        calls = [(task.on_success, value, *call)]
    else:
        if state != "RETRY":  # as Celery's: the exception as the result keeps it
            exc = pickleable(exc)
            outcome = outcome._replace(exc=exc)
        hook, cause = (task.on_retry, exc.exc) if state == "RETRY" else (task.on_failure, exc)
        calls = [(hook, cause, *call, ExceptionInfo(exc, outcome.traceback))]  # as Celery's
        value = exc  # after_return's retval
    calls.append((emit, "_task_outcome", task, request, outcome, value))
    if state != "RETRY":  # as Celery: a retry is not a return
        calls.append((task.after_return, state, value, *call, None))
    calls.append((emit, "_task_finished", task, request, state, value))
    for hook, *hook_args in calls:
        try:
            hook(*hook_args)
        except Exception as exc:  # noqa: BLE001 - a hook's bug is logged, the outcome stands
            if isinstance(exc, Retry) and hasattr(exc, "eta") and hook == task.on_failure \
                    and not request.is_eager:  # as Celery's: self.retry() there runs it again
                emit("_task_finished", task, request, "RETRY", exc)
                return _retried(exc)
            if request.is_eager and hook is not emit:  # as Celery's: eager callers see it
                emit("_task_finished", task, request, state, value)
                raise
            log.exception("%s of %s[%s] raised", hook.__name__, task.name, request.id)
    return outcome


class ExceptionInfo(NamedTuple):
    """What Celery's hooks get as ``einfo``: the exception and its traceback text, and
    Celery's ``type``, ``tb`` and ``exc_info`` (for traceback.format_exception)."""
    exception: BaseException
    traceback: str | None
    internal = False

    @property
    def type(self):
        return type(self.exception)

    @property
    def tb(self):
        return self.exception.__traceback__

    @property
    def exc_info(self):
        return self.type, self.exception, self.tb

    def __str__(self):
        return self.traceback or ""


def _traceback():
    return printable(traceback.format_exc())


def failed(exc, trace=True):
    """A FAILURE outcome for exc, with the traceback being handled unless trace is False.
    An exception that cannot be read (its attributes raise) fails as a TypeError naming it."""
    try:
        return Outcome("FAILURE", exception_to_json(exc), _traceback() if trace else None,
                       exc=exc)
    except Exception as error:  # noqa: BLE001 - the task's fault: its FAILURE says so
        plain = TypeError(f"the task raised a {type(exc).__qualname__} that cannot be read:"
                          f" {type(error).__qualname__} reading it")
        return Outcome("FAILURE", exception_to_json(plain), None, exc=plain)


