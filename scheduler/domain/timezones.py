"""Wall-clock time versus UTC instants, by the IANA rules for any year.

Cron and date schedules are written in local wall time, but everything the
service stores and compares is a UTC instant. Zones come from the ``tzdata``
package (the IANA database, pinned with the service), read with the
standard library's ``zoneinfo``: its rules hold for every year, where pytz's
tables stop in 2037 and later years kept the last offset listed. The
package, not the host's ``/usr/share/zoneinfo``, so that every worker, on
whatever image, computes the same instants for the same schedule.

Going from wall time to instant is not a function at a DST change; this
module gives the facts the trigger code decides with:

* :func:`occurrences`: every instant a wall time happens at (none in a
  spring-forward gap, two in a fall-back repeat);
* :func:`local_to_utc`: the fixed-time rule (first occurrence; a skipped
  wall time at the end of its gap);
* :func:`repeat_span`: the stretch of wall times a fall-back repeats, and
  where the clock is set back.

Nothing here knows a particular zone's offsets. Transition instants are
found by bisecting UTC between two occurrences (or the two readings of a
skipped time), which keeps southern-hemisphere zones, 30-minute DST
(Australia/Lord_Howe) and changes of standard offset (Europe/Moscow 2014,
Pacific/Apia 2011) right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from importlib import resources
from zoneinfo import ZoneInfo

from scheduler.domain.errors import InvalidSchedule

__all__ = [
    "Repeat",
    "Zone",
    "gap_end",
    "local_to_utc",
    "occurrences",
    "repeat_end",
    "repeat_span",
    "resolve_zone",
    "to_local",
]

Zone = ZoneInfo
"""What :func:`resolve_zone` hands out and every other function here takes."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)


@cache
def _names() -> dict[str, str]:
    """Every zone name the package has, by its lower-case spelling.

    Names are matched without regard to case, as pytz did (stored schedules
    written ``asia/seoul`` keep working), and only names listed here are
    opened: a name is never a path to be tried on the file system.
    """
    listed = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return {name.lower(): name for name in listed.split()}


@lru_cache(maxsize=1024)
def resolve_zone(name: str) -> Zone:
    """Turn an IANA name into a zone, or reject it with the name in the message.

    Cached: every ``next_fire`` resolves its schedule's zone. The bound keeps
    a stream of odd spellings from growing the cache without limit (only
    names the database lists are ever loaded, about 600).
    """
    key = _names().get(name.strip().lower()) if isinstance(name, str) else None
    if key is None:
        raise InvalidSchedule(f"unknown time zone {name!r}")
    return _load(key)


@cache
def _load(key: str) -> Zone:
    path = resources.files("tzdata.zoneinfo").joinpath(*key.split("/"))
    with path.open("rb") as data:
        return ZoneInfo.from_file(data, key=key)


def to_local(instant_utc: datetime, zone: Zone) -> datetime:
    """Wall time (aware, in ``zone``) of an instant.

    A naive input is refused rather than guessed at: inside the service every
    instant is aware UTC, so a naive one is a bug upstream.
    """
    if instant_utc.tzinfo is None:
        raise ValueError(f"to_local needs an aware instant, got naive {instant_utc!r}")
    return instant_utc.astimezone(zone)


def local_to_utc(naive: datetime, zone: Zone) -> datetime:
    """The instant (aware UTC) at which a wall time fires under the fixed-time rule.

    Its first occurrence; a wall time that never happens fires when its gap
    ends. The result never decreases as the wall time increases, which is
    what lets the cron code walk wall times in order and trust the instants
    to follow.
    """
    found = occurrences(naive, zone)
    if found:
        return found[0]
    return gap_end(naive, zone)


def occurrences(naive: datetime, zone: Zone) -> list[datetime]:
    """Every instant (aware UTC, ascending) whose wall time in ``zone`` is ``naive``.

    ``fold`` 0 and 1 read the wall time with the offset before and after a
    transition; a reading counts only if converting it back gives the same
    wall time, which drops the readings of a time inside a gap.
    """
    if naive.tzinfo is not None:
        raise ValueError(f"expected a naive wall time, got {naive!r}")
    found: list[datetime] = []
    for fold in (0, 1):
        instant = naive.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if _wall(instant, zone) == naive and instant not in found:
            found.append(instant)
    found.sort()
    return found


@dataclass(frozen=True)
class Repeat:
    """A stretch of wall times that happens twice: ``[start, end)``.

    The first pass runs until ``transition`` (the instant the clock is set
    back), the second from it.
    """

    start: datetime
    end: datetime
    transition: datetime


def repeat_span(naive: datetime, zone: Zone) -> Repeat | None:
    """The repeated stretch that contains ``naive``; None if it happens once (or never)."""
    found = occurrences(naive, zone)
    if len(found) < 2:
        return None
    first, second = found[0], found[-1]
    before = _offset(first, zone)
    # The clock is set back somewhere in (first, second]; find where the
    # offset stops being the one the first occurrence had.
    transition = _bisect_seconds(first, second, lambda u: _offset(u, zone) != before)
    after = _offset(transition, zone)
    assert before is not None and after is not None  # a zone always has an offset
    naive_at = transition.replace(tzinfo=None)
    return Repeat(start=naive_at + after, end=naive_at + before, transition=transition)


def repeat_end(naive: datetime, zone: Zone) -> datetime | None:
    """First wall time after the repeated stretch that contains ``naive``, or None."""
    span = repeat_span(naive, zone)
    return None if span is None else span.end


def gap_end(naive: datetime, zone: Zone) -> datetime:
    """The transition instant that jumped over ``naive``.

    The two readings of a skipped wall time (``fold`` 0 and 1) bracket the
    transition, which is then the first instant whose wall time is already
    past ``naive``.
    """
    readings = sorted(naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    low, high = readings[0], readings[-1]

    def is_past(instant: datetime) -> bool:
        return _wall(instant, zone) > naive

    if low == high or is_past(low) or not is_past(high):
        # Not a bracket the readings normally give; widen to the largest gap
        # tzdata has ever had (Pacific/Apia dropped a whole day) and search that.
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
