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
restricted (neither holds a ``*`` or ``?``; ``*/2`` counts as restricted,
unlike Vixie cron's quirk), names (``mon``, ``jan``) and ``7`` for Sunday
are accepted, as are ``L``, ``#`` and ``?``.  Refused: ``R`` (random)
fields, which would make a replay compute a different schedule, and ``H``
(hashed) fields, which need a seed commands do not carry.

Added for users coming from APScheduler, Quartz or EventBridge:

- ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (``@midnight``) and ``@hourly``, expanded to their five fields before
  anything else looks at them, so ``@hourly`` is a wildcard job across DST
  and ``@daily`` a fixed-time one.  ``@reboot`` is refused: the service has
  no boot to run it at.
- ``15W``: the weekday nearest the 15th without leaving the month (Quartz:
  a Saturday 1st moves to Monday the 3rd, a Sunday last day to the Friday
  before), ``LW`` the last weekday.  A day the month lacks (``31W`` in April)
  does not fire that month, as ``31`` would not.  W takes one day, never a
  list or range, as in Quartz: which day of a list would it move?
- ``L-3``: three days before the last (``L-0`` is ``L``), at most ``L-30``.
- ``5L`` or ``friL``: the last Friday, croniter's own ``L5``.

The OR rule holds for these too: ``0 0 15W * mon`` fires on the weekday
nearest the 15th *and* on every Monday.  croniter knows neither ``W`` nor
``L-n``, and misses days of the union when ``#`` or a last weekday meets a
restricted day-of-month (``13 * 5#3`` never fires in croniter 5.0.1).  Those
expressions have their days picked here, month by month, from the month's
length and the weekday of its first; croniter is left the minute and hour
fields, which it gets right.  Everything else goes to croniter untouched.
"""

from __future__ import annotations

import bisect
import calendar
import re
import threading
from dataclasses import dataclass
from datetime import MAXYEAR, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

from scheduler.domain.errors import InvalidSchedule

__all__ = ["CronExpression", "next_wall_time", "parse_cron"]

# Names and allowed values of the five classic fields, in croniter's order.
_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L, L-n with n up to 30, nW or LW"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat, d#n for the nth, dL or Ld for the last"),
)
_DAY_OF_MONTH = 2
_DAY_OF_WEEK = 4
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
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
# Day-of-month forms croniter does not know: ``L-n`` and ``W``.
_OWN_DAY_OF_MONTH = re.compile(r"w|l-", re.IGNORECASE)
_BACK_FROM_LAST = re.compile(r"l-(\d+)", re.IGNORECASE)
_NEAREST_WEEKDAY = re.compile(r"(\d+|l(?:-\d+)?)w", re.IGNORECASE)
_WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_LAST_WEEKDAY = re.compile(
    r"([0-7]|sun|mon|tue|wed|thu|fri|sat)l|l(sun|mon|tue|wed|thu|fri|sat)", re.IGNORECASE
)
_MOST_BACK_FROM_LAST = 30  # L-30 is the 1st of a 31-day month
# 400 Gregorian years are a whole number of weeks, so the calendar repeats
# after them: a day rule that finds nothing in that many months never will.
_CALENDAR_CYCLE_MONTHS = 400 * 12


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

    @property
    def wildcard(self) -> bool:
        """A job whose minute or hour field starts with ``*`` (Vixie cron's rule).

        Such a job runs on the clock across DST changes; the others, fixed-time
        jobs, fire a skipped time when its gap ends and a repeated one once.
        """
        minute, hour = self.minutes.split()[:2]
        return minute.startswith("*") or hour.startswith("*")


@lru_cache(maxsize=4096)
def parse_cron(expr: str) -> CronExpression:
    """Check ``expr`` once and remember the result.

    Cached because schedules are re-evaluated on every fire and many share an
    expression.  Rejections are not cached (exceptions never are), which only
    costs on the rejection path.
    """
    fields = expr.split()
    if fields and fields[0].startswith("@"):
        fields = _expand_alias(expr, fields)
    if len(fields) not in (5, 6):
        count = f"{len(fields)} field" + ("" if len(fields) == 1 else "s")
        raise InvalidSchedule(f"cron expression {expr!r} has {count}; expected {_SHAPES}")
    fields = [_single_value_ranges(value) for value in fields]
    seconds = _parse_seconds(expr, fields[0]) if len(fields) == 6 else (0,)
    minute_fields = fields[-5:]
    for index, value in enumerate(minute_fields):
        _check_field(expr, index, value)
    minute_fields[_DAY_OF_WEEK] = _last_weekday_first(minute_fields[_DAY_OF_WEEK])
    minutes = " ".join(minute_fields)
    try:
        if _day_rule(minutes) is None:
            croniter(minutes, _PROBE_START)
    except Exception as exc:  # croniter raises several unrelated types
        raise InvalidSchedule(f"cron expression {expr!r} is invalid: {_reason(exc)}") from None
    cron = CronExpression(text=expr, minutes=minutes, seconds=seconds)
    if next_wall_time(cron, _PROBE_START) is None:
        raise InvalidSchedule(f"cron expression {expr!r} never matches a date")
    return cron


def next_wall_time(cron: CronExpression, after: datetime) -> datetime | None:
    """The first matching wall time strictly after the naive wall time ``after``.

    ``None`` when croniter finds nothing within its 50-year horizon (400
    years for the days this module picks itself) or the search runs off the
    end of the calendar.
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
    rule = _day_rule(minutes)
    if rule is None:
        return _croniter_next(minutes, after)
    return rule.next_minute(after)


def _croniter_next(minutes: str, after: datetime) -> datetime | None:
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


@dataclass(frozen=True)
class _MonthDays:
    """A day-of-month field: days as written, days back from the last, and ``W``.

    ``L`` is 0 days back.  With ``nearest_weekday`` there is exactly one day
    in the two sets together (W takes no list).
    """

    days: frozenset[int]
    back_from_last: frozenset[int]
    nearest_weekday: bool

    def resolve(self, length: int, first_weekday: int) -> set[int]:
        wanted = {day for day in self.days if day <= length}
        wanted.update(length - back for back in self.back_from_last if back < length)
        if self.nearest_weekday:
            return {_nearest_weekday(day, length, first_weekday) for day in wanted}
        return wanted


@dataclass(frozen=True)
class _Weekdays:
    """A day-of-week field, weekdays numbered as :mod:`calendar` does (Monday 0).

    ``every`` matches each occurrence in the month, ``nth`` holds ``(weekday,
    n)`` for ``d#n`` and ``last`` the weekdays of ``dL``.
    """

    every: frozenset[int]
    nth: frozenset[tuple[int, int]]
    last: frozenset[int]

    def resolve(self, length: int, first_weekday: int) -> set[int]:
        found: set[int] = set()
        for weekday in range(7):
            runs = range(1 + (weekday - first_weekday) % 7, length + 1, 7)
            if weekday in self.every:
                found.update(runs)
            if weekday in self.last:
                found.add(runs[-1])
        for weekday, n in self.nth:
            runs = range(1 + (weekday - first_weekday) % 7, length + 1, 7)
            if n <= len(runs):
                found.add(runs[n - 1])
        return found


@dataclass(frozen=True)
class _DayRule:
    """Days picked here, times of day by croniter (see the module docstring).

    ``clock`` is the minute and hour fields with every day allowed; a day
    field left as ``*`` or ``?`` is ``None``, and when both are set a day
    matching either fires.
    """

    clock: str
    months: frozenset[int]
    month_days: _MonthDays | None
    weekdays: _Weekdays | None

    def next_minute(self, after: datetime) -> datetime | None:
        day = after.date()
        if day.day in self._days(day.year, day.month):
            found = _croniter_next(self.clock, after)
            if found is None or found.date() == day:
                return found
        following = self._next_day(day)
        if following is None:
            return None
        # The clock matches on every day, so its first match after the
        # minute before midnight is the earliest time on ``following``.
        return _croniter_next(self.clock, datetime.combine(following, time()) - _MINUTE)

    def _next_day(self, day: date) -> date | None:
        year, month, past = day.year, day.month, day.day
        for _ in range(_CALENDAR_CYCLE_MONTHS + 1):
            days = self._days(year, month)
            later = bisect.bisect_right(days, past)
            if later < len(days):
                return date(year, month, days[later])
            past = 0
            year, month = (year, month + 1) if month < 12 else (year + 1, 1)
            if year > MAXYEAR:
                return None
        return None

    def _days(self, year: int, month: int) -> tuple[int, ...]:
        """The matching days of one month, in order."""
        if month not in self.months:
            return ()
        first_weekday, length = calendar.monthrange(year, month)
        if self.month_days is None and self.weekdays is None:
            return tuple(range(1, length + 1))
        found: set[int] = set()
        if self.month_days is not None:
            found |= self.month_days.resolve(length, first_weekday)
        if self.weekdays is not None:
            found |= self.weekdays.resolve(length, first_weekday)
        return tuple(sorted(found))


@lru_cache(maxsize=4096)
def _day_rule(minutes: str) -> _DayRule | None:
    """The rule for ``minutes`` if its days are picked here, else ``None``.

    Only called on fields :func:`_check_field` has passed.
    """
    minute, hour, month_day, month, weekday = minutes.split()
    own_days = _OWN_DAY_OF_MONTH.search(month_day) is not None
    union_croniter_misses = (
        _restricted(month_day)
        and _restricted(weekday)
        and ("#" in weekday or "l" in weekday.lower())
    )
    if not (own_days or union_croniter_misses):
        return None
    months: Any = croniter.expand(f"* * * {month} *")[0][3]
    return _DayRule(
        clock=f"{minute} {hour} * * *",
        months=frozenset(range(1, 13) if "*" in months else months),
        month_days=_month_days(minutes, month_day) if _restricted(month_day) else None,
        weekdays=_weekdays(weekday) if _restricted(weekday) else None,
    )


def _restricted(field: str) -> bool:
    """croniter's test: a ``*`` or ``?`` anywhere in the list lifts the restriction."""
    return not any(part in ("*", "?") for part in field.split(","))


def _month_days(expr: str, value: str) -> _MonthDays:
    """Read a day-of-month field, raising ``InvalidSchedule`` naming ``expr``."""
    nearest = _NEAREST_WEEKDAY.fullmatch(value)
    if nearest is not None:
        return _one_day(expr, value, nearest.group(1), nearest_weekday=True)
    if "w" in value.lower():
        if "," in value or re.search(r"(?<![lL])-", value):
            raise InvalidSchedule(
                f"cron expression {expr!r}: day-of-month field {value!r} puts W in a list"
                " or range; W takes one day, as in 15W or LW"
            )
        raise _bad_field(expr, _DAY_OF_MONTH, value)
    days: set[int] = set()
    back_from_last: set[int] = set()
    plain: list[str] = []
    for part in value.split(","):
        back = _BACK_FROM_LAST.fullmatch(part)
        if back is None:
            plain.append(part)
        else:
            back_from_last.add(_back_from_last(expr, value, back.group(1)))
    if plain:
        if "?" in value and value != "?":
            raise _bad_field(expr, _DAY_OF_MONTH, value)
        try:
            expanded: Any = croniter.expand(f"* * {','.join(plain)} * *")[0][2]
        except Exception:  # croniter raises several unrelated types
            raise _bad_field(expr, _DAY_OF_MONTH, value) from None
        # croniter keeps a ``*`` that shares a list with other values
        for day in range(1, 32) if "*" in expanded else expanded:
            if day == "l":
                back_from_last.add(0)
            else:
                days.add(day)
    return _MonthDays(frozenset(days), frozenset(back_from_last), nearest_weekday=False)


def _one_day(expr: str, value: str, day: str, *, nearest_weekday: bool) -> _MonthDays:
    """The day before ``W``: a number, ``L`` or ``L-n``."""
    back = _BACK_FROM_LAST.fullmatch(day)
    if back is not None:
        return _MonthDays(
            frozenset(), frozenset({_back_from_last(expr, value, back.group(1))}), nearest_weekday
        )
    if day.lower() == "l":
        return _MonthDays(frozenset(), frozenset({0}), nearest_weekday)
    if not 1 <= int(day) <= 31:
        raise _bad_field(expr, _DAY_OF_MONTH, value)
    return _MonthDays(frozenset({int(day)}), frozenset(), nearest_weekday)


def _back_from_last(expr: str, value: str, digits: str) -> int:
    if int(digits) > _MOST_BACK_FROM_LAST:
        raise _bad_field(expr, _DAY_OF_MONTH, value)
    return int(digits)


def _nearest_weekday(day: int, length: int, first_weekday: int) -> int:
    """Quartz's ``W``: a weekend day moves to the nearest weekday of its own month."""
    weekday = (first_weekday + day - 1) % 7
    if weekday == calendar.SATURDAY:
        return day - 1 if day > 1 else day + 2
    if weekday == calendar.SUNDAY:
        return day + 1 if day < length else day - 2
    return day


def _weekdays(value: str) -> _Weekdays:
    """Read a checked, restricted day-of-week field through croniter's expansion."""
    expanded: Any
    marks: Any
    expanded, marks = croniter.expand(f"* * * * {value}")
    every: set[int] = set()
    nth: set[tuple[int, int]] = set()
    last: set[int] = set()
    for cron_day in expanded[4]:
        weekday = (cron_day - 1) % 7  # cron counts from Sunday, calendar from Monday
        for mark in marks.get(cron_day) or ():
            if mark == "l":
                last.add(weekday)
            else:
                nth.add((weekday, mark))
        if not marks.get(cron_day):
            every.add(weekday)
    return _Weekdays(frozenset(every), frozenset(nth), frozenset(last))


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
    name = _FIELDS[index][0]
    _refuse_hashed(expr, name, value)
    if index == _DAY_OF_MONTH and _OWN_DAY_OF_MONTH.search(value):
        _month_days(expr, value)
        return
    alone = ["*"] * len(_FIELDS)
    alone[index] = _last_weekday_first(value) if index == _DAY_OF_WEEK else value
    try:
        croniter.expand(" ".join(alone))
    except Exception:  # croniter raises several unrelated types
        raise _bad_field(expr, index, value) from None


def _bad_field(expr: str, index: int, value: str) -> InvalidSchedule:
    name, allowed = _FIELDS[index]
    return InvalidSchedule(
        f"cron expression {expr!r}: bad {name} field {value!r} (allowed {allowed})"
    )


def _expand_alias(expr: str, fields: list[str]) -> list[str]:
    alias = fields[0].lower()
    if len(fields) > 1:
        raise InvalidSchedule(f"cron expression {expr!r}: {fields[0]} takes no other fields")
    if alias == "@reboot":
        raise InvalidSchedule(
            f"cron expression {expr!r}: @reboot is not a schedule:"
            " the service has no boot to run it at"
        )
    if alias not in _ALIASES:
        raise InvalidSchedule(
            f"cron expression {expr!r}: unknown alias {fields[0]} (known: {', '.join(_ALIASES)})"
        )
    return _ALIASES[alias].split()


def _last_weekday_first(value: str) -> str:
    """Write ``5L`` and ``friL`` (Quartz's order) as ``L5``, the form croniter reads."""
    parts = []
    for part in value.split(","):
        last = _LAST_WEEKDAY.fullmatch(part)
        if last is not None:
            day = last.group(1) or last.group(2)
            part = f"L{day if day.isdigit() else _WEEKDAY_NAMES.index(day.lower())}"
        parts.append(part)
    return ",".join(parts)


def _refuse_hashed(expr: str, name: str, value: str) -> None:
    if any(_HASHED_OR_RANDOM.match(part) for part in value.split(",")):
        raise InvalidSchedule(
            f"cron expression {expr!r}: {name} field {value!r} uses H or R, which are not supported"
        )


def _reason(exc: Exception) -> str:
    """croniter sometimes puts a whole traceback in its message; keep the gist."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
