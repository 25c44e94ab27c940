"""Workflows: a task call as a value (``task.s()``, ``si()``, ``set()``) and
``chain``, ``group`` and ``chord`` built from signatures. The worker links
the steps when it stores each result (``next_steps``), so none is lost.
"""
from __future__ import annotations

from typing import Any, List, Sequence

from .result import AsyncResult, GroupResult
from .task import new_id
from .utils.json import dumps, loads


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
        options = dict(options or {})
        # signature(..., immutable=True) and task.signature(...) pass the flag among options
        immutable = bool(options.pop("immutable", immutable))
        super().__init__(task=getattr(task, "name", task),  # a task, or its name
                         args=list(args),
                         kwargs=dict(kwargs or {}),
                         options=options,
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

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set call options (queue, countdown, priority, ...) for when it is sent;
        ``immutable`` sets whether it takes the previous result."""
        if immutable is not None:
            self["immutable"] = bool(immutable)
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

    def _member(self, app, args, kwargs, options, **fields):
        """As a member of a group or chord: (its message row, its result)."""
        row = self._row(app, args, kwargs, options, **fields)
        return row, AsyncResult(row[0], app)

    def __or__(self, other: Any) -> chain:
        return chain(self, other)

    def _call(self, *first: Any) -> str:
        """The call as Celery prints it, ``name(args, kwargs)``, ``first`` before the args."""
        positional = [repr(arg) for arg in (*first, *self["args"])]
        keywords = [f"{k}={v!r}" for k, v in self["kwargs"].items()]
        return f"{self['task']}({', '.join(positional + keywords)})"

    def __repr__(self) -> str:
        return self._call()


def signature(task: Any,
              args: Sequence = (),
              kwargs: dict | None = None,
              **options: Any):
    """A signature by task or name: ``signature("proj.add", (1, 2), countdown=5)``."""
    return Signature(task, args, kwargs, options)


def _shortened(name: str, text: str) -> str:
    """As Celery prints a workflow: the module of the first task (``name``) is written
    out once, and every later repeat of it is left out."""
    module = name.rpartition(".")[0]
    start = text.find(module + ".") if module else -1
    if start < 0:
        return text
    cut = start + len(module) + 1
    return text[:cut] + text[cut:].replace(module + ".", "")


class _Steps(_Delay):
    """What chain and group hold: signatures given as ``f(a, b)`` or ``f([a, b])``."""

    def __init__(self, *tasks: Any):
        self._tuple = len(tasks) > 1  # Celery prints the tasks as they were given
        if len(tasks) == 1 and not isinstance(tasks[0], (dict, _Steps)):
            self._tuple = isinstance(tasks[0], tuple)
            tasks = tuple(tasks[0])  # one iterable of signatures
        self.tasks: List[Any] = []
        for task in tasks:
            if isinstance(task, chain) and isinstance(self, chain):
                self.tasks.extend(task.tasks)  # a chain inside a chain is its steps, as in Celery
            elif isinstance(task, (Signature, chain)):
                self.tasks.append(task)  # a chain inside a group runs as a chain
            else:  # a signature that travelled as JSON
                self.tasks.append(Signature(**task))

    @property
    def app(self):
        """The app of the first task."""
        return self.tasks[0].app


class chain(_Steps):
    """Run tasks one after another, each result passed as the next one's first argument."""

    def apply_async(self,
                    args: Sequence = (),
                    kwargs: dict | None = None,
                    **options: Any):
        """Run the steps in order; return the last one's result, linked by ``parent``."""
        steps = self._frozen()
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
        return _last_result(steps, app)

    def _frozen(self) -> List[Signature]:
        """The steps, each with the task id it will run as."""
        return [s.clone(task_id=s.id or new_id()) for s in self.tasks]

    def _member(self, app, args, kwargs, options, group_id=None, **fields):
        """As a member of a group or chord: (its first step's row, carrying the later
        steps; its last step's result). The last step alone is in the group, as in
        Celery; a chord's id goes with every step (``next_steps``), so the chord
        waits until the last one is done."""
        steps = self._frozen()
        steps[-1] = steps[-1].clone(group_id=group_id)
        following = [dict(s) for s in steps[1:]]
        row = steps[0]._row(app, args, kwargs, options, chain=following or None, **fields)
        return row, _last_result(steps, app)

    def __or__(self, other: Signature) -> chain:
        return chain(*self.tasks, other)

    def __repr__(self) -> str:
        if not self.tasks:
            return f"<chain@{id(self):#x}: empty>"
        return _shortened(self.tasks[0].name, " | ".join(map(repr, self.tasks)))


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
        plain = all(isinstance(s, Signature) and not s["options"] for s in self.tasks)
        if plain and not (args or kwargs or options):  # the fast path: each name checked once
            calls = [(s["task"], s["args"], s["kwargs"]) for s in self.tasks]
            rows = app.message_rows(calls, group_id)
            results = [AsyncResult(row[0], app) for row in rows]
        else:
            members = [s._member(app, args, kwargs, options, group_id=group_id)
                       for s in self.tasks]
            rows, results = [row for row, _ in members], [r for _, r in members]
        app.send_rows(rows)
        return GroupResult(group_id, results)

    def _shown(self) -> Sequence:
        """The members as Celery prints them: a tuple if given as one, else a list."""
        return tuple(self.tasks) if self._tuple else self.tasks

    def __repr__(self) -> str:
        if not self.tasks:
            return "group(<empty>)"
        first = self.tasks[0]  # Celery's chain is the task "celery.chain": nothing to leave out
        return _shortened(getattr(first, "name", ""), f"group({self._shown()!r})")


def _last_result(steps: List[Signature], app) -> AsyncResult:
    """The result of a chain's last step, each step's result the next one's ``parent``."""
    results = [AsyncResult(s.id, app) for s in steps]
    for parent, child in zip(results, results[1:]):
        child.parent = parent
    return results[-1]


class chord:
    """A group, then a callback called with the list of the group's results."""

    def __init__(self, header: Any, body: Signature | None = None):
        self.header = header if isinstance(header, group) else group(list(header))
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
        if not self.header.tasks:  # no member will release it: as Celery, it runs now
            return body.apply_async(([],))
        if app.conf.task_always_eager:
            header = self.header.apply_async(args, kwargs, **options)
            return body.apply_async((header.get(),))
        callback = body._row(app, waiting=True, immutable=body["immutable"])
        callback_id = callback[0]
        group_id = new_id()
        members = [s._member(app, args, kwargs, options, chord=callback_id, group_id=group_id)
                   for s in self.header.tasks]
        # The callback names the members whose results it gets, in the header's order:
        # a chain's later steps are stored after the other members, and its earlier
        # steps' results are not the chain's.
        listed = {**loads(callback[5] or "{}"), "header": [r.id for _, r in members]}
        callback = (*callback[:5], dumps(listed), *callback[6:])  # [5]: the options column
        app.send_rows([callback, *[row for row, _ in members]])
        return AsyncResult(callback_id, app)

    def __repr__(self) -> str:
        if self.body is None:
            return f"<chord without body: {self.header._shown()!r}>"
        return "%" + _shortened(self.body.name, self.body._call(self.header._shown()))


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
    row = step._row(app, chain=rest or None, parent_id=message.id, root_id=root,
                    chord=message.chord)  # a chain in a chord's header: each step is a member
    return [row], ()
