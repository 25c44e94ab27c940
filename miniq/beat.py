"""Beat: sends the periodic tasks of ``app.conf.beat_schedule`` when due. Any
number of beats may share a file: the database lets one send each run.
"""
import logging
import time
from datetime import timezone
from typing import Callable

from .exceptions import ImproperlyConfigured
from .schedules import maybe_schedule

log = logging.getLogger("miniq.beat")


def _zone(name):
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
        configured = app.conf.beat_schedule or {}
        self.entries = {name: dict(entry, schedule=maybe_schedule(entry["schedule"]))
                        for name, entry in configured.items()}
        self.next = {}  # entry name -> when it is next due

    def tick(self) -> float:
        """Send every run due now; return seconds until the next one is due."""
        now = self.clock()
        for name, entry in self.entries.items():
            every = entry["schedule"]
            if self.next.get(name, now) <= now:  # first tick: a run missed while down fires once
                slot = every.last_at_or_before(now, self.tz)
                if slot is not None and self.app.broker.claim_beat_slot(name, slot):
                    self.app.send_task(entry["task"],
                                       entry.get("args", ()),
                                       entry.get("kwargs", {}),
                                       **entry.get("options", {}))
                    log.info("Scheduler: sending due task %s (%s)", name, entry["task"])
                self.next[name] = every.next_after(now, self.tz)
        if not self.next:
            return 60.0
        return max(0.0, min(self.next.values()) - now)

    def run(self) -> None:
        count = len(self.entries)
        log.info("beat: %d entr%s", count, "y" if count == 1 else "ies")
        while True:
            self.sleep(min(self.tick(), 60.0))
