"""``app.control`` beyond revoke: Celery's ``inspect()``, ``ping()`` and ``shutdown()``,
and Celery's node names. miniq has no broadcast, so the database answers for
each live worker: its row (heartbeat, node name, task names) and the rows it runs.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from typing import Any, Callable

from . import app as apps
from .exceptions import ImproperlyConfigured
from .task import iso_time
from .utils.json import loads
from .wake import machine_id, pid_alive

ETA_TIMER_PRIORITY = 6  # what Celery's inspect().scheduled() shows for every task
# Celery's remote control commands that miniq's workers do not take
COMMANDS = {"rate_limit", "time_limit", "add_consumer", "cancel_consumer", "pool_grow",
            "pool_shrink", "pool_restart", "autoscale", "broadcast", "enable_events",
            "disable_events", "heartbeat", "election", "revoke_by_stamped_headers",
            # and inspect's
            "report", "clock", "revoked", "query_task", "conf", "hello", "memsample",
            "memdump", "objgraph"}


class Control(apps.Control):
    """``app.control``: revoke tasks; inspect, ping and shut down the live workers."""

    def __getattr__(self, name: str) -> Any:  # named, not a bare AttributeError
        return _unknown(self, name)

    def revoke(self, task_id: Any, destination: Any = None, terminate: bool = False,
               signal: Any = None, reply: bool = False, **options: Any) -> list | None:
        """Revoke for every worker: the file holds it. With reply=True, each live
        worker's answer in Celery's words (with terminate, the ids it was running)."""
        chosen = sorted(options.keys() & {"pattern", "matcher"})
        if chosen:  # they choose workers: a revoke here holds for all
            raise TypeError(f"revoke(): a revoke in miniq holds for every worker; it takes"
                            f" no {', '.join(chosen)}")
        asked = self.inspect(limit=options.get("limit"), callback=options.get("callback"))
        held = _held(self.inspect()) if reply and terminate else {}  # before they end
        super().revoke(task_id, destination, terminate, signal)
        ids = {task_id} if isinstance(task_id, str) else set(task_id or ())

        def answer(node, worker):
            if not terminate:
                return {"ok": f"tasks {ids} flagged as revoked"}
            hit = [task_id for task_id in held.get(node, []) if task_id in ids]
            return {"ok": f"terminate: {', '.join(hit) or 'tasks unknown'}"}
        return [{node: one} for node, one in (asked._request(answer) or {}).items()] if reply \
            else None

    def terminate(self, task_id: Any, destination: Any = None, signal: Any = "SIGTERM",
                  **options: Any) -> list | None:
        """``revoke(task_id, terminate=True)``, as Celery's."""
        return self.revoke(task_id, destination, True, signal, **options)

    def purge(self, connection: Any = None) -> int:
        """Delete the tasks waiting to run in the known queues (scheduled ones too, as
        ``miniq purge`` does); how many, as Celery's."""
        return self.app.broker.purge(known_queues(self.app.conf))

    discard_all = purge

    def inspect(self, destination: list | None = None, timeout: float = 1.0,
                **options: Any) -> Inspect:
        """What the live workers (or those named in ``destination``) are doing."""
        return Inspect(destination, timeout, app=self.app, **options)

    def ping(self, destination: list | None = None, timeout: float = 1.0,
             **options: Any) -> list:
        """``[{node: {"ok": "pong"}}, ...]``, one for each live worker; [] if none."""
        replies = self.inspect(destination, timeout, **options).ping() or {}
        return [{node: reply} for node, reply in replies.items()]

    def shutdown(self, destination: list | None = None, limit: int | None = None,
                 **_broadcast: Any) -> list | None:
        """Warm shutdown (SIGTERM) of the live workers, or those named: each finishes
        its running tasks and exits. One of another machine (host, boot or pid
        namespace) cannot be signalled from here: its reply is an error. As Celery's,
        the replies come back with reply=True, else None."""
        refused = sorted(_broadcast.keys() & {"pattern", "matcher", "connection"})
        if refused:  # else every worker would stop, not those they choose
            raise TypeError(f"shutdown(): miniq chooses workers by destination,"
                            f" not {', '.join(refused)}")
        here, told = machine_id(), _broadcast.get("reply") and _broadcast.get("callback")
        replies = [{node: _stop(worker, here)}  # as Celery's: limit caps the replies only
                   for node, worker in self.inspect(destination)._nodes()]
        replies = replies[:limit] if limit else replies
        for one in replies if told else ():  # as Celery's: with reply=True only
            told(one)
        return replies if _broadcast.get("reply") else None


def _held(inspect):
    """{node: ids} of the tasks each worker holds (running, reserved, or waiting for
    their eta), as Celery's worker finds those a terminate names."""
    held = {}
    for replies, of in ((inspect.active(), None), (inspect.reserved(), None),
                        (inspect.scheduled(), "request")):
        for node, tasks in (replies or {}).items():
            held.setdefault(node, []).extend((task[of] if of else task)["id"] for task in tasks)
    return held


class Inspect:
    """``app.control.inspect()``: each reply is ``{node name: answer}`` as Celery's, or
    None when no live worker answers. The database answers at once: ``timeout`` is
    never waited for (a ping takes it as how old a worker's last beat may be)."""

    def __init__(self, destination: list | None = None, timeout: float = 1.0,
                 callback: Callable | None = None, app: Any = None,
                 limit: int | None = None, connection: Any = None, pattern: Any = None,
                 matcher: Any = None):
        if pattern is not None or matcher is not None:  # Celery's choose by a node name's form
            raise TypeError("inspect(): miniq chooses workers by destination, not by pattern"
                            " or matcher")
        self.destination = _check(destination)
        if limit is not None and (type(limit) is not int or limit < 0):  # -1: all but one
            raise ValueError(f"limit is a number of workers, not {limit!r}")
        self.timeout, self.callback, self.limit = timeout, callback, limit
        self.app = app or apps.default_app()

    def ping(self, destination: list | None = None) -> dict | None:
        """``{node: {"ok": "pong"}}`` for each live worker whose loop beat within the
        timeout: as Celery's, a worker stopped (SIGSTOP) or stuck does not answer."""
        self.destination = _check(destination) or self.destination
        since = time.time() - float(self.app.conf.worker_heartbeat) - float(self.timeout or 0)
        return self._request(lambda node, worker: {"ok": "pong"},
                             [live for live in live_nodes(self.app) if live[2].heartbeat >= since])

    def active(self, safe: bool | None = None) -> dict | None:
        """``{node: [task info, ...]}``: the tasks each worker is running."""
        return self._tasks(self.app.broker.active(), safe)

    def _tasks(self, rows, safe):
        return self._request(lambda node, worker: [
            _info(node, task_id, name, body, queue, priority, started, attempts, safe,
                  acked=started is not None and not self._acks_late(name), options=options)
            for task_id, name, held, started, _, body, queue, priority, attempts, options in rows
            if held == worker.id])

    def _acks_late(self, name):
        late = getattr(self.app.tasks.get(name), "acks_late", None)
        return self.app.conf.task_acks_late if late is None else late

    def scheduled(self, safe: bool | None = None) -> dict | None:
        """``{node: [{"eta", "priority", "request"}, ...]}``: tasks waiting for their eta.
        They wait in the database, not in a worker: each is listed once, under the
        oldest live worker that serves its queue (any of those may run it). "priority"
        is Celery's eta timer's, the same for all: the task's own is in the request's
        delivery_info."""
        everyone, owned = live_nodes(self.app), {}
        for task_id, name, queue, eta, body, priority in self.app.broker.scheduled():
            node = next((n for n, _, w in everyone if queue in w.queues.split(",")), None)
            owned.setdefault(node, []).append({
                "eta": iso_time(eta),
                "priority": ETA_TIMER_PRIORITY,
                "request": _info(node, task_id, name, body, queue, priority)})
        return self._request(lambda node, worker: owned.get(node, []), everyone)

    def reserved(self, safe: bool | None = None) -> dict | None:
        """``{node: [task info, ...]}``: the tasks each worker claimed ahead of its idle
        children (worker_prefetch_multiplier) and has not begun."""
        return self._tasks(self.app.broker.active(reserved=True), safe)

    def registered(self, *taskinfoitems: str) -> dict | None:
        """``{node: [task name, ...]}``: the names each worker registered when it started,
        as it recorded them (the inspecting app may know others)."""
        if taskinfoitems:
            raise ValueError("registered(): miniq's workers record their task names only,"
                             f" not {', '.join(taskinfoitems)}")
        return self._request(lambda node, worker: json.loads(worker.tasks or "[]"))

    registered_tasks = registered

    def stats(self) -> dict | None:
        """``{node: {"pid", "uptime", "pool": {"max-concurrency"}, "broker"}}``: what a
        worker records of itself (no rusage or totals: those live in its process)."""
        now = time.time()
        return self._request(lambda node, worker: {
            "pid": worker.pid,
            "uptime": round(now - worker.started),
            "pool": {"max-concurrency": worker.concurrency},
            "broker": {"transport": "sqlite", "hostname": self.app.broker.path}})

    def active_queues(self) -> dict | None:
        """``{node: [{"name", "exchange": {"name", "type"}, "routing_key"}, ...]}``: the
        queues each worker serves, bound as task_queues declares them."""
        bound = apps._bindings(self.app.conf)
        return self._request(lambda node, worker: [
            {"name": name, "exchange": {"name": exchange, "type": kind}, "routing_key": key}
            for name in worker.queues.split(",")
            for exchange, key, kind in bound.get(name, [(name, name, "direct")])[:1]])

    __getattr__ = Control.__getattr__

    def _nodes(self, everyone=None):
        """(node, worker) of the live workers chosen by destination (a name several
        share chooses them all), the first ``limit`` (Celery's replies collected)."""
        everyone = live_nodes(self.app) if everyone is None else everyone
        wanted = set(self.destination or ())
        chosen = [(node, w) for node, name, w in everyone if not wanted or {node, name} & wanted]
        return chosen[:self.limit] if self.limit else chosen

    def _request(self, answer, everyone=None):
        """{node: answer(node, worker)} for the chosen workers, each passed to the callback."""
        replies = {}
        for node, worker in self._nodes(everyone):
            replies[node] = answer(node, worker)
            if self.callback:
                self.callback({node: replies[node]})
        return replies or None


def _unknown(asked, name):
    kind = type(asked).__name__
    if name in COMMANDS:
        called = "app.control" + (".inspect()" if kind == "Inspect" else "")
        raise AttributeError(f"{called}.{name} is a Celery remote control command miniq's"
                             " workers do not take: set the task option or setting, and"
                             " restart the worker")
    raise AttributeError(f"'{kind}' object has no attribute {name!r}")


def known_queues(conf) -> list:
    """The queues Celery's worker serves and its purge empties when none are named: those
    ``task_queues`` declares (kombu Queues, or names), else the default queue."""
    names = [getattr(queue, "name", queue) for queue in conf.get("task_queues") or ()]
    if not all(isinstance(name, str) and name for name in names):
        raise ImproperlyConfigured(f"task_queues: {names!r} are not all queue names")
    return names or [conf.task_default_queue]


def live_nodes(app: Any) -> list:
    """(node, name, worker) of the live workers (a recent heartbeat and, on this
    machine, a running process), oldest first. name is the one a worker was given
    (-n), else Celery's default ``celery@host``; node is the name, or where several
    share it, the name and the worker's id as ``status`` shows it, so no reply hides
    another."""
    now, here = time.time(), machine_id()
    lost_after = float(app.conf.worker_lost_after)
    workers = [worker for worker in app.broker.workers()
               if now - worker.heartbeat <= lost_after
               and (worker.machine != here or pid_alive(worker.pid))]
    names = [worker.node or f"celery@{worker.host}" for worker in workers]
    return [(name if names.count(name) == 1 else f"{name} {worker.id[:8]}", name, worker)
            for name, worker in zip(names, workers)]


def _check(destination):
    """Celery's destination is a list (or tuple) of node names, never one name."""
    if destination is not None and not isinstance(destination, (list, tuple)):
        raise ValueError(f"destination must be a list/tuple not {type(destination)}")
    return destination


def _info(node, task_id, name, body, queue, priority, started=None, attempts=0, safe=None,
          acked=False, options=None):
    """A task as Celery's ``Request.info()`` describes it: ``acked``, a running task
    that is not acks_late (its row stays leased still: it runs again if its worker dies)."""
    call = call_of(body, options if safe else None)
    if safe:  # as Celery's: the arguments as text, as delay() gave them (a tuple); the
        args = call["args"]  # sender's argsrepr if it gave one
        call["args"] = tuple(args) if isinstance(args, list) else args
        call = {key: v if isinstance(v, str) else repr(v) for key, v in call.items()}
    return {"id": task_id, "name": name, **call, "type": name, "hostname": node,
            "time_start": started,
            "acknowledged": acked,
            "delivery_info": {"exchange": "", "routing_key": queue, "priority": priority,
                              "redelivered": attempts > 1},
            "worker_pid": None}  # which child runs it is the manager's to know


def call_of(body: str, options: str | None = None) -> dict:
    """A message body's arguments; "(corrupt message)" if unreadable. With the row's
    options, as its sender's argsrepr and kwargsrepr show them where it gave them."""
    try:
        args, kwargs = loads(body)
        shown = loads(options or "{}")
    except (ValueError, TypeError):
        return {"args": "(corrupt message)", "kwargs": {}}
    shown = shown if isinstance(shown, dict) else {}
    return {"args": shown.get("argsrepr", args), "kwargs": shown.get("kwargsrepr", kwargs)}


def _stop(worker, here):
    """SIGTERM to a worker on this machine: its warm shutdown. Celery's reply shape."""
    if worker.machine != here:
        return {"error": f"pid {worker.pid} runs on another machine, container or boot"
                         f" ({worker.host}): stop it there"}
    try:
        os.kill(worker.pid, signal.SIGTERM)
    except OSError as exc:
        return {"error": f"cannot signal pid {worker.pid}: {exc.strerror}"}
    return {"ok": "shutting down"}


# -- node names, as Celery's ---------------------------------------------------------

def nodename(name: str | None) -> str:
    """-n's node name as Celery makes it: NAME@HOST, ``celery`` and this host where
    missing (``-n w1`` is celery@w1), then expanded by host_format."""
    short, at, host = (name or "").partition("@")
    if not at:
        short, host = "", short
    return host_format(f"{short or 'celery'}@{host or socket.gethostname()}")


def node_format(text: str, node: str) -> str:
    """A --pidfile or --logfile path, expanded for this node as Celery's: %n its
    name, %h and %d its host and domain, %p the whole node name."""
    short, _, host = node.partition("@")
    return host_format(text, host, short, p=node)


def host_format(text: str, host: str = "", name: str = "", **extra: str) -> str:
    """Celery's %-expansions (%% a %): %h the host (this one by default), %n the name (else the
    host's first label), %d its domain, %i and %I the pool process index, which is
    the manager's (0 and nothing): miniq's children share its log file."""
    host = host or socket.gethostname()
    short, _, domain = host.partition(".")
    keys = {"h": host, "n": name or short, "d": domain, "i": "0", "I": "", "%": "%", **extra}

    def expand(match):
        if match[1] not in keys:
            raise ImproperlyConfigured(f"unknown format %{match[1]} in {text!r}")
        return keys[match[1]]
    return re.sub(r"%(%|\w)", expand, text)  # %% is a %, as Celery's
