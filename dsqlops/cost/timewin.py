"""Time windows for CloudWatch queries: parsing, validation, the period, alignment.

CloudWatch's rules (docs/dsql-facts.md §R1.2, docs/dsql-facts.md §4.1): 60-s data is kept 15 days, 300-s data 63 days,
3,600-s data 455 days. When StartTime is older than 15 days the Period must be a multiple of 300,
older than 63 days a multiple of 3,600, or CloudWatch silently returns **no** data. StartTime is
inclusive, EndTime exclusive. We align StartTime down and EndTime up to whole periods and record
the window actually used.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field

from dsqlops.errors import UsageError

UTC = dt.UTC
DAY = dt.timedelta(days=1)
#: Oldest data CloudWatch keeps (1-hour resolution).
MAX_AGE = dt.timedelta(days=455)
#: (age limit, minimum period, required multiple) in increasing age.
RETENTION = ((dt.timedelta(days=15), 60), (dt.timedelta(days=63), 300), (MAX_AGE, 3600))
#: ``--period auto`` raises the retention minimum to the next of these when a series would have
#: more points than :data:`AUTO_MAX_POINTS` (a readable table/sparkline, fewer datapoints billed).
AUTO_STEPS = (60, 300, 900, 3600, 21600, 86400)
AUTO_MAX_POINTS = 1440

_DURATION_RE = re.compile(r"(?P<n>[0-9]{1,12})\s*(?P<u>s|m|h|d|w)")
#: Longer than any window or wait dsqlops can use; past it datetime arithmetic would overflow.
MAX_DURATION = dt.timedelta(days=100 * 366)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def utcnow() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


def parse_duration(text: str) -> dt.timedelta:
    """``90m``, ``24h``, ``7d``, ``2w`` (or combinations such as ``1d12h``) → timedelta."""
    s = (text or "").strip().lower()
    pos, total = 0, 0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += int(m["n"]) * _UNITS[m["u"]]
        pos = m.end()
    if not s or pos != len(s) or total <= 0:
        raise UsageError(f"not a duration: {text!r}", hint="use e.g. 90m, 24h, 7d or 2w")
    if total > MAX_DURATION.total_seconds():
        raise UsageError(f"duration {text!r} is too long (at most {MAX_DURATION.days} days)")
    return dt.timedelta(seconds=total)


def parse_time(text: str, *, what: str = "time") -> dt.datetime:
    """ISO-8601 date or date-time; naive values are UTC. ``now`` is accepted."""
    s = (text or "").strip()
    if s.lower() == "now":
        return utcnow()
    try:
        value = dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"{what} is not an ISO-8601 date or time: {text!r}",
                         hint="e.g. 2026-11-01 or 2026-11-01T12:00:00Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC instant datetime can hold
        raise UsageError(f"{what} is out of range: {text!r}") from None


def parse_month(text: str) -> tuple[dt.datetime, dt.datetime]:
    """``YYYY-MM`` → [first instant of the month, first instant of the next month)."""
    m = re.fullmatch(r"([0-9]{4})-([0-9]{2})", (text or "").strip())
    if not m or not 1 <= int(m[2]) <= 12:
        raise UsageError(f"not a month: {text!r}", hint="use YYYY-MM, e.g. 2026-11")
    # datetime spans years 1..9999, and the month after must exist too.
    if not 1 <= int(m[1]) <= 9998:
        raise UsageError(f"month {text!r} is out of range (years 0001-9998)", hint="use YYYY-MM, e.g. 2026-11")
    start = dt.datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)
    return start, next_month(start)


def month_start(t: dt.datetime) -> dt.datetime:
    return t.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(t: dt.datetime) -> dt.datetime:
    s = month_start(t)
    return s.replace(year=s.year + 1, month=1) if s.month == 12 else s.replace(month=s.month + 1)


def hours_in_month(t: dt.datetime) -> int:
    s = month_start(t)
    return int((next_month(s) - s).total_seconds() // 3600)


def floor_to(t: dt.datetime, seconds: int) -> dt.datetime:
    epoch = int(t.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def ceil_to(t: dt.datetime, seconds: int) -> dt.datetime:
    epoch = math.ceil(t.timestamp())
    rem = epoch % seconds
    return dt.datetime.fromtimestamp(epoch + (seconds - rem if rem else 0), UTC)


def min_period_for(start: dt.datetime, now: dt.datetime) -> int:
    """The finest period CloudWatch still has for data starting at ``start``."""
    age = now - start
    for limit, period in RETENTION:
        if age <= limit:
            return period
    return 3600


def validate_period(period: int, start: dt.datetime, now: dt.datetime) -> int:
    if period < 60 or period % 60:
        raise UsageError(f"--period {period} is not a whole number of minutes (a multiple of 60 seconds)",
                         hint="DSQL metrics are 1-minute resolution; use 60, 300, 3600… or auto")
    need = min_period_for(start, now)
    if period % need:
        raise UsageError(
            f"--period {period}: data starting {start:%Y-%m-%d %H:%M}Z is only kept at {need}-second resolution, "
            f"so the period must be a multiple of {need} (CloudWatch would return no data)",
            hint="use --period auto")
    return period


def auto_period(start: dt.datetime, end: dt.datetime, now: dt.datetime,
                max_points: int = AUTO_MAX_POINTS) -> int:
    need = min_period_for(start, now)
    span = (end - start).total_seconds()
    for step in AUTO_STEPS:
        if step >= need and step % need == 0 and span / step <= max_points:
            return step
    return AUTO_STEPS[-1]


@dataclass(frozen=True)
class Window:
    """The aligned window actually queried: [start, end), ``period`` seconds per point."""

    start: dt.datetime
    end: dt.datetime
    period: int
    requested_start: dt.datetime
    requested_end: dt.datetime
    warnings: tuple[str, ...] = field(default=())

    @property
    def points(self) -> int:
        """Datapoints per series: ceil(window / period)."""
        return math.ceil((self.end - self.start).total_seconds() / self.period)

    def to_dict(self) -> dict[str, object]:
        return {"start": self.start, "end": self.end, "period": self.period,
                "requested_start": self.requested_start, "requested_end": self.requested_end}


def check_window(start: dt.datetime, end: dt.datetime, now: dt.datetime,
                 *, clamp_end: bool = True) -> tuple[dt.datetime, list[str]]:
    """Refuse windows CloudWatch cannot answer. Returns the (possibly clamped) end and warnings."""
    warnings: list[str] = []
    if start >= end:
        raise UsageError(f"the window is empty or reversed: start {start:%Y-%m-%dT%H:%M:%SZ} is not before "
                         f"end {end:%Y-%m-%dT%H:%M:%SZ}")
    if start > now:
        raise UsageError(f"the window starts in the future ({start:%Y-%m-%dT%H:%M:%SZ})")
    if now - start > MAX_AGE:
        raise UsageError(f"the window starts {(now - start).days} days ago; CloudWatch keeps metrics for 455 days",
                         hint="choose a start within the last 455 days")
    if end > now and clamp_end:
        if end - now > dt.timedelta(minutes=5):
            warnings.append(f"the window end {end:%Y-%m-%dT%H:%M:%SZ} is in the future; using now")
        # At the very first second of a month the current-month window would be empty.
        end = now if now > start else start + dt.timedelta(seconds=1)
    return end, warnings


def make_window(start: dt.datetime, end: dt.datetime, period: int | str, *,
                now: dt.datetime | None = None) -> Window:
    """Validate, choose the period (``"auto"`` or seconds) and align [start, end) to it."""
    now = now or utcnow()
    req_start, req_end = start, end
    end, warnings = check_window(start, end, now)
    if isinstance(period, str):
        if period != "auto":
            raise UsageError(f"--period must be 'auto' or a number of seconds, not {period!r}")
        p = auto_period(start, end, now)
    else:
        p = validate_period(int(period), start, now)
    a_start, a_end = floor_to(start, p), ceil_to(end, p)
    if a_start != start or a_end != end:
        warnings.append(f"window aligned to whole {p}-second periods: "
                        f"{a_start:%Y-%m-%dT%H:%M:%SZ} .. {a_end:%Y-%m-%dT%H:%M:%SZ} (end exclusive)")
    return Window(a_start, a_end, p, req_start, req_end, tuple(warnings))


def parse_period(text: str | int | None) -> int | str:
    if text is None or text == "auto":
        return "auto"
    try:
        return int(text)
    except (TypeError, ValueError):
        raise UsageError(f"--period must be 'auto' or a number of seconds, not {text!r}") from None
