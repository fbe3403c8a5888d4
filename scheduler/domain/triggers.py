"""When a schedule fires: pure functions of a schedule and a starting instant.

Nothing here reads the clock.  The caller says "after this instant" and gets
the next one back, so a replay of the command log, a test, or a preview all
compute the same instants.  All instants in and out are aware; results are
UTC.

``validate`` is separate from ``next_fire`` so that a bad schedule is
rejected once, when the command arrives, with a message naming the value;
``next_fire`` on a spec that failed validation raises the same error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache

from scheduler.domain.cron import CronExpression, next_wall_time, parse_cron
from scheduler.domain.errors import InvalidSchedule
from scheduler.domain.timezones import Zone, local_to_utc, repeat_end, resolve_zone, to_local

__all__ = ["KINDS", "TriggerSpec", "fire_times", "next_fire", "validate"]

KINDS = ("cron", "date", "delay", "delay-recur", "now")

#: The shortest ``delay-recur`` interval. With a much shorter one, any late
#: wake-up has a flood of instants to fire, one per interval it was late.
MIN_RECUR = timedelta(seconds=1)

_SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")
_ONE_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class TriggerSpec:
    """Everything the trigger math needs from a command.

    ``expression`` is the command's ``schedule`` string (unused for ``now``),
    ``zone`` an IANA name, and ``accepted_at`` the command's Kafka timestamp:
    relative schedules count from it so that a replay reproduces them.
    """

    kind: str
    expression: str
    zone: str
    accepted_at: datetime

    def __post_init__(self) -> None:
        if self.accepted_at.tzinfo is None:
            raise ValueError(f"accepted_at must be timezone-aware, got {self.accepted_at!r}")


def validate(spec: TriggerSpec) -> None:
    """Raise ``InvalidSchedule`` naming the bad value, or return quietly.

    The zone is checked for every kind, even those whose instants ignore it:
    it is stored with the schedule and used to show fire times back in local
    time, so a bad one would only fail later, further from the command.
    """
    if spec.kind not in KINDS:
        raise InvalidSchedule(
            f"unknown schedule type {spec.kind!r}; expected one of {', '.join(KINDS)}"
        )
    resolve_zone(spec.zone)
    if spec.kind == "cron":
        parse_cron(spec.expression)
    elif spec.kind == "date":
        _date_instant(spec.expression, spec.zone)
    elif spec.kind in ("delay", "delay-recur"):
        step = _delay(spec.expression)
        if spec.kind == "delay-recur" and step < MIN_RECUR:
            raise InvalidSchedule(
                f"delay-recur {spec.expression!r} is shorter than the minimum interval "
                f"of {MIN_RECUR.total_seconds():g} s"
            )
        try:
            spec.accepted_at + step
        except OverflowError:
            raise InvalidSchedule(
                f"delay {spec.expression!r} is too large: it ends after the year 9999"
            ) from None


def next_fire(spec: TriggerSpec, after: datetime) -> datetime | None:
    """The first fire instant strictly after ``after``, or ``None`` if none is left.

    Strictly after, so that feeding each result back in walks the fires one by
    one without repeats.  To include a one-shot's own instant, pass an
    ``after`` before it (a ``now`` fires *at* ``accepted_at``).
    """
    if after.tzinfo is None:
        raise ValueError(f"after must be timezone-aware, got {after!r}")
    kind = spec.kind
    if kind == "cron":
        return _next_cron(spec.expression, resolve_zone(spec.zone), after)
    if kind == "date":
        return _once(_date_instant(spec.expression, spec.zone), after)
    if kind == "delay":
        return _once(_utc(spec.accepted_at + _delay(spec.expression)), after)
    if kind == "delay-recur":
        return _next_recurring(spec.accepted_at, _delay(spec.expression), after)
    if kind == "now":
        return _once(_utc(spec.accepted_at), after)
    validate(spec)  # raises: the kind is unknown
    return None


def fire_times(spec: TriggerSpec, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` fire instants after ``after``; fewer if the schedule ends."""
    if count < 0:
        raise ValueError(f"count must not be negative, got {count}")
    instants: list[datetime] = []
    current = after
    while len(instants) < count:
        upcoming = next_fire(spec, current)
        if upcoming is None:
            break
        instants.append(upcoming)
        current = upcoming
    return instants


def _next_cron(expression: str, zone: Zone, after: datetime) -> datetime | None:
    """Walk matching wall times from the wall time of ``after``.

    Wall time to instant never goes backwards (see ``local_to_utc``), so the
    first match whose instant is past ``after`` is the answer; a run of gap
    wall times all map to the one transition instant, and starting from the
    wall time of ``after`` leaves the ones already fired behind.  The one
    place a match can map to an instant at or before ``after`` is the repeat
    of a fall-back: ``after`` is in the second pass, the match's first
    occurrence was in the first.  Those are skipped in one jump.
    """
    cron = parse_cron(expression)
    try:
        return _walk_cron(cron, zone, after)
    except OverflowError:  # the calendar ends at 9999-12-31
        return None


def _walk_cron(cron: CronExpression, zone: Zone, after: datetime) -> datetime | None:
    wall = to_local(after, zone).replace(tzinfo=None)
    while True:
        candidate = next_wall_time(cron, wall)
        if candidate is None:
            return None
        instant = local_to_utc(candidate, zone)
        if instant > after:
            return instant
        end = repeat_end(candidate, zone)
        # Cron wall times are whole seconds, so asking for the next match
        # after the last second of the repeat finds the first one past it.
        wall = max(candidate, end - _ONE_SECOND) if end is not None else candidate


def _next_recurring(start: datetime, step: timedelta, after: datetime) -> datetime | None:
    """``start + k*step`` for the smallest k >= 1 past ``after``, in exact microseconds."""
    elapsed = after - start
    k = 1 if elapsed < step else elapsed // step + 1
    try:
        return _utc(start + k * step)
    except OverflowError:
        return None


def _once(instant: datetime, after: datetime) -> datetime | None:
    return instant if instant > after else None


def _utc(instant: datetime) -> datetime:
    return instant.astimezone(UTC)


@lru_cache(maxsize=4096)
def _date_instant(expression: str, zone_name: str) -> datetime:
    """The instant of a ``date`` schedule; an offset in the text beats the zone.

    Python's ISO parser takes ``Z``, offsets, a space or ``T`` between date and
    time, and a bare date (midnight).  A local wall time goes through the same
    DST rule as cron, so a date inside a spring-forward gap fires when the gap
    ends.
    """
    try:
        moment = datetime.fromisoformat(expression.strip())
    except ValueError:
        raise InvalidSchedule(
            f"date {expression!r} is not an ISO-8601 date-time (e.g. 2025-03-09T02:30:00)"
        ) from None
    try:
        if moment.tzinfo is not None:
            return _utc(moment)
        return local_to_utc(moment, resolve_zone(zone_name))
    except OverflowError:
        raise InvalidSchedule(f"date {expression!r} is out of range") from None


@lru_cache(maxsize=4096)
def _delay(expression: str) -> timedelta:
    """Seconds as written (``"60"``, ``"1.5"``), exact to the microsecond."""
    text = expression.strip()
    if not _SECONDS.fullmatch(text):
        raise InvalidSchedule(f"delay {expression!r} is not a positive number of seconds")
    micros = int((Decimal(text) * 1_000_000).to_integral_value(ROUND_HALF_EVEN))
    if micros <= 0:
        raise InvalidSchedule(f"delay {expression!r} is not a positive number of seconds")
    try:
        return timedelta(microseconds=micros)
    except OverflowError:
        raise InvalidSchedule(
            f"delay {expression!r} is too large: it ends after the year 9999"
        ) from None


def local_instant(expression: str, zone: str) -> datetime:
    """An ISO-8601 date-time read as ``date`` schedules are (for start/end bounds)."""
    return _date_instant(expression, zone)
