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
from scheduler.domain.timezones import (
    Zone,
    gap_end,
    local_to_utc,
    occurrences,
    repeat_end,
    repeat_span,
    resolve_zone,
    to_local,
)

__all__ = [
    "KINDS",
    "TriggerSpec",
    "fire_times",
    "next_fire",
    "next_fire_parts",
    "validate",
    "validate_parts",
]

KINDS = ("cron", "date", "delay", "delay-recur", "now")

#: The shortest ``delay-recur`` interval. With a much shorter one, any late
#: wake-up has a flood of instants to fire, one per interval it was late.
MIN_RECUR = timedelta(seconds=1)

_SECONDS = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")
# ISO-8601 durations: PnW alone, or PnYnMnD with an optional TnHnMnS part;
# any number may have a fraction, written with a point or ISO's comma.
_DURATION = re.compile(
    r"P(?:(?P<weeks>N)W|(?:(?P<years>N)Y)?(?:(?P<months>N)M)?(?:(?P<days>N)D)?"
    r"(?:T(?=[0-9])(?:(?P<hours>N)H)?(?:(?P<minutes>N)M)?(?:(?P<seconds>N)S)?)?)".replace(
        "N", r"[0-9]+(?:[.,][0-9]+)?"
    ),
    re.IGNORECASE,
)
_DURATION_SECONDS = {"weeks": 604_800, "days": 86_400, "hours": 3_600, "minutes": 60, "seconds": 1}
_ONE_SECOND = timedelta(seconds=1)
_TICK = timedelta(microseconds=1)


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
    start: datetime | None = None
    """A ``delay-recur`` with a ``start`` counts its intervals from it (its first
    instant is ``start`` itself) instead of from ``accepted_at``."""

    def __post_init__(self) -> None:
        if self.accepted_at.tzinfo is None:
            raise ValueError(f"accepted_at must be timezone-aware, got {self.accepted_at!r}")


def validate(spec: TriggerSpec) -> None:
    """Raise ``InvalidSchedule`` naming the bad value, or return quietly.

    The zone is checked for every kind, even those whose instants ignore it:
    it is stored with the schedule and used to show fire times back in local
    time, so a bad one would only fail later, further from the command.
    """
    validate_parts(spec.kind, spec.expression, spec.zone, spec.accepted_at)


def validate_parts(kind: str, expression: str, zone: str, accepted_at: datetime) -> None:
    """:func:`validate` of a spec's fields, without building the spec.

    ``Command``'s validation calls this: every command is checked as it
    arrives, and building the frozen dataclass for it cost as much as some
    of the checks.
    """
    if kind not in KINDS:
        raise InvalidSchedule(f"unknown schedule type {kind!r}; expected one of {', '.join(KINDS)}")
    resolve_zone(zone)
    if kind == "cron":
        parse_cron(expression)
    elif kind == "date":
        _date_instant(expression, zone)
    elif kind in ("delay", "delay-recur"):
        step = _delay(expression)
        if kind == "delay-recur" and step < MIN_RECUR:
            raise InvalidSchedule(
                f"delay-recur {expression!r} is shorter than the minimum interval "
                f"of {MIN_RECUR.total_seconds():g} s"
            )
        try:
            accepted_at + step
        except OverflowError:
            raise InvalidSchedule(
                f"delay {expression!r} is too large: it ends after the year 9999"
            ) from None


def next_fire(spec: TriggerSpec, after: datetime) -> datetime | None:
    """The first fire instant strictly after ``after``, or ``None`` if none is left.

    Strictly after, so that feeding each result back in walks the fires one by
    one without repeats.  To include a one-shot's own instant, pass an
    ``after`` before it (a ``now`` fires *at* ``accepted_at``).
    """
    return next_fire_parts(
        spec.kind, spec.expression, spec.zone, spec.accepted_at, spec.start, after
    )


def next_fire_parts(
    kind: str,
    expression: str,
    zone: str,
    accepted_at: datetime,
    start: datetime | None,
    after: datetime,
) -> datetime | None:
    """:func:`next_fire` of a spec's fields, without building the spec.

    ``Command.fire_after`` calls this, for the same reason as
    :func:`validate_parts`: a schedule's next instant is asked for whenever
    a command stores it and whenever it is woken or resumed.
    """
    if after.tzinfo is None:
        raise ValueError(f"after must be timezone-aware, got {after!r}")
    if accepted_at.tzinfo is None:  # as the spec's own check insists
        raise ValueError(f"accepted_at must be timezone-aware, got {accepted_at!r}")
    if kind == "cron":
        return _next_cron(expression, resolve_zone(zone), after)
    if kind == "date":
        return _once(_date_instant(expression, zone), after)
    if kind == "delay":
        return _once(_utc(accepted_at + _delay(expression)), after)
    if kind == "delay-recur":
        step = _delay(expression)
        if start is not None:
            # Anchored at start: start, start + step, ... (one step back, then k >= 1).
            return _next_recurring(start - step, step, after)
        return _next_recurring(accepted_at, step, after)
    if kind == "now":
        return _once(_utc(accepted_at), after)
    validate_parts(kind, expression, zone, accepted_at)  # raises: the kind is unknown
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
    """The first instant after ``after`` under Vixie cron's DST rule.

    A fixed-time job (minute and hour fields both fixed) fires a wall time
    that a spring-forward skips when the gap ends, and a wall time that a
    fall-back repeats once, at its first occurrence. A wildcard job (minute
    or hour field starting with ``*``) runs on the clock: it fires at every
    instant whose wall time matches, so in both passes of a repeat and not
    at all for the times a gap skips.
    """
    cron = parse_cron(expression)
    try:
        if cron.wildcard:
            return _walk_clock(cron, zone, after)
        return _walk_fixed(cron, zone, after)
    except OverflowError:  # the calendar ends at 9999-12-31
        return None


def _walk_fixed(cron: CronExpression, zone: Zone, after: datetime) -> datetime | None:
    """Walk matching wall times from the wall time of ``after``.

    Wall time to instant never goes backwards (see ``local_to_utc``), so the
    first match whose instant is past ``after`` is the answer; a run of gap
    wall times all map to the one transition instant, and starting from the
    wall time of ``after`` leaves the ones already fired behind. The one
    place a match can map to an instant at or before ``after`` is the repeat
    of a fall-back: ``after`` is in the second pass, the match's first
    occurrence was in the first. Those are skipped in one jump.
    """
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


def _walk_clock(cron: CronExpression, zone: Zone, after: datetime) -> datetime | None:
    """The first instant after ``after`` whose wall time matches (a wildcard job).

    In UTC order a fall-back's repeated stretch is read twice: every match
    of the first pass, then every match of the second, then on past the
    stretch. Elsewhere wall time and instant go up together, except that a
    gap has no instants: its matches are jumped over.
    """
    wall = to_local(after, zone).replace(tzinfo=None)
    span = repeat_span(wall, zone)
    if span is not None:
        second_pass = after >= span.transition
        candidate = next_wall_time(cron, wall)
        if candidate is not None and candidate < span.end:
            found = occurrences(candidate, zone)
            return found[-1] if second_pass else found[0]
        if not second_pass:
            # Nothing left in the first pass: the second one, from its start.
            candidate = next_wall_time(cron, span.start - _TICK)
            if candidate is not None and candidate < span.end:
                return occurrences(candidate, zone)[-1]
        wall = span.end - _TICK
    while True:
        candidate = next_wall_time(cron, wall)
        if candidate is None:
            return None
        found = occurrences(candidate, zone)
        if found:
            # Before a repeat's first pass or outside any: the first reading is next.
            return found[0]
        # Skipped by a gap: go on from the first wall time after it.
        wall = to_local(gap_end(candidate, zone), zone).replace(tzinfo=None) - _TICK


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
    """Seconds (``"60"``, ``"1.5"``) or an ISO-8601 duration (``"PT10M"``).

    Decimal arithmetic all the way, so the result is exact to the microsecond:
    ``PT0.1S`` is 100,000 microseconds, not what a float makes of a tenth.
    """
    text = expression.strip()
    seconds = Decimal(text) if _SECONDS.fullmatch(text) else _duration_seconds(expression, text)
    micros = int((seconds * 1_000_000).to_integral_value(ROUND_HALF_EVEN))
    if micros <= 0:
        raise _not_a_delay(expression)
    try:
        return timedelta(microseconds=micros)
    except OverflowError:
        raise InvalidSchedule(
            f"delay {expression!r} is too large: it ends after the year 9999"
        ) from None


def _duration_seconds(expression: str, text: str) -> Decimal:
    """The seconds of an ISO-8601 duration with no years or months in it.

    A year or a month has no fixed number of seconds (``P1M`` from 31 January
    is 28, 29 or 31 days), and a delay is a fixed span counted from the
    record timestamp, so those two units are refused rather than guessed.
    """
    parts = _DURATION.fullmatch(text)
    if parts is None or not any(parts.groupdict().values()):
        raise _not_a_delay(expression)
    if parts["years"] or parts["months"]:
        raise InvalidSchedule(
            f"delay {expression!r} counts years or months, whose length depends on the"
            " calendar; write weeks, days or smaller units (e.g. P30D)"
        )
    return sum(
        (
            Decimal(parts[unit].replace(",", ".")) * seconds
            for unit, seconds in _DURATION_SECONDS.items()
            if parts[unit]
        ),
        Decimal(0),
    )


def _not_a_delay(expression: str) -> InvalidSchedule:
    return InvalidSchedule(
        f"delay {expression!r} is not a positive number of seconds"
        " or ISO-8601 duration (e.g. 90, 1.5, PT10M)"
    )


def local_instant(expression: str, zone: str) -> datetime:
    """An ISO-8601 date-time read as ``date`` schedules are (for start/end bounds)."""
    return _date_instant(expression, zone)
