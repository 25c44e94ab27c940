"""Rate limits held across every worker on the file: the SQL of each rate-limited
name's turns (the ``rate`` table and the line of tasks waiting for a turn), and the
worker's step that books them. The project's app wires it in; the core never imports it.
"""
from __future__ import annotations

from .broker import FENCE, Broker, _translated


class RateBroker(Broker):
    """The broker, with the turns of rate-limited tasks."""

    @_translated
    def book(self, worker, claimed):
        """Rate limits, across all workers: of the claimed (id, attempts, name, interval),
        the task whose turn it is starts, interval after its name's last start at least,
        and passes the next turn to the first in its name's line; if early, it waits in
        the queue until its turn. The others join the line, which no claim reads. Waiting
        is no delivery. Returns the ids of those that wait."""
        def run(db):
            now, later = self.clock(), []  # read inside the lock: starts follow commits
            for task_id, attempts, name, interval in claimed:
                due, turn = db.execute("SELECT due, next FROM rate WHERE name = ?",
                                       (name,)).fetchone() or (0.0, None)
                if turn != task_id and not _waiting(db, turn):  # none, or gone: revoked...
                    turn = _next_in_line(db, name, due) or task_id
                if turn == task_id and now >= due:
                    due = now + interval
                    turn = _next_in_line(db, name, due)
                else:
                    db.execute("UPDATE task SET status = ?, state = 'PENDING', worker = NULL,"
                               f" eta = ?, attempts = attempts - 1 {FENCE}",
                               (-2 if turn == task_id else -1, due, task_id, worker, attempts))
                    later.append(task_id)
                db.execute("INSERT OR REPLACE INTO rate VALUES (?, ?, ?)", (name, due, turn))
            return later
        return self._tx(run)

    @_translated
    def recover(self, *args, **kwargs):
        """As the broker's; then a rate limit's line whose next task is gone moves on."""
        count = super().recover(*args, **kwargs)
        self._tx(_move_lines)
        return count


def _move_lines(db):
    for name, due, turn in db.execute("SELECT * FROM rate").fetchall():
        if not _waiting(db, turn):  # the next one was revoked, purged...
            db.execute("UPDATE rate SET next = ? WHERE name = ?",
                       (_next_in_line(db, name, due), name))


def _waiting(db, task_id):
    """Whether that task is still to start: queued, or claimed and not yet run."""
    return db.execute("SELECT 1 FROM task WHERE id = ? AND status IN (-2, 0, 1)",
                      (task_id,)).fetchone() is not None


def _next_in_line(db, name, turn):
    """The first in a rate limit's line (by priority, then age) goes back to the queue,
    due at its turn; returns its id, None if the line is empty."""
    row = db.execute("SELECT id FROM task INDEXED BY task_line WHERE status = -1 AND name = ?"
                     " ORDER BY priority DESC, seq LIMIT 1", (name,)).fetchone()
    if row:
        db.execute("UPDATE task SET status = -2, eta = ? WHERE id = ?", (turn, row[0]))
    return row and row[0]


def admit(worker, messages):
    """The claimed messages free to start now: the broker starts a rate-limited one
    only in its turn, and puts back the others."""
    rates = worker.rates
    limited = [m for m in messages if m.name in rates]
    if not limited:
        return messages
    later = worker._db(lambda: worker.broker.book(
        worker.id, [(m.id, m.attempts, m.name, rates[m.name]) for m in limited]))
    if later is None:  # no booking: back to the queue, as from a lost worker
        later = [m.id for m in limited]
        for message in limited:
            worker._put_back(message)
    worker.want = worker.want or bool(later)  # their children are still idle
    return [m for m in messages if m.id not in later]
