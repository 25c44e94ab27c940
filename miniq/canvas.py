"""Workflows: a task call as a value (``task.s()``, ``si()``, ``set()``) and
``chain``, ``group`` and ``chord`` built from signatures. The worker links
the steps when it stores each result (``next_steps``), so none is lost.
"""
from __future__ import annotations

import time
from typing import Any, List, Sequence

from .result import AsyncResult
from .task import new_id
from .utils.json import loads


class _Delay:
    """The ``delay`` shortcut that signatures, chains and groups share."""

    def delay(self, *args: Any, **kwargs: Any):
        """``apply_async`` with the arguments spread out, as in Celery."""
        return self.apply_async(args, kwargs)


class Signature(_Delay, dict):
    """One task call as a value; a dict (as Celery's), so it travels as JSON."""

    def __init__(self,
                 task: Any,
                 args: Sequence = (),
                 kwargs: dict | None = None,
                 options: dict | None = None,
                 immutable: bool = False,
                 app=None):
        super().__init__(task=getattr(task, "name", task),  # a task, or its name
                         args=list(args),
                         kwargs=dict(kwargs or {}),
                         options=dict(options or {}),
                         immutable=immutable)
        self._app = app or getattr(task, "app", None)

    @property
    def app(self):
        """The app that sends it: the one given, else the task's, else the default app."""
        from .app import default_app
        return self._app or default_app()

    @property
    def name(self) -> str:
        """The task's registered name."""
        return self["task"]

    @property
    def id(self) -> str | None:
        """The task id, once ``set(task_id=...)`` or a chain has given it one."""
        return self["options"].get("task_id")

    def set(self, **options: Any) -> Signature:
        """Set call options (queue, countdown, priority, ...) for when it is sent."""
        self["options"].update(options)
        return self

    def clone(self,
              args: Sequence = (),
              kwargs: dict | None = None,
              **options: Any) -> Signature:
        """A copy with more arguments: new args go first, as in Celery's partials."""
        if self["immutable"]:
            args, kwargs = (), None
        merged = self._merged(args, kwargs, options)
        return Signature(self.name, *merged, self["immutable"], self._app)

    def apply_async(self,
                    args: Sequence = (),
                    kwargs: dict | None = None,
                    **options: Any):
        """Send this call, with more arguments and options as ``clone`` takes them."""
        sig = self.clone(args, kwargs, **options)
        task = sig.app.tasks.get(sig.name)
        if task is not None:
            return task.apply_async(sig["args"], sig["kwargs"], **sig["options"])
        return sig.app.send_task(sig.name, sig["args"], sig["kwargs"], **sig["options"])

    def _merged(self, args=(), kwargs=None, options=None):
        """(args, kwargs, options) with these: args go first, the others over its own."""
        return ((*args, *self["args"]),
                {**self["kwargs"], **(kwargs or {})},
                {**self["options"], **(options or {})})

    def _row(self, app, args=(), kwargs=None, options=None, **fields):
        """This call's message row; unlike ``clone``, it passes the arguments to an
        immutable signature too."""
        call_args, call_kwargs, call_options = self._merged(args, kwargs, options)
        return app.message_row(self.name, call_args, call_kwargs, **call_options, **fields)

    def __or__(self, other: Any) -> chain:
        return chain(self, other)

    def __repr__(self) -> str:
        positional = list(map(repr, self["args"]))
        keywords = [f"{k}={v!r}" for k, v in self["kwargs"].items()]
        args = ", ".join(positional + keywords)
        return f"{self['task']}({args}){'!' if self['immutable'] else ''}"


def signature(task: Any,
              args: Sequence = (),
              kwargs: dict | None = None,
              **options: Any):
    """A signature by task or name: ``signature("proj.add", (1, 2), countdown=5)``."""
    return Signature(task, args, kwargs, options)


class _Steps(_Delay):
    """What chain and group hold: signatures given as ``f(a, b)`` or ``f([a, b])``."""

    def __init__(self, *tasks: Any):
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])  # one iterable of signatures
        self.tasks: List[Signature] = []
        for task in tasks:  # a chain inside a chain is its steps, as in Celery
            if isinstance(task, chain):
                self.tasks.extend(task.tasks)
            elif isinstance(task, Signature):
                self.tasks.append(task)
            else:  # a signature that travelled as JSON
                self.tasks.append(Signature(**task))


class chain(_Steps):
    """Run tasks one after another, each result passed as the next one's first argument."""

    def apply_async(self,
                    args: Sequence = (),
                    kwargs: dict | None = None,
                    **options: Any):
        """Run the steps in order; return the last one's result, linked by ``parent``."""
        steps = [s.clone(task_id=s.id or new_id()) for s in self.tasks]
        first = steps[0].clone(args, kwargs, **options)
        rest = steps[1:]
        app = first.app
        if app.conf.task_always_eager:
            result = first.apply_async()
            for step in rest:
                parent = result
                result = step.apply_async((parent.get(),))
                result.parent = parent
            return result
        following = [dict(s) for s in rest]  # the worker sends each one in turn
        first.apply_async(chain=following or None)
        results = [AsyncResult(s.id, app) for s in steps]
        for parent, child in zip(results, results[1:]):
            child.parent = parent
        return results[-1]

    def __or__(self, other: Signature) -> chain:
        return chain(*self.tasks, other)


class group(_Steps):
    """Run tasks in parallel; all messages are inserted in one transaction."""

    def apply_async(self,
                    args: Sequence = (),
                    kwargs: dict | None = None,
                    **options: Any):
        """Send every member (args go before each one's own); return a GroupResult."""
        group_id = options.pop("group_id", None) or new_id()
        if not self.tasks:
            return GroupResult(group_id, [])
        app = self.tasks[0].app
        if app.conf.task_always_eager:
            results = [s.apply_async(args, kwargs, **options) for s in self.tasks]
            return GroupResult(group_id, results)
        extras = args or kwargs or options or any(s["options"] for s in self.tasks)
        if extras:
            rows = [s._row(app, args, kwargs, options, group_id=group_id) for s in self.tasks]
        else:  # plain calls, the fast path: each task name is checked once
            calls = [(s["task"], s["args"], s["kwargs"]) for s in self.tasks]
            rows = app.message_rows(calls, group_id)
        app.send_rows(rows)
        results = [AsyncResult(row[0], app) for row in rows]
        return GroupResult(group_id, results)


class chord:
    """A group, then a callback called with the list of the group's results."""

    def __init__(self, header: Any, body: Signature | None = None):
        self.header = header if isinstance(header, group) else group(header)
        self.body = body

    def __call__(self, body: Signature | None = None, **options: Any):
        """``chord(header)(body)``: send it, with this body if one is given."""
        return self.apply_async(body=body, **options)

    def apply_async(self,
                    args: Sequence = (),
                    kwargs: dict | None = None,
                    body: Signature | None = None,
                    **options: Any):
        """Send the members and the callback that waits for them; return its result."""
        body = body or self.body
        app = body.app
        if app.conf.task_always_eager:
            header = self.header.apply_async(args, kwargs, **options)
            return body.apply_async((header.get(),))
        callback = body._row(app, waiting=True, immutable=body["immutable"])
        callback_id = callback[0]
        group_id = new_id()
        rows = [s._row(app, args, kwargs, options, chord=callback_id, group_id=group_id)
                for s in self.header.tasks]
        app.send_rows([callback, *rows])
        return AsyncResult(callback_id, app)


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


def next_steps(app, message: Any, state: str, result: str | None):
    """After a chain step ends: (rows to send next, (id, name) of steps that fail with it)."""
    options = message.options
    steps = options.get("chain")
    if not steps:
        return (), ()
    following = [Signature(**s) for s in steps]
    if state != "SUCCESS":
        return (), [(s.id, s.name) for s in following]
    value = loads(result) if result is not None else None
    step = following[0].clone((value,))
    rest = [dict(s) for s in following[1:]]
    root = options.get("root_id") or message.id  # as Celery: the step before is the parent
    row = step._row(app, chain=rest or None, parent_id=message.id, root_id=root)
    return [row], ()
