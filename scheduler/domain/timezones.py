"""Wall-clock time versus UTC instants: the only module that touches pytz.

Cron and date schedules are written in local wall time, but everything the
service stores and compares is a UTC instant.  Going from wall time to instant
is not a function at a DST change, so this module settles it once, the way
Vixie cron does:

* a wall time that never happens (the clock jumps over it) maps to the first
  instant after the jump, which is the transition instant itself;
* a wall time that happens twice (the clock is set back) maps to its first
  occurrence.

Nothing here knows a particular zone's offsets.  The two pytz localisations
(``is_dst`` true and false) give the candidate instants; the exact transition
instant, when one is needed, is found by bisecting UTC between them.  That
keeps southern-hemisphere zones, 30-minute DST (Australia/Lord_Howe) and
changes of standard offset (Europe/Moscow 2014, Pacific/Apia 2011) right.

A limit that comes with pytz: its tables stop at 2037, so later years keep
whatever offset was in force after the last listed transition.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

import pytz
from pytz.tzinfo import BaseTzInfo

from scheduler.domain.errors import InvalidSchedule

__all__ = ["Zone", "local_to_utc", "repeat_end", "resolve_zone", "to_local"]

Zone = BaseTzInfo
"""What :func:`resolve_zone` hands out and every other function here takes."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)


@lru_cache(maxsize=1024)
def resolve_zone(name: str) -> Zone:
    """Turn an IANA name into a zone, or reject it with the name in the message.

    Cached because every ``next_fire`` resolves its schedule's zone; pytz's own
    lookup normalises the string on every call.  The bound keeps a stream of
    odd spellings from growing the cache without limit.
    """
    try:
        return pytz.timezone(name)
    except (pytz.UnknownTimeZoneError, AttributeError, TypeError):
        # AttributeError/TypeError: pytz was handed something that is not text.
        raise InvalidSchedule(f"unknown time zone {name!r}") from None


def to_local(instant_utc: datetime, zone: Zone) -> datetime:
    """Wall time (aware, in ``zone``) of an instant.

    A naive input is refused rather than guessed at: inside the service every
    instant is aware UTC, so a naive one is a bug upstream.
    """
    if instant_utc.tzinfo is None:
        raise ValueError(f"to_local needs an aware instant, got naive {instant_utc!r}")
    return instant_utc.astimezone(zone)


def local_to_utc(naive: datetime, zone: Zone) -> datetime:
    """The instant (aware UTC) at which a wall time fires under the Vixie rule.

    The result never decreases as the wall time increases, which is what lets
    the cron code walk wall times in order and trust the instants to follow.
    """
    occurrences = _occurrences(naive, zone)
    if occurrences:
        return occurrences[0]
    return _gap_end(naive, zone)


def repeat_end(naive: datetime, zone: Zone) -> datetime | None:
    """First wall time after the repeated stretch that contains ``naive``.

    ``None`` when ``naive`` happens only once (or never).  A caller that has
    already passed the first occurrence of a repeated wall time uses this to
    jump over the rest of the repeat in one step instead of testing each
    second of it.
    """
    occurrences = _occurrences(naive, zone)
    if len(occurrences) < 2:
        return None
    first, second = occurrences[0], occurrences[-1]
    first_offset = _offset(first, zone)
    # The clock is set back somewhere in (first, second]; find where the
    # offset stops being the one the first occurrence had.
    transition = _bisect_seconds(first, second, lambda u: _offset(u, zone) != first_offset)
    # The wall clock reads ``naive`` at ``first`` and keeps running until the
    # transition, so the repeat ends where it would have read at that moment.
    return naive + (transition - first)


def _occurrences(naive: datetime, zone: Zone) -> list[datetime]:
    """Every instant (aware UTC, ascending) whose wall time in ``zone`` is ``naive``.

    pytz's two localisations cover both sides of a transition; a candidate
    counts only if converting it back gives the same wall time, which filters
    out the offset pytz invents for a wall time inside a gap.
    """
    if naive.tzinfo is not None:
        raise ValueError(f"expected a naive wall time, got {naive!r}")
    # Fast path, taken almost always: one offset in force for a day either
    # side means the wall time happens exactly once.  pytz's localize is
    # several times slower and this runs once per cron candidate.
    guess = naive.replace(tzinfo=UTC)
    try:
        offset = _offset(guess - _DAY, zone)
        if offset is not None and offset == _offset(guess + _DAY, zone):
            instant = guess - offset
            if _offset(instant, zone) == offset:
                return [instant]
    except OverflowError:
        pass  # within a day of datetime.min/max: let pytz sort it out
    found: set[datetime] = set()
    for is_dst in (True, False):
        candidate = zone.localize(naive, is_dst=is_dst)
        if zone.normalize(candidate).replace(tzinfo=None) == naive:
            found.add(candidate.astimezone(UTC))
    return sorted(found)


def _gap_end(naive: datetime, zone: Zone) -> datetime:
    """The transition instant that jumped over ``naive``.

    pytz localises a skipped wall time with the offset from either side of the
    jump; the two results bracket the transition, which is then the first
    instant whose wall time is already past ``naive``.
    """
    candidates = sorted(zone.localize(naive, is_dst=flag).astimezone(UTC) for flag in (True, False))
    low, high = candidates[0], candidates[-1]

    def is_past(instant: datetime) -> bool:
        return _wall(instant, zone) > naive

    if low == high or is_past(low) or not is_past(high):
        # Not a bracket pytz normally gives; widen to the largest gap tzdata
        # has ever had (Pacific/Apia dropped a whole day) and search that.
        low, high = (
            naive.replace(tzinfo=UTC) - timedelta(hours=26),
            naive.replace(tzinfo=UTC) + timedelta(hours=26),
        )
    return _bisect_seconds(low, high, is_past)


def _bisect_seconds(low: datetime, high: datetime, flipped: Callable[[datetime], bool]) -> datetime:
    """Smallest whole-second instant in (low, high] where ``flipped`` holds.

    Assumes ``flipped`` is false at ``low`` and true from some point on; tzdata
    transitions fall on whole seconds, so a second is fine enough.
    """
    lo = (low - _EPOCH) // _SECOND
    hi = -((_EPOCH - high) // _SECOND)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if flipped(_EPOCH + mid * _SECOND):
            hi = mid
        else:
            lo = mid
    return _EPOCH + hi * _SECOND


def _wall(instant: datetime, zone: Zone) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def _offset(instant: datetime, zone: Zone) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()
