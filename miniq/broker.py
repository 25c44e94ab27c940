"""Every SQL statement miniq runs: schema, enqueue, claim, settle, heartbeat,
recover, sweep. Returns plain values; never imports task or worker code.

A task is one row from submission to result. ``status`` is the lifecycle the
code relies on (queued, running, done); ``state`` is what users see (PENDING,
STARTED, PROGRESS, SUCCESS, ...), so a task may report any custom state while
it runs without confusing the claim or the recovery.
"""
import json
import os
import random
import re
import sqlite3
import threading
import time
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from .exceptions import ImproperlyConfigured

QUEUED, RUNNING, DONE, WAITING = 0, 1, 2, 3  # WAITING: a chord callback

SCHEMA = """
CREATE TABLE IF NOT EXISTS task (
    seq       INTEGER PRIMARY KEY,          -- submission order: FIFO among equals
    id        TEXT NOT NULL UNIQUE,
    name      TEXT NOT NULL,
    queue     TEXT NOT NULL,
    priority  INTEGER NOT NULL DEFAULT 0,   -- higher runs first
    body      TEXT NOT NULL,                -- JSON [args, kwargs]
    options   TEXT,                         -- JSON of per-call options, or NULL
    status    INTEGER NOT NULL DEFAULT 0,   -- 0 queued, 1 running, 2 done, 3 waiting
    state     TEXT NOT NULL DEFAULT 'PENDING',
    eta       REAL NOT NULL DEFAULT 0,      -- not before (unix time)
    expires   REAL,
    retries   INTEGER NOT NULL DEFAULT 0,   -- Task.retry() count
    attempts  INTEGER NOT NULL DEFAULT 0,   -- deliveries of this run; fences settle
    worker    TEXT,                         -- who holds it while running
    lease     REAL,                         -- reclaimable after this
    revoked   INTEGER,                      -- NULL, 0 aborted or revoked, >0 kill with this signal
    result    TEXT,                         -- JSON value, exception info, or meta
    traceback TEXT,
    created   REAL NOT NULL,
    started   REAL,
    finished  REAL,
    chord     TEXT                          -- the callback this task is a chord member of
);
CREATE INDEX IF NOT EXISTS task_queued ON task(queue, priority DESC, seq) WHERE status = 0;
CREATE INDEX IF NOT EXISTS task_due ON task(queue, eta) WHERE status = 0;
CREATE INDEX IF NOT EXISTS task_running ON task(worker) WHERE status = 1;
CREATE INDEX IF NOT EXISTS task_done ON task(finished) WHERE status = 2;
CREATE INDEX IF NOT EXISTS task_chord ON task(chord) WHERE chord IS NOT NULL;
CREATE TABLE IF NOT EXISTS worker (
    id          TEXT PRIMARY KEY,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    concurrency INTEGER NOT NULL,
    queues      TEXT NOT NULL,
    started     REAL NOT NULL,
    heartbeat   REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS beat (                -- one row per periodic run sent
    entry TEXT NOT NULL,
    slot  REAL NOT NULL,                         -- the run's scheduled time
    PRIMARY KEY (entry, slot)
) WITHOUT ROWID;
"""
SCHEMA_VERSION = 1
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35)
LOCK_RETRIES = 20
# One settle row: (id, attempts, state, result, traceback, eta, body, chord, follow, failed):
# follow holds message rows to send next (a chain), failed (id, name) pairs that fail with it.
Outcome = Tuple[str, int, Optional[str], Optional[str], Optional[str], float, Optional[str],
                Optional[str], Sequence[tuple], Sequence[Tuple[str, str]]]
INSERT = ("INSERT INTO task (id, name, queue, priority, body, options, eta, expires, created,"
          " chord, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
CLAIM_COLUMNS = "id, name, body, retries, attempts, options, chord, expires, priority, seq"


def path_from_url(url: str) -> str:
    """``sqlite:///rel.db`` → ``rel.db``; ``sqlite:////abs.db`` → ``/abs.db``."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ImproperlyConfigured(
            f"broker URL {url!r} is not supported: miniq needs a SQLite file URL "
            "such as sqlite:///proj.db (relative) or sqlite:////var/lib/proj.db (absolute)")
    return url[len(prefix):]


def file_inode(path: str) -> Optional[int]:
    """The file's identity, None when it is gone: a change means deleted or replaced."""
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _retrying(fn: Callable):
    """Call fn(), retrying with growing jitter while SQLite reports the file locked."""
    for attempt in range(LOCK_RETRIES):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if ("locked" not in text and "busy" not in text) or attempt == LOCK_RETRIES - 1:
                raise
            time.sleep(random.uniform(0.005, 0.02) * (attempt + 1))


class Broker:
    """One SQLite file as queue and result store; one connection per process and thread."""

    def __init__(self, path: str, durable: bool = False, clock: Callable[[], float] = time.time):
        self.path = os.path.abspath(path)
        self.synchronous = "FULL" if durable else "NORMAL"
        self.clock = clock
        self._local = threading.local()

    # -- connections and transactions ------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection, reopened after a fork (a connection never crosses
        one) and, between transactions, once the file was deleted or replaced: else a
        long-lived producer would go on writing into a file nobody reads."""
        local = self._local
        if getattr(local, "pid", None) == os.getpid():
            if local.conn.in_transaction or file_inode(self.path) == local.inode:
                return local.conn
            local.pid = None  # stays closed until a connect succeeds
            local.conn.close()
        local.conn = self._connect()
        local.pid, local.inode = os.getpid(), file_inode(self.path)
        return local.conn

    def _connect(self) -> sqlite3.Connection:
        folder = os.path.dirname(self.path)
        if not os.path.isdir(folder):
            raise ImproperlyConfigured(f"database folder {folder} does not exist")
        if not os.path.exists(self.path):
            try:  # owner-only: messages may carry secrets
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise ImproperlyConfigured(f"cannot create database {self.path}: {exc.strerror}") from None
        if not os.access(self.path, os.W_OK) or not os.access(folder, os.W_OK):
            raise ImproperlyConfigured(
                f"database {self.path} is not writable (the file and its folder must be)")
        try:
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
            db.execute("PRAGMA busy_timeout = 10000")
            mode = _retrying(lambda: db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            if mode.lower() != "wal":
                raise ImproperlyConfigured(
                    f"database {self.path} could not use WAL journal mode (got {mode!r}); "
                    "keep it on a local disk, not a network share")
            db.execute(f"PRAGMA synchronous = {self.synchronous}")
            db.execute("PRAGMA journal_size_limit = 67108864")
            # Workers checkpoint at each heartbeat, off the request path; this is the net.
            db.execute("PRAGMA wal_autocheckpoint = 10000")
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                self._with(db, lambda: _create_schema(db))
        except sqlite3.DatabaseError as exc:
            raise ImproperlyConfigured(f"cannot use database {self.path}: {exc}") from None
        return db

    def _with(self, db: sqlite3.Connection, fn: Callable):
        """Run fn() in one BEGIN IMMEDIATE transaction, retrying while the file is locked."""
        _retrying(lambda: db.execute("BEGIN IMMEDIATE"))
        try:
            out = fn()
            db.execute("COMMIT")
            return out
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _tx(self, fn: Callable):
        return self._with(self.db, fn)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local = threading.local()

    # -- producers ---------------------------------------------------------

    def enqueue(self, rows: Sequence[tuple]) -> None:
        """Insert messages, all or none: (id, name, queue, priority, body, options, eta,
        expires, created, chord, status)."""
        if len(rows) == 1:  # a lone INSERT is its own atomic write transaction
            _retrying(lambda: self.db.execute(INSERT, rows[0]))
        else:
            self._tx(lambda: self.db.executemany(INSERT, rows))

    def state(self, task_id: str) -> Optional[tuple]:
        """(status, state, result, traceback, name) of one task, or None if unknown."""
        return self.db.execute(
            "SELECT status, state, result, traceback, name FROM task WHERE id = ?",
            (task_id,)).fetchone()

    def data_version(self) -> int:
        """Changes whenever another connection commits; costs microseconds."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def revoke(self, ids: Iterable[str], signum: Optional[int]) -> None:
        """Queued tasks end REVOKED now; running ones are flagged (killed if signum)."""
        ids = list(ids)
        now, mark = self.clock(), (signum or 0)

        def run():
            for task_id in ids:
                queued = self.db.execute("SELECT chord FROM task WHERE id = ? AND status = 0",
                                         (task_id,)).fetchone()
                self.db.execute(
                    "UPDATE task SET status = 2, state = 'REVOKED', revoked = 0, finished = ?,"
                    " result = ? WHERE id = ? AND status = 0", (now, REVOKED_RESULT, task_id))
                if queued and queued[0]:  # a chord member: its callback fails now, not never
                    self._release_chord(queued[0], now)
                self.db.execute("UPDATE task SET revoked = MAX(COALESCE(revoked, 0), ?)"
                                " WHERE id = ? AND status = 1", (mark, task_id))
        self._tx(run)

    def abort(self, task_id: str) -> None:
        self._tx(lambda: self.db.execute(
            "UPDATE task SET revoked = COALESCE(revoked, 0) WHERE id = ? AND status < 2",
            (task_id,)))

    def is_aborted(self, task_id: str) -> bool:
        row = self.db.execute("SELECT revoked FROM task WHERE id = ?", (task_id,)).fetchone()
        return bool(row) and row[0] is not None

    def forget(self, task_id: str) -> None:
        self._tx(lambda: self.db.execute("DELETE FROM task WHERE id = ? AND status = 2", (task_id,)))

    def update_state(self, task_id: str, state: str, meta: Optional[str]) -> None:
        """A running task reports a custom state and meta; the final outcome overwrites it."""
        self._tx(lambda: self.db.execute(
            "UPDATE task SET state = ?, result = ? WHERE id = ? AND status = 1",
            (state, meta, task_id)))

    # -- workers -----------------------------------------------------------

    def claim(self, worker: str, queues: Sequence[str], n: int, lease: float,
              outcomes: Sequence[Outcome] = ()) -> List[tuple]:
        """Settle outcomes, then claim up to n due tasks, in one transaction: rows of
        CLAIM_COLUMNS, highest priority first, then oldest."""
        now = self.clock()

        def run():
            if outcomes:
                self._settle(worker, outcomes, now)
            if n <= 0:
                return []
            marks = ",".join("?" * len(queues))
            pick = ("SELECT seq FROM task INDEXED BY task_queued"
                    f" WHERE status = 0 AND queue IN ({marks}) AND eta <= ?"
                    " ORDER BY priority DESC, seq LIMIT ?")
            update = ("UPDATE task SET status = 1, state = 'STARTED', worker = ?, lease = ?,"
                      " started = ?, attempts = attempts + 1 WHERE seq IN ")
            args = (worker, now + lease, now)
            if HAS_RETURNING:
                rows = self.db.execute(f"{update}({pick}) RETURNING {CLAIM_COLUMNS}",
                                       (*args, *queues, now, n)).fetchall()
            else:
                seqs = [r[0] for r in self.db.execute(pick, (*queues, now, n))]
                seq_marks = ",".join("?" * len(seqs))
                self.db.execute(f"{update}({seq_marks})", (*args, *seqs))
                rows = self.db.execute(f"SELECT {CLAIM_COLUMNS} FROM task WHERE seq IN ({seq_marks})",
                                       seqs).fetchall()
            rows.sort(key=lambda r: (-r[8], r[9]))
            return rows
        return self._tx(run)

    def _settle(self, worker: str, outcomes: Sequence[Outcome], now: float) -> None:
        """Write outcomes, each only if this worker still holds that delivery (the fence)."""
        fence = "WHERE id = ? AND worker = ? AND attempts = ? AND status = 1"
        for task_id, attempts, state, result, tb, eta, body, chord, follow, failed in outcomes:
            key = (task_id, worker, attempts)
            if state is None:  # success with ignore_result: nothing to keep
                self.db.execute(f"DELETE FROM task {fence}", key)
            elif state == "RETRY":
                self.db.execute(
                    "UPDATE task SET status = 0, state = 'RETRY', retries = retries + 1,"
                    " attempts = 0, worker = NULL, eta = ?, result = ?, traceback = ?,"
                    f" body = COALESCE(?, body) {fence}", (eta, result, tb, body, *key))
            elif state == "PENDING":  # put back; the delivery still counts towards the cap
                self.db.execute(f"UPDATE task SET status = 0, state = 'PENDING', worker = NULL {fence}",
                                key)
            elif self.db.execute("UPDATE task SET status = 2, state = ?, result = ?, traceback"
                                 f" = ?, finished = ? {fence}", (state, result, tb, now, *key)).rowcount:
                self.db.executemany(INSERT, follow)
                self.db.executemany(
                    "INSERT INTO task (id, name, queue, body, status, state, result, traceback,"
                    " created, finished) VALUES (?, ?, '', '[]', 2, ?, ?, ?, ?, ?)",
                    [(i, name, state, result, tb, now, now) for i, name in failed])
                if chord:
                    self._release_chord(chord, now)

    def _release_chord(self, callback: str, now: float) -> None:
        """The last member is done: queue the callback with their results, or fail it."""
        members = self.db.execute("SELECT id, status, state, result FROM task WHERE chord = ?"
                                  " ORDER BY seq", (callback,)).fetchall()
        if any(status != DONE for _, status, _, _ in members):
            return
        failed = next((m for m in members if m[2] != "SUCCESS"), None)
        if failed is not None:
            info = json.loads(failed[3]) if failed[3] else {}
            cause = f"{info.get('exc_type', failed[2])}{tuple(info.get('exc_message') or ())!r}"
            error = json.dumps({"exc_type": "ChordError", "exc_module": "miniq.exceptions",
                                "exc_message": [f"Dependency {failed[0]} raised {cause}"]})
            self.db.execute("UPDATE task SET status = 2, state = 'FAILURE', result = ?,"
                            " finished = ? WHERE id = ? AND status = 3", (error, now, callback))
            return
        row = self.db.execute("SELECT body, options FROM task WHERE id = ? AND status = 3",
                              (callback,)).fetchone()
        if row is not None:
            args, kwargs = json.loads(row[0])
            if not json.loads(row[1] or "{}").get("immutable"):  # an si() body gets nothing
                args = [[json.loads(m[3]) if m[3] is not None else None for m in members], *args]
            self.db.execute("UPDATE task SET status = 0, body = ? WHERE id = ?",
                            (json.dumps([args, kwargs]), callback))

    def settle(self, worker: str, outcomes: Sequence[Outcome]) -> None:
        if outcomes:
            self.claim(worker, (), 0, 0.0, outcomes)

    def next_eta(self, queues: Sequence[str]) -> Optional[float]:
        """When the earliest queued task on these queues becomes due."""
        marks = ",".join("?" * len(queues))
        return self.db.execute(f"SELECT MIN(eta) FROM task WHERE status = 0 AND queue IN ({marks})",
                               tuple(queues)).fetchone()[0]

    def register(self, worker: str, host: str, pid: int, concurrency: int,
                 queues: Sequence[str]) -> None:
        now = self.clock()
        self._tx(lambda: self.db.execute(
            "INSERT OR REPLACE INTO worker VALUES (?, ?, ?, ?, ?, ?, ?)",
            (worker, host, pid, concurrency, ",".join(queues), now, now)))

    def unregister(self, worker: str) -> None:
        self._tx(lambda: self.db.execute("DELETE FROM worker WHERE id = ?", (worker,)))

    def heartbeat(self, worker: str, lease: float) -> List[Tuple[str, int]]:
        """Prove this worker alive, extend its leases; return (id, signal) to terminate."""
        now = self.clock()

        def run():
            self.db.execute("UPDATE worker SET heartbeat = ? WHERE id = ?", (now, worker))
            self.db.execute("UPDATE task SET lease = ? WHERE worker = ? AND status = 1",
                            (now + lease, worker))
        self._tx(run)
        return self.db.execute(
            "SELECT id, revoked FROM task WHERE worker = ? AND status = 1 AND revoked > 0",
            (worker,)).fetchall()

    def checkpoint(self) -> None:
        """Copy the WAL into the file without waiting on readers: keeps it small."""
        self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def workers(self) -> List[tuple]:
        """(id, host, pid, concurrency, queues, started, heartbeat) of registered workers."""
        return self.db.execute("SELECT * FROM worker ORDER BY started").fetchall()

    def recover(self, dead: Sequence[str], max_deliveries: int, lost_result: str) -> int:
        """Requeue tasks of dead workers or lapsed leases; fail those delivered too often."""
        now = self.clock()
        marks = ",".join("?" * len(dead))
        lost = f"status = 1 AND (lease < ? OR worker IN ({marks}))"

        def run():
            self.db.execute(f"DELETE FROM worker WHERE id IN ({marks})", tuple(dead))
            self.db.execute(
                "UPDATE task SET status = 2, state = 'FAILURE', result = ?, finished = ?,"
                f" traceback = NULL WHERE {lost} AND attempts >= ?",
                (lost_result, now, now, *dead, max_deliveries))
            return self.db.execute(
                f"UPDATE task SET status = 0, state = 'PENDING', worker = NULL WHERE {lost}",
                (now, *dead)).rowcount
        return self._tx(run)

    def claim_beat_slot(self, entry: str, slot: float) -> bool:
        """True for the one caller, among any number of beats, that may send this run."""
        def run():
            self.db.execute("DELETE FROM beat WHERE entry = ? AND slot < ?", (entry, slot - 86400))
            return self.db.execute("INSERT OR IGNORE INTO beat VALUES (?, ?)",
                                   (entry, slot)).rowcount == 1
        return self._tx(run)

    # -- inspection and control ----------------------------------------------

    def purge(self, queues: Optional[Sequence[str]] = None) -> int:
        """Delete queued (not running, not finished) tasks; all queues if none given."""
        where, args = "status = 0", ()
        if queues:
            where += f" AND queue IN ({','.join('?' * len(queues))})"
            args = tuple(queues)
        return self._tx(lambda: self.db.execute(f"DELETE FROM task WHERE {where}", args).rowcount)

    def counts(self) -> List[tuple]:
        """(queue, state, count) for every queue and state present."""
        return self.db.execute("SELECT queue, state, COUNT(*) FROM task"
                               " GROUP BY queue, state ORDER BY queue, state").fetchall()

    def active(self) -> List[tuple]:
        """(id, name, worker, started, state, body) of running tasks, oldest first."""
        return self.db.execute("SELECT id, name, worker, started, state, body FROM task"
                               " WHERE status = 1 ORDER BY started").fetchall()

    def scheduled(self) -> List[tuple]:
        """(id, name, queue, eta, body) of queued tasks not yet due, soonest first."""
        return self.db.execute("SELECT id, name, queue, eta, body FROM task WHERE status = 0"
                               " AND eta > ? ORDER BY eta", (self.clock(),)).fetchall()

    def queued(self, queues: Optional[Sequence[str]] = None) -> int:
        """How many tasks purge would delete: queued ones, in all queues if none given."""
        where, args = "status = 0", ()
        if queues:
            where += f" AND queue IN ({','.join('?' * len(queues))})"
            args = tuple(queues)
        return self.db.execute(f"SELECT COUNT(*) FROM task WHERE {where}", args).fetchone()[0]

    def sweep(self, before: float, limit: int = 1000) -> int:
        """Delete up to limit results finished before the given time."""
        return self._tx(lambda: self.db.execute(
            "DELETE FROM task WHERE seq IN (SELECT seq FROM task WHERE status = 2"
            " AND finished < ? LIMIT ?)", (before, limit)).rowcount)


def _create_schema(db: sqlite3.Connection) -> None:
    for statement in re.sub(r"--[^\n]*", "", SCHEMA).split(";"):
        if statement.strip():
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


REVOKED_RESULT = ('{"exc_type": "TaskRevokedError", "exc_module": "miniq.exceptions",'
                  ' "exc_message": ["revoked"]}')
