"""Workflows: a task call as a value (``task.s()``, ``si()``, ``set()``) and
``chain``, ``group`` and ``chord`` built from signatures. The worker links
the steps when it stores each result (``next_steps``), so none is lost.
"""
import json
import time
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from .result import AsyncResult
from .task import new_id


class _Delay:
    def delay(self, *args: Any, **kwargs: Any):
        return self.apply_async(args, kwargs)


class Signature(_Delay, dict):
    """One task call as a value; a dict (as Celery's), so it travels as JSON."""

    def __init__(self, task: Any, args: Sequence = (), kwargs: Optional[dict] = None,
                 options: Optional[dict] = None, immutable: bool = False, app=None):
        name = task if isinstance(task, str) else task.name
        super().__init__(task=name, args=list(args), kwargs=dict(kwargs) if kwargs else {},
                         options=dict(options) if options else {}, immutable=immutable)
        self._app = app if app is not None or isinstance(task, str) else task.app

    @property
    def app(self):
        from .app import default_app
        return self._app or default_app()

    @property
    def name(self) -> str:
        return self["task"]

    @property
    def id(self) -> Optional[str]:
        return self["options"].get("task_id")

    def set(self, **options: Any) -> "Signature":
        """Set call options (queue, countdown, priority, ...) for when it is sent."""
        self["options"].update(options)
        return self

    def clone(self, args: Sequence = (), kwargs: Optional[dict] = None, **options: Any) -> "Signature":
        """A copy with more arguments: new args go first, as in Celery's partials."""
        if self["immutable"]:
            args, kwargs = (), None
        return Signature(self["task"], (*args, *self["args"]), {**self["kwargs"], **(kwargs or {})},
                         {**self["options"], **options}, self["immutable"], self._app)

    def apply_async(self, args: Sequence = (), kwargs: Optional[dict] = None, **options: Any):
        sig = self.clone(args, kwargs, **options)
        task = sig.app.tasks.get(sig.name)
        if task is not None:
            return task.apply_async(sig["args"], sig["kwargs"], **sig["options"])
        return sig.app.send_task(sig.name, sig["args"], sig["kwargs"], **sig["options"])

    def __or__(self, other: Any) -> "chain":
        return chain(self, other)

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self["args"]), *(f"{k}={v!r}" for k, v in self["kwargs"].items())])
        return f"{self['task']}({args}){'!' if self['immutable'] else ''}"


def signature(task: Any, args: Sequence = (), kwargs: Optional[dict] = None, **options: Any):
    """A signature by task or name: ``signature("proj.add", (1, 2), countdown=5)``."""
    return Signature(task, args, kwargs, options)


def _signatures(tasks: Tuple) -> List[Signature]:
    if len(tasks) == 1 and not isinstance(tasks[0], dict):
        tasks = tuple(tasks[0])  # one iterable of signatures
    flat: List[Signature] = []
    for task in tasks:  # a chain inside a chain is its steps, as in Celery
        if isinstance(task, chain):
            flat.extend(task.tasks)
        else:
            flat.append(task if isinstance(task, Signature) else Signature(**task))
    return flat


class chain(_Delay):
    """Run tasks one after another, each result passed as the next one's first argument."""

    def __init__(self, *tasks: Any):
        self.tasks = _signatures(tasks)

    def apply_async(self, args: Sequence = (), kwargs: Optional[dict] = None, **options: Any):
        steps = [s.clone(**{"task_id": s.id or new_id()}) for s in self.tasks]
        app = steps[0].app
        if app.conf.task_always_eager:
            result = steps[0].apply_async(args, kwargs, **options)
            for step in steps[1:]:
                parent, result = result, step.apply_async((result.get(),))
                result.parent = parent
            return result
        first = steps[0].clone(args, kwargs, **options)
        first.apply_async(chain=[dict(s) for s in steps[1:]] or None)
        results = [AsyncResult(s.id, app) for s in steps]
        for parent, child in zip(results, results[1:]):
            child.parent = parent
        return results[-1]

    def __or__(self, other: Signature) -> "chain":
        return chain(*self.tasks, other)


class group(_Delay):
    """Run tasks in parallel; all messages are inserted in one transaction."""

    def __init__(self, *tasks: Any):
        self.tasks = _signatures(tasks)

    def apply_async(self, args: Sequence = (), kwargs: Optional[dict] = None, **options: Any):
        if not self.tasks:
            return GroupResult(new_id(), [])
        app = self.tasks[0].app
        if app.conf.task_always_eager:
            return GroupResult(new_id(),
                               [s.apply_async(args, kwargs, **options) for s in self.tasks])
        if not (args or kwargs or options or any(s["options"] for s in self.tasks)):
            rows = app.message_rows((s["task"], s["args"], s["kwargs"]) for s in self.tasks)
        else:
            rows = [app.message_row(s.name, (*args, *s["args"]), {**s["kwargs"], **(kwargs or {})},
                                    **{**s["options"], **options}) for s in self.tasks]
        app.broker.enqueue(rows)
        app.waker.notify()
        return GroupResult(new_id(), [AsyncResult(row[0], app) for row in rows])


class chord:
    """A group, then a callback called with the list of the group's results."""

    def __init__(self, header: Any, body: Optional[Signature] = None):
        self.header = header if isinstance(header, group) else group(header)
        self.body = body

    def __call__(self, body: Optional[Signature] = None, **options: Any):
        return self.apply_async(body=body, **options)

    def apply_async(self, args: Sequence = (), kwargs: Optional[dict] = None,
                    body: Optional[Signature] = None, **options: Any):
        body = body or self.body
        app = body.app
        if app.conf.task_always_eager:
            values = self.header.apply_async(args, kwargs, **options).get()
            return body.apply_async((values,))
        callback = app.message_row(body.name, body["args"], body["kwargs"], waiting=True,
                                   immutable=body["immutable"], **body["options"])
        rows = [app.message_row(s.name, (*args, *s["args"]), {**s["kwargs"], **(kwargs or {})},
                                **{**s["options"], **options}, chord=callback[0])
                for s in self.header.tasks]
        app.broker.enqueue([callback, *rows])
        app.waker.notify()
        return AsyncResult(callback[0], app)


class GroupResult:
    """The results of a group: wait for all, count the finished ones."""

    def __init__(self, id: str, results: list):
        self.id, self.results = id, list(results)

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def failed(self) -> bool:
        return any(r.failed() for r in self.results)

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def get(self, timeout: Optional[float] = None, propagate: bool = True,
            interval: float = 0.1, **options: Any) -> list:
        """Every member's value, in order; the first failure raises (if propagate)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for r in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(r.get(timeout=left, propagate=propagate, interval=interval, **options))
        return values

    join = get

    def revoke(self, terminate: bool = False, signal: Any = None) -> None:
        for r in self.results:
            r.revoke(terminate=terminate, signal=signal)

    def forget(self) -> None:
        for r in self.results:
            r.forget()

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"


def next_steps(app, options: dict, state: str, result: Optional[str]):
    """After a chain step ends: (rows to send next, (id, name) of steps that fail with it)."""
    steps = options.get("chain")
    if not steps:
        return (), ()
    following = [Signature(**s) for s in steps]
    if state == "SUCCESS":
        value = json.loads(result) if result is not None else None
        step = following[0].clone((value,))
        return [app.message_row(step.name, step["args"], step["kwargs"], **step["options"],
                                chain=[dict(s) for s in following[1:]] or None)], ()
    return (), [(s.id, s.name) for s in following]
