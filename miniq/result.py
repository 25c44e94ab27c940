"""AsyncResult: a task's state and outcome, read from the database.

Exceptions travel as JSON (type name, module, args). They come back as
builtin or miniq types, or as a generated class of the same name: nothing
named in the database is ever imported or unpickled.
"""
from __future__ import annotations

import builtins
import functools
import math
import os
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable

from . import exceptions
from .broker import DONE, FINAL, QUEUED, RUNNING
from .utils.json import dumps, loads

EXCEPTION_STATES = frozenset({"FAILURE", "RETRY", "REVOKED"})
UNKNOWN = (QUEUED, "PENDING", None, None, None, None)  # a task the database does not know (yet)
WIRE_MODULE = "miniq.exceptions"  # the stored name of miniq's exceptions module

# True inside worker children: get() there could wait on a task that needs this very child.
join_will_block = False


_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def new_id():
    """A random (version 4) UUID string, three times cheaper than str(uuid.uuid4())."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def exception_to_json(exc):
    """Type name, module and args as JSON; miniq's own module is written as
    ``miniq.exceptions`` wherever the package lives, so a vendored copy reads it."""
    cls = type(exc)
    module = WIRE_MODULE if cls.__module__ == exceptions.__name__ else cls.__module__
    data = {"exc_type": cls.__qualname__, "exc_module": module, "exc_message": exc.args}
    try:
        return dumps(data)
    except (TypeError, ValueError, RecursionError):  # args JSON cannot carry: keep the text
        return dumps({**data, "exc_message": [_text_of(exc)]})


def _text_of(exc):
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the failure
        return f"<unprintable {type(exc).__name__}>"


def exception_from_json(data):
    """Rebuild an exception by name, from builtins, miniq or a module this process has
    already imported (so ``except MyError`` matches); never an import."""
    name, module = str(data.get("exc_type")), str(data.get("exc_module"))
    args = data.get("exc_message")
    args = args if isinstance(args, list) else [args]
    home = {"builtins": builtins, WIRE_MODULE: exceptions}.get(module, sys.modules.get(module))
    cls = getattr(home, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        cls = _remote_class(module, name)
    try:
        return cls(*args)
    except Exception:  # a builtin whose constructor wants other arguments
        return _remote_class(module, name)(*args)


@functools.lru_cache(maxsize=None)
def _remote_class(module, name):
    """A stand-in class for an exception type this process must not import."""
    safe = name if name.isidentifier() else "RemoteError"
    return type(safe, (Exception,), {"__module__": module})


def _value(row):
    """The value, the exception, or the meta a row holds."""
    if row[2] is None:
        return None
    data = loads(row[2])
    if row[1] in EXCEPTION_STATES and row[0] != RUNNING and isinstance(data, dict):
        return exception_from_json(data)
    return data


class AsyncResult:
    """A handle on a task by id: its state, its outcome, and ways to wait for them."""

    ignored = False  # sent with ignore_result: get() returns None at once
    parent = None  # the AsyncResult of the previous step, in a chain
    _done = None  # a finished row never changes: keep it

    def __init__(self, id: str, app=None):
        if app is None:
            from .app import default_app
            app = default_app()
        self.id, self.app = id, app

    @property
    def task_id(self) -> str:
        return self.id

    def _row(self):
        """(status, state, result, traceback, name, finished), as broker.state() reads them."""
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
        return self._row()[4]

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

    def get(self, timeout: float | None = None, propagate: bool = True,
            interval: float = 0.1, callback: Callable | None = None,
            on_message: Callable | None = None, disable_sync_subtasks: bool = True,
            **_ignored) -> Any:
        """Wait until the task is done; return its value or raise its exception.
        on_message(meta) sees each new state; callback(id, value) the outcome."""
        if self.ignored:
            return None
        if disable_sync_subtasks and join_will_block:
            raise RuntimeError("Never call result.get() within a task: it can deadlock the pool")
        self._wait(timeout, interval, on_message)
        value = self.info
        if propagate and self.state != "SUCCESS":
            raise value
        if callback is not None:
            callback(self.id, value)
        return value

    wait = get

    def _wait(self, timeout, interval, on_message=None):
        """Poll cheaply: reread the row only when another connection has committed."""
        broker, start, seen, told = self.app.broker, time.monotonic(), None, None
        if timeout is None:
            timeout = math.inf
        while True:
            version = broker.data_version()
            if version != seen:
                if on_message is not None:
                    told = self._tell(on_message, told)
                if self.ready():
                    return
            seen = version
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                raise exceptions.TimeoutError("The operation timed out.")
            pause = min(interval, 0.0001 + elapsed * 0.05)  # late by at most ~5%
            time.sleep(min(pause, timeout - elapsed))

    def _tell(self, on_message, told):
        """Give on_message Celery's meta dict if the row shows a new state or meta; polling
        sees the latest, so updates quicker than a poll reach it as one."""
        row = self._row()
        if row[1] != "PENDING" and row[1:3] != told:
            done = row[5] and datetime.fromtimestamp(row[5], timezone.utc).isoformat()
            on_message({"status": row[1], "result": _value(row), "traceback": row[3],
                        "date_done": done, "task_id": self.id})
        return row[1:3]

    def forget(self) -> None:
        """Delete the stored result."""
        self.app.broker.forget(self.id)
        self._done = None

    def revoke(self, terminate: bool = False, signal: Any = None) -> None:
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


class EagerResult(AsyncResult):
    """The outcome of a task run in-process (``apply()``, ``task_always_eager``)."""

    def __init__(self, id: str, state: str, value: Any, traceback: str | None = None, app=None):
        super().__init__(id, app)
        self._done = (DONE, state, None, traceback, None, None)  # _row() never reads the database
        self._value = value

    @property
    def info(self) -> Any:
        return self._value

    result = info

    def get(self, timeout=None, propagate=True, **_ignored) -> Any:
        if self.state in ("IGNORED", "REJECTED"):  # as Celery: no outcome to give
            return None
        if propagate and self.state != "SUCCESS":
            raise self._value
        return self._value

    wait = get

    def forget(self) -> None:
        pass


class GroupResult:
    """The results of a group: wait for all, count the finished ones."""

    def __init__(self, id: str, results: list):
        self.id = id
        self.results = list(results)

    def ready(self) -> bool:
        """Whether every member has finished, whatever its outcome."""
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        """Whether every member succeeded."""
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        """Whether any member failed."""
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        """How many members succeeded (failures are finished but not counted, as in Celery)."""
        return sum(r.successful() for r in self.results)

    def get(self,
            timeout: float | None = None,
            propagate: bool = True,
            interval: float = 0.1,
            **options: Any) -> list:
        """Every member's value, in order; the first failure raises (if propagate)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for r in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            value = r.get(timeout=left, propagate=propagate, interval=interval, **options)
            values.append(value)
        return values

    join = get

    def revoke(self, terminate: bool = False, signal: Any = None) -> None:
        """Revoke every member; with terminate=True, running ones are killed."""
        for r in self.results:
            r.revoke(terminate=terminate, signal=signal)

    def forget(self) -> None:
        """Forget every member's stored result."""
        for r in self.results:
            r.forget()

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"
