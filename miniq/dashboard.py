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

PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard.html")
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HOUR = 3600
SHOWN = 120  # characters of a task's arguments in the task list
KINDS = {"SUCCESS": "succeeded", "FAILURE": "failed"}  # other final states: "other"


def _json(text):
    """A JSON column as a value; text that is not JSON as itself."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


class Api:
    """What the page shows and does, as plain values; the Handler serves them as JSON."""

    def __init__(self, app):
        self.app, self.broker = app, app.broker
        self.lock = threading.Lock()
        self.kept, self.since = {}, 0.0  # finished-task counts of minutes that are over

    def overview(self, query):
        """The live workers, the counts per queue, and tasks finished a minute."""
        now = time.time()
        with self.lock:  # minutes over are kept: a poll reads the last two only
            waiting, done = self.broker.overview(max(now - HOUR, self.since))
            self.kept = {key: n for key, n in self.kept.items()
                         if now - HOUR <= key[2] * 60 + 60 and key[2] * 60 < self.since}
            self.kept.update(((queue, state, minute), n) for queue, state, minute, n in done)
            self.since = (now // 60 - 1) * 60
            finished = list(self.kept.items())
        workers = self.workers(now)
        zero = dict.fromkeys(("queued", "scheduled", "running", "succeeded", "failed", "other"), 0)
        queues = {queue: dict(zero) for w in workers for queue in w["queues"]}
        last = int(now // 60)
        minutes = {m: {"minute": m * 60, "succeeded": 0, "failed": 0, "other": 0}
                   for m in range(last - 59, last + 1)}
        for queue, what, n in waiting:
            queues.setdefault(queue, dict(zero))[what] += n
        for (queue, state, minute), n in finished:
            kind = KINDS.get(state, "other")
            queues.setdefault(queue, dict(zero))[kind] += n
            if minute in minutes:
                minutes[minute][kind] += n
        queues.pop("", None)  # saved groups and the steps failed with a chain
        return {"workers": workers, "queues": queues, "throughput": list(minutes.values()),
                "now": now}

    def workers(self, now):
        """Each live worker, with the tasks its children run now."""
        running = self.broker.active()
        return [{"node": node, "id": w.id, "host": w.host, "pid": w.pid,
                 "concurrency": w.concurrency, "queues": w.queues.split(","),
                 "heartbeat": now - w.heartbeat,
                 "running": [{"id": i, "name": name, "state": state, "runtime": now - (start or now)}
                             for i, name, held, start, state, *_ in running if held == w.id]}
                for node, _, w in live_nodes(self.app)]

    def tasks(self, query):
        """A page of the task list, newest first, filtered as the query asks."""
        limit, offset = min(int(query.get("limit", 50)), 500), int(query.get("offset", 0))
        match = {key: query.get(key) or None for key in ("state", "name", "queue")}
        rows = self.broker.tasks(limit, offset, query.get("search", "").strip(), **match)
        return {"tasks": [_listed(row) for row in rows], "limit": limit, "offset": offset}

    def task(self, query, task_id):
        """Everything about one task; LookupError if the file does not know it."""
        row = self.broker.task(task_id)
        if row is None:
            raise LookupError(f"no task {task_id}")
        options = _json(row["options"]) or {}
        options = options if isinstance(options, dict) else {}
        children = [i for i, _ in self.broker.children(task_id)] if row["finished"] else None
        return {**_listed(row), "args": _call(row["body"])[0], "kwargs": _call(row["body"])[1],
                "result": _json(row["result"]), "traceback": row["traceback"],
                "deliveries": row["attempts"], "eta": row["eta"], "expires": row["expires"],
                "parent": options.get("parent_id"), "root": options.get("root_id"),
                "group": options.get("group"), "chain": options.get("chain"),
                "chord": row["chord"], "children": children, "options": options}

    def schedule(self, query):
        """The beat schedule: each entry's last run sent and its next one."""
        beat, runs, now = Beat(self.app), self.broker.beat_runs(), time.time()
        return [{"name": name, "task": entry["task"], "schedule": repr(entry["schedule"]),
                 "last": runs.get(name), "next": entry["schedule"].next_after(now, beat.tz)}
                for name, entry in beat.entries.items()]

    def revoke(self, query, task_id):
        """Revoke a task; with terminate=1, end it if it runs."""
        terminate = query.get("terminate") == "1"
        self.app.control.revoke(task_id, terminate=terminate)
        return {"revoked": task_id, "terminate": terminate}

    def retry(self, query, task_id):
        """Send a failed or revoked task again: a new task, same name, arguments, queue."""
        row = self.broker.task(task_id)
        if row is None or row["state"] not in ("FAILURE", "REVOKED"):
            raise ValueError("only a failed or revoked task can be sent again")
        args, kwargs = _call(row["body"])
        sent = self.app.send_task(row["name"], args, kwargs, queue=row["queue"])
        return {"id": sent.id, "retry_of": task_id}

    def purge(self, query, queue):
        """Delete the tasks waiting in one queue."""
        return {"purged": self.broker.purge([queue]), "queue": queue}


def _call(body):
    """(args, kwargs) of a message body; (the body, {}) if it is not one."""
    value = _json(body)
    return tuple(value) if isinstance(value, list) and len(value) == 2 else (body, {})


def _listed(row):
    """A task as the task list shows it."""
    args = json.dumps(_call(row["body"])[0], default=str)
    end, start = row["finished"], row["started"]
    return {"id": row["id"], "name": row["name"], "state": row["state"], "queue": row["queue"],
            "args": args if len(args) <= SHOWN else args[:SHOWN - 1] + "…",
            "worker": (row["worker"] or "").partition(" ")[2] or row["worker"],
            "received": row["created"], "started": start, "finished": end,
            "runtime": end - start if end and start else None, "retries": row["retries"]}


READS = ("overview", "tasks", "task", "schedule")
ACTIONS = ("revoke", "retry", "purge")


class Handler(BaseHTTPRequestHandler):
    """GET reads (the page, /api/...); POST acts, given the page's token."""

    server: Server

    def do_GET(self):
        if self._allowed():
            self._route(READS, ACTIONS)

    def do_POST(self):
        origin = self.headers.get("Origin")
        same = origin is None or urlsplit(origin).netloc == self.headers.get("Host")
        token = self.headers.get("X-Miniq-Token", "")
        if not self._allowed():
            return
        if not same or not hmac.compare_digest(token, self.server.token):
            return self._send(403, {"error": "missing or wrong token, or another origin"})
        self._route(ACTIONS, READS)

    def _allowed(self):
        """Basic auth when set; else only a local Host (no DNS rebinding to here)."""
        server, given = self.server, self.headers.get("Authorization", "")
        if server.auth and not hmac.compare_digest(given.encode(), server.auth.encode()):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="miniq"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        host = urlsplit("//" + self.headers.get("Host", "")).hostname
        if not server.auth and host not in LOOPBACK | {server.address}:
            self._send(403, {"error": f"Host {host} is not this machine"})
            return False
        return True

    def _route(self, mine, others):
        url = urlsplit(self.path)
        if url.path == "/" and mine is READS:
            return self._send(200, self.server.page, "text/html; charset=utf-8")
        match = re.fullmatch(r"/api/(\w+)/?(.*)", url.path)
        what, arg = match.groups() if match else ("", "")
        if what not in mine:  # GET on an action, POST on a read: 405
            code = 405 if what in others else 404
            return self._send(code, {"error": f"no {self.command} {url.path}"})
        handler = getattr(self.server.api, what)
        query = dict(parse_qsl(url.query))
        try:
            self._send(200, handler(query, unquote(arg)) if arg else handler(query))
        except LookupError as exc:
            self._send(404, {"error": str(exc).strip("'\"")})
        except (ValueError, TypeError) as exc:
            self._send(400, {"error": str(exc)})

    def _send(self, code, body, kind="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body, default=str).encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", self.server.policy)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # a poll a second would flood the terminal
        pass


class Server(ThreadingHTTPServer):
    """The dashboard's HTTP server: the page with its token, the Api, the rules."""

    def __init__(self, app, address="127.0.0.1", port=5555, auth=None):
        if address not in LOOPBACK and not address.startswith("127.") and not auth:
            raise ImproperlyConfigured(
                f"the dashboard would be open to anyone who can reach {address}: add"
                " --basic-auth user:password (or MINIQ_DASHBOARD_AUTH), or bind 127.0.0.1")
        if auth and ":" not in auth:
            raise ImproperlyConfigured("--basic-auth must be user:password")
        self.api, self.address, self.token = Api(app), address, secrets.token_urlsafe(24)
        self.auth = auth and "Basic " + base64.b64encode(auth.encode()).decode()
        with open(PAGE, encoding="utf-8") as f:
            self.page = f.read().replace("{{token}}", self.token)
        self.policy = ("default-src 'self'; img-src 'self' data:; style-src 'unsafe-inline';"
                       f" script-src 'nonce-{self.token}'; frame-ancestors 'none'")
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        super().__init__((address, port), Handler)
