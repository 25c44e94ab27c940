"""Miniq, the app: configuration, the task registry, the ``@app.task``
decorator, sending by name, control, and loading an app from an ``-A`` path.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import functools
import importlib
import itertools
import math
import os
import re
import signal as signals
import sys
import threading
import time
import traceback
import warnings
from datetime import timedelta
from typing import Any, Iterable

from . import canvas
from .broker import NUMBER, QUEUED, WAITING, Broker, path_from_url
from .exceptions import (AlwaysEagerIgnored, DuplicateTaskNameWarning, ImproperlyConfigured,
                         InvalidTaskError, NotRegistered)
from .result import AsyncResult, new_id
from .task import (Task, add_trail, check_dates, emit, encode_args, json_only, lineage,
                   running_priority, to_timestamp)
from .utils.json import dumps
from .wake import TERMINATE, Waker

CALL_TYPES = {  # the type each checked call option must have
    "queue": str,
    "task_id": str,
    "chord": str,  # its callback's id
    "priority": int,
    "retries": int,
    "countdown": NUMBER,
    "soft_time_limit": NUMBER,
    "time_limit": NUMBER,
    "headers": dict,
}
# The call options a message keeps in its options column, when set: per-call limits, a
# workflow (canvas.next_steps reads link, link_error, header and errback), where it comes from.
KEPT = ("soft_time_limit", "time_limit", "chain", "immutable", "group_id", "headers",
        "parent_id", "root_id", "link", "link_error", "header", "errback",
        "argsrepr", "kwargsrepr", "shadow",  # the arguments and name the logs show
        "replaced_task_nesting")
DEFAULTS: dict[str, Any] = {
    "broker_url": None,
    "result_backend": None,
    "include": [],
    "enable_utc": True,  # as Celery's, and the one value miniq takes
    "imports": [],
    "task_soft_time_limit": None,
    "task_time_limit": None,
    "task_default_queue": "celery",
    "task_default_priority": None,
    "task_inherit_parent_priority": False,
    "task_routes": None,  # as Celery's
    "task_ignore_result": False,
    "task_acks_late": False,
    "task_reject_on_worker_lost": None,
    "task_acks_on_failure_or_timeout": True,
    "task_acks_on_timeout": None,      # as Celery 5.7's: None, then the setting above
    "task_store_errors_even_if_ignored": False,
    "task_always_eager": False,
    "task_eager_propagates": False,
    "task_max_deliveries": 3,          # miniq: a task whose worker keeps dying fails after this
    "result_expires": timedelta(days=1),  # as Celery's
    "worker_concurrency": None,        # None: the number of CPUs
    "worker_start_method": None,       # None: fork on Linux, else the platform's default
    "worker_prefetch_multiplier": 4,   # as Celery: concurrency × this may wait claimed
    "worker_disable_prefetch": False,  # as Celery: claim only for idle children
    "worker_max_tasks_per_child": None,
    "worker_max_memory_per_child": None,  # KiB, as Celery
    "worker_heartbeat": 1.0,           # miniq: seconds between heartbeats
    "worker_lost_after": 10.0,         # miniq: a silent worker counts as dead after this
    "sqlite_synchronous": "NORMAL",    # miniq: FULL also survives power loss
    "timezone": None,                  # as Celery's: UTC, unless Django's TIME_ZONE says
    "beat_schedule": {},
    "beat_cron_starting_deadline": None,  # as Celery: seconds a missed crontab run may be late
}

_default = None  # the most recently created app


def default_app() -> "Miniq":
    """The most recently created app (Celery's current_app), made on demand."""
    return _default or Miniq()


class Conf(dict):
    """``app.conf``: a dict whose keys are also attributes."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"app.conf has no {key!r}: not a setting miniq has") from None

    __setattr__ = dict.__setitem__


class TaskRegistry(dict):
    """``app.tasks``: task name → task; a name not in it is NotRegistered, as in Celery."""

    def __missing__(self, name):
        raise NotRegistered(name)

    def register(self, task: Any) -> None:
        """As Celery's: register a class-based task (or its class) under its own name."""
        if task.name is None:
            raise InvalidTaskError(f"Task class {getattr(task, '__name__', type(task).__name__)!r}"
                                   " must specify .name attribute")
        self.app.register_task(task)

    def unregister(self, name: Any) -> None:
        """Forget a task (or its name); NotRegistered if it is not here."""
        self.pop(getattr(name, "name", name), None) or self.__missing__(name)


class Control:
    """``app.control``: act on tasks already sent."""

    def __init__(self, app: Miniq):
        self.app = app

    def revoke(self,
               task_id: Any,
               destination: Any = None,
               terminate: bool = False,
               signal: Any = None,
               **_ignored) -> None:
        """A queued task never runs; with terminate=True a running one's child is killed.
        It holds for every worker: Celery's destination (its workers only) is refused."""
        if destination is not None:
            raise TypeError("revoke(): a revoke in miniq holds for every worker;"
                            " it takes no destination")
        # None is no ids, as Celery's worker reads it (maybe_list(None) or [])
        ids = [task_id] if isinstance(task_id, str) else list(task_id or ())
        if not all(isinstance(one, str) for one in ids):  # b"abc" is not three ids
            raise TypeError(f"revoke: task ids are strings, not {task_id!r}")
        signum = _signum("SIGTERM" if signal is None else signal) if terminate else None
        self.app.broker.revoke(ids, signum)
        self.app.waker.notify(TERMINATE if terminate else b"!")


class Miniq:
    """The app: ``Miniq("proj", broker="sqlite:///proj.db", include=[...])``."""

    broker_class = Broker  # the project's app adds rate limits to it

    def __init__(self,
                 main: str | None = None,
                 broker: str | None = None,
                 backend: str | None = None,
                 include: Iterable[str] | None = None,
                 **conf: Any):
        global _default
        self.main = main
        self.conf = Conf(copy.deepcopy(DEFAULTS), **conf)  # no app shares a default's dict
        self.conf.broker_url = (broker
                                or conf.get("broker_url")
                                or os.environ.get("MINIQ_BROKER_URL")
                                or "sqlite:///miniq.db")
        self.conf.result_backend = backend or conf.get("result_backend")
        self.conf.include = [include] if isinstance(include, str) else list(include or ())
        self.tasks: dict[str, Task] = TaskRegistry()
        self.tasks.app = self
        self._broker = self._waker = self._broker_url = None
        self._routes = {}
        # A relative database path is taken from the folder of the file making the app, so
        # producers and workers find the same file from any current folder.
        caller = sys._getframe(1)
        while caller.f_code.co_name == "__init__" and caller.f_globals.get(
                "__name__", "").startswith(f"{__package__}."):
            caller = caller.f_back  # the project app's __init__: who called it made the app
        caller = caller.f_globals
        self.home, self.origin = os.getcwd(), caller.get("__name__")  # origin: for -A
        if caller.get("__file__") and self.origin != __name__:
            self.home = os.path.dirname(os.path.abspath(caller["__file__"]))
        self._builtins()
        _default = self

    def _builtins(self) -> None:
        """Register the tasks every app has: Celery's that workflows run in a worker."""
        canvas.builtins(self)

    def __repr__(self) -> str:
        return f"<Miniq {self.main or '__main__'} {self.conf.broker_url}>"

    control = functools.cached_property(Control)  # revoke tasks already sent

    @property
    def broker(self) -> Broker:
        """The database, opened for the current ``conf.broker_url``."""
        url = self.conf.broker_url
        if self._broker_url != url:
            with _OPENING:  # threads that send their first tasks at once open it once
                if self._broker_url != url:
                    self._open(url)
        return self._broker

    def _open(self, url):
        path = os.path.join(self.home, path_from_url(url))
        self._check_backend(path)
        durable = self.conf.sqlite_synchronous.upper() == "FULL"
        self.close()  # the file it used before, if any
        self._broker = self.broker_class(path, durable)
        self._waker = Waker(self._broker.path)
        self._broker_url = url

    def _check_backend(self, path):
        """Refuse a result backend other than the broker's file, saying what would do."""
        backend = self.conf.result_backend
        if not backend or backend == "rpc://":
            return
        with contextlib.suppress(ImproperlyConfigured):  # not a file's URL: refused below
            if os.path.join(self.home, path_from_url(backend, "result backend")) == path:
                return
        raise ImproperlyConfigured(f"result backend {backend!r} is not supported: miniq keeps"
                                   " results in the broker's file: leave backend unset,"
                                   " rpc:// or equal to broker")

    def close(self) -> None:
        """As Celery's: let go of what the app holds open (this thread's connection to the
        file, the socket it sends hints from); used again, it opens them again."""
        if self._broker is not None:
            self._broker.close()
            self._waker.close()

    def __enter__(self) -> Miniq:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def waker(self) -> Waker:
        self.broker  # noqa: B018 - opens the broker and its waker for the current URL
        return self._waker

    def import_includes(self) -> None:
        """Import the modules of ``conf.imports`` and ``include`` (each a list, or one
        name, as Celery's): a worker's tasks."""
        listed = [[names] if isinstance(names, str) else names or ()
                  for names in (self.conf.imports, self.conf.include)]
        for name in itertools.chain(*listed):
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise ImproperlyConfigured(f"cannot import included module {name!r}: {exc}") from None

    def task(self, *args: Any, **options: Any) -> Any:
        """Register a function as a task: ``@app.task`` or ``@app.task(bind=True, ...)``."""
        def register(fun):
            name = options.pop("name", None) or self.gen_task_name(fun.__name__, fun.__module__)
            known = self.tasks.get(name)
            if known is not None:  # as Celery's: the first stays (a module imported twice)
                if getattr(known, "__wrapped__", fun) is not fun:
                    warnings.warn(DuplicateTaskNameWarning(
                        f"task name {name!r} is taken: calls reach the function registered"
                        " first, not this one"), stacklevel=3)
                return known
            base = options.pop("base", None) or self.conf.get("task_cls") or Task
            task = functools.update_wrapper(base._subclass(self, fun, name, options)(), fun)
            self.tasks[name] = task
            return task
        return decorator(register, args, options, "app.task")

    def rate_intervals(self) -> dict[str, float]:
        """Task name → seconds between its starts; the project's app reads rate limits."""
        return {}

    def admit(self, worker, messages: list) -> list:
        """Of the messages a worker claimed, those that start now: all; the project's
        app holds back rate-limited ones until their turn."""
        return messages

    def gen_task_name(self, name: str, module: str) -> str:
        """A task's name: ``module.function``; a script's are named after the app. A
        spawned child runs the script as ``__mp_main__``: its names are the script's."""
        module = "__main__" if module == "__mp_main__" else module
        main = "__main__" if self.main == "__mp_main__" else self.main  # Celery(__name__)
        if module == "__main__" and main:
            module = main
        return f"{module}.{name}"

    def _defaults(self, name):
        """(queue, priority, soft, hard, expires, ignore_result) for a name: the task's
        option, task_routes, conf. For a name this app lacks, its worker's task decides."""
        conf = self.conf  # items, not attributes: this runs at every send
        key = (name,
               name in self.tasks,
               conf["task_default_queue"],
               id(conf["task_routes"]),
               id(conf.get("task_queues")),
               conf["task_default_priority"],
               conf["broker_url"],
               conf["task_ignore_result"])
        if key not in self._routes:  # keyed on the settings, so changing them takes effect
            task, route = self.tasks.get(name) or Task, _route(conf.task_routes or {}, name)
            ignore = conf.task_ignore_result if task.ignore_result is None else task.ignore_result
            # as Celery's: a task takes task_default_priority as its own option, over a route
            own = conf.task_default_priority if task.priority is None and name in self.tasks \
                else task.priority
            given = (own, route.get("priority"))  # none for a name it lacks, as Celery's
            sent_to = {key: getattr(task, key, None) for key in ("exchange", "routing_key")}
            routed = route.get("queue")
            routed = routed if routed is None else _published(conf, routed, route)
            queue = task.queue or _bound(conf, sent_to) or routed or _bound(conf, route)
            self._routes[key] = (getattr(queue, "name", queue) or conf.task_default_queue,
                                 next((p for p in given if p is not None), None),
                                 task._own("soft_time_limit"),  # the worker reads conf's
                                 task._own("time_limit"),
                                 task.expires,
                                 bool(ignore) and name in self.tasks)
        return self._routes[key]

    def message_row(self, name, args=None, kwargs=None, countdown=None, eta=None,
                    task_id=None, queue=None, priority=None, chord=None,
                    waiting=False, ignore_result=None, retries=None, routed=None,
                    **options) -> tuple:
        """The row ``send_task`` inserts; JSON-encodes the arguments (TypeError if it can't).
        ``routed``: what _defaults gives the name, if the caller has it."""
        if not isinstance(name, str):
            raise TypeError(f"a task's name is text, not {name!r}")
        json_only(name, options.get("serializer") or "json")
        default_queue, default_priority, soft, hard, default_expires, ignores = (
            routed or self._defaults(name))
        # as Celery's: a call's exchange and routing key over its route
        queue = _bound(self.conf, options) if queue is None else _published(self.conf, queue,
                                                                            options)
        kept = {key: options.get(key) for key in KEPT}  # other options are ignored
        priority = default_priority if priority is None else priority
        if priority is None and self.conf.task_inherit_parent_priority:  # as Celery's: only
            priority = running_priority()  # where none is set (None outside a task)
        priority = 0 if priority is None else priority
        expires = options.get("expires", default_expires)  # as Celery's: None given clears it
        soft_limit, hard_limit = kept["soft_time_limit"], kept["time_limit"]
        _check_call(name,
                    queue=default_queue if queue is None else queue,  # a route's too
                    task_id=task_id,
                    chord=chord,
                    priority=priority,
                    countdown=countdown,
                    soft_time_limit=soft if soft_limit is None else soft_limit,
                    time_limit=hard if hard_limit is None else hard_limit,
                    headers=kept["headers"],
                    retries=retries)
        for key in ("link", "link_error"):
            kept[key] = _links(name, kept[key], key)
        _links(name, kept["chain"], "chain")  # checked alone: a last step's [] stays
        body = encode_args(name, args, kwargs)
        now, due, expires = _times(name, countdown, eta, expires)
        kept["group"] = kept.pop("group_id")
        kept["retries"] = retries or None  # the count it starts from: no retry of itself
        if not kept["parent_id"]:  # sent from inside a running task: that one is its parent
            kept.update({"root_id": None, **lineage()})
        if not options.get("add_to_parent", True):  # as Celery's: not among its children
            kept["untrailed"] = True
        # unsaid: True if this app knows the task ignores it, else its worker's task decides
        ignore_result = (ignores or None) if ignore_result is None else bool(ignore_result)
        # a chord's callback reads its members' values from their rows; a chain's next
        # step or a link gets the value, which is then dropped
        kept["ignore_result"] = ignore_result and not chord
        status = WAITING if waiting else QUEUED  # a chord callback waits for its members
        return (task_id or new_id(), name, queue or default_queue, priority, body,
                _options(name, kept), due, expires, now, chord, status,
                retries or 0)  # retries: as Celery's send_task

    def message_rows(self, calls: Iterable[tuple], **options: Any) -> list:
        """Rows for many (name, args, kwargs, task_id) calls with the same options: a
        group's fast path."""
        rows, made = [], {}
        for name, args, kwargs, task_id in calls:
            if name not in made:  # checked and routed once a name
                made[name] = self.message_row(name, **options)
            row = made[name]
            body = encode_args(name, args, kwargs)
            rows.append((task_id or new_id(), name, *row[2:4], body, *row[5:]))
        return rows

    def send_task(self,
                  name: str,
                  args: Any = None,
                  kwargs: Any = None,
                  countdown: float | None = None,
                  eta: Any = None,
                  task_id: str | None = None,
                  *,
                  ignore_result: bool | None = None,
                  **options: Any) -> AsyncResult:
        """Send a task by name, with no need for its code in this process. As Celery's,
        the task's own ignore_result decides unless the call says.
        countdown, eta and task_id may come by position, as Celery's take them."""
        options.update({k: v for k, v in (("countdown", countdown), ("eta", eta),
                                          ("task_id", task_id)) if v is not None})
        if self.conf.task_always_eager:
            warnings.warn(AlwaysEagerIgnored("task_always_eager has no effect on send_task"),
                          stacklevel=2)
        routed = self._defaults(name)
        row = self.message_row(name, args, kwargs, ignore_result=ignore_result, routed=routed,
                               **options)
        self.send_rows([row])
        result = AsyncResult(row[0], app=self)
        result.ignored = routed[-1] if ignore_result is None else bool(ignore_result)
        add_trail(result, options.get("add_to_parent", True))
        return result

    def send_rows(self, rows: list) -> None:
        """Insert message rows, all or none, and wake the workers; the publish signals
        around it, as Celery sends them around each message."""
        rows = emit("_publishing", rows) or rows
        self.broker.enqueue(rows)
        self.waker.notify()
        emit("_published", rows)

    def AsyncResult(self, task_id: str) -> AsyncResult:
        return AsyncResult(task_id, app=self)


_OPENING = threading.Lock()
os.register_at_fork(after_in_child=lambda: globals().update(_OPENING=threading.Lock()))
# signals that pause a process: its task would never end, nor would a warm shutdown
PAUSING = {signals.SIGSTOP, signals.SIGTSTP, signals.SIGTTIN, signals.SIGTTOU}


def _signum(value):
    """A real signal, by number or name (``SIGUSR1`` or ``USR1``), else ValueError."""
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str)):  # True is not
            raise TypeError(value)  # SIGHUP, nor 9.0 SIGKILL (as Celery's: a TypeError)
        if isinstance(value, str):
            signum = signals.Signals["SIG" + value.removeprefix("SIG")]
        else:
            signum = signals.Signals(value)
    except (KeyError, ValueError, TypeError):
        raise ValueError(f"revoke: {value!r} is not a signal of this platform") from None
    if signum in PAUSING:
        raise ValueError(f"revoke: {signum.name} pauses a task, it does not end one")
    return signum


def _deadline(expires, now):
    """An expiry (seconds from now, a datetime or None) as unix time; as Celery's
    send_task, a timedelta is refused."""
    if expires is None:
        return None
    return now + expires if isinstance(expires, NUMBER) else to_timestamp(expires)


def _times(name, countdown, eta, expires):
    """(now, due, expires) of a call: unix times; due 0.0 if it is due now."""
    now = time.time()
    due = now + countdown if countdown else (to_timestamp(eta) if eta else 0.0)  # as Celery's
    expires = _deadline(expires, now)
    if not (math.isfinite(due) and math.isfinite(expires or 0)):
        raise ValueError(f"{name}: countdown, eta and expires must be finite times")
    check_dates(name, due, expires or 0)
    return now, due, expires


def _options(name, values):
    """A message's options column: JSON of what its worker needs beyond the row's own
    columns (per-call limits, a workflow, where it comes from), or None, as for most calls.
    A chain's last step keeps its empty chain: its request's is [], as Celery's."""
    kept = {k: v for k, v in values.items()
            if v is not None and (v is not False or k == "ignore_result")
            and (v != [] or k == "chain")}
    try:
        return dumps(kept) if kept else None
    except RecursionError:  # a link's link's link...: as arguments too deep
        raise ValueError(f"{name}: its options (links, a workflow) nest too deep for JSON"
                         ) from None


def _links(name, link, key):
    """A link (or chain) option, a signature or a list of them, as the list Celery's
    request keeps. Refused at the call unless each is a signature: a worker could not
    send it, and the task would end with its callback lost."""
    links = list(link) if isinstance(link, (list, tuple)) else [link] if link else []
    for sig in links:
        if not (isinstance(sig, dict) and isinstance(sig.get("task"), str)):
            raise TypeError(f"{name}: {key} takes signatures, not {sig!r}")
    return links or None


def _route(routes, name):
    """A name's route, as Celery's routers read task_routes: the first dict (of a list or
    tuple of them) that names it, exactly or by a glob or regex pattern."""
    for table in routes if isinstance(routes, (list, tuple)) else [routes]:
        if isinstance(table, (list, tuple)) and all(  # Celery's ordered (pattern, route)
                isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in table):
            table = dict(table)  # pairs: a table read in their order
        if not isinstance(table, dict):
            raise ImproperlyConfigured(
                f"task_routes: {table!r} is a router miniq does not call: give dicts of routes")
        route = table.get(name) or next((r for pattern, r in table.items() if (
            pattern.match(name) if isinstance(pattern, re.Pattern)  # as Celery's: only a
            else "*" in pattern and fnmatch.fnmatchcase(name, pattern))), None)  # * makes a glob
        if route is not None:
            return route if isinstance(route, dict) else {"queue": route}
    return {}


def _bound(conf, given):
    """The queue a message published to ``given``'s exchange with its routing key reaches,
    as Celery's broker routes it: the one queue of task_queues bound so (a topic binding
    by its pattern; the exchange "" by the queue's name). None where it names neither, or
    one alone: as Celery's publisher, the queue otherwise chosen then (a key alone goes
    by a topic default queue's exchange). Refused if it reaches no queue or several:
    nothing is dropped."""
    exchange, key = getattr(given.get("exchange"), "name", given.get("exchange")), given.get(
        "routing_key")
    if not all(isinstance(part, str) for part in (exchange, key) if part is not None):
        raise ImproperlyConfigured(f"an exchange and a routing_key are text, not {exchange!r}"
                                   f" and {key!r}: or give a queue")
    if exchange is None and key is not None:
        default = _bindings(conf).get(conf["task_default_queue"], [None])[0]
        exchange = default[0] if default and default[2] == "topic" else None
    if exchange is None or key is None:
        return None
    if not exchange:  # the default exchange: the queue of that name
        return key
    found = [name for name, ways in _bindings(conf).items() if any(
        bound == exchange and (binding == key or kind == "topic" and _topic(binding, key))
        for bound, binding, kind in ways)]
    if len(found) != 1:
        raise ImproperlyConfigured(
            f"exchange {exchange!r} with routing_key {key!r} reaches {len(found)} queues of"
            f" task_queues ({', '.join(found) or 'none'}): miniq sends to one; give a queue")
    return found[0]


def _published(conf, queue, given):
    """The queue a message for ``queue`` (a name or a kombu Queue) reaches with ``given``'s
    exchange and routing key, as Celery's publisher sends it: to the queue by name where
    its exchange is direct and no exchange and key are both given, else by the key, to
    the exchange given or the queue's own (the queue itself is only declared then)."""
    name, exchange, key = getattr(queue, "name", queue), given.get("exchange"), given.get(
        "routing_key")
    if key is None:  # the common call: a queue alone
        return name
    bound = _bindings(conf).get(name, [None])[0] if isinstance(name, str) else None
    bound = bound or (None, None, "direct")  # a queue that is not a name: refused later
    kind = (given.get("exchange_type") or getattr(getattr(queue, "exchange", None), "type",
                                                  None) or bound[2])
    if not exchange and kind == "direct":
        return name
    exchange = bound[0] if exchange is None else exchange
    return _bound(conf, {"exchange": exchange, "routing_key": key})


def _bindings(conf):
    """task_queues as Celery declares them: name -> [(exchange, routing key, exchange
    type), then each of its kombu bindings], Celery's defaults where a queue names none
    (a name alone is bound by itself)."""
    default = conf["task_default_queue"]
    exchange0 = conf.get("task_default_exchange") or default
    key0 = conf.get("task_default_routing_key") or default
    kind0 = conf.get("task_default_exchange_type") or "direct"
    queues = conf.get("task_queues")
    if not queues:  # Celery's default queue
        return {default: [(exchange0, key0, kind0)]}
    found = {}
    for queue in [queues] if isinstance(queues, str) else queues:
        exchange, name = getattr(queue, "exchange", None), getattr(queue, "name", queue)
        named = getattr(exchange, "name", exchange)
        if not isinstance(name, str) or named is not None and not isinstance(named, str):
            raise ImproperlyConfigured(f"task_queues: {queue!r} is not a queue")
        found[name] = [(named or exchange0,
                        name if queue is name else getattr(queue, "routing_key", None) or key0,
                        getattr(exchange, "type", None) if named else kind0)]
        for way in getattr(queue, "bindings", None) or ():  # kombu's binding()s: each too
            bound = getattr(way.exchange, "name", way.exchange)
            if not isinstance(bound, str) or not isinstance(way.routing_key or "", str):
                raise ImproperlyConfigured(f"task_queues: {way!r} of {name!r} is no binding")
            found[name].append((bound, way.routing_key or "", getattr(way.exchange, "type",
                                                                     "direct")))
    return found


def _topic(pattern, key):
    """Whether a topic binding matches a routing key: * one word, # none or more."""
    words, reach = key.split("."), {0}  # how many words the binding's words so far match
    for part in pattern.split("."):
        if part == "#":
            reach = set(range(min(reach), len(words) + 1))
        else:
            reach = {n + 1 for n in reach if n < len(words) and part in ("*", words[n])}
        if not reach:
            return False
    return len(words) in reach


def _check_call(name, **values):
    """Refuse at the call what a worker could not use, as Celery checks its options."""
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, CALL_TYPES[key]):
            raise TypeError(f"{name}: {key} cannot be {value!r}")
    soft = values.get("soft_time_limit")
    hard = values.get("time_limit")
    for key, limit in (("soft_time_limit", soft), ("time_limit", hard)):
        if limit is not None and not limit >= 0:
            raise ValueError(f"{name}: {key} cannot be negative: {limit!r}")
    if not 0 <= (values.get("retries") or 0) < 2 ** 31:
        raise ValueError(f"{name}: retries counts from 0, not {values['retries']}")
    priority = values.get("priority")
    if priority is not None and not 0 <= priority <= 255:
        raise ValueError(f"{name}: priority must be from 0 to 255, not {priority}")


def _other_copy(values):
    """The package of another copy of miniq (one vendored) whose app is among values."""
    for value in values:
        app = next((c for c in type(value).__mro__ if c.__name__ == "Miniq"), Miniq)
        if app is not Miniq:
            return app.__module__.rpartition(".")[0]
    return None


@functools.cache
def load_app(path: str) -> Miniq:
    """Import the app named by ``-A``: ``proj``, ``proj:app`` or ``proj.app``; cached. As
    Celery's commands, it is the current app then, whatever other app its module made."""
    global _default
    module_name, _, attr = path.partition(":")
    if not module_name or module_name.startswith("."):  # relative to nothing
        raise ImproperlyConfigured(f"-A {path!r} names no module: give one as proj or proj:app")
    if module_name.endswith(".py") and os.path.isfile(module_name):
        folder, name = os.path.split(os.path.relpath(module_name[:-3]))
        module = ":".join(filter(None, (name, attr)))
        where = f" from {os.path.abspath(folder)}" if folder else ""
        raise ImproperlyConfigured(f"-A {path!r} is a file: give its module, as -A {module}{where}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        parent, _, name = module_name.rpartition(".")
        if parent and isinstance(exc, ModuleNotFoundError) and exc.name == module_name:
            return load_app(f"{parent}:{name}")  # proj.app: an attribute, not a module
        raise ImproperlyConfigured(f"cannot import app module {module_name!r}: {exc}"
                                   f"{_where(exc)}") from None
    if attr:
        app = getattr(module, attr, None)
    else:  # as Celery: module.app or module.celery, then proj.celery, then any app there
        named = (getattr(module, key, None) for key in ("app", "celery"))
        app = next((v for v in named if isinstance(v, Miniq)), None)
        if app is None and hasattr(module, "__path__"):
            with contextlib.suppress(ImproperlyConfigured):
                return load_app(f"{module_name}.celery")
        app = app or next((v for v in vars(module).values() if isinstance(v, Miniq)), None)
    if not isinstance(app, Miniq):
        found = "it has no such attribute" if attr and not hasattr(module, attr) else (
            "no Miniq instance found there")
        copy = _other_copy([getattr(module, attr, None)] if attr else vars(module).values())
        if copy:
            found = f"its app is of another copy of miniq: run that copy, python -m {copy}"
        raise ImproperlyConfigured(f"{path!r} is not a miniq app ({found})")
    app.import_includes()
    _default = app
    return app


def _where(exc):
    """Where in the app's own code an import failed, if it was there: `` (file, line n)``."""
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
              if frame.filename != __file__ and "importlib" not in frame.filename]
    return f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""


def decorator(register, args, options, name):
    """``@name``, ``@name(option=value, ...)`` or ``name(fun, option=value, ...)``:
    register the function any way, as Celery's."""
    if len(args) == 1 and callable(args[0]):
        return register(args[0])
    if args:
        raise TypeError(f"use @{name}, @{name}(option=value, ...) or {name}(function, ...)")
    return register

