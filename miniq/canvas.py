"""Workflows, as Celery's canvas: a task call as a value (``Signature``) and the
forms built from calls: ``chain``, ``group``, ``chord``, ``chunks``, map and starmap.

How one form turns into another lives here; sending is message rows for the app,
and SQL stays in broker.py. Every id is given before anything is sent (``freeze``),
so a workflow's result is known at once. A step that waits for another travels in
the options of the message whose result it needs: a chain's later steps
(``chain``), callbacks (``link``, ``link_error``), and a chord's callback, a
waiting row its members name (``chord``). The worker turns them into rows with
``next_steps`` in the transaction that stores that result: nothing is lost or sent
twice between the two.
"""
from __future__ import annotations

import copyreg
import functools
import inspect
from typing import Any, Sequence

from .exceptions import ChordError, ImproperlyConfigured
from .result import (AsyncResult, EagerResult, GroupResult, allow_join_result,
                     exception_from_json, exception_text, new_id)
from .utils.json import loads

ACCUMULATE = "celery.accumulate"  # passes its input on: a chord's callback before a group
LINKS = ("link", "link_error")  # the options that call back: the last step's, or each's


def _item(path: str, doc: str) -> property:
    """One of Celery's keys, read and set as an attribute: ``options.task_id`` is the
    ``task_id`` of its options."""
    outer, _, key = path.rpartition(".")

    def holder(sig):
        return sig[outer] if outer else sig

    return property(lambda self: holder(self).get(key),
                    lambda self, value: holder(self).__setitem__(key, value), doc=doc)


class Signature(dict):
    """One task call as a value; a dict with Celery's keys, so it travels as JSON."""

    TYPES: dict = {}  # subtask_type: the class that rebuilds such a dict

    def __init__(self,
                 task: Any = None,
                 args: Sequence = (),
                 kwargs: dict | None = None,
                 options: dict | None = None,
                 type: Any = None,
                 subtask_type: str | None = None,
                 immutable: bool = False,
                 app=None,
                 **extra: Any):
        if isinstance(task, dict):  # as Celery's: a copy of a signature's dict
            super().__init__(task)
            self._app = app
            return
        options = {**(options or {}), **extra}
        # task.signature(..., immutable=True) passes the flag among the options
        immutable = bool(options.pop("immutable", immutable))
        super().__init__(task=getattr(task, "name", task),  # a task, or its name
                         args=tuple(args or ()),
                         kwargs=dict(kwargs or {}),
                         options=options,
                         subtask_type=subtask_type,
                         immutable=immutable)
        self._app = app or getattr(task, "app", None) or getattr(type, "app", None)

    def __reduce__(self):  # as Celery's: no app in it; the current one where it lands
        return (copyreg.__newobj__, (type(self),), {**vars(self), "_app": None}, None,
                iter(self.items()))

    @classmethod
    def from_dict(cls, d: dict, app=None) -> Signature:
        """A signature again from its dict (as it arrives after JSON), of its own kind."""
        kind = Signature.TYPES.get(d.get("subtask_type"))
        if kind is not None:
            return kind._from(d, app)
        made = dict.__new__(Signature)  # a copy, with options of its own; args as they came
        dict.update(made, args=(), kwargs={}, subtask_type=None, immutable=False)
        dict.update(made, d, options={key: list(value) if isinstance(value, list) else value
                                      for key, value in (d.get("options") or {}).items()})
        made._app = app or getattr(d, "_app", None)
        return made

    task = name = _item("task", "The task's name.")
    args = _item("args", "The positional arguments it has.")
    kwargs = _item("kwargs", "The keyword arguments it has.")
    options = _item("options", "Its call options.")
    immutable = _item("immutable", "Whether it takes no more arguments.")
    subtask_type = _item("subtask_type", "chain, group, chord or None.")
    id = _item("options.task_id", "The task id, once ``freeze()`` or ``set(task_id=)`` gave one.")
    parent_id = _item("options.parent_id", "The id of the task that sends it.")
    root_id = _item("options.root_id", "The id of its workflow's first task.")

    @property
    def app(self):
        """The app that sends it: the one given, else the task's, else the default app."""
        from .app import default_app  # the app module sits above this one
        return self._app or default_app()

    @property
    def type(self):
        """The registered task it calls."""
        return self.app.tasks[self.task]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here and now, as a function call, with these arguments first
        (none for an immutable one, as Celery's)."""
        sig = self.clone(args, kwargs)
        return self.type(*sig.args, **sig.kwargs)

    def delay(self, *args: Any, **kwargs: Any):
        """``apply_async`` with the arguments spread out, as in Celery."""
        return self.apply_async(args, kwargs)

    def apply_async(self,
                    args: Sequence = (),
                    kwargs: dict | None = None,
                    **options: Any):
        """Send this call, with more arguments and options as ``clone`` takes them; an
        option given as None sets nothing, as Celery's."""
        sig = self.clone(args, kwargs, **{k: v for k, v in options.items() if v is not None})
        task = sig.app.tasks.get(sig.task)
        if task is None:
            return sig.app.send_task(sig.task, sig.args, sig.kwargs, **sig.options)
        return task.apply_async(sig.args, sig.kwargs, **sig.options)

    def apply(self, args: Sequence = (), kwargs: dict | None = None, **options: Any):
        """Run it now in this process (Celery's eager run); an EagerResult."""
        sig = self.clone(args, kwargs, **options)
        return sig.type.apply(sig.args, sig.kwargs, **sig.options)

    def clone(self, args: Sequence = (), kwargs: dict | None = None, **options: Any) -> Signature:
        """A copy with more arguments (first, as Celery's partials) and options; an
        immutable signature takes only the options."""
        if self.immutable:
            args, kwargs = (), None
        if "group_id" in self.options:  # as Celery's: a signature's group stays
            options.pop("group_id", None)
        return self.from_dict({**self,
                               "args": (*(args or ()), *self.args),  # None: none, as Celery's
                               "kwargs": {**self.kwargs, **(kwargs or {})},
                               "options": {**self.options, **options}}, self._app)

    partial = clone

    def replace(self, args: Sequence | None = None, kwargs: dict | None = None,
                options: dict | None = None) -> Signature:
        """A copy whose args, kwargs or options are these where given (Celery's)."""
        given = {"args": args, "kwargs": kwargs, "options": options}
        return self.from_dict({**self, **{k: v for k, v in given.items() if v is not None}},
                              self._app)

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Set call options (queue, countdown, priority, ...) for when it is sent;
        ``immutable`` sets whether it takes the previous result."""
        if immutable is not None:
            self.set_immutable(immutable)
        self.options.update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = bool(immutable)

    def link(self, callback: dict) -> dict:
        """Send ``callback`` with this task's result when it succeeds (once, as Celery's)."""
        return self._add_link("link", callback)

    def link_error(self, errback: dict) -> dict:
        """Call ``errback`` when this task fails (once, as Celery's)."""
        return self._add_link("link_error", errback)

    def _add_link(self, key, sig):
        links = self.options[key] = _listed(self.options.get(key))  # set(link=sig): a list now
        links.extend([sig] if sig not in links else [])
        return sig

    def on_error(self, errback: dict) -> Signature:
        """``link_error``, returning this signature, for chaining calls."""
        self.link_error(errback)
        return self

    def freeze(self, _id=None, group_id=None, chord=None, root_id=None, parent_id=None,
               group_index=None) -> AsyncResult:
        """Give it its task id (an id it has stays) and its place in a workflow, before
        it is sent; return its result."""
        options = self.options
        task_id = options.get("task_id") or options.setdefault("task_id", _id or new_id())
        if group_id:
            options.setdefault("group_id", group_id)  # as Celery's: one it has stays
        if chord:
            options["chord"] = chord
        if root_id:
            options["root_id"] = root_id
        if parent_id:
            options["parent_id"] = parent_id
        return AsyncResult(task_id, app=self._app)

    def _rows(self, app, args=(), kwargs=None, options=None, follow=None) -> list:
        """The message rows that send it as a chain's step, ``follow`` after it (each
        step a dict; a last step's [], as Celery's), or alone (None)."""
        sig = self.clone(args, kwargs, **(options or {}))
        opts = sig.options
        chain = [*(opts.get("chain") or ()), *(follow or ())]
        opts["chain"] = chain if chain or follow is not None else None
        if not opts.get("waiting"):  # a chord's callback gets its arguments later
            _check_arguments(app, sig.task, sig.args, sig.kwargs)
        return [app.message_row(sig.task, sig.args, sig.kwargs, immutable=sig.immutable, **opts)]

    def __or__(self, other: Any) -> Signature:
        if not isinstance(other, Signature):  # as Celery's: sig | 10 is a TypeError
            return NotImplemented
        return chain(self, other)  # a group's is a chord (group.__or__)

    def __ior__(self, other: Any) -> Signature:
        """``sig |= step`` is ``sig = sig | step``, as Celery's: not dict's merge."""
        return self | other

    def __invert__(self) -> Any:
        return self.apply_async().get()

    def _call(self, *first: Any) -> str:
        """The call as Celery prints it, ``name(args, kwargs)``, ``first`` before the args."""
        positional = [repr(arg) for arg in (*first, *self.args)]
        keywords = [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.task}({', '.join(positional + keywords)})"

    def __repr__(self) -> str:
        kind = self.get("subtask_type")
        if kind in ("xmap", "xstarmap"):  # as Celery's: [proj.add(*x) for x in [(1, 2)]]
            star = "*" if kind == "xstarmap" else ""
            return f"[{self.kwargs['task']['task']}({star}x) for x in {self.kwargs['it']!r}]"
        return self._call()


def signature(varies: Any, *args: Any, **kwargs: Any) -> Signature:
    """A signature by task or name (``signature("proj.add", (1, 2), countdown=5)``), or
    one rebuilt from its dict."""
    if isinstance(varies, dict):
        return varies.clone() if isinstance(varies, Signature) else Signature.from_dict(
            varies, kwargs.get("app"))
    return Signature(varies, *args, **kwargs)


subtask = signature


def maybe_signature(d: Any, app=None) -> Signature | None:
    """A signature from a signature, its dict or None, as Celery's."""
    if d is None or isinstance(d, Signature):
        return d
    return Signature.from_dict(d, app)


def _check_arguments(app, name: str, args: Sequence, kwargs: dict | None) -> None:
    """As Celery's canvas sends each task: arguments its function cannot take are a
    TypeError at the call (a task this process does not know is not checked)."""
    task = app.tasks.get(name)
    if task is not None:
        task._check_arguments(args, kwargs)


def _copied(args: Any) -> Sequence:
    """A workflow's own arguments, copied as they came: a tuple (a clone's) or a list
    (JSON's), so that a clone equals what it was made from, as Celery's."""
    return list(args) if isinstance(args, list) else tuple(args or ())


def _listed(value: Any) -> list:
    """A link option (one signature or a list of them) as a list."""
    return [] if not value else [value] if isinstance(value, dict) else list(value)


def _empty(step: Any) -> bool:
    return type(step) is group and not step.tasks


def _shortened(name: str, text: str) -> str:
    """As Celery prints a workflow: the module of the first task (``name``) is written
    out once, and every later repeat of it is left out."""
    module = name.rpartition(".")[0]
    start = text.find(module + ".") if module else -1
    if start < 0:
        return text
    cut = start + len(module) + 1
    return text[:cut] + text[cut:].replace(module + ".", "")


class _Workflow(Signature):
    """What chain and group share: signatures given as ``f(a, b)`` or ``f([a, b])``,
    kept in ``kwargs["tasks"]``, as Celery's."""

    KIND = ""

    def __init__(self, *tasks: Any, **options: Any):
        app = options.pop("app", None)
        self._tuple = len(tasks) > 1  # Celery prints the tasks as they were given
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            self._tuple = isinstance(tasks[0], tuple)
            tasks = tuple(tasks[0])  # one iterable of signatures
        # as Celery's: a task itself stands for its signature with no arguments
        tasks = [maybe_signature(t, app) if t is None or isinstance(t, dict)
                 else signature(t, app=app) for t in tasks]
        super().__init__(f"celery.{self.KIND}", (), {"tasks": self._joined(tasks)}, options,
                         subtask_type=self.KIND, app=app)
        self._app = app or next((t._app for t in tasks if t._app), None)

    @classmethod
    def _from(cls, d, app):
        tasks = [Signature.from_dict(t, app) for t in d["kwargs"]["tasks"]]  # copies
        made = cls(tasks, app=app, **(d.get("options") or {}))
        made.update(args=_copied(d.get("args")), immutable=d.get("immutable", False))
        made.kwargs.update(_own(d["kwargs"]))
        return made

    def _partial(self, args, kwargs):
        """The arguments its members get: these, then its own partial ones."""
        if self.immutable:
            args, kwargs = (), None
        return (*(args or ()), *self.args), {**_own(self.kwargs), **(kwargs or {})}

    @staticmethod
    def _joined(tasks):
        return tasks

    tasks = _item("kwargs.tasks", "Its steps or members.")

    def __call__(self, *args: Any, **kwargs: Any):
        """Send it with these arguments first, as Celery calls a workflow."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: Sequence = (), kwargs: dict | None = None, **options: Any):
        """Send it: every message of its first step in one transaction; its result."""
        app = self.app
        if app.conf.task_always_eager:  # as Celery's: its steps wait for each other here
            with allow_join_result():
                return self.apply(args, kwargs, **options)
        sig = self.clone()  # fresh ids for each send, unless frozen before
        result = sig.freeze(*[options.pop(k, None) for k in ("task_id", "group_id", "chord")])
        app.send_rows(sig._rows(app, args, kwargs, options))
        return result


class chain(_Workflow):
    """Tasks one after another, each result the next one's first argument."""

    KIND = "chain"

    @staticmethod
    def _joined(tasks):
        """As Celery's: a chain inside a chain is its steps, a group of one its task, a
        group followed by a step a chord into it, and an empty group nothing (unless the
        chain has nothing else)."""
        steps = []
        for t in [t for t in tasks if not _empty(t)] or tasks[-1:]:
            for step in (t._unchained() if type(t) is chain
                         else t.tasks if type(t) is group and len(t.tasks) == 1 else [t]):
                if steps and type(steps[-1]) is group:
                    step = chord(steps.pop(), step)
                steps.append(step)
        return steps

    def _unchained(self) -> list:
        """Copies of its steps, with its own callbacks on them (the last step's link,
        every step's link_error), as Celery's ``unchain_tasks``."""
        steps = [step.clone() for step in self.tasks]
        for callback in _listed(self.options.get("link")):
            steps[-1].link(callback)
        for errback in _listed(self.options.get("link_error")):
            for step in steps:
                step.link_error(errback)
        return steps

    def freeze(self, _id=None, group_id=None, chord=None, root_id=None, parent_id=None,
               group_index=None):
        """Freeze every step: the last takes the id and group; each step's first result
        (a chord's header, a nested chain's first step) has the step before as its
        ``parent``. Returns the last step's result."""
        result, steps = None, self.tasks
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            parent, result = result, step.freeze(_id if last else None, group_id if last else None,
                                                 chord, root_id)
            first = result
            while getattr(first, "parent", None) is not None:
                first = first.parent
            first.parent = parent
        if result is not None:  # as Celery's: the chain's id is its last step's
            self.options["task_id"] = result.id
        return result

    def _rows(self, app, args=(), kwargs=None, options=None, follow=None):
        self.freeze()
        steps = self.tasks
        if not steps:  # as Celery's, an empty chain sends nothing
            return []
        args, kwargs = self._partial(args, kwargs)
        options = _call_options(self, options)
        _link_last(steps, options.pop("link", None))
        for errback in _listed(options.pop("link_error", None)):
            for step in steps:
                step.link_error(errback)
        return steps[0]._rows(app, args, kwargs, options, [*steps[1:], *(follow or ())])

    def apply(self, args: Sequence = (), kwargs: dict | None = None, **options: Any):
        """Run every step now in this process, in order, each with the call's options, as
        Celery's (a link is the last step's); the last step's result."""
        result, steps = None, self._unchained()
        own = {k: v for k, v in _call_options(self, None).items() if k not in LINKS}
        options = {**own, **options}
        _link_last(steps, options.pop("link", None))
        for step in steps:
            parent = result
            result = (step.apply(args, kwargs, **options) if parent is None
                      else step.apply((parent.get(),), **options))
            result.parent = parent
            if getattr(result, "state", None) in ("IGNORED", "REJECTED"):
                break  # as Celery's: a step that ended so ends its chain
        return result

    def __or__(self, other: Any) -> chain:
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(self, other, app=self._app)  # its callbacks go on its steps (_joined)

    def __repr__(self) -> str:
        if not self.tasks:
            return f"<chain@{id(self):#x}: empty>"
        return _shortened(self.tasks[0].name, " | ".join(map(repr, self.tasks)))


class group(_Workflow):
    """Tasks in parallel; all their messages are inserted in one transaction."""

    KIND = "group"

    @staticmethod
    def _joined(tasks):
        """A group inside a group is its members, as in Celery."""
        return [m for t in tasks for m in (t.tasks if type(t) is group and not t.args else [t])]

    def link(self, callback: dict) -> dict:
        """As Celery's: the first member calls back, with no argument."""
        return self.tasks[0].link(maybe_signature(callback, self._app).clone().set(immutable=True))

    def apply_async(self, args: Sequence = (), kwargs: dict | None = None, **options: Any):
        """As Celery's, refusing a call's link (a chord calls back once all are done)
        and link_error (its members take one each)."""
        for key, instead in (("link", "use a chord"), ("link_error", "give it to each member")):
            if options.get(key) is not None:
                raise TypeError(f"a group's apply_async takes no {key}: {instead}")
        result = super().apply_async(args, kwargs, **options)
        inner = [] if self.app.conf.task_always_eager else getattr(result, "results", [])
        # as Celery's: a group of one chain that ends in a group is that group
        return inner[0] if len(inner) == 1 and isinstance(inner[0], GroupResult) else result

    def __call__(self, *args: Any, **options: Any):
        """Send it, each member called with these arguments first."""
        return self.apply_async(args, **options)

    def freeze(self, _id=None, group_id=None, chord=None, root_id=None, parent_id=None,
               group_index=None) -> GroupResult:
        """Give the group its id, and each member its task id and place; the GroupResult."""
        gid = self.options.setdefault("task_id", _id or group_id or new_id())
        results = [t.freeze(None, gid, chord, root_id, parent_id) for t in self.tasks]
        return GroupResult(gid, results)

    def _rows(self, app, args=(), kwargs=None, options=None, follow=None):
        if follow:  # as Celery: a group followed by a step is a chord into it
            return chord(self, follow[0])._rows(app, args, kwargs, options, follow[1:])
        args, kwargs = self._partial(args, kwargs)
        options = _call_options(self, options)
        fields = {"group_id": self.id, "chord": self.tasks and self.tasks[0].options.get("chord")}
        plain = not (options or kwargs) and all(
            type(t) is Signature and not t.immutable and {"task_id", *fields} >= set(t.options)
            for t in self.tasks)
        if plain:  # the fast path for a large group: each name checked once
            calls = [(t.task, [*args, *t.args], t.kwargs, t.id) for t in self.tasks]
            shapes = {(name, len(a), tuple(sorted(k or ()))): (name, a, k)
                      for name, a, k, _ in calls}
            for call in shapes.values():  # every member before any is sent, a shape once
                _check_arguments(app, *call)
            return app.message_rows(calls, **fields)
        return [row for t in self.tasks for row in t._rows(app, args, kwargs, options)]

    def apply(self, args: Sequence = (), kwargs: dict | None = None, **options: Any):
        """Run every member now in this process; a GroupResult, whose id is the call's
        task_id, else the group's own (frozen) one: as Celery's, not a group_id given."""
        options.pop("group_id", None)
        gid = options.pop("task_id", None) or self.options.get("task_id") or new_id()
        return GroupResult(gid, [t.apply(args, kwargs, **options) for t in self.tasks])

    def __or__(self, other: Any):
        if not (other is None or isinstance(other, Signature)):  # None: as Celery's, a
            return NotImplemented  # chord with no body
        return chord(self, other)

    def __len__(self) -> int:
        """Its members, as Celery's (not the keys of its dict)."""
        return len(self.tasks)

    def set_immutable(self, immutable: bool) -> None:
        """Each member's, as Celery's."""
        for task in self.tasks:
            task.set_immutable(immutable)

    def skew(self, start: float = 1.0, stop: float | None = None, step: float = 1.0) -> group:
        """Celery's: member n gets countdown start + n × step, held at the last within stop."""
        for n, task in enumerate(self.tasks):
            if stop and start + n * step > stop:
                n = int((stop - start) // step)
            task.set(countdown=float(start) + n * step)  # a float, as Celery's
        return self

    def _shown(self) -> Sequence:
        """The members as Celery prints them: a tuple if given as one, else a list."""
        return tuple(self.tasks) if self._tuple else self.tasks

    def __repr__(self) -> str:
        if not self.tasks:
            return "group(<empty>)"
        first = self.tasks[0]  # Celery's chain is the task "celery.chain": nothing to leave out
        return _shortened(first.name if type(first) is Signature else "", f"group({self._shown()!r})")


class chord(Signature):
    """A group, then a callback called with the list of the group's results."""

    def __init__(self, header: Any, body: Any = None, task: str = "celery.chord", args=(),
                 kwargs=None, app=None, **options: Any):
        header = maybe_signature(header, app) if isinstance(header, dict) else header
        if not isinstance(header, group):  # as Celery's: a chain's steps side by side, one
            header = group(header.tasks if type(header) is chain else header)  # signature alone
        super().__init__(task, args, {"header": header, "body": maybe_signature(body, app),
                                      **(kwargs or {})}, options, subtask_type="chord", app=app)
        self._app = app or header._app or (body is not None and self.body._app)

    @classmethod
    def _from(cls, d, app):
        header, body = (part if part is None or isinstance(part, list)
                        else Signature.from_dict(part, app)  # copies
                        for part in (d["kwargs"]["header"], d["kwargs"]["body"]))
        made = cls(header, body, app=app,
                   kwargs=_own(d["kwargs"]), **(d.get("options") or {}))
        made.update(args=_copied(d.get("args")), immutable=d.get("immutable", False))
        return made

    def link(self, callback: dict) -> dict:
        return self.body.link(callback)

    def link_error(self, errback: dict) -> dict:
        return self.body.link_error(errback)

    def set_immutable(self, immutable: bool) -> None:
        """The header's members', as Celery's."""
        self.header.set_immutable(immutable)

    def __or__(self, other: Any) -> Signature:
        """As Celery's: a task, a chord or a group of one after a chord joins its body."""
        if not isinstance(other, Signature):
            return NotImplemented
        one = isinstance(other, group) and len(other.tasks) == 1
        if not (one or isinstance(other, Signature) and not isinstance(other, (group, chain))):
            return chain(self, other)
        sig = self.clone()
        sig.kwargs["body"] = sig.body | (other.tasks[0] if one else other)
        return sig

    header = property(lambda self: self.kwargs["header"], doc="The group that runs first.")
    body = _item("kwargs.body", "The callback, given their results.")
    tasks = property(lambda self: self.header.tasks,  # as Celery's: set, a new header
                     lambda self, tasks: self.kwargs.update(header=group(tasks, app=self._app)),
                     doc="The header's members.")

    def __call__(self, body: Any = None, **options: Any):
        """``chord(header)(body)``: send it, with this body if one is given."""
        return self.apply_async((), {"body": body} if body else {}, **options)

    def apply_async(self, args: Sequence = (), kwargs: dict | None = None, **options: Any):
        """Send the members and the callback that waits for them; the callback's result.
        As Celery's, the arguments go to the members."""
        kwargs = dict(kwargs or {})
        body = kwargs.pop("body", None)
        sig = (self if body is None else chord(self.header, body, **self.options)).clone()
        if not sig.header.tasks:  # no member will release it: as Celery, it runs now
            return sig.body.apply_async(([],), **_undelayed(options))
        result = header = _Workflow.apply_async(sig, args, kwargs, **options)
        while header.parent is not None and not self.app.conf.task_always_eager:
            header = header.parent  # frozen last, first in line
        if header is not result:  # as Celery's, even past a chain body's earlier steps
            result.parent = header
        return result

    def apply(self, args: Sequence = (), kwargs: dict | None = None, **options: Any):
        """Run the header now in this process, then the body with its results."""
        args, kwargs = _Workflow._partial(self, args, kwargs)
        return self.body.apply((self.header.apply(args, kwargs, **options).get(),))

    def _flow(self) -> Signature:
        """The body, made to start with one plain task, the row that waits: a body that
        starts with a group or chord is passed the results by ``celery.accumulate``."""
        body = self.body
        first = body.tasks[0] if isinstance(body, chain) else body
        if type(first) is not Signature:
            # a group body fails with a member's own error (Celery 5.7's), a chain ChordError
            own = {"own_error": True} if isinstance(body, group) else {}
            start = Signature(ACCUMULATE, kwargs={"index": 0, **own}, app=self._app)
            body = self.kwargs["body"] = chain(start, body)
        return body

    def freeze(self, _id=None, group_id=None, chord=None, root_id=None, parent_id=None,
               group_index=None):
        """Freeze the body (it takes the id and the place) and the header, whose
        members name the body's first row; returns the body's result. Every way to send
        a chord freezes it first: a setting it cannot honour is refused here."""
        if self.app.conf.get("task_allow_error_cb_on_chord_header"):  # set after configuring
            raise ImproperlyConfigured("task_allow_error_cb_on_chord_header=True is not"
                                       " supported: a chord's errback is its callback's")
        body = self._flow()
        result = body.freeze(_id, group_id, chord, root_id, parent_id)
        entry = body.tasks[0] if isinstance(body, chain) else body
        self._header_result = self.header.freeze(None, None, entry.id, root_id)
        first = result  # get() raises a member's error first: the header comes before
        while first.parent is not None:
            first = first.parent
        first.parent = self._header_result
        if entry.task == ACCUMULATE and len(body.tasks) == 2 and isinstance(result, GroupResult):
            result.parent = self._header_result  # as Celery's: a group body's parent
        return result

    def _rows(self, app, args=(), kwargs=None, options=None, follow=None):
        self.freeze()
        body, options = self.body, _call_options(self, options)  # as Celery's: the callback's too
        steps = [body]
        if isinstance(body, chain):  # its own callbacks and the call's: the last step calls back
            body = body.clone()
            for key in LINKS:
                body.options[key] = [*_listed(body.options.get(key)), *_listed(options.pop(key, None))]
            steps = body._unchained()
        wait = {**_undelayed(options), "waiting": True, "header": _shape(self._header_result)}
        if not isinstance(body, chain) and "group_id" not in body.options:
            wait["group_id"] = self._header_result.id  # as Celery's: the header's group
        after = [*steps[1:], *(follow or ())]  # None: the callback stands alone
        callback = steps[0]._rows(app, (), None, wait,
                                  after if isinstance(body, chain) or follow else None)
        args, kwargs = _Workflow._partial(self, args, kwargs)
        members = {k: v for k, v in options.items() if k not in LINKS}
        return callback + self.header._rows(app, args, kwargs, members)  # links: the callback's

    def __repr__(self) -> str:
        body = self.body
        if body is None:
            return f"<chord without body: {self.header._shown()!r}>"
        if isinstance(body, chain):  # as Celery's: the header goes to the first step
            first, rest = body.tasks[0], chain(body.tasks[1:], app=self._app)
            return _shortened(first.name, f"%({first._call(self.header._shown())} | {rest!r})")
        return "%" + _shortened(body.name, body._call(self.header._shown()))


class chunks(Signature):
    """``task.chunks(items, n)``: the calls ``task(*item)``, n to a message, as a group."""

    def __init__(self, task: Any, it: Any, n: int, **options: Any):
        super().__init__("celery.chunks", (), {"task": task, "it": list(it), "n": n}, options,
                         subtask_type="chunks", immutable=True, app=getattr(task, "_app", None))

    @classmethod
    def _from(cls, d, app):
        kwargs = d["kwargs"]
        made = cls(maybe_signature(kwargs["task"], app), kwargs["it"], kwargs["n"],
                   **(d.get("options") or {}))
        if kwargs.get("frozen"):  # its group, with the ids freeze gave
            made.kwargs["frozen"] = Signature.from_dict(kwargs["frozen"], app)
        return made

    def __call__(self, **options: Any):
        return self.apply_async(**options)

    def group(self) -> group:
        """The group of starmap calls, one for each chunk."""
        task, it, n = self.kwargs["task"], self.kwargs["it"], self.kwargs["n"]
        return group([_mapped("celery.starmap", task, it[i:i + n]) for i in range(0, len(it), n)],
                     app=self._app)

    def apply_async(self, args: Sequence = (), kwargs: dict | None = None, **options: Any):
        return self.group().apply_async(args, kwargs, **options)

    def apply(self, args: Sequence = (), kwargs: dict | None = None, **options: Any):
        """Run the chunks now, as Celery's: the result's value is their GroupResult."""
        done = self.group().apply(args, kwargs, **options)
        return EagerResult(new_id(), done, "SUCCESS", name=self.task, app=self._app)

    def freeze(self, *args: Any, **kwargs: Any):
        """Freeze its group, kept with it: it is sent with those ids, wherever it travels."""
        frozen = self.kwargs.setdefault("frozen", self.group())
        return frozen.freeze(*args, **kwargs)

    def _rows(self, app, *args: Any, **kwargs: Any):
        self.freeze()
        return self.kwargs["frozen"]._rows(app, *args, **kwargs)


def _mapped(name: str, task: Any, it: Any) -> Signature:
    """``task.map(it)`` or ``task.starmap(it)``: one message that calls the task for each item."""
    task = signature(task)
    return Signature(name, (), {"task": task, "it": list(it)}, immutable=True, app=task._app,
                     subtask_type="xmap" if name == "celery.map" else "xstarmap")


Signature.TYPES.update(chain=chain, group=group, chord=chord, chunks=chunks)


def _own(kwargs: dict) -> dict:
    """A workflow's own partial keyword arguments: its kwargs besides its parts, and a
    chord's under ``kwargs``, where Celery keeps them."""
    own = {k: v for k, v in kwargs.items() if k not in ("tasks", "header", "body", "kwargs")}
    nested = kwargs.get("kwargs")
    return {**own, **nested} if isinstance(nested, dict) else own


def _call_options(sig: Signature, options: dict | None) -> dict:
    """The options a workflow passes to its members: its own and the call's, besides
    the ids and places that ``freeze`` gave."""
    merged = {**sig.options, **(options or {})}
    return {k: v for k, v in merged.items() if k not in ("task_id", "group_id", "chord")}


def _link_last(steps: list, link: Any) -> None:
    """A chain's link on its last step: as Celery's, each member of a last group calls
    it back with its own result."""
    last = steps[-1].tasks if steps and isinstance(steps[-1], group) else steps[-1:]
    for callback in _listed(link):
        for step in last:
            step.link(callback)


def _undelayed(options: dict) -> dict:
    """A chord's options for its callback: as Celery's, a countdown or eta delays the
    header alone."""
    return {k: v for k, v in options.items() if k not in ("countdown", "eta")}


def _shape(result: Any) -> Any:
    """A result as ids: a task's id, or a list of them for a group (nested as it is)."""
    return [_shape(r) for r in result.results] if isinstance(result, GroupResult) else result.id


def builtins(app) -> None:
    """Celery's built-in tasks: those workflows run in the worker, and backend_cleanup."""

    @app.task(name="celery.backend_cleanup")
    def backend_cleanup():
        """Celery's, which a beat_schedule may name: miniq's workers delete expired
        results as they run, so nothing is left for it to do."""

    @app.task(name=ACCUMULATE, typing=False)
    def accumulate(*args, **kwargs):
        index = kwargs.get("index")
        return args if index is None else args[index]

    @app.task(name="celery.map", typing=False)
    def xmap(task, it):
        task = signature(task, app=app).type
        return [task(item) for item in it]

    @app.task(name="celery.starmap", typing=False)
    def xstarmap(task, it):
        task = signature(task, app=app).type
        return [task(*item) for item in it]


def next_steps(app, message: Any, state: str, result: str | None, traceback: str | None = None,
               errbacks: bool = True):
    """After a task ends: (rows to send next, (id, name) of the steps that fail with it).
    A success sends the chain's next step and the callbacks, given its value; a
    failure fails the chain's later steps and sends the errbacks (if ``errbacks``)."""
    options = message.options
    follow = [maybe_signature(s, app) for s in options.get("chain") or ()]
    lineage = {"parent_id": message.id, "root_id": options.get("root_id") or message.id}
    if state == "REPLACED":
        return _replaced(app, message, Signature.from_dict(loads(result), app), lineage), ()
    if state != "SUCCESS":
        failed = [leaf for step in follow for leaf in _leaves(step)]
        sent = _listed(options.get("link_error")) if state == "FAILURE" and errbacks else ()
        rows = [row for e in sent for row in _errback(app, message, e, result, traceback)]
        return rows, failed
    value = (loads(result) if result is not None else None,)
    links = [maybe_signature(s, app) for s in _listed(options.get("link"))]
    if app.conf.task_inherit_parent_priority and message.priority:  # as Celery's worker
        for step in (*follow[:1], *links):  # (a parent of priority 0 leaves theirs)
            step.set(priority=message.priority)
    rows = follow and follow[0]._rows(app, value, None, lineage, follow[1:])
    if len(links) > 1:  # as Celery's: sent as one group, the task's one child
        links = [group(links, app=app)]
        links[0].freeze()
    return [*rows, *[row for s in links for row in s._rows(app, value, None, lineage)]], ()


def _leaves(step: dict) -> list:
    """(id, name) of every task a frozen step holds: they fail with the step before."""
    kwargs = step.get("kwargs") or {}
    parts = [*(kwargs.get("tasks") or ()), *[kwargs[k] for k in ("header", "body") if k in kwargs]]
    if step.get("subtask_type") in ("chain", "group", "chord"):
        return [leaf for part in parts for leaf in _leaves(part)]
    task_id = (step.get("options") or {}).get("task_id")
    return [(task_id, step["task"])] if task_id else []


def _errback(app, message: Any, errback: dict, error: str | None, traceback: str | None):
    """The rows of one errback. As Celery: one whose function takes more than one
    argument gets (request, exc, traceback) (sent as data, rebuilt by the worker);
    else the failed task's id. An immutable one gets neither: its own arguments only."""
    errback = maybe_signature(errback, app)
    if not new_style(app, errback):
        return errback._rows(app, (message.id,))
    args, kwargs = loads(message.body)
    options = message.options
    request = {"id": message.id, "task": message.name, "args": args, "kwargs": kwargs,
               "retries": message.retries, "group": options.get("group"),
               "root_id": options.get("root_id") or message.id,
               "parent_id": options.get("parent_id"), "delivery_info": message.delivery_info(),
               "chain": steps_after(options),
               "errbacks": options.get("link_error"), "correlation_id": message.id,
               **({} if message.chord else {"chord": None})}  # a member's: not kept
    return errback._rows(app, (request, loads(error or "{}"), traceback), None, {"errback": True})


def steps_after(options):
    """The chain after a message's task, last step first, as Celery's request keeps
    it: [] on a chain's last step, None for a task sent alone."""
    chain = options.get("chain")
    return None if chain is None else chain[::-1]


def new_style(app, errback: Signature) -> bool:
    """Whether an errback gets (request, exc, traceback), as Celery's: an unbound task whose
    function takes more than one argument, and a signature not immutable."""
    task = app.tasks.get(errback.task)
    fun = getattr(task, "__wrapped__", None)
    return not (fun is None or task.bind or errback.immutable) and _takes_more(errback, fun)


def _takes_more(errback: Signature, fun: Any) -> bool:
    """Whether an errback takes more than the failed task's id, counting as Celery 5.7
    does only the parameters its signature's own arguments leave free."""
    try:
        spec = inspect.getfullargspec(functools.partial(fun, *errback.args, **errback.kwargs))
    except (TypeError, ValueError):  # arguments its function cannot take: fails as it runs
        spec = inspect.getfullargspec(fun)
    return bool(spec.varargs or len(spec.args) > 1)


def _replaced(app, message: Any, sig: Signature, lineage: dict) -> list:
    """``self.replace(sig)``: the task's row waits, as a chord's callback, for the
    result of ``sig``, then passes it on as its own (``celery.accumulate``), keeping the
    task's chain, callbacks and place in a group or chord. As Celery's, a plain task
    takes the task's id, place and callbacks itself (its result, progress and children
    are the task's)."""
    options = message.options
    if type(sig) is Signature and (not sig.id or sig.id == message.id):  # its own id, given
        for key in LINKS:  # its own callbacks, then the task's
            links = [*_listed(sig.options.get(key)), *_listed(options.get(key))]
            sig.options.update({key: links} if links else {})
        sig.set(task_id=message.id, chord=message.chord, group_id=options.get("group"))
        sent_by = {**lineage, "parent_id": options.get("parent_id")}  # the task's own sender
        return sig._rows(app, (), None, sent_by, options.get("chain") or None)
    result = sig.freeze(chord=message.id, **lineage)
    keep = {k: options.get(k) for k in ("chain", "link", "link_error", "parent_id", "root_id")}
    empty = isinstance(sig, group) and not sig.tasks  # nothing would release it: [] now
    # as Celery's: a group's failed member (a last group's in a chain) fails it with a
    # ChordError, another sig as itself
    last = sig.tasks[-1] if isinstance(sig, chain) and sig.tasks else sig
    own = {} if isinstance(last, group) else {"own_error": True}
    waiting = app.message_row(ACCUMULATE, ([],) if empty else (), {"index": 0, **own},
                              task_id=message.id, queue=message.queue, waiting=not empty,
                              header=None if empty else _shape(result), chord=message.chord,
                              group_id=options.get("group"), **keep)
    return [waiting, *([] if empty else sig._rows(app, (), None, lineage))]


def chord_error(message: Any) -> BaseException:
    """The error a chord's callback fails with: the failed member's own for a
    replaced task or a body that is a group (Celery's fails each of its members so), else
    Celery's ChordError naming the member."""
    try:
        failed = message.options["chord_error"]
        if loads(message.body)[1].get("own_error"):  # named, not made here
            return exception_from_json(failed["error"], imported=False)
        return ChordError(f"Dependency {failed['id']} raised {exception_text(failed['error'])}")
    except (ValueError, TypeError, AttributeError, KeyError, IndexError):
        return ChordError(f"a member of chord {message.id} failed; its error is unreadable")
