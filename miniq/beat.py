"""Beat: sends the periodic tasks of ``app.conf.beat_schedule`` when due. Any
number of beats may share a file: the database lets one send each run.
"""
import logging
import math
import time
from datetime import datetime
from typing import Callable

from .exceptions import ImproperlyConfigured, MiniqError, OperationalError
from .result import zone
from .schedules import crontab, maybe_schedule
from .task import emit

log = logging.getLogger("celery.beat")  # Celery's name: a project's logging config holds
# relative: miniq's intervals always run at multiples of themselves (see schedules)
ENTRY_KEYS = {"task", "schedule", "args", "kwargs", "options", "relative"}


class Beat:
    """Call ``tick()`` now and then (``run()`` does); it sends what is due."""

    def __init__(self,
                 app,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.app = app
        self.clock = clock
        self.sleep = sleep
        self.tz = zone(app.conf)
        self.deadline = app.conf.get("beat_cron_starting_deadline")  # as Celery's: crontabs only
        if self.deadline is not None and (isinstance(self.deadline, bool) or not isinstance(
                self.deadline, (int, float)) or not 0 <= self.deadline < float("inf")):
            raise ImproperlyConfigured("beat_cron_starting_deadline must be None or a number of"
                                       f" seconds, not {self.deadline!r}")
        configured = app.conf.beat_schedule or {}
        if not isinstance(configured, dict):
            raise ImproperlyConfigured("beat_schedule must be a dict of entries by name,"
                                       f" not {type(configured).__name__}")
        self.entries = {name: self._checked(name, entry) for name, entry in configured.items()}
        self.next = {}  # entry name -> when it is next due
        self.kept = False  # whether the runs of entries no longer scheduled are forgotten

    def _checked(self, name, entry):
        """The entry with its schedule made, if a run of it can be sent: the message is
        built (not sent) and the next run found now, not when the run is due."""
        try:
            unknown = set(entry) - ENTRY_KEYS
            if unknown:  # a misspelt key would be ignored: Celery's entry refuses it too
                raise TypeError(f"{', '.join(map(repr, sorted(unknown, key=str)))}: an entry"
                                f" takes {', '.join(sorted(ENTRY_KEYS))}")
            if entry.get("relative", True) is not True:  # Celery's default, not miniq's
                raise TypeError(f"relative={entry['relative']!r}: miniq's intervals always run"
                                " at multiples of themselves since the epoch (relative=True)")
            every = maybe_schedule(entry["schedule"])
            if type(every).__module__.partition(".")[0] == "celery":  # an import not swapped
                raise TypeError(f"its schedule is Celery's {every!r}: miniq's beat reads"
                                " miniq.schedules' crontab and schedule")
            if not hasattr(every, "next_after"):
                raise TypeError(f"its schedule must be seconds, a timedelta, a schedule or a"
                                f" crontab, not {every!r}")
            if hasattr(every, "is_due"):  # a Celery-style schedule's own rule: not ignored
                raise TypeError(f"{every!r} has is_due: miniq's beat asks a schedule for"
                                " next_after and last_at_or_before, never is_due")
            if every.next_after(self.clock(), self.tz) is None:
                raise ValueError("its schedule has no run in the next thirty years")
            checked = dict(entry, schedule=every)
            args, kwargs, options = self._call(checked)
            self.app.message_row(checked["task"], args, kwargs, **options)
            task = self.app.tasks.get(checked["task"])
            if task is not None:  # as its call checks them: refused now, not at each run
                task._check_arguments(args, kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever it is, it is this entry's
            raise ImproperlyConfigured(f"beat_schedule entry {name!r}: {_said(exc)}") from None
        return checked

    @staticmethod
    def _call(entry):
        """(args, kwargs, options) of a run, marked as Celery 5.7's beat marks its runs."""
        options = dict(entry.get("options") or {})
        options["headers"] = {**(options.get("headers") or {}), "celery_beat_task": True}
        return entry.get("args", ()), entry.get("kwargs"), options

    def _send(self, name, entry):
        """Send a run as Celery's beat does: a registered task by its own apply_async (an
        override of it runs; eager, it runs here), any other by name. A failure is
        logged: it is this run's, and the other entries go on."""
        args, kwargs, options = self._call(entry)
        task = self.app.tasks.get(entry["task"])
        try:
            if task is None:
                self.app.send_task(entry["task"], args, kwargs, **options)
            else:
                task.apply_async(args, kwargs, **options)
        except Exception as exc:  # noqa: BLE001 - as Celery's beat: logged, beat goes on
            log.error("Scheduler: sending %s (%s) failed: %s", name, entry["task"], exc)
            return
        log.info("Scheduler: Sending due task %s (%s)", name, entry["task"])

    def _late(self, every, slot, now):
        """A crontab's run missed by more than beat_cron_starting_deadline: not sent."""
        return self.deadline is not None and isinstance(every, crontab) and (
            now - slot > self.deadline)

    def tick(self) -> float:
        """Send every run due now; return seconds until the next one is due."""
        now = self.clock()
        if not self.kept:  # as Celery's beat drops them from its file: one put back is new
            self.app.broker.keep_beat_entries(list(self.entries))
            self.kept = True
        for name, entry in self.entries.items():
            every = entry["schedule"]
            if self.next.get(name, now) <= now:  # a run missed while down fires once
                slot = every.last_at_or_before(now, self.tz)
                if slot is not None and self.app.broker.claim_beat_slot(
                        name, slot, self._late(every, slot, now), since=now):
                    self._send(name, entry)
                self.next[name] = every.next_after(now, self.tz) or math.inf  # none for years
        if not self.next:
            return 60.0
        return max(0.0, min(self.next.values()) - now)

    def run(self) -> None:
        """Tick until stopped; a database error is logged and tried again, with backoff."""
        count, pause, told = len(self.entries), 0.0, False
        log.info("beat: %d entr%s", count, "y" if count == 1 else "ies")
        emit("_beat_started", self, False)  # as Celery's beat_init
        while True:
            try:
                wait, pause = self.tick(), 0.0
                for name, at in () if told else self.next.items():  # when each runs next
                    when = datetime.fromtimestamp(min(at, 253402214400), self.tz)  # <= 9999
                    log.info("beat: %s (%s) next at %s", name, self.entries[name]["task"],
                             when.isoformat(" ", "seconds"))
                told = True
            except (MiniqError, OperationalError, OSError) as exc:
                pause = min(5.0, max(0.1, 2 * pause))
                log.error("beat: database error (retrying in %gs): %s", pause, exc)
                wait = pause
            self.sleep(min(wait, 60.0))


def _said(exc):
    """An error as a line."""
    if isinstance(exc, KeyError):
        return f"it has no {exc.args[0]!r}"
    return str(exc) if isinstance(exc, TypeError) else f"{type(exc).__name__}: {exc}"
