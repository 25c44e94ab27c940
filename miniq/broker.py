"""Every SQL statement miniq runs: schema, enqueue, claim, settle, heartbeat,
recover, sweep. Returns plain values; never imports task or worker code.

A task is one row from submission to result. ``status`` is the lifecycle the
code relies on (scheduled, queued, running, done); ``state`` is what users see (PENDING,
STARTED, PROGRESS, SUCCESS, ...), so a task may report any custom state while
it runs without confusing the claim or the recovery.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import random
import re
import sqlite3
import threading
import time
from typing import NamedTuple, Sequence

from .exceptions import DatabaseUnavailable, ImproperlyConfigured, OperationalError
from .utils.json import dumps, loads

QUEUED, RUNNING, DONE, WAITING = 0, 1, 2, 3  # WAITING: a chord callback
# Not due yet, or not known to be (-1: in line for a rate limit). Every status <= 0 is a
# task not started, and only due ones are QUEUED: no claim reads past what is not due.
SCHEDULED = -2
UNANNOUNCED = -2  # revoked: a task revoked while queued, until a worker of its queue says so
PROMOTE = SWEEP = 500  # rows a claim makes due, a sweep deletes: each holds the file for ms
BY_SEQ = 500  # rows a statement names by seq: SQLite before 3.32 takes 999 parameters
FINAL = ("SUCCESS", "FAILURE", "REVOKED")  # the states of a finished task that is not ignored
# A saved GroupResult is a row whose id has this prefix and whose name is this: a task
# row would need both (a task_id and a name chosen so, by hand) to be taken for it.
GROUP_KEY, SAVED_GROUP = "group:", "(saved group)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS task (
    seq       INTEGER PRIMARY KEY,          -- submission order: FIFO among equals
    id        TEXT NOT NULL UNIQUE,
    name      TEXT NOT NULL,
    queue     TEXT NOT NULL,
    priority  INTEGER NOT NULL DEFAULT 0,   -- higher runs first
    body      TEXT NOT NULL,                -- JSON [args, kwargs]
    options   TEXT,                         -- JSON of per-call options, or NULL
    status    INTEGER NOT NULL DEFAULT 0,   -- 0 queued, 1 running, 2 done, 3 waiting,
                                            -- -1 in line for its rate limit, -2 not due
    state     TEXT NOT NULL DEFAULT 'PENDING',
    eta       REAL NOT NULL DEFAULT 0,      -- not before (unix time)
    expires   REAL,
    retries   INTEGER NOT NULL DEFAULT 0,   -- Task.retry() count
    attempts  INTEGER NOT NULL DEFAULT 0,   -- deliveries of this run; fences settle
    worker    TEXT,                         -- who holds it while running
    lease     REAL,                         -- reclaimable after this
    revoked   INTEGER,                      -- NULL, -1 aborted, 0 revoked, >0 kill with this signal,
                                            -- -2 revoked while queued, not yet announced
    result    TEXT,                         -- JSON value, exception info, or meta
    traceback TEXT,
    created   REAL NOT NULL,
    started   REAL,
    finished  REAL,
    chord     TEXT                          -- the callback this task is a chord member of
);
CREATE INDEX IF NOT EXISTS task_queued ON task(queue, priority DESC, seq) WHERE status = 0;
CREATE INDEX IF NOT EXISTS task_scheduled ON task(queue, eta) WHERE status = -2;
CREATE INDEX IF NOT EXISTS task_running ON task(worker) WHERE status = 1;
CREATE INDEX IF NOT EXISTS task_done ON task(finished) WHERE status = 2;
CREATE INDEX IF NOT EXISTS task_chord ON task(chord) WHERE chord IS NOT NULL;
CREATE INDEX IF NOT EXISTS task_line ON task(name, priority DESC, seq) WHERE status = -1;
CREATE INDEX IF NOT EXISTS task_unannounced ON task(queue) WHERE revoked = -2;
CREATE TABLE IF NOT EXISTS worker (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    queues      TEXT NOT NULL,
    started     REAL NOT NULL,
    heartbeat   REAL NOT NULL,
    machine     TEXT,               -- host, boot and pid namespace: where pid means something
    node        TEXT,               -- its node name (-n), as Celery's replies name workers
    tasks       TEXT                -- JSON list of the task names it registered
);
CREATE TABLE IF NOT EXISTS beat (                -- one row per periodic run sent
    entry TEXT NOT NULL,
    slot  REAL NOT NULL,   -- the run's scheduled time; negative: seen, not sent (or when first seen)
    PRIMARY KEY (entry, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rate (                -- rate limits, kept across all workers
    name TEXT PRIMARY KEY,                       -- the task
    due  REAL NOT NULL,                          -- its next start, not before (unix time)
    next TEXT                                    -- the task whose turn that is, if any
) WITHOUT ROWID;
"""
SCHEMA_VERSION = 6  # 4: rate limits (the rate table, the task_line index); 5: SCHEDULED;
# 6: UNANNOUNCED (the task_unannounced index)
APPLICATION_ID = 0x6D696E71  # "minq" in the file header: this file is miniq's
LOCK_WAIT = 10.0  # seconds any one call may wait for a locked file, in all
INSERT = ("INSERT INTO task (id, name, queue, priority, body, options, eta, expires, created,"
          " chord, status, retries) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
          " CASE WHEN ?11 = 0 AND ?7 > ?9 THEN -2 ELSE ?11 END, ?12)")  # due after it was sent
FOLLOW = INSERT.replace("INSERT", "INSERT OR IGNORE", 1)  # a workflow's step sent already stays
# a finished row of an id sent again (one update_state() made before it was sent, say):
# the task runs again, as Celery's worker runs a reused id; a revoked id stays revoked
FINISHED = "DELETE FROM task WHERE id = ? AND status = 2 AND state != 'REVOKED'"
CLAIM_COLUMNS = ("id, name, body, retries, attempts, options, chord, expires,"
                 " priority, revoked, queue, eta")
# A task that starts now (?1 its state) leaves its last run's retry behind: no result yet
CLAIM = ("UPDATE task SET status = 1, state = COALESCE(?1, state), worker = ?2, lease = ?3,"
         " started = ?4, attempts = MAX(attempts, 0) + 1,"
         " result = CASE WHEN ?1 IS NULL THEN result END,"
         " traceback = CASE WHEN ?1 IS NULL THEN traceback END WHERE seq")  # IN (?, ...)
# (a count below 0, another program's, would put the delivery cap out of reach)
FENCE = "WHERE id = ? AND worker = ? AND attempts = ? AND status = 1"  # this delivery only
SETTLED = ("UPDATE task SET status = 2, state = ?, result = ?, traceback = ?, finished = ?,"
           f" started = COALESCE(?, started) {FENCE}")  # a final state, as the task ended
NOT_PLAIN = {None, "REPLACED", "RETRY", "RETRY_UNSTORED", "PENDING", "RESERVED", "UNTRACKED",
             "STARTED", "IGNORED"}  # outcomes written otherwise
NOT_BEGUN = "(status <= 0 OR status = 3 OR status = 1 AND started IS NULL)"  # or reserved
DONE_ROWS = "SELECT seq, finished FROM task INDEXED BY task_done WHERE status = 2 AND"
# a row no chord's callback still waits for: the callback takes its result when sent
UNHELD = ("(chord IS NULL OR NOT EXISTS (SELECT 1 FROM task AS waiting"
          " WHERE waiting.id = task.chord AND waiting.status = 3))")
MISSING = {"exc_type": "ChordError", "exc_module": "miniq.exceptions",
           "exc_message": ["its row was deleted before the chord's callback was sent"]}
NUMBER = (int, float)
REFUSED = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError, OverflowError)
MAYBE_NUMBER = (int, float, type(None))
QUEUE_COUNTS = (  # a partial index each: no table scan
    "SELECT queue, 'scheduled', COUNT(*) FROM task WHERE status = -2 GROUP BY queue"
    " UNION ALL SELECT queue, 'scheduled', COUNT(*) FROM task WHERE status = -1 GROUP BY queue"
    " UNION ALL SELECT queue, 'queued', COUNT(*) FROM task WHERE status = 0 GROUP BY queue"
    " UNION ALL SELECT queue, 'running', COUNT(*) FROM task WHERE status = 1"
    " AND started IS NOT NULL GROUP BY queue")  # not those a worker holds ahead
LISTED = ("id, name, state, queue, body, options, worker, created AS received, started,"
          " finished, retries")
STEP = {"task": str, "args": list, "kwargs": dict, "options": dict}  # a chain's signature


class Message(NamedTuple):
    """A claimed row, as the worker and its children see it."""
    id: str
    name: str
    body: str                    # JSON [args, kwargs]
    retries: int = 0
    attempts: int = 1
    options: dict | None = None  # per-call options (limits, chain, immutable)
    chord: str | None = None     # the chord callback this task is a member of
    expires: float | None = None
    priority: int = 0
    revoked: int | None = None   # -1 aborted, 0 revoked, >0: terminate with this signal
    fault: str | None = None     # what is malformed in the row, if anything
    queue: str = ""
    eta: float = 0.0             # not before (unix time); 0: at once

    def __str__(self):  # as Celery's log lines name a task: by its shadow name, if it has one
        shadow = self.options.get("shadow") if isinstance(self.options, dict) else None
        return f"{shadow or self.name}[{self.id}]"

    def delivery_info(self):
        """Celery's request.delivery_info for this delivery."""
        return {"exchange": "", "routing_key": self.queue, "priority": self.priority,
                "redelivered": self.attempts > 1}


class Settle(NamedTuple):
    """One outcome to write, fenced by the delivery (id, attempts) it belongs to."""
    id: str
    attempts: int
    state: str | None                       # None: not kept (ignore_result); REPLACED
    result: str | None = None               # JSON value, exception info or meta
    traceback: str | None = None
    eta: float = 0.0                        # RETRY: when to run again
    body: str | None = None                 # RETRY with new arguments
    chord: str | None = None
    follow: Sequence[tuple] = ()            # message rows to send next (a chain)
    failed: Sequence[tuple[str, str]] = ()  # (id, name) of steps that fail with it
    began: float | None = None              # when a reserved task began, if not yet written
    moved: tuple = (None, None)             # RETRY: the queue and priority it goes to, if new


# Tasks revoked with terminate, and the signal: another program's value that is not a
# whole number is SIGKILL, as a claim reads it (and -1 aborted, 0 revoked kill nothing).
KILLED = "id, CASE typeof(revoked) WHEN 'integer' THEN revoked ELSE 9 END"
TO_KILL = "revoked IS NOT NULL AND (typeof(revoked) != 'integer' OR revoked > 0)"


class WorkerRow(NamedTuple):
    id: str
    host: str
    pid: int
    concurrency: int
    queues: str
    started: float
    heartbeat: float
    machine: str | None
    node: str | None
    tasks: str | None  # JSON list of names


def path_from_url(url, what="broker URL"):
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ImproperlyConfigured(
            f"{what} {url!r} is not supported: miniq needs a SQLite file URL "
            "such as sqlite:///proj.db (relative) or sqlite:////var/lib/proj.db (absolute)")
    path = url[len(prefix):]
    if path == ":memory:" or "?" in path:  # no process could share it / not a file's name
        raise ImproperlyConfigured(f"{what} {url!r}: miniq needs a file its processes"
                                   " share, named without ':memory:' or '?' options")
    return path


def _stat(path, field):
    """A field of os.stat(path): st_ino, its identity (a change means deleted or replaced),
    or st_size; None when the file is gone."""
    try:
        return getattr(os.stat(path), field)
    except OSError:
        return None


def _save_deleted_wal(conn, path):
    """Once the WAL was deleted, and as long as nothing is written to a new one: copy the
    pages of the old one (which conn still reads) into the database and clear the shared
    index, which would otherwise name them for a file no new connection can read. While
    another process does so, wait for it: reopening sooner would read that index."""
    give_up = time.monotonic() + LOCK_WAIT
    while not _stat(path + "-wal", "st_size") and time.monotonic() < give_up:
        try:
            if not conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
                return
        except sqlite3.Error:
            return
        time.sleep(0.005)


def _claimed(db, seqs, args):
    """Claim rows by seq with CLAIM's arguments: their Messages in that order, claimed and
    read BY_SEQ rows a statement."""
    return [message for at in range(0, len(seqs), BY_SEQ)
            for message in _claim_rows(db, args, seqs[at:at + BY_SEQ])]


def _claim_rows(db, args, seqs):
    """Claim rows by seq with CLAIM's arguments. Text that is not UTF-8 cannot be read as
    it is: its row is claimed still, to fail with that fault."""
    marks = ", ".join("?" * len(seqs))
    db.execute(f"{CLAIM} IN ({marks})", (*args, *seqs))
    try:
        read = {row[0]: _message(row[1:]) for row in db.execute(
            f"SELECT seq, {CLAIM_COLUMNS} FROM task WHERE seq IN ({marks})", seqs)}
        return [read[seq] for seq in seqs]
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    return [_read_claimed(db, seq) for seq in seqs]


def _unannounced(db, queues):
    """Take the tasks of these queues revoked while queued, to announce: their Messages."""
    seqs = [row[0] for row in db.execute(
        "SELECT seq FROM task INDEXED BY task_unannounced WHERE"
        f" revoked = {UNANNOUNCED} AND queue IN ({_marks(queues)}) LIMIT ?", (*queues, SWEEP))]
    if not seqs:
        return []
    rows = _replacing(db, f"SELECT {CLAIM_COLUMNS} FROM task WHERE seq IN ({_marks(seqs)})",
                      seqs)
    db.execute(f"UPDATE task SET revoked = 0 WHERE seq IN ({_marks(seqs)})", seqs)
    return [_message(row) for row in rows]


def _read_claimed(db, seq):
    """A claimed row's Message, read again; text that is not UTF-8 is its fault."""
    read = f"SELECT {CLAIM_COLUMNS} FROM task WHERE seq = ?"
    try:
        return _message(db.execute(read, (seq,)).fetchone())
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    row = _replacing(db, read, (seq,))[0]
    try:
        db.execute("SELECT id FROM task WHERE seq = ?", (seq,)).fetchone()
    except sqlite3.OperationalError:  # its id: renamed, or its outcome is never written
        row = (f"{row[0]}-{seq}", *row[1:])
        db.execute("UPDATE task SET id = ? WHERE seq = ?", (row[0], seq))
    return _message(row)._replace(options={}, fault="text that is not UTF-8")


def _replacing(db, sql, args=()):
    """Every row a query reads, with U+FFFD for text that is not UTF-8 (another
    program's), where reading it as it is would fail the whole query."""
    db.text_factory = lambda raw: raw.decode("utf-8", "replace")
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.text_factory = str


def _files_of(path):
    """The identities of the database and its WAL and shared-memory files."""
    return tuple(_stat(path + end, "st_ino") for end in ("", "-wal", "-shm"))


def printable(text):
    """Any str as valid UTF-8 (a lone surrogate becomes an escape): SQLite stores it."""
    if text is None:
        return None
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _marks(values):
    """The placeholders of an IN list: ``?,?,?`` for three values."""
    return ",".join("?" * len(values))


def _retrying(fn, wait=LOCK_WAIT):
    """Call fn(), retrying with growing jitter while the file is locked, wait s at most."""
    give_up, attempt = time.monotonic() + wait, 0
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "locked" not in text and "busy" not in text:
                raise
            if time.monotonic() > give_up:
                raise sqlite3.OperationalError(f"{text} (gave up after {wait:g}s)") from None
        attempt += 1
        time.sleep(random.uniform(0.005, 0.02) * min(attempt, 20))


def _translated(method):
    """The broker's own error for any database failure, naming the file."""
    @functools.wraps(method)
    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OverflowError) as exc:
            if self._replaced():  # the file went under this connection: once more, anew
                return call(self, *args, **kwargs)
            error = OperationalError(f"database {self.path}: {exc}")
            error.refused = isinstance(exc, REFUSED)  # a value it will not store, not the file
            error.full = "disk is full" in str(exc)  # no room: for this value, or for any
            raise error from exc
    return call


class Broker:
    """One SQLite file as queue and result store; one connection per process and thread."""

    _turn = None  # the queue a claim took its last task from: the next starts after it
    lock_wait = LOCK_WAIT  # a worker's main process waits less: it has children to tend

    def __init__(self, path, durable=False, clock=time.time):
        """The file at path; durable: survive power loss too; clock: unix time now."""
        self.path = os.path.abspath(path)
        self.synchronous = "FULL" if durable else "NORMAL"
        self.clock = clock
        self._local = threading.local()

    # -- connections and transactions ------------------------------------

    @property
    def db(self):
        """This thread's connection, reopened after a fork (a connection never crosses
        one) and, between transactions, once the file was deleted or replaced: else a
        long-lived producer would go on writing into a file nobody reads."""
        local = self._local
        if self._open():
            if local.conn.in_transaction or time.monotonic() < local.fresh_until:
                return local.conn
            if _files_of(self.path) == local.files:  # three stat() calls: at most every 10 ms
                local.fresh_until = time.monotonic() + 0.01
                return local.conn
            local.pid = None  # stays closed until a connect succeeds
            _save_deleted_wal(local.conn, self.path)
        if getattr(local, "conn", None):  # closed now, as a fork's parent's is: Python 3.13
            local.conn.close()  # warns when it collects one open, and loses a soft limit then
        local.conn = self._connect()
        local.pid, local.files, local.fresh_until = os.getpid(), _files_of(self.path), 0.0
        return local.conn

    def _replaced(self):
        """Whether this thread's connection outlived its file (deleted or replaced, its
        WAL too): then the next use opens the path again."""
        local = self._local
        if not self._open() or local.conn.in_transaction or _files_of(self.path) == local.files:
            return False
        local.fresh_until = 0.0
        return True

    def in_transaction(self):
        """True while this thread is inside one of the broker's transactions."""
        return self._open() and self._local.conn.in_transaction

    def _open(self):
        """Whether this thread holds a connection that this process opened."""
        return getattr(self._local, "pid", None) == os.getpid()

    def _connect(self):
        self._check_file()
        try:
            db = sqlite3.connect(self.path, timeout=self.lock_wait / 2, isolation_level=None)
            _check_owner(db, self.path)
            mode = _retrying(lambda: db.execute("PRAGMA journal_mode = WAL").fetchone()[0],
                             self.lock_wait)
            if mode.lower() != "wal":
                raise ImproperlyConfigured(
                    f"database {self.path} could not use WAL journal mode (got {mode!r}); "
                    "keep it on a local disk, not a network share")
            # Workers checkpoint at each heartbeat, off the request path; autocheckpoint
            # is the net.
            db.executescript(f"""PRAGMA synchronous = {self.synchronous};
                PRAGMA journal_size_limit = 67108864;
                PRAGMA wal_autocheckpoint = 10000;""")
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._tx(lambda tx: _create_schema(tx, self.path), db)
        except sqlite3.DatabaseError as exc:
            raise DatabaseUnavailable(f"cannot use database {self.path}: {exc}") from None
        return db

    def _check_file(self):
        """Create the file owner-only (messages may carry secrets); refuse one that
        another user owns or planted a link to."""
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise DatabaseUnavailable(f"database folder {folder} does not exist")
        try:
            with contextlib.suppress(FileExistsError):  # O_EXCL follows no link
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            owners = {os.lstat(self.path).st_uid, os.stat(self.path).st_uid}
        except OSError as exc:
            raise DatabaseUnavailable(f"cannot use database {self.path}: {exc.strerror}") from None
        if owners != {os.geteuid()}:
            raise DatabaseUnavailable(
                f"database {self.path} belongs to another user: miniq only uses its own files")
        if not os.access(self.path, os.W_OK) or not os.access(folder, os.W_OK):
            raise DatabaseUnavailable(
                f"database {self.path} is not writable (the file and its folder must be)")

    def _tx(self, fn, db=None):
        """fn(db) in one BEGIN IMMEDIATE transaction on db (this thread's connection if
        none is given), retrying while the file is locked. Whatever interrupts it (a
        signal's exception too) leaves no transaction open."""
        own, db = db is None, db or self.db
        try:
            _retrying(lambda: db.execute("BEGIN IMMEDIATE"), self.lock_wait)
            if own and _stat(self.path + "-wal", "st_ino") != self._local.files[1]:
                # the WAL was deleted by hand: frames written to the old one would be
                # indexed for a file no new connection reads, and every read would fail
                raise sqlite3.OperationalError("the database's WAL file was replaced")
            out = fn(db)
            db.execute("COMMIT")
            return out
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _write(self, sql, args=()):
        """One statement in a transaction of its own; returns how many rows it changed."""
        return self._tx(lambda db: db.execute(sql, args).rowcount)

    def _row(self, sql, args=()):
        """The first row a query reads, or None."""
        return self.db.execute(sql, args).fetchone()

    def _rows(self, sql, args=()):
        """Every row a query reads."""
        return self.db.execute(sql, args).fetchall()

    def close(self):
        if self._open():
            self._local.conn.close()
        self._local = threading.local()

    # -- producers ---------------------------------------------------------

    @_translated
    def enqueue(self, rows):
        """Insert messages, all or none: (id, name, queue, priority, body, options, eta,
        expires, created, chord, status)."""
        try:
            if len(rows) == 1:  # a lone INSERT is its own atomic write transaction
                return _retrying(lambda: self.db.execute(INSERT, rows[0]), self.lock_wait)
            return self._tx(lambda db: db.executemany(INSERT, rows))
        except sqlite3.IntegrityError:  # an id sent before, most likely: one row at a time
            self._tx(lambda db: [_send_again(db, row) for row in rows])

    @_translated
    def state(self, task_id):
        """(status, state, result, traceback, name, finished, worker) of one task, or None if
        unknown. A task held ahead has not begun: its status reads as queued."""
        return self._row("SELECT CASE WHEN status = 1 AND started IS NULL THEN 0 ELSE status END,"
                         " state, result, traceback, name, finished, worker FROM task"
                         " WHERE id = ?", (task_id,))

    @_translated
    def extended(self, task_id):
        """(body, retries, queue, worker) of one task, or None if unknown."""
        return self._row("SELECT body, retries, queue, worker FROM task WHERE id = ?", (task_id,))

    @_translated
    def children(self, task_id):
        """(id, group id) of each task a task sent while it ran, in the order sent; none
        where the task's ``trail`` was off, as Celery's."""
        rows = self._rows("SELECT id, options FROM task WHERE instr(options, ?) ORDER BY seq",
                          (task_id,))
        sent = [(child, _options(text) or {}) for child, text in rows]
        return [(child, o.get("group")) for child, o in sent
                if o.get("parent_id") == task_id and not o.get("untrailed")
                and not _headed(child, o, sent)]

    @_translated
    def save_group(self, group_id, members):
        """Keep a group's members (JSON) in a finished row of its own, swept as results are."""
        now = self.clock()
        self._write("INSERT OR REPLACE INTO task (id, name, queue, body, status, state, result,"
                    " created, finished) VALUES (?, ?, '', '[]', 2, 'SUCCESS', ?, ?, ?)",
                    (GROUP_KEY + group_id, SAVED_GROUP, members, now, now))

    @_translated
    def restore_group(self, group_id):
        """The members (JSON) saved for a group, or None."""
        row = self._row("SELECT result FROM task WHERE id = ? AND name = ?",
                        (GROUP_KEY + group_id, SAVED_GROUP))
        return row and row[0]

    @_translated
    def delete_group(self, group_id):
        self._write("DELETE FROM task WHERE id = ? AND name = ?",
                    (GROUP_KEY + group_id, SAVED_GROUP))

    @_translated
    def data_version(self):
        """A value that changes whenever another connection commits, or this thread's is
        reopened (a new one counts afresh); costs microseconds."""
        version = self._row("PRAGMA data_version")[0]
        return self._local.conn, version

    @_translated
    def revoke(self, ids, signum):
        """Queued tasks end REVOKED now; running ones are flagged (killed if signum)."""
        now, mark = self.clock(), (signum or 0)

        def run(db):
            for task_id in ids:
                queued = db.execute(f"SELECT chord FROM task WHERE id = ? AND {NOT_BEGUN}",
                                    (task_id,)).fetchone()
                db.execute(  # a reserved one keeps the signal: its start may be on its way;
                    # a queued one waits for a worker of its queue to announce it, as
                    # Celery's worker does as it reaches a revoked task
                    "UPDATE task SET status = 2, state = 'REVOKED', finished = ?, result = ?,"
                    " revoked = CASE status WHEN 1 THEN ? ELSE ? END WHERE id = ? AND"
                    f" {NOT_BEGUN}", (now, REVOKED_RESULT, mark, UNANNOUNCED, task_id))
                if queued and queued[0]:  # a chord member: its callback fails now, not never
                    _release_chord(db, queued[0], now, task_id)
                # not sent yet (a chain's later step, or by a caller still to come): as
                # Celery's workers remember a revoked id, so does this row
                db.execute("INSERT OR IGNORE INTO task (id, name, queue, body, status, state,"
                           " result, created, finished) VALUES (?, '', '', '[]', 2, 'REVOKED',"
                           " ?, ?, ?)", (task_id, REVOKED_RESULT, now, now))
                db.execute("UPDATE task SET revoked = CASE WHEN ?1 > 0 THEN ?1 ELSE"  # the
                           " MAX(COALESCE(revoked, 0), ?1) END WHERE id = ?2 AND status = 1",
                           (mark, task_id))  # last signal asked for: SIGKILL after SIGUSR1
        self._tx(run)

    @_translated
    def abort(self, task_id):
        self._write("UPDATE task SET revoked = COALESCE(revoked, -1) WHERE id = ? AND status < 2",
                    (task_id,))

    @_translated
    def is_aborted(self, task_id):
        row = self._row("SELECT revoked FROM task WHERE id = ?", (task_id,))
        return bool(row) and row[0] is not None

    @_translated
    def forget(self, task_id):
        """Delete a finished task's row; not a chord's member while its callback waits
        for its result (expiry deletes it later)."""
        self._write(f"DELETE FROM task WHERE id = ? AND status = 2 AND {UNHELD}", (task_id,))

    @_translated
    def update_state(self, task_id, state, meta):
        """A task's custom state (None: keeps its own) and meta (JSON). As Celery's backend
        stores them for any id, an id not sent yet gets a row, done in that state; and as
        it, a SUCCESS stored stays (else its result would wait again, for ever)."""
        now, state = self.clock(), printable(state)

        def run(db):
            if not db.execute("UPDATE task SET state = COALESCE(?, state), result = ?"
                              " WHERE id = ? AND state != 'SUCCESS'", (state, meta, task_id)
                              ).rowcount:
                db.execute("INSERT OR IGNORE INTO task (id, name, queue, body, status, state,"
                           " result, created, finished) VALUES (?, '', '', '[]', 2,"
                           " COALESCE(?, 'PENDING'), ?, ?, ?)", (task_id, state, meta, now, now))
        self._tx(run)

    # -- workers -----------------------------------------------------------

    @_translated
    def claim(self, worker, queues, n, lease, outcomes=(), start=None, held=None,
              revoked=None):
        """Write the Settle records, make the scheduled tasks that are due QUEUED (PROMOTE
        at most), then claim up to n as Message records, in one transaction: the queues
        taking turns, each highest priority first, then oldest. The first ``start`` (all if None) are STARTED, the
        others reserved: their state stays until a STARTED Settle says they began, and
        the set ``held`` gets the ids of those the worker still holds (a revoke ends a
        reserved task). A malformed row comes back with its fault named. The list
        ``revoked`` gets the Messages of tasks revoked while queued (SWEEP at most),
        which the worker is the one to announce."""
        now, marks, seen = self.clock(), _marks(queues), []

        def run(db):
            _settle(db, worker, outcomes, now)
            if held is not None:
                held.update(r[0] for r in db.execute(
                    "SELECT id FROM task WHERE worker = ? AND status = 1", (worker,)))
            if held is not None or n > 0:  # what it holds as of now: see changed_since_claim
                seen[:] = [(db, db.execute("PRAGMA data_version").fetchone()[0])]
            if n <= 0:
                return []
            if revoked is not None:  # anew at each try: only a committed one counts
                revoked[:] = _unannounced(db, queues)
            # the due ones, and any whose eta is not a number (another program's row): to fail
            some = ("SELECT seq FROM (SELECT seq FROM task INDEXED BY task_scheduled"
                    f" WHERE status = -2 AND queue IN ({marks}) AND eta {{}} LIMIT ?)")
            due, unreadable = some.format("<= ?"), some.format(">= ''")
            db.execute(f"UPDATE task SET status = 0 WHERE seq IN ({due} UNION ALL {unreadable})",
                       (*queues, now, PROMOTE, *queues, PROMOTE))
            begin = n if start is None else min(start, n)  # the first ``start`` begin now
            parts = [(begin, ("STARTED", worker, now + lease, now)),
                     (n - begin, (None, worker, now + lease, None))]
            claimed = []  # the started first
            for limit, args in parts:
                claimed += _claimed(db, self._taking_turns(db, queues, limit), args)
            untracked = [m.id for m in claimed[:begin] if (m.options or {}).get("ignore_result")]
            if untracked:  # as Celery's: a task whose result is ignored stores no STARTED
                db.execute(f"UPDATE task SET state = 'PENDING' WHERE id IN ({_marks(untracked)})",
                           untracked)
            return claimed
        claimed = self._tx(run)
        if seen:  # committed
            self._local.claimed = seen[0]
        return claimed

    def _taking_turns(self, db, queues, limit):
        """Up to limit queued seqs, the queues taking turns as Celery's workers consume
        several, from the one after the queue taken last; each by priority, then age (a
        priority that is not a number, picked where the index puts text, counts as 0)."""
        pick = ("SELECT seq, priority FROM task INDEXED BY task_queued WHERE status = 0 AND"
                " queue = ? ORDER BY priority DESC, seq LIMIT ?")
        if limit <= 0:
            return []
        turn = queues.index(self._turn) + 1 if self._turn in queues else 0
        lines = []
        for queue in [*queues[turn:], *queues[:turn]]:
            rows = db.execute(pick, (queue, limit)).fetchall()
            if not all(isinstance(p, NUMBER) for _, p in rows):
                rows.sort(key=lambda row: -row[1] if isinstance(row[1], NUMBER) else 0)
            lines.append([(seq, queue) for seq, _ in rows])
        taken = lines[0] if len(lines) == 1 else [
            one for row in itertools.zip_longest(*lines) for one in row if one][:limit]
        if taken:
            self._turn = taken[-1][1]
        return [seq for seq, _ in taken]

    def changed_since_claim(self):
        """Whether another connection committed since this thread's last claim (a revoke,
        say): what that claim found this worker holds may have changed. Asked before each
        reserved task begins: one cheap read of this connection, or True when in doubt."""
        db, version = getattr(self._local, "claimed", (None, None))
        if db is None or db is not getattr(self._local, "conn", None):
            return True  # never claimed, or reopened since
        try:
            return db.execute("PRAGMA data_version").fetchone()[0] != version
        except sqlite3.Error:  # closed since
            return True

    @_translated
    def release(self, names):
        """Tasks in line for a rate limit their names no longer have go back to the queue."""
        self._tx(lambda db: db.executemany("UPDATE task SET status = -2 WHERE status = -1"
                                           " AND name = ?", [(name,) for name in names]))

    def settle(self, worker, outcomes):
        """Write the Settle records and claim nothing."""
        if outcomes:
            self.claim(worker, (), 0, 0.0, outcomes)

    @_translated
    def next_eta(self, queues):
        """When the earliest scheduled task on these queues is due; None if none is."""
        return self._row("SELECT MIN(eta) FROM task WHERE status = -2 AND typeof(eta) IN"
                         f" ('integer', 'real') AND queue IN ({_marks(queues)})", queues)[0]

    @_translated
    def register(self, worker, host, pid, concurrency, queues, machine, node=None, tasks=()):
        """Record a worker (its id, where it runs, its queues, its node name and task
        names) with a fresh heartbeat."""
        now = self.clock()
        self._write("INSERT OR REPLACE INTO worker (id, host, pid, concurrency, queues, started,"
                    " heartbeat, machine, node, tasks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (worker, host, pid, concurrency, ",".join(queues), now, now, machine, node,
                     json.dumps(list(tasks))))

    @_translated
    def unregister(self, worker):
        self._write("DELETE FROM worker WHERE id = ?", (worker,))

    @_translated
    def heartbeat(self, worker, lease):
        """Prove this worker alive, extend its leases; return (id, signal) to terminate,
        or None if the file has no row for this worker."""
        now = self.clock()

        def run(db):
            db.execute("UPDATE task SET lease = ? WHERE worker = ? AND status = 1",
                       (now + lease, worker))
            return db.execute("UPDATE worker SET heartbeat = ? WHERE id = ?",
                              (now, worker)).rowcount
        if not self._tx(run):
            return None
        return self._rows(f"SELECT {KILLED} FROM task WHERE worker = ? AND status = 1"
                          f" AND {TO_KILL}", (worker,))

    @_translated
    def terminating(self, ids):
        """(id, signal) of those of these tasks revoked with terminate."""
        return self._rows(f"SELECT {KILLED} FROM task WHERE id IN ({_marks(ids)}) AND {TO_KILL}",
                          ids)

    @_translated
    def checkpoint(self):
        """Copy the WAL into the file without waiting on readers: keeps it small."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @_translated
    def workers(self):
        """The registered workers as WorkerRow records, oldest first."""
        rows = _replacing(self.db, f"SELECT {', '.join(WorkerRow._fields)} FROM worker"
                                   " ORDER BY started")
        return [_worker(WorkerRow(*row)) for row in rows]

    @_translated
    def recover(self, dead, max_deliveries, lost_result, lapsed=True, owner=None, strays=()):
        """Requeue tasks of dead workers, or (if lapsed) lapsed leases, or the strays of
        owner (ids it holds in the file but not in fact), and say how many; fail those
        delivered max_deliveries times, with lost_result (exception JSON) as their result.
        A reserved task that never began goes back with no delivery counted."""
        now = self.clock()
        lapse = now if lapsed else float("-inf")
        lost = ("status = 1 AND (lease < ? OR typeof(lease) NOT IN ('integer', 'real')"
                f" OR worker IN ({_marks(dead)}) OR worker = ? AND id IN ({_marks(strays)}))")
        which = (*dead, owner, *strays)  # (a lease no number: another program's row)

        def run(db):
            db.execute(f"DELETE FROM worker WHERE id IN ({_marks(dead)})", dead)
            db.execute(
                "UPDATE task SET status = 2, state = 'FAILURE', result = ?, finished = ?,"
                f" traceback = NULL WHERE {lost} AND started IS NOT NULL AND attempts >= ?",
                (lost_result, now, lapse, *which, max_deliveries))
            return db.execute(
                "UPDATE task SET status = 0, state = 'PENDING', worker = NULL,"
                f" attempts = attempts - (started IS NULL) WHERE {lost}", (lapse, *which)).rowcount
        return self._tx(run)

    @_translated
    def claim_beat_slot(self, entry, slot, late=False, since=None):
        """True for the one caller, among any number of beats, that may send this run: a
        slot after the entry's last, sent or seen. None may for an entry new to the file:
        as Celery's beat, its first run is the next after ``since`` (now), whatever its
        schedule was before; nor for a run ``late`` past its deadline. Those are kept
        negative, as seen and not sent."""
        def run(db):
            last, = db.execute("SELECT max(abs(slot)) FROM beat WHERE entry = ?", (entry,)
                               ).fetchone()
            db.execute("DELETE FROM beat WHERE entry = ? AND abs(slot) < ?", (entry, slot - 86400))
            if last is None or late:
                seen = slot if last is not None or since is None else max(slot, since)
                db.execute("INSERT OR IGNORE INTO beat VALUES (?, ?)", (entry, -seen))
                return False
            return slot > last and db.execute("INSERT OR IGNORE INTO beat VALUES (?, ?)",
                                              (entry, slot)).rowcount == 1
        return self._tx(run)

    @_translated
    def keep_beat_entries(self, names):
        """Forget the runs of every beat entry but these (any number: no IN list)."""
        kept = set(names)

        def run(db):
            entries = db.execute("SELECT DISTINCT entry FROM beat").fetchall()
            db.executemany("DELETE FROM beat WHERE entry = ?",
                           [row for row in entries if row[0] not in kept])
        self._tx(run)

    # -- inspection and control ----------------------------------------------

    @_translated
    def purge(self, queues=None, dry_run=False):
        """Delete queued (not running, not finished) tasks, of all queues if none given,
        and say how many; with dry_run, only count them."""
        where, args = "status <= 0", ()  # a task in line for its rate limit is queued too
        if queues:
            where += f" AND queue IN ({_marks(queues)})"
            args = queues
        if dry_run:
            return self._row(f"SELECT COUNT(*) FROM task WHERE {where}", args)[0]

        def run(db):
            chords = [row[0] for row in db.execute(
                f"SELECT DISTINCT chord FROM task WHERE {where} AND chord IS NOT NULL", args)]
            count = db.execute(f"DELETE FROM task WHERE {where}", args).rowcount
            for callback in chords:  # one whose members are all gone fails now, not never
                _release_chord(db, callback, self.clock(), None)
            return count
        return self._tx(run)

    @_translated
    def active(self, reserved=False):
        """(id, name, worker, started, state, body, queue, priority, attempts, options) of
        running tasks, oldest first; or of those reserved: claimed by a worker, not begun."""
        return self._rows("SELECT id, name, worker, started, state, body, queue, priority,"
                          f" attempts, options FROM task WHERE status = 1 AND started IS"
                          f" {'' if reserved else 'NOT '}NULL ORDER BY started, seq")

    @_translated
    def revoked(self, ids):
        """Of these ids, those a revoke ended (not put back for another worker)."""
        return {row[0] for row in self._rows(f"SELECT id FROM task WHERE id IN ({_marks(ids)})"
                                             " AND state = 'REVOKED'", ids)}

    @_translated
    def held(self, worker, ids=None):
        """Of these ids (all if None), those this worker still holds: the others were
        revoked meanwhile."""
        among = "" if ids is None else f"id IN ({_marks(ids)}) AND"
        return {row[0] for row in self._rows(f"SELECT id FROM task WHERE {among} worker = ?"
                                             " AND status = 1", (*(ids or ()), worker))}

    @_translated
    def scheduled(self):
        """(id, name, queue, eta, body, priority) of tasks not yet due, soonest first."""
        return self._rows("SELECT id, name, queue, eta, body, priority FROM task WHERE"
                          " status = -2 AND eta > ? ORDER BY eta", (self.clock(),))

    @_translated
    def overview(self, since):
        """(queue, "scheduled" | "queued" | "running", count) rows, and (queue, state,
        minute, count) rows of the tasks finished since then (minute: unix time // 60).
        Each part reads one partial index, never the whole table."""
        return self._rows(QUEUE_COUNTS), self._rows(
            "SELECT queue, state, CAST(finished / 60 AS INTEGER), COUNT(*) FROM task"
            " WHERE status = 2 AND finished > ? GROUP BY 1, 2, 3", (since,))

    @_translated
    def tasks(self, limit, offset=0, search="", state=None, name=None, queue=None):
        """Rows (as dicts, without result) of the tasks whose id starts with search and
        whose state, name and queue are as given (None: any), newest first."""
        match = {"state = ?": state, "name = ?": name, "queue = ?": queue,
                 "id >= ?": search, "id < ?": search and search + "\U0010ffff"}
        given = {sql: value for sql, value in match.items() if value}
        return self._dicts(f"SELECT {LISTED} FROM task WHERE {' AND '.join(given) or 1}"
                           " ORDER BY seq DESC LIMIT ? OFFSET ?", (*given.values(), limit, offset))

    @_translated
    def task(self, task_id):
        """Every column of one task's row, as a dict; None if unknown."""
        return next(iter(self._dicts("SELECT *, created AS received FROM task WHERE id = ?",
                                     (task_id,))), None)

    def _dicts(self, sql, args):
        """Every row a query reads, as a dict by column name."""
        cursor = self.db.execute(sql, args)
        return [dict(zip([c[0] for c in cursor.description], row)) for row in cursor]

    @_translated
    def beat_runs(self):
        """{entry: the scheduled time of its last run sent}."""
        return dict(self._rows("SELECT entry, MAX(slot) FROM beat WHERE slot > 0 GROUP BY entry"))

    @_translated
    def sweep(self, before):
        """Delete the results finished before the given unix time among the next SWEEP
        rows past the cursor (a chord's member whose callback waits stays, and is read
        again only once the cursor wraps); True if there may be more to delete now."""
        start = getattr(self, "_swept_to", None) or (float("-inf"), 0)

        def run(db):  # the rest of the cursor's time, then later ones: two index ranges
            window = db.execute(f"{DONE_ROWS} finished = ? AND seq > ? ORDER BY seq LIMIT ?",
                                (*start, SWEEP)).fetchall()
            window += db.execute(f"{DONE_ROWS} finished > ? AND finished < ? ORDER BY"
                                 " finished, seq LIMIT ?", (start[0], before,
                                                            SWEEP - len(window))).fetchall()
            seqs = [seq for seq, _ in window]
            gone = seqs and db.execute(f"DELETE FROM task WHERE seq IN ({_marks(seqs)})"
                                       f" AND {UNHELD}", seqs).rowcount
            return window, gone
        window, gone = self._tx(run)
        full = len(window) == SWEEP
        self._swept_to = (window[-1][1], window[-1][0]) if full else None
        return full and gone > 0


def _headed(task_id, options, sent):
    """Whether a row is a chord's callback that no group holds beside other tasks: as
    Celery's, its sender lists the header's group, and the callback only as a member
    of a group it sent. (A callback may carry its header's group id, or one of its own.)"""
    header, group = options.get("header"), options.get("group")
    if header is None:
        return False
    members = {m for m in header if isinstance(m, str)} if isinstance(header, list) else set()
    return not group or not any(o.get("group") == group for other, o in sent
                                if other != task_id and other not in members)


def _send_again(db, row):
    """Insert a message whose id may be taken, as Celery's workers take a reused id: a
    finished task runs again, a revoked one stays revoked; one not finished refuses it."""
    db.execute(FINISHED, row[:1])
    taken = db.execute("SELECT state FROM task WHERE id = ?", row[:1]).fetchone()
    if taken is None:
        db.execute(INSERT, row)
    elif taken[0] != "REVOKED":  # the caller's mistake, not the file's: no OperationalError
        raise ValueError(f"task id {row[0]} is taken by a task not finished yet")
    else:
        _revoked_member(db, row)


def _revoked_member(db, row):
    """A chord member whose id was revoked before it was sent (a bare REVOKED row) joins
    its chord revoked, in its place, and fails the callback as Celery's worker does when
    it meets that message: else the callback would get None for it, or never run."""
    task_id, chord = row[0], row[9]
    revoked = chord and db.execute("SELECT result, finished FROM task WHERE id = ? AND"
                                   " state = 'REVOKED' AND chord IS NULL", (task_id,)).fetchone()
    if revoked:
        db.execute("DELETE FROM task WHERE id = ?", (task_id,))
        db.execute(INSERT, row)
        db.execute("UPDATE task SET status = 2, state = 'REVOKED', result = ?, finished = ?"
                   " WHERE id = ?", (*revoked, task_id))
        _release_chord(db, chord, row[8], task_id)


def _settle(db, worker, outcomes, now):
    """Write outcomes, each only if this worker still holds that delivery (the fence); in
    order, those that end a task and send nothing on a run of them a statement."""
    plain = []
    for settle in outcomes:
        if settle.state not in NOT_PLAIN and not (settle.chord or settle.follow or settle.failed):
            plain.append((*settle[2:5], now, settle.began, settle.id, worker, settle.attempts))
            continue
        if plain:
            db.executemany(SETTLED, plain)
            plain = []
        _settle_one(db, worker, settle, now)
    if plain:
        db.executemany(SETTLED, plain)


def _settle_one(db, worker, settle, now):
    """Write one outcome: its workflow's next steps too, or a chord's callback released."""
    task_id, attempts, state, result, tb, eta, body, chord, follow, failed, began, moved = settle
    key = (task_id, worker, attempts)
    if state == "REPLACED" and db.execute(f"SELECT 1 FROM task {FENCE} AND revoked >= 0",
                                          key).fetchone():  # as Celery's: a replacement
        state, result, tb, follow = "REVOKED", REVOKED_RESULT, None, ()  # sent revoked
    if state in (None, "REPLACED"):  # ignore_result, or replaced by the rows in follow
        only = "" if state else " AND state IN ('PENDING', 'STARTED', 'RETRY')"
        mine = db.execute(f"DELETE FROM task {FENCE}{only}", key).rowcount or (
            state is None and db.execute(  # a state the run reported stays, as Celery's
                f"UPDATE task SET status = 2, finished = ? {FENCE}", (now, *key)).rowcount)
        if mine:
            _follow(db, follow)
            _fail(db, failed, "FAILURE", result, tb, now)  # an ignored failure's chain
    elif state in ("RETRY", "RETRY_UNSTORED"):  # the latter, of an ignored result, shows
        shown = ("state = 'RETRY', result = ?, traceback = ?" if state == "RETRY" else  # none
                 "state = CASE WHEN state = 'STARTED' THEN 'PENDING' ELSE state END")
        db.execute(  # its worker stays, as Celery's
            f"UPDATE task SET status = -2, {shown}, retries = retries + 1, attempts = 0,"
            " eta = ?, body = COALESCE(?, body), queue = COALESCE(?, queue),"
            f" priority = COALESCE(?, priority) {FENCE}",
            ((result, tb) if state == "RETRY" else ()) + (eta, body, *moved, *key))
    elif state == "PENDING":  # put back; the delivery still counts towards the cap
        db.execute(f"UPDATE task SET status = 0, state = 'PENDING', worker = NULL {FENCE}",
                   key)
    elif state == "RESERVED":  # put back unbegun: no delivery
        db.execute("UPDATE task SET status = 0, worker = NULL, attempts = attempts - 1"
                   f" {FENCE} AND started IS NULL", key)
    elif state == "UNTRACKED":  # a reserved task whose result is ignored began: as
        db.execute(f"UPDATE task SET started = ? {FENCE}", (eta, *key))  # Celery's, no STARTED
    elif state == "STARTED":  # a reserved task began (at eta); a state it set stays
        stays = "WHEN state NOT IN ('PENDING', 'RETRY') THEN"  # a state it set itself
        db.execute(f"UPDATE task SET started = ?, state = CASE {stays} state ELSE 'STARTED'"
                   f" END, result = CASE {stays} result END, traceback = CASE {stays}"
                   f" traceback END {FENCE}", (eta, *key))
    elif state == "IGNORED":  # nothing recorded: the state it reported stays, if any,
        # not the STARTED miniq wrote (Celery's stays PENDING, STARTED untracked)
        if db.execute("UPDATE task SET status = 2, finished = ?, state = CASE WHEN"
                      f" state = 'STARTED' THEN 'PENDING' ELSE state END {FENCE}",
                      (now, *key)).rowcount and chord:
            _release_chord(db, chord, now, task_id)  # which it never releases
    elif db.execute(SETTLED, (state, result, tb, now, began, *key)).rowcount:
        _follow(db, follow)
        _fail(db, failed, state, result, tb, now)
        if chord:
            _release_chord(db, chord, now, task_id)


def _follow(db, rows):
    """Insert a workflow's next steps: one waiting or running already stays, as does a
    revoked id; a finished one runs again."""
    if rows:  # an empty executemany still costs a statement's preparation
        db.executemany(FINISHED, [row[:1] for row in rows])
        db.executemany(FOLLOW, rows)
        for row in rows:
            _revoked_member(db, row)


def _fail(db, steps, state, result, tb, now):
    """The (id, name) steps that end with the task before them: a chain's later ones."""
    if steps:
        db.executemany(
            "INSERT OR IGNORE INTO task (id, name, queue, body, status, state, result,"
            " traceback, created, finished) VALUES (?, ?, '', '[]', 2, ?, ?, ?, ?, ?)",
            [(i, name, state, result, tb, now, now) for i, name in steps])


def _release_chord(db, callback, now, last):
    """The ``last`` member is done: queue the callback (see ``_released``); the next
    claim promotes it, or later if it has an eta."""
    try:
        members = db.execute("SELECT id, status, state, result FROM task WHERE chord = ?"
                             " ORDER BY seq", (callback,)).fetchall()
        if any(status != DONE or state not in FINAL for _, status, state, _ in members):
            if any(status == DONE and state not in FINAL for _, status, state, _ in members):
                # an ignored member never ends: as Celery, the callback never runs (it
                # stays PENDING), and no longer holds its members from expiry
                if db.execute("UPDATE task SET status = 2, finished = ? WHERE id = ? AND"
                              " status = 3", (now, callback)).rowcount:
                    outer = db.execute("SELECT chord FROM task WHERE id = ?",
                                       (callback,)).fetchone()
                    if outer and outer[0]:  # a member itself (nested chord, replace()):
                        _release_chord(db, outer[0], now, callback)  # so is its chord
            return
        row = db.execute("SELECT body, options FROM task WHERE id = ? AND status = 3",
                         (callback,)).fetchone()
        sender = db.execute("SELECT options FROM task WHERE id = ?", (last,)).fetchone()
    except sqlite3.OperationalError as exc:  # another program's text, not UTF-8: failing
        if "decode" not in str(exc):  # here would fail every settle of this transaction
            raise
        db.execute("UPDATE task SET status = 2, state = 'FAILURE', result = ?, finished = ?"
                   " WHERE id = ? AND status = 3", (UNREADABLE_CHORD, now, callback))
        return
    if row is None:
        return
    try:
        body, options = _released(members, *row, last, sender and sender[0])
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError) as exc:
        body, options = _unreadable(row, members, exc)
    db.execute("UPDATE task SET status = -2, body = ?, options = ? WHERE id = ?",
               (body, options, callback))


def _unreadable(row, members, exc):
    """The callback's (body, options) when a member's result cannot be read here (nested
    past the recursion limit, an int past the digit limit): it fails, naming that
    member, a failed one first. A corrupt callback row goes as it is: the claim fails it."""
    try:
        options = loads(row[1] or "{}")
        member = next((m for m in members if m[2] != "SUCCESS"), members[-1])
        why = f"its result cannot be read by the worker ({type(exc).__name__})"
        options["chord_error"] = {"id": member[0], "error": {
            "exc_type": "ValueError", "exc_module": "builtins", "exc_message": [why]}}
        return row[0], dumps(options)
    except (ValueError, TypeError, AttributeError, RecursionError):
        return row


def _released(members, body, options, last, lineage):
    """A chord callback's (body, options) as released: its members' results first, in
    the shape of its ``header``; after a failed member, that member's error, to fail with.
    As Celery's, the ``last`` member sends it: its request's parent, and root the last's
    (``lineage``, its options). Its sender's children still list it: parent_id stays."""
    args, kwargs = loads(body)
    options = loads(options or "{}")
    root = (_options(lineage) or {}).get("root_id")
    options.update(sent_by=last, root_id=options.get("root_id") or root or last)
    failed = next((m for m in members if m[2] != "SUCCESS"), None)
    results, header = {m[0]: m[3] for m in members}, options.get("header")
    missing = next(_missing(header or [], results), None)  # purged, say: loud, not None
    if failed is not None or missing is not None:
        options["chord_error"] = ({"id": missing, "error": MISSING} if failed is None else
                                  {"id": failed[0], "error": loads(failed[3] or "{}")})
    elif not options.get("immutable"):  # an si() body gets nothing
        args = [_gathered(list(results) if header is None else header, results), *args]
    return dumps([args, kwargs]), dumps(options)


def _gathered(shape, results):
    """The members' values in the header's shape: a task's id, or a list of shapes."""
    if isinstance(shape, list):
        return [_gathered(part, results) for part in shape]
    return loads(results[shape]) if results.get(shape) else None


def _missing(shape, results):
    """The ids of a header's shape that no member row holds."""
    if isinstance(shape, list):
        for part in shape:
            yield from _missing(part, results)
    elif shape not in results:
        yield shape


def _check_owner(db, path):
    """Refuse another application's SQLite file before changing anything in it. Both
    reads see one snapshot: another process may be writing the schema meanwhile."""
    db.execute("BEGIN")
    try:
        mark = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master"
                                               " WHERE type = 'table'")}
    finally:
        if db.in_transaction:  # a failed read may have ended it
            db.execute("COMMIT")
    if mark == APPLICATION_ID:
        return
    if tables and tables != {"task", "worker", "beat"}:  # else new, or miniq's before the mark
        raise ImproperlyConfigured(
            f"{path} is not a miniq database (it holds tables {', '.join(sorted(tables))});"
            " point the broker URL at a file of its own")


def _create_schema(db, path):
    version = db.execute("PRAGMA user_version").fetchone()[0]  # again: inside the transaction
    if version > SCHEMA_VERSION:
        raise ImproperlyConfigured(f"{path} was made by a newer miniq (schema {version})")
    for statement in re.sub(r"--[^\n]*", "", SCHEMA).split(";"):
        if statement.strip():
            db.execute(statement)
    have = {row[1] for row in db.execute("PRAGMA table_info(worker)")}
    for column in {"machine", "node", "tasks"} - have:  # added by schemas 2 and 3
        db.execute(f"ALTER TABLE worker ADD COLUMN {column} TEXT")
    if version < 5:  # tasks not due leave the queue, and the index that read it for them
        db.execute("DROP INDEX IF EXISTS task_due")
        db.execute("UPDATE task SET status = -2 WHERE status = 0 AND eta > created")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _worker(row):
    """A worker's row, where another program wrote a pid or time of the wrong kind, with
    one that reads as dead: pid 0, time 0."""
    pid = row.pid if isinstance(row.pid, int) and 0 < row.pid < 2 ** 31 else 0
    started, heartbeat = (t if isinstance(t, NUMBER) else 0.0 for t in row[5:7])
    return row._replace(pid=pid, started=started, heartbeat=heartbeat)


def _message(row):
    """A claimed row as a Message, with ``fault`` naming its malformed columns if any."""
    *head, text, chord, expires, priority, revoked, queue, eta = row
    options, fault = _options(text), None
    if revoked is not None and not isinstance(revoked, int):
        revoked = 9  # terminate, by SIGKILL: no valid signal
    if (type(priority) is int and type(head[3]) is int and type(eta) in NUMBER  # most rows
            and type(expires) in MAYBE_NUMBER and type(options) is dict):
        return Message(*head, options, chord, expires, priority, revoked, None, queue, eta)
    bad = [name for name, value, kind in (
        ("priority", priority, int), ("retries", head[3], int), ("eta", eta, NUMBER),
        ("expires", expires, MAYBE_NUMBER), ("options", options, dict))
        if not isinstance(value, kind)]
    if bad:
        options, revoked, fault = {}, None, f"bad {', '.join(bad)}"
    return Message(*head, options, chord, expires, priority, revoked, fault, queue, eta)


def _options(text):
    """Per-call options as the app writes them (limits, a chain of signatures), else None."""
    if not text:  # most calls: nothing to check
        return {}
    try:
        options = loads(text)
        steps = options.get("chain") or []
        shapes = [(steps, list), (options.get("soft_time_limit"), MAYBE_NUMBER),
                  (options.get("time_limit"), MAYBE_NUMBER),
                  (options.get("headers"), (dict, type(None)))]
        shapes += [(step.get(key), kind) for step in steps for key, kind in STEP.items()]
        limits = [options.get(key) for key in ("soft_time_limit", "time_limit")]
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None
    fits = all(isinstance(v, kind) for v, kind in shapes)
    return options if fits and all(v is None or v >= 0 for v in limits) else None


UNREADABLE_CHORD = ('{"exc_type": "ChordError", "exc_module": "miniq.exceptions",'
                    ' "exc_message": ["a member or the callback holds text that is not UTF-8"]}')
REVOKED_RESULT = ('{"exc_type": "TaskRevokedError", "exc_module": "miniq.exceptions",'
                  ' "exc_message": ["revoked"]}')
