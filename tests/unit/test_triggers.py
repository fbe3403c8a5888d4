"""Fire instants of every schedule type, DST cases by name, and properties.

The properties check ``next_fire`` against an oracle that knows nothing of
croniter: a small cron grammar with its own matcher, and a brute-force walk
over wall-clock minutes.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.errors import InvalidSchedule
from scheduler.domain.timezones import local_to_utc, resolve_zone, to_local
from scheduler.domain.triggers import TriggerSpec, fire_times, next_fire, validate
from tests.unit.test_timezones import DST_ZONES, FIXED_ZONES, transitions, utc

ACCEPTED = utc(2025, 1, 1, 12, 0)


def spec(
    kind: str, expression: str = "", zone: str = "UTC", accepted_at: datetime = ACCEPTED
) -> TriggerSpec:
    return TriggerSpec(kind=kind, expression=expression, zone=zone, accepted_at=accepted_at)


def cron_fires(expr: str, zone: str, after: datetime, count: int) -> list[datetime]:
    return fire_times(spec("cron", expr, zone), after, count)


def wall(instant: datetime, zone: str) -> str:
    """Local wall time with its abbreviation, for readable expectations."""
    return to_local(instant, resolve_zone(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


# --- cron across DST, by name ---------------------------------------------------


def test_new_york_spring_forward_0230_fires_when_the_gap_ends() -> None:
    fires = cron_fires("30 2 * * *", "America/New_York", utc(2025, 3, 8, 12), 3)
    assert fires == [utc(2025, 3, 9, 7, 0), utc(2025, 3, 10, 6, 30), utc(2025, 3, 11, 6, 30)]
    assert wall(fires[0], "America/New_York") == "2025-03-09 03:00:00 EDT"


def test_new_york_spring_forward_gap_times_collapse_into_one_fire() -> None:
    fires = cron_fires("*/15 2,3 * * *", "America/New_York", utc(2025, 3, 9, 6, 50), 5)
    # 02:00, 02:15, 02:30 and 02:45 never happen: one fire at 03:00 EDT stands
    # for all of them, then 03:00's own slot is not repeated
    assert [wall(f, "America/New_York") for f in fires] == [
        "2025-03-09 03:00:00 EDT",
        "2025-03-09 03:15:00 EDT",
        "2025-03-09 03:30:00 EDT",
        "2025-03-09 03:45:00 EDT",
        "2025-03-10 02:00:00 EDT",
    ]


def test_new_york_fall_back_0130_fires_once_at_its_first_occurrence() -> None:
    fires = cron_fires("30 1 * * *", "America/New_York", utc(2025, 11, 1, 12), 3)
    assert fires == [utc(2025, 11, 2, 5, 30), utc(2025, 11, 3, 6, 30), utc(2025, 11, 4, 6, 30)]
    assert wall(fires[0], "America/New_York") == "2025-11-02 01:30:00 EDT"


def test_new_york_fall_back_every_15_minutes_keeps_its_rhythm_through_the_repeat() -> None:
    # A wildcard job (Vixie): both passes of 01:00-02:00, never a 75-minute hole.
    fires = cron_fires("*/15 * * * *", "America/New_York", utc(2025, 11, 2, 4, 50), 10)
    assert [wall(f, "America/New_York") for f in fires] == [
        "2025-11-02 01:00:00 EDT",
        "2025-11-02 01:15:00 EDT",
        "2025-11-02 01:30:00 EDT",
        "2025-11-02 01:45:00 EDT",
        "2025-11-02 01:00:00 EST",
        "2025-11-02 01:15:00 EST",
        "2025-11-02 01:30:00 EST",
        "2025-11-02 01:45:00 EST",
        "2025-11-02 02:00:00 EST",
        "2025-11-02 02:15:00 EST",
    ]
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(fires))


def test_new_york_a_fixed_time_job_inside_the_repeated_hour_waits_for_the_next_day() -> None:
    # 06:10 UTC is 01:10 EST, the second pass: 01:30 already fired in the first.
    assert cron_fires("30 1 * * *", "America/New_York", utc(2025, 11, 2, 6, 10), 1) == [
        utc(2025, 11, 3, 6, 30)
    ]


def test_new_york_a_wildcard_job_inside_the_repeated_hour_runs_on_the_clock() -> None:
    assert cron_fires("* * * * * *", "America/New_York", utc(2025, 11, 2, 6, 10), 2) == [
        utc(2025, 11, 2, 6, 10, 1),
        utc(2025, 11, 2, 6, 10, 2),
    ]


def test_london_spring_forward_and_fall_back() -> None:
    spring = cron_fires("30 1 * * *", "Europe/London", utc(2025, 3, 29, 12), 2)
    assert [wall(f, "Europe/London") for f in spring] == [
        "2025-03-30 02:00:00 BST",
        "2025-03-31 01:30:00 BST",
    ]
    autumn = cron_fires("30 1 * * *", "Europe/London", utc(2025, 10, 25, 12), 2)
    assert autumn == [utc(2025, 10, 26, 0, 30), utc(2025, 10, 27, 1, 30)]
    assert wall(autumn[0], "Europe/London") == "2025-10-26 01:30:00 BST"


def test_berlin_hourly_fires_every_hour_through_the_repeated_hour() -> None:
    fires = cron_fires("0 * * * *", "Europe/Berlin", utc(2025, 10, 25, 22, 30), 5)
    assert [wall(f, "Europe/Berlin") for f in fires] == [
        "2025-10-26 01:00:00 CEST",
        "2025-10-26 02:00:00 CEST",
        "2025-10-26 02:00:00 CET",
        "2025-10-26 03:00:00 CET",
        "2025-10-26 04:00:00 CET",
    ]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(fires))


def test_berlin_half_past_every_hour_on_2026_10_25_misses_no_hour() -> None:
    # The case: 00:30Z, 01:30Z, then 02:30Z (not 00:30Z then 02:30Z).
    fires = cron_fires("30 * * * *", "Europe/Berlin", utc(2026, 10, 25, 0), 3)
    assert fires == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2, 30)]


def test_berlin_a_wildcard_job_skips_the_times_a_spring_forward_removes() -> None:
    fires = cron_fires("30 * * * *", "Europe/Berlin", utc(2026, 3, 29, 0), 2)
    assert [wall(f, "Europe/Berlin") for f in fires] == [
        "2026-03-29 01:30:00 CET",
        "2026-03-29 03:30:00 CEST",
    ]
    assert fires[1] - fires[0] == timedelta(hours=1)


def test_sydney_springs_forward_in_october() -> None:
    fires = cron_fires("30 2 * * *", "Australia/Sydney", utc(2025, 10, 3, 12), 3)
    assert [wall(f, "Australia/Sydney") for f in fires] == [
        "2025-10-04 02:30:00 AEST",
        "2025-10-05 03:00:00 AEDT",
        "2025-10-06 02:30:00 AEDT",
    ]
    assert fires[1] == utc(2025, 10, 4, 16, 0)


def test_sydney_falls_back_in_april() -> None:
    fires = cron_fires("30 2 * * *", "Australia/Sydney", utc(2025, 4, 4, 12), 3)
    assert [wall(f, "Australia/Sydney") for f in fires] == [
        "2025-04-05 02:30:00 AEDT",
        "2025-04-06 02:30:00 AEDT",
        "2025-04-07 02:30:00 AEST",
    ]
    assert fires[1] == utc(2025, 4, 5, 15, 30)


def test_lord_howe_moves_by_half_an_hour() -> None:
    spring = cron_fires("15 2 * * *", "Australia/Lord_Howe", utc(2025, 10, 4, 0), 2)
    assert spring == [utc(2025, 10, 4, 15, 30), utc(2025, 10, 5, 15, 15)]
    autumn = cron_fires("*/20 1 * * *", "Australia/Lord_Howe", utc(2025, 4, 5, 14, 0), 4)
    # A wildcard job: 01:20, 01:40 at +11, then 01:40 again at +10:30 (the clock
    # went back from 02:00 to 01:30), then the next day's 01:00.
    assert autumn == [
        utc(2025, 4, 5, 14, 20),
        utc(2025, 4, 5, 14, 40),
        utc(2025, 4, 5, 15, 10),
        utc(2025, 4, 6, 14, 30),
    ]
    fixed = cron_fires("40 1 * * *", "Australia/Lord_Howe", utc(2025, 4, 5, 14, 0), 2)
    assert fixed == [utc(2025, 4, 5, 14, 40), utc(2025, 4, 6, 15, 10)]


def test_santiago_midnight_does_not_exist_on_the_spring_forward_day() -> None:
    fires = cron_fires("0 0 * * *", "America/Santiago", utc(2025, 9, 6, 12), 2)
    assert [wall(f, "America/Santiago") for f in fires] == [
        "2025-09-07 01:00:00 -03",
        "2025-09-08 00:00:00 -03",
    ]


def test_seconds_first_cron_in_seoul() -> None:
    fires = cron_fires("30 * * * * *", "Asia/Seoul", utc(2025, 1, 1, 0, 0, 30), 3)
    assert [wall(f, "Asia/Seoul") for f in fires] == [
        "2025-01-01 09:01:30 KST",
        "2025-01-01 09:02:30 KST",
        "2025-01-01 09:03:30 KST",
    ]


def test_every_ten_seconds_across_a_spring_forward_gap() -> None:
    fires = cron_fires("*/10 * * * * *", "America/New_York", utc(2025, 3, 9, 6, 59, 45), 4)
    assert fires == [
        utc(2025, 3, 9, 6, 59, 50),
        utc(2025, 3, 9, 7, 0, 0),  # 01:59:50 EST, then the gap, then 03:00:00 EDT
        utc(2025, 3, 9, 7, 0, 10),
        utc(2025, 3, 9, 7, 0, 20),
    ]


def test_weekday_mornings_in_seoul() -> None:
    # Friday 2025-01-03 10:00 KST: next is Monday 09:00 KST
    fires = cron_fires("0 9 * * 1-5", "Asia/Seoul", utc(2025, 1, 3, 1, 0), 3)
    assert fires == [utc(2025, 1, 6, 0, 0), utc(2025, 1, 7, 0, 0), utc(2025, 1, 8, 0, 0)]


def test_after_may_be_aware_in_any_zone() -> None:
    after = to_local(utc(2025, 1, 1, 0, 0), resolve_zone("Europe/Berlin"))  # 01:00 CET
    assert next_fire(spec("cron", "0 10 * * *", "Asia/Seoul"), after) == utc(2025, 1, 1, 1, 0)


# --- one-shots and intervals ----------------------------------------------------


def test_date_is_a_local_time_in_the_zone() -> None:
    date = spec("date", "2025-06-01T09:00:00", "Asia/Seoul")
    assert next_fire(date, ACCEPTED) == utc(2025, 6, 1, 0, 0)


def test_date_with_an_offset_ignores_the_zone() -> None:
    date = spec("date", "2025-06-01T09:00:00+02:00", "Asia/Seoul")
    assert next_fire(date, ACCEPTED) == utc(2025, 6, 1, 7, 0)


def test_date_with_z_is_utc() -> None:
    date = spec("date", "2025-06-01T09:00:00Z", "America/New_York")
    assert next_fire(date, ACCEPTED) == utc(2025, 6, 1, 9, 0)


def test_date_accepts_a_space_and_a_bare_date() -> None:
    assert next_fire(spec("date", "2025-06-01 09:30", "UTC"), ACCEPTED) == utc(2025, 6, 1, 9, 30)
    assert next_fire(spec("date", "2025-06-01", "Asia/Seoul"), ACCEPTED) == utc(2025, 5, 31, 15)


def test_date_in_a_spring_forward_gap_fires_when_the_gap_ends() -> None:
    date = spec("date", "2025-03-09T02:30:00", "America/New_York")
    assert next_fire(date, ACCEPTED) == utc(2025, 3, 9, 7, 0)


def test_date_in_a_repeated_hour_fires_at_the_first_pass() -> None:
    date = spec("date", "2025-11-02T01:30:00", "America/New_York")
    assert next_fire(date, ACCEPTED) == utc(2025, 11, 2, 5, 30)


def test_date_fires_once() -> None:
    date = spec("date", "2025-06-01T09:00:00Z")
    assert fire_times(date, ACCEPTED, 5) == [utc(2025, 6, 1, 9, 0)]
    assert next_fire(date, utc(2025, 6, 1, 9, 0)) is None
    assert next_fire(date, utc(2026, 1, 1)) is None


def test_delay_counts_from_acceptance() -> None:
    assert next_fire(spec("delay", "90"), ACCEPTED) == ACCEPTED + timedelta(seconds=90)
    assert next_fire(spec("delay", "1.5"), ACCEPTED) == ACCEPTED + timedelta(seconds=1.5)
    assert next_fire(spec("delay", " 0.000001 "), ACCEPTED) == ACCEPTED + timedelta(microseconds=1)


def test_delay_fires_once_and_then_is_none() -> None:
    delay = spec("delay", "60")
    assert fire_times(delay, ACCEPTED, 3) == [utc(2025, 1, 1, 12, 1)]
    assert next_fire(delay, utc(2025, 1, 1, 12, 1)) is None


def test_delay_recur_fires_every_n_seconds_after_acceptance() -> None:
    recur = spec("delay-recur", "60")
    assert fire_times(recur, ACCEPTED, 3) == [
        utc(2025, 1, 1, 12, 1),
        utc(2025, 1, 1, 12, 2),
        utc(2025, 1, 1, 12, 3),
    ]


def test_delay_recur_stays_on_its_grid_however_late_it_is_asked() -> None:
    recur = spec("delay-recur", "7.5")
    after = ACCEPTED + timedelta(days=400, seconds=3)
    upcoming = next_fire(recur, after)
    assert upcoming is not None
    assert upcoming > after
    assert upcoming - after <= timedelta(seconds=7.5)
    assert (upcoming - ACCEPTED) % timedelta(seconds=7.5) == timedelta(0)
    # exactly on a fire: the next one, not the same one
    assert next_fire(recur, upcoming) == upcoming + timedelta(seconds=7.5)


def test_delay_recur_before_acceptance_starts_at_the_first_step() -> None:
    assert next_fire(spec("delay-recur", "10"), utc(2000, 1, 1)) == ACCEPTED + timedelta(seconds=10)


def test_now_fires_once_at_acceptance() -> None:
    now = spec("now")
    assert next_fire(now, ACCEPTED - timedelta(microseconds=1)) == ACCEPTED
    assert fire_times(now, utc(2000, 1, 1), 3) == [ACCEPTED]
    assert next_fire(now, ACCEPTED) is None


def test_results_are_utc_even_when_acceptance_is_not() -> None:
    seoul = resolve_zone("Asia/Seoul")
    accepted = to_local(ACCEPTED, seoul)
    for kind, expression in [("now", ""), ("delay", "5"), ("delay-recur", "5")]:
        upcoming = next_fire(spec(kind, expression, accepted_at=accepted), utc(2000, 1, 1))
        assert upcoming is not None
        assert upcoming.tzinfo is UTC


def test_fire_times_stops_when_the_schedule_ends_and_accepts_zero() -> None:
    assert fire_times(spec("cron", "0 * * * *"), ACCEPTED, 0) == []
    assert fire_times(spec("delay", "1"), ACCEPTED + timedelta(seconds=1), 4) == []
    with pytest.raises(ValueError, match="negative"):
        fire_times(spec("now"), ACCEPTED, -1)


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_fire(spec("now"), datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        TriggerSpec(kind="now", expression="", zone="UTC", accepted_at=datetime(2025, 1, 1))


# --- validation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expression", "zone"),
    [
        ("cron", "0 9 * * 1-5", "Asia/Seoul"),
        ("cron", "30 * * * * *", "Asia/Seoul"),
        ("date", "2025-03-09T02:30:00", "America/New_York"),
        ("date", "2025-03-09T02:30:00Z", "UTC"),
        ("delay", "60", "UTC"),
        ("delay", "0.5", "UTC"),
        ("delay-recur", "3600", "Europe/Berlin"),
        ("now", "", "UTC"),
    ],
)
def test_valid_specs_pass(kind: str, expression: str, zone: str) -> None:
    validate(spec(kind, expression, zone))


@pytest.mark.parametrize(
    ("kind", "expression", "zone", "message"),
    [
        (
            "weekly",
            "",
            "UTC",
            "unknown schedule type 'weekly'; expected one of cron, date, delay, delay-recur, now",
        ),
        ("cron", "0 9 * *", "UTC", "cron expression '0 9 * *' has 4 fields; expected 5 fields"),
        ("cron", "61 * * * *", "UTC", "cron expression '61 * * * *': bad minute field '61'"),
        ("cron", "* * * * *", "Mars/Base", "unknown time zone 'Mars/Base'"),
        ("now", "", "Mars/Base", "unknown time zone 'Mars/Base'"),
        ("date", "tomorrow", "UTC", "date 'tomorrow' is not an ISO-8601 date-time"),
        ("date", "2025-02-30T10:00:00", "UTC", "date '2025-02-30T10:00:00' is not an ISO-8601"),
        ("date", "", "UTC", "date '' is not an ISO-8601 date-time"),
        ("delay", "0", "UTC", "delay '0' is not a positive number of seconds"),
        ("delay", "-5", "UTC", "delay '-5' is not a positive number of seconds"),
        ("delay", "abc", "UTC", "delay 'abc' is not a positive number of seconds"),
        ("delay", "nan", "UTC", "delay 'nan' is not a positive number of seconds"),
        ("delay", "1e3", "UTC", "delay '1e3' is not a positive number of seconds"),
        ("delay", "0.0000001", "UTC", "delay '0.0000001' is not a positive number of seconds"),
        ("delay-recur", "", "UTC", "delay '' is not a positive number of seconds"),
        ("delay-recur", "0.0", "UTC", "delay '0.0' is not a positive number of seconds"),
        ("delay-recur", "0.000001", "UTC", "delay-recur '0.000001' is shorter than the minimum"),
        ("delay-recur", "0.999", "UTC", "delay-recur '0.999' is shorter than the minimum"),
        ("delay", "9" * 30, "UTC", f"delay '{'9' * 30}' is too large"),
    ],
)
def test_invalid_specs_are_refused_naming_the_value(
    kind: str, expression: str, zone: str, message: str
) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        validate(spec(kind, expression, zone))
    assert str(caught.value).startswith(message)


def test_next_fire_on_an_invalid_spec_raises_the_same_error() -> None:
    with pytest.raises(InvalidSchedule, match="bad minute field '61'"):
        next_fire(spec("cron", "61 * * * *"), ACCEPTED)
    with pytest.raises(InvalidSchedule, match="unknown schedule type 'weekly'"):
        next_fire(spec("weekly"), ACCEPTED)


# --- speed -----------------------------------------------------------------------


def test_next_fire_for_a_cron_takes_well_under_a_millisecond() -> None:
    crons = [
        spec("cron", "*/5 * * * *", "America/New_York"),
        spec("cron", "30 * * * * *", "Asia/Seoul"),
        spec("cron", "0 9 * * 1-5", "Europe/Berlin"),
    ]
    after = utc(2025, 6, 1, 12, 3)
    rounds = 1000
    started = time.perf_counter()
    for _ in range(rounds):
        for each in crons:
            next_fire(each, after)
    per_call = (time.perf_counter() - started) / (rounds * len(crons))
    assert per_call < 0.0005, f"{per_call * 1e6:.0f} us per next_fire"


# --- properties --------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Field:
    text: str
    values: frozenset[int]

    def __repr__(self) -> str:
        return repr(self.text)


@dataclass(frozen=True)
class Cron:
    """A generated expression and an independent matcher for it."""

    second: Field | None
    minute: Field
    hour: Field
    dom: Field
    month: Field
    dow: Field

    @property
    def text(self) -> str:
        fields = [self.minute, self.hour, self.dom, self.month, self.dow]
        if self.second is not None:
            fields.insert(0, self.second)
        return " ".join(f.text for f in fields)

    def minute_matches(self, moment: datetime) -> bool:
        if not (
            moment.minute in self.minute.values
            and moment.hour in self.hour.values
            and moment.month in self.month.values
        ):
            return False
        in_dom = moment.day in self.dom.values
        in_dow = moment.isoweekday() % 7 in self.dow.values
        if self.dom.text != "*" and self.dow.text != "*":
            return in_dom or in_dow  # cron ORs the two day fields when both are set
        return in_dom and in_dow

    @property
    def seconds(self) -> list[int]:
        return sorted(self.second.values) if self.second is not None else [0]

    def matches(self, moment: datetime) -> bool:
        return moment.second in self.seconds and self.minute_matches(moment)

    @property
    def wildcard(self) -> bool:
        """Vixie's wildcard job: its minute or hour field starts with ``*``."""
        return self.minute.text.startswith("*") or self.hour.text.startswith("*")


@st.composite
def field(draw: st.DrawFn, low: int, high: int, steps: bool = True) -> Field:
    """One field: ``*``, ``*/k``, ``a``, ``a-b``, ``a-b/k`` or ``a,b``."""
    shapes = ["star", "one", "range", "list"] + (["every", "stepped"] if steps else [])
    shape = draw(st.sampled_from(shapes))
    a = draw(st.integers(low, high))
    b = draw(st.integers(low, high))
    k = draw(st.integers(1, max(1, (high - low) // 2)))
    if shape == "star":
        return Field("*", frozenset(range(low, high + 1)))
    if shape == "every":
        return Field(f"*/{k}", frozenset(range(low, high + 1, k)))
    if shape == "one":
        return Field(str(a), frozenset({a}))
    if shape == "list":
        return Field(f"{a},{b}", frozenset({a, b}))
    a, b = min(a, b), max(a, b)
    if a == b:
        return Field(str(a), frozenset({a}))
    if shape == "stepped":
        return Field(f"{a}-{b}/{k}", frozenset(range(a, b + 1, k)))
    return Field(f"{a}-{b}", frozenset(range(a, b + 1)))


def sunday_is_seven(day: Field) -> Field:
    """Let generated weekdays say 7 for Sunday now and then, as cron allows."""
    if day.text == "0":
        return Field("7", day.values)
    return day


@st.composite
def crons(draw: st.DrawFn, busy: bool = False, sunday_as_seven: bool = True) -> Cron:
    """Expressions from a small grammar.

    ``busy`` keeps the day fields open so that fires come at most a day
    apart, which the brute-force oracle needs.
    """
    second = draw(st.none() | field(0, 59))
    minute = draw(field(0, 59))
    hour = draw(field(0, 23))
    if busy:
        dom, month, dow = (
            Field("*", frozenset(range(1, 32))),
            Field("*", frozenset(range(1, 13))),
            Field("*", frozenset(range(7))),
        )
    else:
        dom = draw(field(1, 28, steps=False))  # no 29-31: keep every month possible
        if dom.text == "*":
            dom = Field("*", frozenset(range(1, 32)))
        month = draw(field(1, 12, steps=False))
        dow = draw(field(0, 6, steps=False))
        if sunday_as_seven:
            dow = sunday_is_seven(dow)
    return Cron(second, minute, hour, dom, month, dow)


@st.composite
def instants(draw: st.DrawFn, zone_name: str) -> datetime:
    """An instant in 1970-2100, often within hours of one of the zone's transitions."""
    year = draw(st.integers(1970, 2100))
    changes = transitions(zone_name, year)
    if changes and draw(st.integers(0, 3)) > 0:
        instant, _ = draw(st.sampled_from(changes))
        return instant + timedelta(seconds=draw(st.integers(-4 * 3600, 4 * 3600)))
    moment = draw(st.datetimes(datetime(year, 1, 1), datetime(year, 12, 31, 23, 59, 59)))
    return moment.replace(tzinfo=UTC)


@st.composite
def cases(draw: st.DrawFn, busy: bool = False) -> tuple[Cron, str, datetime]:
    zone_name = draw(st.sampled_from((*DST_ZONES, "Pacific/Apia", *FIXED_ZONES)))
    return draw(crons(busy)), zone_name, draw(instants(zone_name))


def local(instant: datetime, zone_name: str) -> datetime:
    return to_local(instant, resolve_zone(zone_name)).replace(tzinfo=None)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_cron_fires_are_increasing_and_each_matches_or_ends_a_gap(
    case: tuple[Cron, str, datetime],
) -> None:
    cron, zone_name, after = case
    zone = resolve_zone(zone_name)
    fires = cron_fires(cron.text, zone_name, after, 6)
    assert fires, cron.text
    assert fires[0] > after
    assert all(a < b for a, b in itertools.pairwise(fires))
    step = timedelta(seconds=1) if cron.second is not None else timedelta(minutes=1)
    for fire in fires:
        assert fire.tzinfo is UTC
        seen = local(fire, zone_name)
        if cron.wildcard:
            assert cron.matches(seen), f"{cron.text}: {seen} does not match"
            continue
        if cron.matches(seen):
            assert local_to_utc(seen, zone) == fire, "fired in the second pass of a repeat"
            continue
        # otherwise ``fire`` must be the end of a gap that swallowed a match
        before = local(fire - timedelta(seconds=1), zone_name) + timedelta(seconds=1)
        assert before < seen, f"{cron.text}: {seen} matches nothing"
        skipped = before
        while skipped < seen and not cron.matches(skipped):
            skipped += step
        assert skipped < seen, f"{cron.text}: no skipped wall time matched before {seen}"


@settings(max_examples=150, deadline=None)
@given(cases(busy=True))
def test_cron_fires_are_exactly_the_first_occurrences_of_matching_wall_times(
    case: tuple[Cron, str, datetime],
) -> None:
    cron, zone_name, after = case
    zone = resolve_zone(zone_name)
    fires = cron_fires(cron.text, zone_name, after, 5)
    assert fires
    if cron.wildcard:
        # On the clock: every UTC second (or minute) whose wall time matches, by
        # brute force over UTC itself, so both passes of a repeat and no gap.
        step = timedelta(seconds=1) if cron.second is not None else timedelta(minutes=1)
        moment = after.replace(microsecond=0) + timedelta(seconds=1)
        if cron.second is None:
            moment = (after.replace(second=0, microsecond=0)) + timedelta(minutes=1)
        seen: list[datetime] = []
        while moment <= fires[-1]:
            if cron.matches(local(moment, zone_name)):
                seen.append(moment)
            moment += step
        assert fires == seen, cron.text
        return
    # every wall minute from an hour before ``after`` to the last fire, by
    # brute force (hours that cannot match are stepped over whole)
    expected: set[datetime] = set()
    moment = local(after, zone_name).replace(second=0, microsecond=0) - timedelta(hours=1)
    last = local(fires[-1], zone_name)
    while moment <= last:
        if moment.hour not in cron.hour.values:
            moment = moment.replace(minute=0) + timedelta(hours=1)
            continue
        if cron.minute_matches(moment):
            for second in cron.seconds:
                instant = local_to_utc(moment + timedelta(seconds=second), zone)
                if after < instant <= fires[-1]:
                    expected.add(instant)
        moment += timedelta(minutes=1)
    assert fires == sorted(expected), cron.text


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(FIXED_ZONES),
    crons(sunday_as_seven=False),
    st.datetimes(datetime(1990, 1, 1), datetime(2036, 12, 31)),
)
def test_without_dst_the_fires_agree_with_plain_croniter(
    zone_name: str, cron: Cron, naive_after: datetime
) -> None:
    after = naive_after.replace(tzinfo=UTC)
    fires = cron_fires(cron.text, zone_name, after, 4)
    reference = croniter(
        cron.text,
        to_local(after, resolve_zone(zone_name)),
        ret_type=datetime,
        second_at_beginning=True,
    )
    assert fires == [reference.get_next().astimezone(UTC) for _ in fires]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 10**6).map(lambda n: timedelta(milliseconds=n)),
    st.datetimes(datetime(2000, 1, 1), datetime(2030, 1, 1)).map(lambda d: d.replace(tzinfo=UTC)),
    st.integers(-(10**9), 10**9).map(lambda n: timedelta(seconds=n)),
)
def test_delay_recur_is_the_first_grid_point_after(
    step: timedelta, accepted_at: datetime, offset: timedelta
) -> None:
    seconds = f"{step.total_seconds():.3f}"
    recur = spec("delay-recur", seconds, accepted_at=accepted_at)
    after = accepted_at + offset
    upcoming = next_fire(recur, after)
    assert upcoming is not None
    assert upcoming > after
    assert (upcoming - accepted_at) % step == timedelta(0)
    assert upcoming - step <= max(after, accepted_at)
