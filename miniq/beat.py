"""Beat: sends the periodic tasks of ``app.conf.beat_schedule`` when due. Any
number of beats may share a file: the database lets one send each run.
"""
import logging
import time
from datetime import timedelta, timezone
from typing import Callable, Dict, Optional

from .exceptions import ImproperlyConfigured
from .schedules import schedule

log = logging.getLogger("miniq.beat")


def _zone(name: str):
    """app.conf.timezone as a tzinfo; "UTC" needs no time zone database."""
    if name.upper() == "UTC":
        return timezone.utc
    try:
        from zoneinfo import ZoneInfo
        return ZoneInfo(name)
    except Exception:
        raise ImproperlyConfigured(f"unknown timezone {name!r} in app.conf.timezone") from None


class Beat:
    """Call ``tick()`` now and then (``run()`` does); it sends what is due."""

    def __init__(self,
                 app,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.app = app
        self.clock = clock
        self.sleep = sleep
        self.tz = _zone(app.conf.timezone or "UTC")
        self.entries: Dict[str, dict] = {}
        configured = app.conf.beat_schedule or {}
        for name, entry in configured.items():
            every = entry["schedule"]
            if isinstance(every, (int, float, timedelta)):
                every = schedule(every)
            self.entries[name] = dict(entry, schedule=every)
        self.next: Dict[str, Optional[float]] = {}

    def tick(self) -> float:
        """Send every run due now; return seconds until the next one is due."""
        now = self.clock()
        for name, entry in self.entries.items():
            every = entry["schedule"]
            due = self.next.get(name, now)  # first tick: a run missed while down fires once
            if due is not None and due <= now:
                slot = every.last_at_or_before(now, self.tz)
                if slot is not None and self.app.broker.claim_beat_slot(name, slot):
                    self.app.send_task(entry["task"],
                                       entry.get("args", ()),
                                       entry.get("kwargs", {}),
                                       **entry.get("options", {}))
                    log.info("Scheduler: sending due task %s (%s)", name, entry["task"])
                self.next[name] = every.next_after(now, self.tz)
        upcoming = [t for t in self.next.values() if t is not None]
        if not upcoming:
            return 60.0
        return max(0.0, min(upcoming) - now)

    def run(self) -> None:
        count = len(self.entries)
        log.info("beat: %d entr%s", count, "y" if count == 1 else "ies")
        while True:
            self.sleep(min(self.tick(), 60.0))
