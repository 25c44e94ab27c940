"""``miniq dashboard``: one page (dashboard.html, beside this file) and the JSON API
under /api/ it reads, over the broker's read queries. No SQL here; only the CLI imports it.

  browser ──GET /api/...──▶ Handler ──▶ Api ──▶ broker (reads in autocommit)
          ──POST + token──▶ Handler ──▶ Api ──▶ app.control.revoke, send_task, purge
"""
from __future__ import annotations

import base64
import hmac
import json
import os
import re
import secrets
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

from .beat import Beat
from .control import live_nodes
from .exceptions import ImproperlyConfigured

PAGE = os.path.join(os.path.dirname(__file__), "dashboard.html")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
SHOWN = 120  # characters of a task's arguments in the task list
KINDS = {"SUCCESS": "succeeded", "FAILURE": "failed", "other": "other"}  # by final state
ZERO = dict.fromkeys(("queued", "scheduled", "running", *KINDS.values()), 0)
READS = ("overview", "tasks", "task", "schedule")  # GET /api/<read>[/<id>]
ACTIONS = ("revoke", "retry", "purge")  # POST /api/<action>/<id or queue>


class Api:
    """What the page shows and does, as plain values; the Handler serves them as JSON."""

    def __init__(self, app):
        self.app = app
        self.broker = app.broker
        self.lock = threading.Lock()
        self.kept = {}  # {(queue, state, minute): tasks finished} of minutes that are over
        self.since = 0.0  # where the minutes not kept begin (unix time)

    def overview(self, query):
        """The live workers, the counts per queue, and the tasks finished a minute."""
        now = time.time()
        first = int(now // 60) - 59
        waiting, finished = self._finished(now, first)
        workers = self.workers(now)
        queues = {name: dict(ZERO)
                  for worker in workers
                  for name in worker["queues"]}
        minutes = [{"minute": (first + i) * 60, **dict.fromkeys(KINDS.values(), 0)}
                   for i in range(60)]
        for queue, what, n in waiting:
            queues.setdefault(queue, dict(ZERO))[what] += n
        for (queue, state, minute), n in finished.items():
            kind = KINDS.get(state, "other")
            queues.setdefault(queue, dict(ZERO))[kind] += n
            if minute - first < 60:  # else it finished after now was read
                minutes[minute - first][kind] += n
        queues.pop("", None)  # saved groups, and the steps that failed with their chain
        return {"workers": workers,
                "queues": queues,
                "throughput": minutes,
                "now": now}

    def _finished(self, now, first):
        """(tasks waiting, {(queue, state, minute): tasks finished} from minute first).
        Minutes that are over are kept here: a poll reads the last two from the file."""
        with self.lock:
            since = max(first * 60, self.since)
            waiting, done = self.broker.overview(since)
            kept = {(queue, state, minute): n
                    for (queue, state, minute), n in self.kept.items()
                    if first <= minute < since / 60}
            for queue, state, minute, n in done:
                kept[queue, state, minute] = n
            self.kept = kept
            self.since = (now // 60 - 1) * 60
            return waiting, dict(kept)

    def workers(self, now):
        """Each live worker, with the tasks its children run now."""
        running = self.broker.active()
        return [{"node": node,
                 "host": w.host,
                 "pid": w.pid,
                 "concurrency": w.concurrency,
                 "queues": w.queues.split(","),
                 "heartbeat": now - w.heartbeat,
                 "running": [{"id": i,
                              "name": name,
                              "state": state,
                              "runtime": now - (at or now)}
                             for i, name, held, at, state, *_ in running
                             if held == w.id]}
                for node, _, w in live_nodes(self.app)]

    def tasks(self, query):
        """A page of the task list, newest first, filtered as the query asks."""
        limit = min(max(int(query.get("limit", 50)), 1), 500)  # never LIMIT -1: all
        offset = int(query.get("offset", 0))
        match = {key: query.get(key) or None
                 for key in ("state", "name", "queue")}
        search = query.get("search", "").strip()
        rows = self.broker.tasks(limit, offset, search, **match)
        return [_listed(row) for row in rows]

    def task(self, query, task_id):
        """Everything about one task; LookupError if the file does not know it."""
        row = self.broker.task(task_id)
        if row is None:
            raise LookupError(f"no task {task_id}")
        args, kwargs = _shown(row)
        options = _json(row["options"])  # parent_id, group, chain: how it was sent
        done = row["finished"] is not None  # else its children are not known yet, as Celery's
        sent = self.broker.children(task_id) if done else None
        children = sent and [child for child, _ in sent]
        return {**_listed(row), "args": args, "kwargs": kwargs, "result": _json(row["result"]),
                "options": options, "children": children}

    def schedule(self, query):
        """The beat schedule: each entry's last run sent and its next one."""
        beat = Beat(self.app)
        runs = self.broker.beat_runs()
        now = time.time()
        return [{"name": name,
                 "task": entry["task"],
                 "schedule": repr(entry["schedule"]),
                 "last": runs.get(name),
                 "next": entry["schedule"].next_after(now, beat.tz)}
                for name, entry in beat.entries.items()]

    def revoke(self, query, task_id):
        """Revoke a task; with terminate=1 (or true, as Flower's), end it if it runs."""
        terminate = query.get("terminate") in ("1", "true")
        self.app.control.revoke(task_id, terminate=terminate)
        return {"revoked": task_id, "terminate": terminate}

    def retry(self, query, task_id):
        """Send a failed or revoked task again: a new task, same name, arguments, queue."""
        row = self.broker.task(task_id)
        if row is None or row["state"] not in ("FAILURE", "REVOKED"):
            raise ValueError("only a failed or revoked task can be sent again")
        args, kwargs = _call(row["body"])
        shown = {key: _options(row).get(key) for key in ("argsrepr", "kwargsrepr")}  # kept
        sent = self.app.send_task(row["name"], args, kwargs, queue=row["queue"], **shown)
        return {"id": sent.id, "retry_of": task_id}

    def purge(self, query, queue):
        """Delete the tasks waiting in one queue."""
        return {"purged": self.broker.purge([queue])}


def _json(text):
    """A JSON column as a value (NaN as text: the browser's JSON has none); text that is
    not JSON as itself."""
    try:
        return json.loads(text, parse_constant=str) if text else None
    except ValueError:
        return text


def _call(body):
    """(args, kwargs) of a message body; (the body, {}) if it is not one."""
    value = _json(body)
    if isinstance(value, list) and len(value) == 2:
        return tuple(value)
    return body, {}


def _shown(row):
    """(args, kwargs) as shown: as its sender's argsrepr and kwargsrepr, where given."""
    (args, kwargs), given = _call(row["body"]), _options(row)
    return given.get("argsrepr", args), given.get("kwargsrepr", kwargs)


def _options(row):
    given = _json(row["options"])
    return given if isinstance(given, dict) else {}


def _listed(row):
    """A task as the task list shows it: its arguments shortened, its worker's node name."""
    args = _shown(row)[0]
    del row["body"], row["options"]
    args = args if isinstance(args, str) else json.dumps(args, default=str)
    if len(args) > SHOWN:
        args = args[:SHOWN - 1] + "…"
    worker = row["worker"] or ""  # "<id> <node name>"
    return {**row,
            "args": args,
            "worker": worker.partition(" ")[2] or worker or None}


class Handler(BaseHTTPRequestHandler):
    """GET reads (the page, /api/...); POST acts, given the page's token."""

    server: Server

    def do_GET(self):
        self._answer(READS, ACTIONS)

    def do_POST(self):
        self._answer(ACTIONS, READS)

    def _answer(self, mine, others):
        url = urlsplit(self.path)
        match = re.fullmatch(r"/api/(\w+)/?(.*)", url.path)
        what, arg = match.groups() if match else ("", "")
        refused = self._refused()
        if refused:
            return self._send(*refused)
        if url.path == "/" and mine is READS:
            return self._send(200, self.server.page, "text/html; charset=utf-8")
        if what in mine:
            call = getattr(self.server.api, what)
            return self._send(*_called(call, url.query, arg))
        code = 405 if what in others else 404  # GET never acts; POST only acts
        self._send(code, {"error": f"no {self.command} {url.path}"})

    def _refused(self):
        """(status, error) if this request may not go on: no login, when one is set; a
        Host not this machine's when none is (a name rebound to 127.0.0.1 in a browser);
        an action without the page's token or from another page's origin."""
        server, headers = self.server, self.headers
        host = headers.get("Host", "")
        login = headers.get("Authorization", "")
        if server.auth and not _same(login, server.auth):
            return 401, {"error": "log in first"}
        name = urlsplit("//" + host).hostname
        if not server.auth and name not in LOOPBACK | {server.address}:
            return 403, {"error": f"Host {name} is not this machine"}
        token = _same(headers.get("X-Miniq-Token", ""), server.token)
        origin = urlsplit(headers.get("Origin", "")).netloc or host
        if self.command == "POST" and not (token and origin == host):
            return 403, {"error": "an action needs the page's token, from the page's origin"}
        return None

    def _send(self, code, body, kind="application/json"):
        data = body if isinstance(body, str) else json.dumps(body, default=str)
        data = data.encode()
        self.send_response(code)
        headers = {"Content-Type": kind,
                   "Content-Length": len(data),
                   "Cache-Control": "no-store",
                   "X-Content-Type-Options": "nosniff",
                   "Content-Security-Policy": self.server.policy}
        if code == 401:
            headers["WWW-Authenticate"] = 'Basic realm="miniq"'
        for name, value in headers.items():
            self.send_header(name, str(value))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # a poll a second would flood the terminal
        pass


def _called(handler, query, arg):
    """(status, answer) of one API call; its failure fails the request, not the server."""
    args = [unquote(arg)] if arg else []
    try:
        return 200, handler(dict(parse_qsl(query)), *args)
    except Exception as exc:
        bad = isinstance(exc, (ValueError, TypeError))
        code = 404 if isinstance(exc, LookupError) else 400 if bad else 500
        return code, {"error": str(exc)}


def _same(given, expected):
    """Whether a secret given equals the one expected, in constant time."""
    return hmac.compare_digest(given.encode(), expected.encode())


class Server(ThreadingHTTPServer):
    """The dashboard's HTTP server: the page with its token, the Api, the rules."""

    def __init__(self, app, address="127.0.0.1", port=5555, auth=None):
        if address not in LOOPBACK and not address.startswith("127.") and not auth:
            raise ImproperlyConfigured(
                f"the dashboard would be open to anyone who can reach {address}: add"
                " --basic-auth user:password (or MINIQ_DASHBOARD_AUTH), or bind 127.0.0.1")
        user, _, password = (auth or "").partition(":")
        if auth is not None and not (user and password):  # ":" would let anyone in
            raise ImproperlyConfigured("--basic-auth must be user:password, neither empty")
        self.api = Api(app)
        self.address = address
        self.token = secrets.token_urlsafe(24)  # the page's: actions must carry it
        login = auth and base64.b64encode(auth.encode()).decode()
        self.auth = login and f"Basic {login}"
        with open(PAGE, encoding="utf-8") as f:
            self.page = f.read().replace("{{token}}", self.token)
        self.policy = ("default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline';"
                       f" script-src 'nonce-{self.token}'; frame-ancestors 'none'")
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        super().__init__((address, port), Handler)
