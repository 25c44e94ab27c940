"""AsyncResult: a task's state and outcome, read from the database; ResultSet and
GroupResult: many of them, a group's saved and restored by its id.

Exceptions travel as JSON (type name, module, args). They come back as
builtin or miniq types, or as a generated class of the same name: nothing
named in the database is ever imported or unpickled.
"""
from __future__ import annotations

import builtins
import contextlib
import functools
import itertools
import math
import os
import pickle
import sys
import time
import types
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable

from . import exceptions
from .broker import DONE, FINAL, QUEUED, RUNNING
from .utils.json import dumps, loads
from .utils import serialization
from .utils.serialization import UnpickleableExceptionWrapper

EXCEPTION_STATES = frozenset({"FAILURE", "RETRY", "REVOKED"})
UNKNOWN = (QUEUED, "PENDING", None, None, None, None, None)  # a task the database lacks (yet)
WIRE_MODULE = "miniq.exceptions"  # the stored name of miniq's exceptions module
# the modules a reader always knows, by their stored names (wherever the package lives)
KNOWN = {"builtins": builtins, WIRE_MODULE: exceptions, "miniq.utils.serialization": serialization}
WIRE_NAMES = {module.__name__: name for name, module in KNOWN.items()}
_READERS = {}  # database path -> the app unpickled results of that file read through

# True inside worker children: get() there could wait on a task that needs this very child.
join_will_block = False


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_id():
    """A random (version 4) UUID string, three times cheaper than str(uuid.uuid4())."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


@contextlib.contextmanager
def _joins(refused):
    global join_will_block
    before, join_will_block = join_will_block, refused
    try:
        yield
    finally:
        join_will_block = before


def allow_join_result():
    """Let get() wait inside a task for the with-block, as Celery's: at the risk of a
    deadlock when every child waits."""
    return _joins(False)


def denied_join_result():
    """Refuse get() for the with-block, as in a worker's child: Celery's, around an eager
    run that delay() or apply_async() started."""
    return _joins(True)


def _check_join(disable_sync_subtasks):
    if disable_sync_subtasks and join_will_block:
        raise RuntimeError("Never call result.get() within a task: it can deadlock the pool")


def _app(app):
    """The app given, else the default one (made on demand)."""
    if app is None:
        from .app import default_app  # app imports this module
        app = default_app()
    return app


def _unpickled(cls, id, where, parent):
    """A result read where it was made: through the current app if it has the same broker
    URL (a project moved keeps it), else through an app made for that database file
    (which leaves the current one be), else through the current app."""
    from . import app as apps  # app imports this module
    (url, path), app = where, apps._default
    if path is not None and (app is None or app.conf.broker_url != url):
        app = _READERS.get(path)
        if app is None:
            current, app = apps._default, apps.Miniq(broker=f"sqlite:///{path}")
            _READERS[path], apps._default = app, current
    return cls(id, app=app, parent=parent)


def _where(app):
    """(broker URL, database path) of an app: None for a URL that is no file's."""
    try:
        return app.conf.broker_url, app.broker.path
    except exceptions.ImproperlyConfigured:  # memory:// in an eager test, say
        return app.conf.broker_url, None


def _finished(row, tz=timezone.utc):
    """When a row's task finished, as an aware datetime; None until it is ready (as
    Celery's: not for a custom state, nor for a run that ended with Ignore)."""
    if not (row[5] and row[1] in FINAL):
        return None
    return datetime.fromtimestamp(row[5], tz)


def zone(conf):
    """app.conf's timezone as a tzinfo: as Celery's, ``timezone``, else Django's
    ``TIME_ZONE``; "UTC" (or None: UTC, Celery's default) needs no time zone database."""
    name = conf.get("timezone") or conf.get("TIME_ZONE")
    if name is None or isinstance(name, str) and name.upper() == "UTC":
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo(name)
    except Exception:  # noqa: BLE001 - not a name, or one the time zone database lacks
        error = exceptions.ImproperlyConfigured(f"unknown timezone {name!r} in app.conf.timezone")
    raise error


def exception_to_json(exc):
    """Type name, module and args as JSON; miniq's own module is written as
    ``miniq.exceptions`` wherever the package lives, so a vendored copy reads it."""
    kept = pickleable(exc)
    cls = type(kept)
    module = WIRE_NAMES.get(cls.__module__, cls.__module__)
    data = {"exc_type": cls.__qualname__, "exc_module": module}
    try:  # as Celery's: each arg that JSON cannot carry as its repr, so the class rebuilds
        return dumps({**data, "exc_message": [_carried(arg) for arg in kept.args]})
    except Exception:  # noqa: BLE001 - args that raise even so: keep the text
        return dumps({**data, "exc_message": [_text_of(exc, str)]})


def pickleable(exc):
    """exc as a Celery worker hands it on, to hooks, signals and the result: itself if it
    pickles, else the first of its class and its bases above Exception that, made with
    its args, does, else Celery's wrapper, which holds its module, class name, args and
    repr."""
    cls = type(exc)
    if vars(cls).get("_stand_in"):  # made from the data here: its JSON is the class's own
        return exc
    bases = itertools.takewhile(lambda c: c not in (Exception, BaseException), cls.__mro__[1:])
    try:
        args = tuple(exc.args)
    except Exception:  # noqa: BLE001 - args that raise: kept under its own name, as text
        return exc
    for make in (None, cls, *(base for base in bases if issubclass(base, BaseException))):
        try:  # itself, then its class made anew (an attribute may not pickle), then bases
            kept = exc if make is None else make(*args).with_traceback(exc.__traceback__)
            pickle.loads(pickle.dumps(kept))
            return kept
        except BaseException:  # noqa: BLE001 - one that even exits rules out its class only
            continue
    args = [_carried(arg) for arg in args]
    text = _text_of(exc, repr)
    wrapper = UnpickleableExceptionWrapper(cls.__module__, cls.__qualname__, args, text)
    return wrapper.with_traceback(exc.__traceback__)


def _carried(arg):
    try:
        dumps(arg)
        return arg
    except Exception:  # noqa: BLE001 - whatever dumps raises, this arg is text then
        return _text_of(arg, repr)


def _text_of(value, show):
    try:
        return show(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure
        return f"<unprintable {type(value).__name__}>"


def _args(data):
    """A stored exception's args: its exc_message, a list (else the one value)."""
    args = data.get("exc_message")
    return args if isinstance(args, list) else [args]


def exception_from_json(data, imported=True):
    """Rebuild an exception by name, from builtins, miniq or (if ``imported``) a module
    this process has already imported, so ``except MyError`` matches; never an import.
    Others get a stand-in of the same name, whose JSON is the same."""
    name, module, args = str(data.get("exc_type")), str(data.get("exc_module")), _args(data)
    cls = KNOWN.get(module, sys.modules.get(module) if imported else None)
    for part in name.split("."):  # a class nested in another, by its qualified name
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = _remote_class(module, name)
    # one whose constructor wants other arguments: its nearest base above Exception that
    # takes them (as a Celery worker hands over the nearest that pickles), else Celery's
    # wrapper, its text the repr
    bases = itertools.takewhile(lambda c: c not in (Exception, BaseException), cls.__mro__[1:])
    for make in (cls, *(base for base in bases if issubclass(base, BaseException))):
        with contextlib.suppress(Exception):
            return make(*args)
    text = f"{name.rpartition('.')[2]}({', '.join(map(repr, args))})"
    return UnpickleableExceptionWrapper(module, name, args, text)


def exception_text(data):
    """A stored exception as its repr reads, ``ValueError('bad')``, made without running any
    of its class's code: the worker's manager logs it so. miniq's own are made (their
    repr is Celery's, as Reject's)."""
    if data.get("exc_module") == WIRE_MODULE:
        return repr(exception_from_json(data))
    return f"{data.get('exc_type')}({', '.join(map(repr, _args(data)))})"


@functools.lru_cache(maxsize=None)
def _remote_class(module, name):
    """A stand-in class for an exception type this process must not import."""
    safe = name if name and "\x00" not in name else "RemoteError"  # as Celery's: Outer.Inner
    return type(safe, (Exception,), {"__module__": module, "__qualname__": name,
                                     "_stand_in": True, "__reduce__": _stand_in_reduced})


def _stand_in_reduced(exc):
    """A stand-in pickles as the data it was made from (its class is no module's)."""
    cls = type(exc)
    return _stand_in, (cls.__module__, cls.__qualname__, exc.args), vars(exc) or None


def _stand_in(module, name, args):
    return _remote_class(module, name)(*args)


def _value(row):
    """The value, the exception, or the meta a row holds."""
    if row[2] is None:  # a running task's, as Celery's STARTED meta (its pid unknown here)
        started = row[1] == "STARTED" and row[0] == RUNNING
        return {"pid": None, "hostname": (row[6] or "").partition(" ")[2] or None} if started \
            else None
    data = loads(row[2])
    if row[1] in EXCEPTION_STATES and row[0] != RUNNING:
        if not data:  # stored so by hand: as Celery's, no exception
            return None
        if not (isinstance(data, dict) and "exc_type" in data):  # stored so by hand
            raise ValueError("Exception information must include the exception type")  # Celery's
        return exception_from_json(data)
    return data


def _throw(error):
    """Raise a stored error; a failure state set by hand with none raises as Celery's."""
    if error is None:
        raise RuntimeError("No active exception to reraise")
    raise error


class _Kind(type):
    def __instancecheck__(cls, obj):  # an app's class (app.GroupResult): any of its base's
        return type.__instancecheck__(cls.__dict__.get("binds", cls), obj)


class ResultBase(metaclass=_Kind):
    """Celery's base class of every result, for ``isinstance`` checks."""


def _plain(result):
    """The class a result pickles as: an app's (app.GroupResult), as the one it binds."""
    return type(result).__dict__.get("binds", type(result))


class AsyncResult(ResultBase):
    """A handle on a task by id: its state, its outcome, and ways to wait for them."""

    ignored = False  # sent with ignore_result: get() returns None at once
    __class_getitem__ = classmethod(types.GenericAlias)  # as Celery's: AsyncResult[int]
    TimeoutError = exceptions.TimeoutError
    _done = None  # a finished row never changes: keep it

    def __init__(self, id: str, backend=None, task_name=None, app=None, parent=None):
        if id is None:  # as Celery's: else a missing id would read PENDING for ever
            raise ValueError(f"AsyncResult requires valid id, not {type(id)}")
        if isinstance(id, uuid.UUID):  # a Django UUIDField's value, say
            id = str(id)
        if not isinstance(id, str):  # else the file would be asked for a number, say
            raise TypeError(f"a task id is text, not {id!r}")
        if backend is not None:  # Celery's second argument: an app goes by app=
            raise TypeError("AsyncResult(id, backend): miniq has no result backend but its"
                            " database file; give an app as app=")
        self.id, self.app = id, _app(app)
        self.parent = parent  # the AsyncResult of the previous step, in a chain

    def __reduce__(self):  # as Celery's, which pickles its backend: where to read it
        return _unpickled, (_plain(self), self.id, _where(self.app), self.parent)

    @property
    def task_id(self) -> str:
        return self.id

    def _row(self):
        """(status, state, result, traceback, name, finished, worker), as broker.state() reads
        them."""
        if self._done:
            return self._done
        row = self.app.broker.state(self.id)
        if row and row[0] == DONE and row[1] in FINAL:  # else ignored: it never gets ready
            self._done = row
        return row or UNKNOWN

    @property
    def state(self) -> str:
        """PENDING (queued or unknown), STARTED, a custom state, RETRY, or a final state."""
        return self._row()[1]

    status = state

    @property
    def name(self) -> str | None:
        return self._row()[4] or None  # none, as Celery's, for a state stored by id alone

    @property
    def date_done(self) -> datetime | None:  # as Celery's: in app.conf.timezone
        return _finished(self._row(), zone(self.app.conf))

    def _extended(self):
        """(args, kwargs, retries, queue, worker): what Celery keeps with result_extended."""
        body, retries, queue, worker = self.app.broker.extended(self.id) or (None,) * 4
        args, kwargs = (body and loads(body)) or (None, None)  # a never-run chain step: []
        return args, kwargs, retries, queue or None, (worker or "").partition(" ")[2] or None

    args = property(lambda self: self._extended()[0])
    kwargs = property(lambda self: self._extended()[1])

    @property
    def retries(self) -> int | None:
        """As Celery's: while in RETRY, the count of the run that asked for the retry."""
        retries = self._extended()[2]
        return retries - 1 if retries and self.state == "RETRY" else retries

    queue = property(lambda self: self._extended()[3])
    worker = property(lambda self: self._extended()[4], doc="The node name (-n) that ran it.")

    @property
    def children(self):
        """Once it is ready, the results of the tasks it sent (a group's as one)."""
        if not self.ready():
            return None
        found = {}  # a group's members join it where its first one was sent
        for task_id, group_id in self.app.broker.children(self.id):
            child = AsyncResult(task_id, app=self.app)
            if group_id:
                sent = found.setdefault(group_id, GroupResult(group_id, app=self.app))
                sent.results.append(child)
            else:
                found[task_id] = child
        return list(found.values())

    def collect(self, intermediate=False, **options):
        """(result, value) of this task, then, breadth first, of each task it sent, and
        theirs: as Celery's, waiting for each one (get() takes the options)."""
        todo = deque([self])
        while todo:
            node = todo.popleft()
            yield node, node.get(**options)
            todo.extend(node.children or ())

    def iterdeps(self, intermediate: bool = False):
        """(parent, result) of this task, then breadth first of each task it sent, and
        theirs, as Celery's: IncompleteStream at one not done, unless intermediate."""
        todo = deque([(None, self)])
        while todo:
            parent, node = todo.popleft()
            yield parent, node
            if node.ready():
                todo.extend((node, child) for child in node.children or ())
            elif not intermediate:
                raise exceptions.IncompleteStream()

    def get_leaf(self) -> Any:
        """The value of the last task iterdeps() reaches."""
        value = None
        for _, node in self.iterdeps():
            value = node.get()
        return value

    def exists(self) -> bool:
        """As Celery 5.7's: whether a state is stored for it now (one queued has none yet;
        an expired or forgotten one, none any more)."""
        row = self.app.broker.state(self.id)
        return bool(row) and row[1] != "PENDING"

    def as_list(self) -> list:
        """Its id, then its parent's (a chain's step before it), and so on."""
        return [self.id, *(self.parent.as_list() if self.parent is not None else ())]

    def as_tuple(self):
        return (self.id, self.parent and self.parent.as_tuple()), None

    @property
    def info(self) -> Any:
        """The value, the exception, or the meta a running task reported."""
        return _value(self._row())

    result = info

    @property
    def traceback(self) -> str | None:
        return self._row()[3]

    def ready(self) -> bool:
        self._row()  # keeps a finished row
        return self._done is not None

    def successful(self) -> bool:
        return self.ready() and self.state == "SUCCESS"

    def failed(self) -> bool:
        return self.ready() and self.state == "FAILURE"

    supports_native_join = True  # as Celery's with Redis: join() waits for all at once

    def maybe_throw(self, propagate: bool = True, callback: Callable | None = None) -> Any:
        """As Celery's: raise its error if it failed or was revoked, else give its value
        (None while not ready), to callback(id, value) too; never waits."""
        value = self.info
        if propagate and self.state in ("FAILURE", "REVOKED"):
            _throw(value)
        if callback is not None:
            callback(self.id, value)
        return value

    maybe_reraise = maybe_throw

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.1, no_ack: bool = True, follow_parents: bool = True,
            callback: Callable | None = None, on_message: Callable | None = None,
            on_interval: Callable | None = None, disable_sync_subtasks: bool = True,
            EXCEPTION_STATES: Any = None, PROPAGATE_STATES: Any = None) -> Any:
        """Wait until the task is done; return its value or raise its exception.
        on_message(meta) sees the states it takes while it waits (the one it is in, then
        each new one; none if it is done already); callback(id, value) the
        outcome; on_interval() runs once an interval while it waits. (no_ack and the
        two state sets are Celery's broker and internal knobs: accepted, unused.)"""
        if self.ignored:
            return None
        _check_join(disable_sync_subtasks)
        parents = follow_parents and propagate and self.parent is not None
        if parents and self._done is None:  # as Celery's: the steps before it first, unless
            _raise_failed_parent(self)  # it read its own outcome before
        self._wait(timeout, interval, on_message, parents, on_interval)
        value = self.info
        if propagate and self.state != "SUCCESS":
            if follow_parents:
                _raise_failed_parent(self)
            _throw(value)
        if callback is not None:
            callback(self.id, value)
        return value

    wait = get

    def _wait(self, timeout, interval, on_message=None, parents=False, on_interval=None):
        """Poll cheaply: reread the row only when another connection has committed. With
        parents, a failed or revoked step before this one raises its error meanwhile, as
        Celery's get() does (once an interval at most), as a chain stopped there never
        runs this one."""
        broker, start, seen = self.app.broker, time.monotonic(), None
        look_at = tick = 0.0  # when to look at the parents, and to call on_interval, next
        if timeout is None:
            timeout = math.inf
        if self.ready():  # done already: one query, and nothing to tell (as Celery's)
            return
        told = None  # what it was told last: a state it took since it was sent, then each new
        while True:
            version = broker.data_version()
            if version != seen:
                ready = self.ready()  # first: a state that ends it is told before it returns
                if on_message is not None:
                    told = self._tell(on_message, told)
                if ready:
                    return
            seen = version
            elapsed = time.monotonic() - start
            if on_interval is not None and elapsed >= tick:
                on_interval()
                tick = elapsed + interval
            if parents and elapsed >= look_at:  # at most a tenth of the time: a big header
                _raise_failed_parent(self)  # costs a query a member not yet done
                look_at = elapsed + max(interval, 10 * (time.monotonic() - start - elapsed))
            if elapsed >= timeout:
                raise exceptions.TimeoutError("The operation timed out.")
            pause = min(interval, 0.0001 + elapsed * 0.05)  # late by at most ~5%
            time.sleep(min(pause, timeout - elapsed))

    def _tell(self, on_message, told):
        """Give on_message Celery's meta dict if the row shows a new state or meta; polling
        sees the latest, so updates quicker than a poll reach it as one."""
        row = self._row()
        if row[1] != "PENDING" and row[1:3] != told:
            done = _finished(row, zone(self.app.conf))
            on_message({"status": row[1], "result": _value(row), "traceback": row[3],
                        "date_done": done and done.isoformat(), "task_id": self.id})
        return row[1:3]

    def forget(self) -> None:
        """Delete the stored result, and those of the steps before it, as Celery's."""
        if self.parent is not None:
            self.parent.forget()
        self.app.broker.forget(self.id)
        self._done = None

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """As Celery's; connection, wait and timeout change nothing: the revoke is
        written to the database before this returns."""
        self.app.control.revoke(self.id, terminate=terminate, signal=signal)

    def abort(self) -> None:
        """Ask the task to stop: its ``self.is_aborted()`` turns True."""
        self.app.broker.abort(self.id)

    def __eq__(self, other: object) -> bool:
        return (other.id if isinstance(other, AsyncResult) else other) == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __str__(self) -> str:
        return self.id

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.id}>"


def _raise_failed_parent(result):
    """As Celery's get(): the first failed step before this one (in a chain, or a
    chord's header) raises its own error."""
    line = []
    while result.parent is not None:
        result = result.parent
        line.append(result)
    for node in reversed(line):
        todo = [node]
        while todo:  # a group's members in order, a nested group's in its place
            r = todo.pop(0)
            if hasattr(r, "results"):
                todo[:0] = r.results
            elif r.ready() and r.state in ("FAILURE", "REVOKED"):
                raise r.info


class EagerResult(AsyncResult):
    """The outcome of a task run in-process (``apply()``, ``task_always_eager``)."""

    children = None  # as Celery's: nothing but the outcome

    def __init__(self, id: str, ret_value: Any, state: str, traceback: str | None = None,
                 name: str | None = None, app=None):  # Celery's order, and its app last
        super().__init__(id, app=app)
        self._done = (DONE, state, None, traceback, name, None, None)  # never read from the file
        self._value = ret_value

    def __reduce__(self):
        return _plain(self), (self.id, self._value, self.state, self.traceback, self.name)

    def _extended(self):
        return (None,) * 5

    @property
    def info(self) -> Any:
        return self._value

    result = info

    supports_native_join = False  # as Celery's: nothing to wait for

    def get(self, timeout=None, propagate=True, disable_sync_subtasks=True, **_ignored) -> Any:
        _check_join(disable_sync_subtasks)
        if self.state not in ("SUCCESS", "FAILURE", "REVOKED"):  # as Celery's: no outcome to
            return None  # give (a retry, an Ignore, a state made by hand)
        if propagate and self.state != "SUCCESS":
            value = self._value
            raise value if isinstance(value, Exception) else Exception(value)
        return self._value

    wait = get

    def forget(self) -> None:
        pass

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """As Celery 5.7's: the run is over, and its outcome becomes what a revoke stores."""
        self._done = (DONE, "REVOKED", None, None, self.name, None, None)
        self._value = exceptions.TaskRevokedError("revoked")


class ResultSet(ResultBase):
    """Results to wait for together, in order: Celery's ``celery.result.ResultSet``."""

    parent = None

    def __init__(self, results, app=None):
        # as Celery's: a list given is kept, and what is added to it later is a member
        self.results = results if isinstance(results, list) else list(results)
        self._app = app

    def __reduce__(self):  # as Celery's: the members, read through the current app
        return _plain(self), (self.results,)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: [{', '.join(r.id for r in self.results)}]>"

    @property
    def app(self):
        return self._app or _app(self.results[0].app if self.results else None)

    def add(self, result):
        """Add a result unless it is a member already."""
        if result not in self.results:
            self.results.append(result)

    def remove(self, result):
        """Remove a member (a result or its id); KeyError if it is not one."""
        if result not in self.results:
            raise KeyError(result)
        self.results.remove(result)

    def discard(self, result):
        """Remove a member, if it is one."""
        if result in self.results:
            self.results.remove(result)

    def update(self, results):
        """Add each result that is not a member yet."""
        for result in results:
            self.add(result)

    def clear(self):
        """Remove every member."""
        self.results.clear()

    def ready(self) -> bool:
        """Whether every member has finished, whatever its outcome."""
        return all(r.ready() for r in self.results)

    def waiting(self):
        """Whether any member has not finished yet."""
        return not self.ready()

    supports_native_join = True

    def maybe_throw(self, callback: Callable | None = None, propagate: bool = True) -> None:
        """Each member's maybe_throw(), in order."""
        for result in self.results:
            result.maybe_throw(callback=callback, propagate=propagate)

    maybe_reraise = maybe_throw

    def successful(self) -> bool:
        """Whether every member succeeded."""
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        """Whether any member failed."""
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        """How many members succeeded (failures are finished but not counted, as in Celery)."""
        return sum(r.successful() for r in self.results)

    def join(self, timeout=None, propagate=True, interval=0.1, callback=None, no_ack=True,
             on_message=None, disable_sync_subtasks=True, on_interval=None) -> list:
        """Every member's value, in order; the first failure raises (if propagate). As
        Celery's, callback(id, value) takes each value instead of the list."""
        options = dict(on_message=on_message, on_interval=on_interval,
                       disable_sync_subtasks=disable_sync_subtasks)
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for r in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = r.get(timeout=left, propagate=propagate, interval=interval, **options)
            if callback is None:
                values.append(value)
            else:
                callback(r.id, value)
        return values

    def join_native(self, timeout=None, propagate=True, interval=0.1, callback=None,
                    **options) -> list | None:
        """join(); as Celery's, None (not a list) when callback takes the values."""
        values = self.join(timeout, propagate, interval, callback, **options)
        return None if callback is not None else values

    get = join_native

    def revoke(self, connection: Any = None, terminate: bool = False, signal: Any = None,
               wait: bool = False, timeout: float | None = None) -> None:
        """Revoke every member, as one call, as Celery's (an eager member keeps its
        outcome); with terminate=True, running ones are killed."""
        self.app.control.revoke([r.id for r in self.results], terminate=terminate,
                                signal=signal)

    def forget(self) -> None:
        """Forget every member's stored result."""
        for r in self.results:
            r.forget()

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, index):
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __eq__(self, other):
        return isinstance(other, ResultSet) and other.results == self.results


class GroupResult(ResultSet):
    """The results of a group, under its id: ``save()`` keeps them for ``restore(id)``."""

    def __init__(self, id=None, results=None, parent=None, app=None):
        super().__init__([] if results is None else results, app)
        self.id, self.parent = id, parent

    @property
    def children(self):
        return self.results

    def as_tuple(self):
        parent = self.parent and self.parent.as_tuple()
        return (self.id, parent), [r.as_tuple() for r in self.results]

    def save(self):
        """Keep the members (and theirs, and the parents) until results expire."""
        self.app.broker.save_group(self.id, dumps(self.as_tuple()))
        return self

    def delete(self):
        """Remove what save() kept."""
        self.app.broker.delete_group(self.id)

    @classmethod
    def restore(cls, id, backend=None, app=None):
        """The group result saved under this id, or None (the app is the only backend)."""
        app = _app(app)
        saved = app.broker.restore_group(id)
        return saved and result_from_tuple(loads(saved), app)

    def __bool__(self):
        return bool(self.id or self.results)

    def __eq__(self, other):
        if isinstance(other, str):
            return other == self.id
        # as Celery's: its id, its members (each by its id) and its parent
        return (isinstance(other, GroupResult) and other.id == self.id
                and other.results == self.results and other.parent == self.parent)

    def __hash__(self):
        return hash(self.id)

    def __str__(self):
        return str(self.id)

    def __reduce__(self):
        return _plain(self), (self.id, self.results, self.parent)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def result_from_tuple(r, app=None):
    """A result from its ``as_tuple()`` form (lists, once through JSON), as Celery's:
    a result given is itself, and an id may come alone, as ``(id, None)``."""
    if isinstance(r, ResultBase):
        return r
    head, members = r
    id, parent = head if isinstance(head, (list, tuple)) else (head, None)
    parent = parent and result_from_tuple(parent, app)
    if members is None:
        return AsyncResult(id, app=app, parent=parent)
    return GroupResult(id, [result_from_tuple(m, app) for m in members], parent, app=app)
