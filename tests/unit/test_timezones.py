"""Wall time to instant and back, with the DST rule pinned zone by zone.

Named cases first (one per kind of transition and hemisphere), then
properties over random wall times near every transition of a set of zones.
``transitions`` is shared with the trigger tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.errors import InvalidSchedule
from scheduler.domain.timezones import local_to_utc, repeat_end, resolve_zone, to_local

DST_ZONES = (
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "America/Santiago",
    "Asia/Tehran",
    "Europe/Moscow",
)
FIXED_ZONES = ("Asia/Seoul", "Asia/Kolkata", "Asia/Tokyo", "UTC")
SECOND = timedelta(seconds=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


@cache
def transitions(zone_name: str, year: int) -> tuple[tuple[datetime, timedelta], ...]:
    """Every offset change in ``year``: (instant, new offset - old offset).

    Found by scanning days and bisecting to the second, so the tests do not
    lean on pytz internals or on the code under test.
    """
    zone = resolve_zone(zone_name)

    def offset(instant: datetime) -> timedelta:
        value = instant.astimezone(zone).utcoffset()
        assert value is not None
        return value

    found = []
    day = utc(year, 1, 1)
    while day.year == year:
        following = day + timedelta(days=1)
        if offset(day) != offset(following):
            low, high = day, following
            while high - low > SECOND:
                middle = low + (high - low) // 2
                middle = middle.replace(microsecond=0)
                if offset(middle) == offset(day):
                    low = middle
                else:
                    high = middle
            found.append((high, offset(high) - offset(low)))
        day = following
    return tuple(found)


# --- resolve_zone ---------------------------------------------------------


def test_resolve_zone_knows_iana_names() -> None:
    assert resolve_zone("Asia/Seoul").key == "Asia/Seoul"
    assert resolve_zone("UTC").utcoffset(datetime(2025, 1, 1)) == timedelta(0)


def test_resolve_zone_returns_the_same_object_each_time() -> None:
    assert resolve_zone("Europe/Berlin") is resolve_zone("Europe/Berlin")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Mars/Base", "unknown time zone 'Mars/Base'"),
        ("", "unknown time zone ''"),
        ("Asia/Séoul", "unknown time zone 'Asia/Séoul'"),
        ("../etc/passwd", "unknown time zone '../etc/passwd'"),
    ],
)
def test_unknown_zone_is_rejected_by_name(name: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        resolve_zone(name)
    assert str(caught.value) == message


# --- to_local -------------------------------------------------------------


def test_to_local_gives_the_wall_time_in_the_zone() -> None:
    local = to_local(utc(2025, 7, 1, 16, 0), resolve_zone("America/New_York"))
    assert local.replace(tzinfo=None) == datetime(2025, 7, 1, 12, 0)
    assert local.utcoffset() == timedelta(hours=-4)


def test_to_local_tells_the_two_passes_of_a_repeated_hour_apart() -> None:
    zone = resolve_zone("America/New_York")
    first, second = to_local(utc(2025, 11, 2, 5, 30), zone), to_local(utc(2025, 11, 2, 6, 30), zone)
    assert first.replace(tzinfo=None) == second.replace(tzinfo=None) == datetime(2025, 11, 2, 1, 30)
    assert (first.tzname(), second.tzname()) == ("EDT", "EST")


def test_to_local_refuses_a_naive_instant() -> None:
    with pytest.raises(ValueError, match="aware"):
        to_local(datetime(2025, 1, 1), resolve_zone("UTC"))


# --- local_to_utc: named cases ---------------------------------------------

NAMED = [
    # (zone, wall time, instant it fires at)
    ("America/New_York", datetime(2025, 1, 15, 9, 0), utc(2025, 1, 15, 14, 0)),
    ("America/New_York", datetime(2025, 7, 15, 9, 0), utc(2025, 7, 15, 13, 0)),
    # spring forward 2025-03-09: 02:00 EST -> 03:00 EDT at 07:00 UTC
    ("America/New_York", datetime(2025, 3, 9, 1, 59, 59), utc(2025, 3, 9, 6, 59, 59)),
    ("America/New_York", datetime(2025, 3, 9, 2, 0), utc(2025, 3, 9, 7, 0)),
    ("America/New_York", datetime(2025, 3, 9, 2, 30), utc(2025, 3, 9, 7, 0)),
    ("America/New_York", datetime(2025, 3, 9, 2, 59, 59), utc(2025, 3, 9, 7, 0)),
    ("America/New_York", datetime(2025, 3, 9, 3, 0), utc(2025, 3, 9, 7, 0)),
    ("America/New_York", datetime(2025, 3, 9, 3, 1), utc(2025, 3, 9, 7, 1)),
    # fall back 2025-11-02: 02:00 EDT -> 01:00 EST at 06:00 UTC
    ("America/New_York", datetime(2025, 11, 2, 0, 59), utc(2025, 11, 2, 4, 59)),
    ("America/New_York", datetime(2025, 11, 2, 1, 0), utc(2025, 11, 2, 5, 0)),
    ("America/New_York", datetime(2025, 11, 2, 1, 30), utc(2025, 11, 2, 5, 30)),
    ("America/New_York", datetime(2025, 11, 2, 1, 59, 59), utc(2025, 11, 2, 5, 59, 59)),
    ("America/New_York", datetime(2025, 11, 2, 2, 0), utc(2025, 11, 2, 7, 0)),
    # London 2025: gap 01:00-02:00 on 03-30, repeat 01:00-02:00 on 10-26
    ("Europe/London", datetime(2025, 3, 30, 1, 30), utc(2025, 3, 30, 1, 0)),
    ("Europe/London", datetime(2025, 10, 26, 1, 30), utc(2025, 10, 26, 0, 30)),
    # Berlin 2025: gap 02:00-03:00 on 03-30, repeat 02:00-03:00 on 10-26
    ("Europe/Berlin", datetime(2025, 3, 30, 2, 30), utc(2025, 3, 30, 1, 0)),
    ("Europe/Berlin", datetime(2025, 10, 26, 2, 30), utc(2025, 10, 26, 0, 30)),
    # Sydney (southern hemisphere): spring forward in October, fall back in April
    ("Australia/Sydney", datetime(2025, 10, 5, 2, 30), utc(2025, 10, 4, 16, 0)),
    ("Australia/Sydney", datetime(2025, 4, 6, 2, 30), utc(2025, 4, 5, 15, 30)),
    ("Australia/Sydney", datetime(2025, 4, 6, 3, 0), utc(2025, 4, 5, 17, 0)),
    # Lord Howe moves by 30 minutes: +10:30 <-> +11
    ("Australia/Lord_Howe", datetime(2025, 10, 5, 2, 15), utc(2025, 10, 4, 15, 30)),
    ("Australia/Lord_Howe", datetime(2025, 4, 6, 1, 45), utc(2025, 4, 5, 14, 45)),
    # Santiago changes at midnight, so the gap and the repeat straddle a date
    ("America/Santiago", datetime(2025, 9, 7, 0, 30), utc(2025, 9, 7, 4, 0)),
    ("America/Santiago", datetime(2025, 4, 5, 23, 30), utc(2025, 4, 6, 2, 30)),
    # Moscow 2014: standard offset +4 -> +3, no DST flag on either side
    ("Europe/Moscow", datetime(2014, 10, 26, 1, 30), utc(2014, 10, 25, 21, 30)),
    # Apia 2011 skipped the whole of 30 December (-10 -> +14)
    ("Pacific/Apia", datetime(2011, 12, 30, 12, 0), utc(2011, 12, 30, 10, 0)),
    ("Pacific/Apia", datetime(2011, 12, 31, 0, 0), utc(2011, 12, 30, 10, 0)),
    ("Asia/Seoul", datetime(2025, 3, 9, 2, 30), utc(2025, 3, 8, 17, 30)),
    ("UTC", datetime(2025, 3, 9, 2, 30), utc(2025, 3, 9, 2, 30)),
]


@pytest.mark.parametrize(
    ("zone_name", "wall", "expected"),
    NAMED,
    ids=[f"{zone}-{wall:%Y%m%dT%H%M%S}" for zone, wall, _ in NAMED],
)
def test_local_to_utc_named_cases(zone_name: str, wall: datetime, expected: datetime) -> None:
    instant = local_to_utc(wall, resolve_zone(zone_name))
    assert instant == expected
    assert instant.utcoffset() == timedelta(0)


def test_local_to_utc_refuses_an_aware_wall_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        local_to_utc(utc(2025, 1, 1), resolve_zone("UTC"))


def test_local_to_utc_keeps_microseconds() -> None:
    wall = datetime(2025, 6, 1, 12, 0, 0, 250_000)
    assert local_to_utc(wall, resolve_zone("Asia/Seoul")) == utc(2025, 6, 1, 3, 0, 0, 250_000)


# --- repeat_end --------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone_name", "wall", "end"),
    [
        ("America/New_York", datetime(2025, 11, 2, 1, 0), datetime(2025, 11, 2, 2, 0)),
        ("America/New_York", datetime(2025, 11, 2, 1, 59, 59), datetime(2025, 11, 2, 2, 0)),
        ("Australia/Sydney", datetime(2025, 4, 6, 2, 15), datetime(2025, 4, 6, 3, 0)),
        ("Australia/Lord_Howe", datetime(2025, 4, 6, 1, 45), datetime(2025, 4, 6, 2, 0)),
        ("America/Santiago", datetime(2025, 4, 5, 23, 10), datetime(2025, 4, 6, 0, 0)),
        ("Europe/Moscow", datetime(2014, 10, 26, 1, 30), datetime(2014, 10, 26, 2, 0)),
    ],
)
def test_repeat_end_is_where_the_second_pass_ends(
    zone_name: str, wall: datetime, end: datetime
) -> None:
    assert repeat_end(wall, resolve_zone(zone_name)) == end


@pytest.mark.parametrize(
    "wall",
    [
        datetime(2025, 11, 2, 0, 59, 59),  # just before the repeat
        datetime(2025, 11, 2, 2, 0),  # just after it
        datetime(2025, 3, 9, 2, 30),  # in the spring gap: never happens at all
        datetime(2025, 7, 1, 12, 0),
    ],
)
def test_repeat_end_is_none_for_a_wall_time_that_is_not_repeated(wall: datetime) -> None:
    assert repeat_end(wall, resolve_zone("America/New_York")) is None


# --- properties ---------------------------------------------------------------


@st.composite
def zone_and_wall(draw: st.DrawFn) -> tuple[str, datetime]:
    """A wall time, usually within a few hours of one of the zone's transitions."""
    zone_name = draw(st.sampled_from(DST_ZONES + FIXED_ZONES))
    year = draw(st.integers(2000, 2036))
    changes = transitions(zone_name, year)
    near_a_change = draw(st.booleans())
    if changes and near_a_change:
        instant, _ = draw(st.sampled_from(changes))
        # the wall time just after the change; a gap ends there, a repeat starts there
        anchor = to_local(instant, resolve_zone(zone_name)).replace(tzinfo=None)
        return zone_name, anchor + timedelta(seconds=draw(st.integers(-3 * 3600, 3 * 3600)))
    moment = draw(st.datetimes(datetime(year, 1, 1), datetime(year, 12, 31, 23, 59, 59)))
    return zone_name, moment.replace(microsecond=0)


@settings(max_examples=400, deadline=None)
@given(zone_and_wall())
def test_wall_time_maps_to_its_first_occurrence_or_to_the_end_of_its_gap(
    case: tuple[str, datetime],
) -> None:
    zone_name, wall = case
    zone = resolve_zone(zone_name)
    instant = local_to_utc(wall, zone)
    landed = to_local(instant, zone).replace(tzinfo=None)
    if landed == wall:
        # first occurrence: no earlier instant, up to the largest shift a
        # zone ever made at once, shows the same wall time
        for shift in range(1800, 3 * 3600 + 1, 1800):
            earlier = instant - timedelta(seconds=shift)
            assert to_local(earlier, zone).replace(tzinfo=None) != wall
    else:
        # in a gap: the clock jumps over ``wall`` exactly at ``instant``
        before = to_local(instant - SECOND, zone).replace(tzinfo=None)
        assert before < wall < landed
        assert landed - before > SECOND


@settings(max_examples=300, deadline=None)
@given(zone_and_wall(), st.integers(0, 4 * 3600))
def test_later_wall_times_never_fire_earlier(case: tuple[str, datetime], step: int) -> None:
    zone_name, wall = case
    zone = resolve_zone(zone_name)
    later = wall + timedelta(seconds=step)
    assert local_to_utc(wall, zone) <= local_to_utc(later, zone)


@pytest.mark.parametrize("zone_name", DST_ZONES)
def test_every_transition_of_2020_to_2030_follows_the_rule(zone_name: str) -> None:
    zone = resolve_zone(zone_name)
    for year in range(2020, 2031):
        for instant, jump in transitions(zone_name, year):
            before = to_local(instant - SECOND, zone).replace(tzinfo=None) + SECOND
            if jump > timedelta(0):  # gap: every skipped wall time fires at the jump
                for wall in (before, before + jump / 2, before + jump - SECOND):
                    assert local_to_utc(wall, zone) == instant
                    assert repeat_end(wall, zone) is None
            else:  # repeat: first pass wins, and the repeat ends where it started
                for wall in (before + jump, before + jump / 2, before - SECOND):
                    assert local_to_utc(wall, zone) == instant - (before - wall)
                    assert repeat_end(wall, zone) == before


def test_format_utc_tells_the_two_halves_of_a_repeated_hour_apart() -> None:
    # 01:30 happens twice in New York on 2026-11-01: the two compare equal
    # (same zone, fold ignored) but are an hour apart, and formatted as such
    # even once the first has been formatted (and remembered).
    from zoneinfo import ZoneInfo

    from scheduler.domain.timefmt import format_utc

    zone = ZoneInfo("America/New_York")
    first = datetime(2026, 11, 1, 1, 30, tzinfo=zone)
    second = first.replace(fold=1)
    assert first == second
    assert format_utc(first) == "2026-11-01T05:30:00.000Z"
    assert format_utc(second) == "2026-11-01T06:30:00.000Z"
    assert format_utc(first, micros=True) == "2026-11-01T05:30:00.000000Z"
