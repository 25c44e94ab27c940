"""When periodic tasks are due: fixed intervals and ``crontab``, in Celery's
names and string syntax. Sending them is beat.py's job, not this module's.
"""
from datetime import datetime, timedelta, tzinfo
from typing import Any, Optional, Union

DAYS = "sun mon tue wed thu fri sat".split()
MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
DAY_NAMES = dict(zip(DAYS, range(7)))
MONTH_NAMES = dict(zip(MONTHS, range(1, 13)))
HORIZON_DAYS = 30 * 366  # how far a crontab's runs are looked for


def maybe_schedule(every: Any) -> Any:
    """A schedule for seconds or a timedelta, as Celery's; a schedule as it is."""
    return schedule(every) if isinstance(every, (int, float, timedelta)) else every


class schedule:
    """Every ``run_every`` seconds (or timedelta), at multiples of it since the epoch,
    so that every beat on the same file computes the same run times."""

    def __init__(self, run_every: Union[float, timedelta], relative: bool = True):
        if relative is not True:  # Celery's default, not miniq's (as a beat entry's)
            raise TypeError(f"relative={relative!r}: miniq's intervals always run at"
                            " multiples of themselves since the epoch (relative=True)")
        seconds = run_every
        if isinstance(run_every, timedelta):
            seconds = run_every.total_seconds()
        if isinstance(seconds, bool) or not 0 < seconds < float("inf"):  # nan too
            raise ValueError(f"schedule: run_every must be positive, not {run_every!r}")
        self.seconds = float(seconds)
        self.run_every = timedelta(seconds=self.seconds)

    def __eq__(self, other):  # as Celery's: by its interval; and so, as Celery's, no hash
        return self.run_every == (other.run_every if isinstance(other, schedule) else other)

    def next_after(self, t: float, tz: Optional[tzinfo] = None) -> float:
        """The first run time after t."""
        return (t // self.seconds + 1) * self.seconds

    def last_at_or_before(self, t: float, tz: Optional[tzinfo] = None) -> float:
        """The latest run time at or before t."""
        return t // self.seconds * self.seconds

    def __repr__(self) -> str:  # as Celery's: <freq: 1.50 minutes>
        for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
            if self.seconds >= size:
                count = self.seconds / size
                return f"<freq: {count:.2f} {unit}{'s' if count != 1 else ''}>"
        return "<freq: now>"


def _parse(value, low, high, field, names=None):
    """Celery's syntax: ``*``, ``*/15``, ``1-5``, ``fri-mon`` (a range past the end
    wraps), ``1,3``, ``1-10/2``, names (their first three letters); or ints."""
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):  # a list of any of these
        return set().union(*(_parse(v, low, high, field, names) for v in value))
    result = set()
    for part in (part.strip() for part in value.lower().split(",")):  # "1, 2", not "1 2"
        span, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) > 0 and (span == "*" or "-" in span)):
            raise ValueError(f"crontab {field}: cannot read {part!r} (a step needs * or a range)")
        if span == "*":
            first, last = low, high
        else:
            ends = [_number(end, low, high, field, names) for end in span.split("-", 1)]
            first, last = ends[0], ends[-1]
        wrapped = [*range(first, high + 1), *range(low, last + 1)]  # as Celery's: 22-2
        result.update((range(first, last + 1) if first <= last else wrapped)[::int(step or 1)])
    return result


def _instant(wall, tz):
    """A wall time's instant, and whether a DST change skips that time: with zoneinfo's
    fold=0, as Celery's, a repeated time is taken once and a skipped one at the offset
    before the change (02:30 skipped is 03:30)."""
    when = wall.replace(tzinfo=tz).timestamp()
    return when, datetime.fromtimestamp(when, tz).replace(tzinfo=None) != wall


def _number(text, low, high, field, names):
    number = (names or {}).get(text[:3], text) if text.isalpha() else text
    try:
        number = int(number)
    except ValueError:
        raise ValueError(f"crontab {field}: cannot read {text!r}") from None
    if not low <= number <= high:
        raise ValueError(f"crontab {field}: {number} is out of range {low}-{high}")
    return number


class crontab:
    """Run at matching minutes, in ``app.conf.timezone``. As in Celery, a day must match
    day_of_month AND day_of_week (plain cron takes either); Sunday is 0, and each field
    reads as the set of its values."""

    def __init__(self,
                 minute="*",
                 hour="*",
                 day_of_week="*",
                 day_of_month="*",
                 month_of_year="*"):
        self.spec = (minute, hour, day_of_month, month_of_year, day_of_week)  # Celery's order
        self.minute = _parse(minute, 0, 59, "minute")
        self.hour = _parse(hour, 0, 23, "hour")
        self.day_of_week = _parse(day_of_week, 0, 6, "day_of_week", DAY_NAMES)
        self.day_of_month = _parse(day_of_month, 1, 31, "day_of_month")
        self.month_of_year = _parse(month_of_year, 1, 12, "month_of_year", MONTH_NAMES)

    @classmethod
    def from_string(cls, text: str) -> "crontab":
        """As Celery's: the five fields of a crontab line, minute first."""
        fields = text.split(" ")
        if len(fields) != 5:
            raise ValueError(f"Invalid crontab string: {text}")
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year)

    def __eq__(self, other):  # as Celery's: the same runs; and so, as Celery's, no hash
        fields = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")
        if not isinstance(other, crontab):
            return NotImplemented
        return all(getattr(self, key) == getattr(other, key) for key in fields)

    def _times(self, t, tz, step):
        """Due times from t's day on, forward (step 1) or backward (-1), over ~30 years
        (a leap day on a given weekday comes every 28).

        Wall times become instants in _instant; of the times a DST change skips, the
        first runs."""
        start = datetime.fromtimestamp(t, tz)  # its wall date: each run gets tz in _instant
        day = start.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
        hours = sorted(self.hour)[::step]
        minutes = sorted(self.minute)[::step]
        last = None
        for _ in range(HORIZON_DAYS):
            weekday = day.isoweekday() % 7  # Sunday is 0, as in cron
            if (day.month in self.month_of_year
                    and day.day in self.day_of_month
                    and weekday in self.day_of_week):
                for hour in hours:
                    for minute in minutes:
                        wall = day.replace(hour=hour, minute=minute)
                        when, skipped = _instant(wall, tz)
                        if when != last and not (skipped and self._ran_in_gap(wall, tz)):
                            yield when
                            last = when
            day += timedelta(days=step)

    def _ran_in_gap(self, wall, tz):
        """Whether an earlier time of the same DST gap is due: as Celery's, whose next run
        follows the last one's wall time, only a gap's first is run."""
        earlier = wall - timedelta(minutes=1)
        while _instant(earlier, tz)[1]:
            if (earlier.hour in self.hour and earlier.minute in self.minute
                    and earlier.day in self.day_of_month):  # a gap is within a month
                return True
            earlier -= timedelta(minutes=1)
        return False

    def next_after(self, t: float, tz: tzinfo) -> Optional[float]:
        """The first run time after t; None if there is none in ~30 years."""
        return next((s for s in self._times(t, tz, 1) if s > t), None)

    def last_at_or_before(self, t: float, tz: tzinfo) -> Optional[float]:
        """The latest run time at or before t; None if there is none in ~30 years."""
        return next((s for s in self._times(t, tz, -1) if s <= t), None)

    def __repr__(self) -> str:
        return "<crontab: {} {} {} {} {} (m/h/dM/MY/d)>".format(*self.spec)
