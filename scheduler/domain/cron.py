"""The one adapter around croniter.

Commands write cron the way the service we replace did: five fields
(minute hour day-of-month month day-of-week), or six with *seconds first*.

croniter is only ever given the five classic fields.  Its own six-field mode
(seconds last) parses the day fields by different rules: there ``7`` is no
longer Sunday but out of range, and a day-of-month of ``0`` is quietly read
as ``1``.  So the seconds field is expanded on its own and combined with the
minute croniter finds, which also keeps seconds exact instead of going
through croniter's float timestamps.

Everything here works on naive *wall* times.  Which instant a wall time is,
across DST changes, is :mod:`scheduler.domain.timezones`' business; croniter is only
asked "which wall time comes next", a question with no DST in it.

A range whose ends are equal (``5-5``, ``mon-mon``) is one value, as in any
cron; croniter alone would read it as the whole cycle.

Kept from croniter: day-of-month and day-of-week are OR-ed when both are
restricted (``*/2`` counts as restricted, unlike Vixie cron's quirk), names
(``mon``, ``jan``) and ``7`` for Sunday are accepted, as are ``L``, ``#`` and
``?``.  Refused: ``R`` (random) fields, which would make a replay compute a
different schedule, and ``H`` (hashed) fields, which need a seed commands do
not carry.
"""

from __future__ import annotations

import bisect
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

from scheduler.domain.errors import InvalidSchedule

__all__ = ["CronExpression", "next_wall_time", "parse_cron"]

# Names and allowed values of the five classic fields, in croniter's order.
_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat"),
)
_SHAPES = (
    "5 fields (minute hour day-of-month month day-of-week)"
    " or 6 fields (second minute hour day-of-month month day-of-week)"
)
_HASHED_OR_RANDOM = re.compile(r"^[hr](\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)
_RANGE = re.compile(r"(\w+)-(\w+)(/\d+)?")
_SECOND_FIELD = 5  # where croniter's six-field mode keeps seconds
_ALL_SECONDS = tuple(range(60))
# Where the "does this ever fire?" probe starts; any fixed date does, since
# croniter then looks 50 years ahead and cron schedules repeat within 28.
_PROBE_START = datetime(2000, 1, 1)
_MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class CronExpression:
    """A checked cron expression; get one from :func:`parse_cron`.

    ``text`` is what the user wrote and goes into messages.  ``minutes`` is
    the five-field part handed to croniter and ``seconds`` the seconds of each
    matching minute that fire (``(0,)`` for a five-field expression).
    """

    text: str
    minutes: str
    seconds: tuple[int, ...]

    @property
    def has_seconds(self) -> bool:
        return len(self.text.split()) == 6


@lru_cache(maxsize=4096)
def parse_cron(expr: str) -> CronExpression:
    """Check ``expr`` once and remember the result.

    Cached because schedules are re-evaluated on every fire and many share an
    expression.  Rejections are not cached (exceptions never are), which only
    costs on the rejection path.
    """
    fields = expr.split()
    if len(fields) not in (5, 6):
        count = f"{len(fields)} field" + ("" if len(fields) == 1 else "s")
        raise InvalidSchedule(f"cron expression {expr!r} has {count}; expected {_SHAPES}")
    fields = [_single_value_ranges(value) for value in fields]
    seconds = _parse_seconds(expr, fields[0]) if len(fields) == 6 else (0,)
    minute_fields = fields[-5:]
    for index, value in enumerate(minute_fields):
        _check_field(expr, index, value)
    minutes = " ".join(minute_fields)
    try:
        croniter(minutes, _PROBE_START)
    except Exception as exc:  # croniter raises several unrelated types
        raise InvalidSchedule(f"cron expression {expr!r} is invalid: {_reason(exc)}") from None
    cron = CronExpression(text=expr, minutes=minutes, seconds=seconds)
    if next_wall_time(cron, _PROBE_START) is None:
        raise InvalidSchedule(f"cron expression {expr!r} never matches a date")
    return cron


def next_wall_time(cron: CronExpression, after: datetime) -> datetime | None:
    """The first matching wall time strictly after the naive wall time ``after``.

    ``None`` when croniter finds nothing within its 50-year horizon or runs
    off the end of the calendar.
    """
    if after.tzinfo is not None:
        raise ValueError(f"next_wall_time works on naive wall times, got {after!r}")
    if cron.seconds == (0,):
        # One croniter call: it already answers "next whole minute after".
        return _next_minute(cron.minutes, after)
    try:
        return _next_second(cron, after)
    except OverflowError:  # within a minute of datetime.min/max
        return None


def _next_second(cron: CronExpression, after: datetime) -> datetime | None:
    """Combine croniter's next minute with the seconds field."""
    # Matches fall on whole seconds, so "after ``after``" means "at or after
    # the next whole second".
    earliest = after.replace(microsecond=0) + timedelta(seconds=1)
    minute = earliest.replace(second=0)
    found = _next_minute(cron.minutes, minute - _MINUTE)
    if found == minute:
        later = bisect.bisect_left(cron.seconds, earliest.second)
        if later < len(cron.seconds):
            return minute + timedelta(seconds=cron.seconds[later])
        found = _next_minute(cron.minutes, minute)
    if found is None:
        return None
    return found + timedelta(seconds=cron.seconds[0])


def _next_minute(minutes: str, after: datetime) -> datetime | None:
    """First matching whole minute strictly after ``after``."""
    stepper = _stepper(minutes)
    with stepper.lock:
        try:
            found: Any = stepper.iterator.get_next(
                datetime, start_time=after.replace(microsecond=0)
            )
        except (ValueError, OverflowError):  # CroniterBadDateError is a ValueError
            return None
    result: datetime = found
    return result


class _Stepper:
    """A croniter reused across calls, since building one re-parses the text.

    croniter keeps its position inside the object, so calls on one instance
    are serialised by a lock, and each call passes its own start time.
    """

    def __init__(self, minutes: str) -> None:
        self.iterator: Any = croniter(minutes, _PROBE_START)
        self.lock = threading.Lock()


@lru_cache(maxsize=4096)
def _stepper(minutes: str) -> _Stepper:
    return _Stepper(minutes)


def _single_value_ranges(value: str) -> str:
    """Rewrite ``a-a`` as ``a`` in each comma-separated part of a field."""
    parts = []
    for part in value.split(","):
        bounds = _RANGE.fullmatch(part)
        if bounds and _same_bound(bounds.group(1), bounds.group(2)):
            part = bounds.group(1)
        parts.append(part)
    return ",".join(parts)


def _same_bound(low: str, high: str) -> bool:
    if low.isdigit() and high.isdigit():
        return int(low) == int(high)
    return low.lower() == high.lower()


def _parse_seconds(expr: str, value: str) -> tuple[int, ...]:
    """Expand the seconds field with croniter's own syntax (lists, ranges, steps)."""
    _refuse_hashed(expr, "second", value)
    try:
        expanded: Any = croniter.expand(f"* * * * * {value}")[0][_SECOND_FIELD]
        seconds = _ALL_SECONDS if expanded == ["*"] else tuple(sorted(int(s) for s in expanded))
    except Exception:  # croniter raises several unrelated types
        raise InvalidSchedule(
            f"cron expression {expr!r}: bad second field {value!r} (allowed 0-59)"
        ) from None
    return seconds


def _check_field(expr: str, index: int, value: str) -> None:
    """Try one field on its own so the message can say which field is wrong."""
    name, allowed = _FIELDS[index]
    _refuse_hashed(expr, name, value)
    alone = ["*"] * len(_FIELDS)
    alone[index] = value
    try:
        croniter.expand(" ".join(alone))
    except Exception:  # croniter raises several unrelated types
        raise InvalidSchedule(
            f"cron expression {expr!r}: bad {name} field {value!r} (allowed {allowed})"
        ) from None


def _refuse_hashed(expr: str, name: str, value: str) -> None:
    if any(_HASHED_OR_RANDOM.match(part) for part in value.split(",")):
        raise InvalidSchedule(
            f"cron expression {expr!r}: {name} field {value!r} uses H or R, which are not supported"
        )


def _reason(exc: Exception) -> str:
    """croniter sometimes puts a whole traceback in its message; keep the gist."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
