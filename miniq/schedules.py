"""When periodic tasks are due: fixed intervals and ``crontab``, in Celery's
names and string syntax. Sending them is beat.py's job, not this module's.
"""
from datetime import datetime, timedelta, tzinfo
from typing import Any, Optional, Union

DAYS = "sun mon tue wed thu fri sat".split()
MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
DAY_NAMES = dict(zip(DAYS, range(7)))
MONTH_NAMES = dict(zip(MONTHS, range(1, 13)))


def maybe_schedule(every: Any) -> Any:
    """A schedule for seconds or a timedelta, as Celery's; a schedule as it is."""
    return schedule(every) if isinstance(every, (int, float, timedelta)) else every


class schedule:
    """Every ``run_every`` seconds (or timedelta), at multiples of it since the epoch,
    so that every beat on the same file computes the same run times."""

    def __init__(self, run_every: Union[float, timedelta]):
        seconds = run_every
        if isinstance(run_every, timedelta):
            seconds = run_every.total_seconds()
        if isinstance(seconds, bool) or not 0 < seconds < float("inf"):  # nan too
            raise ValueError(f"schedule: run_every must be positive, not {run_every!r}")
        self.seconds = float(seconds)

    def next_after(self, t: float, tz: Optional[tzinfo] = None) -> float:
        """The first run time after t."""
        return (t // self.seconds + 1) * self.seconds

    def last_at_or_before(self, t: float, tz: Optional[tzinfo] = None) -> float:
        """The latest run time at or before t."""
        return t // self.seconds * self.seconds

    def __repr__(self) -> str:
        return f"<schedule: every {self.seconds:g}s>"


def _parse(value, low, high, field, names=None):
    """Celery's syntax: ``*``, ``*/15``, ``1-5``, ``1,3``, ``1-10/2``, names; or ints."""
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):  # a list of any of these
        return set().union(*(_parse(v, low, high, field, names) for v in value))
    result = set()
    spec = value.lower().replace(" ", "")
    for part in spec.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = low, high
        else:
            ends = span.split("-", 1)
            if names:  # day and month names to their numbers
                ends = [names.get(end, end) for end in ends]
            try:
                first, last = int(ends[0]), int(ends[-1])
            except ValueError:
                raise ValueError(f"crontab {field}: cannot read {part!r}") from None
        for n in (first, last):
            if not low <= n <= high:
                raise ValueError(f"crontab {field}: {n} is out of range {low}-{high}")
        if not (step or "1").isdigit() or int(step or 1) < 1:
            raise ValueError(f"crontab {field}: the step of {part!r} must be 1 or more")
        result.update(range(first, last + 1, int(step or 1)))
    return result


class crontab:
    """Run at matching minutes, in ``app.conf.timezone``. As in Celery, a day must match
    day_of_month AND day_of_week (plain cron takes either); 0 and 7 are Sunday."""

    def __init__(self,
                 minute="*",
                 hour="*",
                 day_of_week="*",
                 day_of_month="*",
                 month_of_year="*"):
        self.spec = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.minutes = sorted(_parse(minute, 0, 59, "minute"))
        self.hours = sorted(_parse(hour, 0, 23, "hour"))
        weekdays = _parse(day_of_week, 0, 7, "day_of_week", DAY_NAMES)
        self.weekdays = {d % 7 for d in weekdays}
        self.days = _parse(day_of_month, 1, 31, "day_of_month")
        self.months = _parse(month_of_year, 1, 12, "month_of_year", MONTH_NAMES)

    def _times(self, t, tz, step):
        """Due times from t's day on, forward (step 1) or backward (-1), over ~5 years.

        Wall times become instants with zoneinfo's fold=0: a time skipped by a DST
        change runs at the shifted instant, a repeated one runs once."""
        start = datetime.fromtimestamp(t, tz)
        day = start.replace(hour=0, minute=0, second=0, microsecond=0)
        hours = self.hours[::step]
        minutes = self.minutes[::step]
        for _ in range(5 * 366):
            weekday = day.isoweekday() % 7  # Sunday is 0, as in cron
            if (day.month in self.months
                    and day.day in self.days
                    and weekday in self.weekdays):
                for hour in hours:
                    for minute in minutes:
                        wall = day.replace(hour=hour, minute=minute, tzinfo=tz)
                        yield wall.timestamp()
            day += timedelta(days=step)
            day = day.replace(tzinfo=None)  # a wall date: each run gets tz above

    def next_after(self, t: float, tz: tzinfo) -> float:
        """The first run time after t."""
        return next(s for s in self._times(t, tz, 1) if s > t)

    def last_at_or_before(self, t: float, tz: tzinfo) -> Optional[float]:
        """The latest run time at or before t; None if there is none in ~5 years."""
        return next((s for s in self._times(t, tz, -1) if s <= t), None)

    def __repr__(self) -> str:
        return "<crontab: {} {} {} {} {} (m/h/dow/dom/moy)>".format(*self.spec)
