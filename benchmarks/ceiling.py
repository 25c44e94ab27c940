"""The ceiling: the bare pipeline miniq is built on, from the standard library only.

    python benchmarks/ceiling.py [n] [children]     # prints one JSON line

A batch claim from a SQLite file (WAL, synchronous=NORMAL, as miniq's) for the idle
children and AHEAD tasks a child more (as miniq's default prefetch), pipes to N child
processes running a no-op, and a batch settle, with none of miniq's safety:
no leases, fences or delivery counts, no time limits, no heartbeats, no wake-up
hints (the manager and the reader poll ``PRAGMA data_version`` every 0.5 ms).
What it measures is what this machine allows for that shape of work; bench.py
reports miniq's drain and round trip as a fraction of it, from the same run.

    drain_per_s   n no-op tasks queued one by one, from the start of the manager's
                  command (a fresh interpreter, as a worker's) until every result is
                  read, one after the other
    drain_cpu_us_a_task  the CPU that drain took a task: manager, children, reader
    rtt_p50/95/99_ms  insert one task, poll until its result is stored, one at a time
"""
import json
import multiprocessing
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing.connection import wait

SCHEMA = ("CREATE TABLE IF NOT EXISTS q (id INTEGER PRIMARY KEY, body TEXT NOT NULL,"
          " status INTEGER NOT NULL DEFAULT 0, result TEXT);"
          "CREATE INDEX IF NOT EXISTS q_ready ON q(id) WHERE status = 0")
POLL = 0.0005
AHEAD = 4  # tasks claimed ahead per child: miniq's default worker_prefetch_multiplier


def connect(path):
    db = sqlite3.connect(path, isolation_level=None, timeout=10)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def quiet():
    """Default signal handling: not the handlers of the process that started us."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def child(conn):
    """Run the no-op on each body until told to stop."""
    quiet()
    while True:
        body = conn.recv()
        if body is None:
            return
        args = json.loads(body)
        conn.send(json.dumps(args[0] if args else None))


def manager(path, n_children, stop):
    """Claim rows for the idle children and AHEAD a child more, as miniq's worker does
    by default; hand them out; settle while children run, half the reserve at a time."""
    quiet()
    db = connect(path)
    pipes = []
    for _ in range(n_children):
        ours, theirs = multiprocessing.Pipe()
        multiprocessing.Process(target=child, args=(theirs,), daemon=True).start()
        pipes.append(ours)
    idle, busy, done, reserve = list(pipes), {}, [], []
    seen, ahead = None, AHEAD * n_children
    while not stop.is_set():
        while idle and reserve:
            task_id, body = reserve.pop(0)
            conn = idle.pop()
            busy[conn] = task_id
            conn.send(body)
        if done and (idle or len(done) >= max(1, ahead // 2)):
            db.execute("BEGIN IMMEDIATE")
            db.executemany("UPDATE q SET status = 2, result = ? WHERE id = ?", done)
            db.execute("COMMIT")
            done = []
            seen = None  # look again at once: more may be waiting
        version = db.execute("PRAGMA data_version").fetchone()[0]
        room = len(idle) + ahead - len(reserve)
        if room and (idle or not reserve) and version != seen:
            seen = version
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute("SELECT id, body FROM q WHERE status = 0 ORDER BY id LIMIT ?",
                              (room,)).fetchall()
            db.executemany("UPDATE q SET status = 1 WHERE id = ?", [(r[0],) for r in rows])
            db.execute("COMMIT")
            reserve += rows
            if rows:
                seen = None
            continue
        for conn in wait(list(busy), POLL if not (done and not busy) else 0):
            done.append((conn.recv(), busy.pop(conn)))
            idle.append(conn)
    for conn in pipes:
        conn.send(None)


def result_of(db, task_id, timeout=10):
    """Poll one task's row until its result is stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute("SELECT result FROM q WHERE id = ? AND status = 2", (task_id,)).fetchone()
        if row:
            return row[0]
        time.sleep(POLL)
    raise TimeoutError(f"task {task_id} not done in {timeout}s")


def group_cpu(pgid):
    """{pid: user + system CPU seconds} of each live process in a process group (Linux)."""
    spent, tick = {}, os.sysconf("SC_CLK_TCK")
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:
            spent[int(pid)] = (int(fields[11]) + int(fields[12])) / tick
    return spent


def cpu_a_task(pgid, reader_since, n):
    """CPU µs a task (Linux; None elsewhere): the process group's leader (the manager),
    its other processes (the children), and this process (the reader) since os.times()
    was reader_since. Live processes only, in 10 ms ticks."""
    if not os.path.isdir("/proc"):
        return None
    spent = group_cpu(pgid)
    now = os.times()
    roles = {"manager": spent.pop(pgid, 0.0), "children": sum(spent.values()),
             "reader": now.user + now.system - reader_since.user - reader_since.system}
    return {role: round(seconds / n * 1e6) for role, seconds in roles.items()}


def measure(n=10000, n_children=2, trips=300):
    folder = tempfile.mkdtemp(prefix="miniq-ceiling-")
    path = os.path.join(folder, "ceiling.db")
    db = connect(path)
    db.executescript(SCHEMA)
    ids = [db.execute("INSERT INTO q (body) VALUES (?)", (json.dumps([i]),)).lastrowid
           for i in range(n)]  # one by one, each its own commit, as delay() sends them
    started, reader = time.perf_counter(), os.times()
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve", path,
                             str(n_children)], start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        for task_id in ids:  # every result, in order, as bench.py reads each system's
            result_of(db, task_id, timeout=deadline - time.monotonic())
        out = {"drain_per_s": round(n / (time.perf_counter() - started)), "drain_tasks": n,
               "drain_cpu_us_a_task": cpu_a_task(proc.pid, reader, n)}
        latencies = []
        for i in range(20 + trips):  # 20 to warm up, not counted
            t = time.perf_counter()
            result_of(db, db.execute("INSERT INTO q (body) VALUES (?)", (json.dumps([i]),)).lastrowid)
            latencies.append((time.perf_counter() - t) * 1000)
        q = statistics.quantiles(latencies[20:], n=100)
        out.update(rtt_p50_ms=round(q[49], 2), rtt_p95_ms=round(q[94], 2),
                   rtt_p99_ms=round(q[98], 2), children=n_children)
        return out
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the manager and its children
        proc.wait()
        db.close()
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:  # the manager's command: serve until killed
        manager(sys.argv[2], int(sys.argv[3]), threading.Event())
    else:
        print(json.dumps(measure(*map(int, sys.argv[1:3]))))
