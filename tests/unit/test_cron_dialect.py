"""The cron forms added beyond croniter: aliases, W, L-n and nL.

Dates are checked against a calendar by hand in the named cases, and against
a day-by-day brute force, written independently here, in the property test.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.cron import next_wall_time, parse_cron
from scheduler.domain.errors import InvalidSchedule

DOM_ALLOWED = "allowed 1-31, L, L-n with n up to 30, nW or LW"
DOW_ALLOWED = "allowed 0-7 or sun-sat, d#n for the nth, dL or Ld for the last"


def walk(expr: str, after: datetime, count: int) -> list[datetime]:
    cron = parse_cron(expr)
    found: list[datetime] = []
    for _ in range(count):
        upcoming = next_wall_time(cron, after)
        assert upcoming is not None
        found.append(upcoming)
        after = upcoming
    return found


def days(expr: str, after: date, count: int) -> list[date]:
    start = datetime.combine(after, datetime.min.time()) - timedelta(seconds=1)
    return [found.date() for found in walk(expr, start, count)]


# --- aliases -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "fields"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
        (" @Hourly ", "0 * * * *"),
    ],
)
def test_an_alias_is_its_five_fields(alias: str, fields: str) -> None:
    cron = parse_cron(alias)
    assert cron.text == alias
    assert cron.minutes == fields
    assert cron.seconds == (0,)
    assert not cron.has_seconds
    start = datetime(2024, 12, 30, 22, 30)
    assert walk(alias, start, 5) == walk(fields, start, 5)


def test_hourly_is_a_wildcard_job_and_daily_a_fixed_time_one() -> None:
    # The DST rule picks its behaviour from the expanded fields.
    assert parse_cron("@hourly").wildcard
    assert not parse_cron("@daily").wildcard
    assert not parse_cron("@weekly").wildcard


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            "@reboot",
            "cron expression '@reboot': @reboot is not a schedule:"
            " the service has no boot to run it at",
        ),
        (
            "@REBOOT",
            "cron expression '@REBOOT': @reboot is not a schedule:"
            " the service has no boot to run it at",
        ),
        (
            "@fortnightly",
            "cron expression '@fortnightly': unknown alias @fortnightly"
            " (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)",
        ),
        ("@daily 9", "cron expression '@daily 9': @daily takes no other fields"),
        (
            "@",
            "cron expression '@': unknown alias @ (known: @yearly, @annually, @monthly,"
            " @weekly, @daily, @midnight, @hourly)",
        ),
    ],
)
def test_reboot_and_unknown_aliases_are_refused(expr: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_cron(expr)
    assert str(caught.value) == message


# --- W: the nearest weekday ------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "month", "fires"),
    [
        ("0 0 15W * *", date(2025, 1, 1), date(2025, 1, 15)),  # a Wednesday: itself
        ("0 0 15W * *", date(2025, 2, 1), date(2025, 2, 14)),  # Saturday: the Friday
        ("0 0 15W * *", date(2025, 6, 1), date(2025, 6, 16)),  # Sunday: the Monday
        ("0 0 1W * *", date(2025, 2, 1), date(2025, 2, 3)),  # Saturday 1st: not 31 Jan
        ("0 0 1W * *", date(2025, 6, 1), date(2025, 6, 2)),  # Sunday 1st: the Monday
        ("0 0 31W * *", date(2025, 8, 1), date(2025, 8, 29)),  # Sunday 31st: not 1 Sep
        ("0 0 31W * *", date(2025, 5, 1), date(2025, 5, 30)),  # Saturday 31st
        ("0 0 30W * *", date(2025, 11, 1), date(2025, 11, 28)),  # Sunday and the last day
        ("0 0 30W * *", date(2025, 3, 1), date(2025, 3, 31)),  # Sunday, a 31st follows
        ("0 0 LW * *", date(2025, 8, 1), date(2025, 8, 29)),  # month ends on a Sunday
        ("0 0 LW * *", date(2025, 5, 1), date(2025, 5, 30)),  # ... on a Saturday
        ("0 0 LW * *", date(2025, 2, 1), date(2025, 2, 28)),  # ... on a Friday
        ("0 0 lw * *", date(2025, 2, 1), date(2025, 2, 28)),
        ("0 0 L-1W * *", date(2025, 8, 1), date(2025, 8, 29)),  # 30 Aug is a Saturday
    ],
)
def test_w_fires_on_the_nearest_weekday_of_the_same_month(
    expr: str, month: date, fires: date
) -> None:
    assert days(expr, month, 1) == [fires]


def test_w_skips_a_month_without_that_day() -> None:
    # as a plain 31 would: April, June, September and November have no 31st
    assert days("0 0 31W * *", date(2025, 4, 1), 3) == [
        date(2025, 5, 30),
        date(2025, 7, 31),
        date(2025, 8, 29),
    ]


def test_29w_in_february_waits_for_a_leap_year() -> None:
    assert days("0 0 29W 2 *", date(2025, 1, 1), 3) == [
        date(2028, 2, 29),  # a Tuesday
        date(2032, 2, 27),  # Sunday the 29th, the last day: the Friday
        date(2036, 2, 29),
    ]


def test_w_keeps_the_clock_and_is_strictly_after() -> None:
    cron = parse_cron("0 9,17 15W * *")
    assert next_wall_time(cron, datetime(2025, 2, 14, 9, 0)) == datetime(2025, 2, 14, 17, 0)
    assert next_wall_time(cron, datetime(2025, 2, 14, 17, 0)) == datetime(2025, 3, 14, 9, 0)
    assert next_wall_time(cron, datetime(2025, 2, 14, 23, 59, 59)) == datetime(2025, 3, 14, 9, 0)


# --- L-n: days before the last --------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "month", "fires"),
    [
        ("0 0 L-3 * *", date(2025, 1, 1), date(2025, 1, 28)),  # 31 days
        ("0 0 L-3 * *", date(2025, 4, 1), date(2025, 4, 27)),  # 30 days
        ("0 0 L-3 * *", date(2025, 2, 1), date(2025, 2, 25)),  # February, 28 days
        ("0 0 L-3 * *", date(2024, 2, 1), date(2024, 2, 26)),  # February, leap year
        ("0 0 L-0 * *", date(2024, 2, 1), date(2024, 2, 29)),  # L-0 is L
        ("0 0 l-1 * *", date(2025, 2, 1), date(2025, 2, 27)),
    ],
)
def test_l_minus_n_counts_back_from_the_last_day(expr: str, month: date, fires: date) -> None:
    assert days(expr, month, 1) == [fires]


def test_l_minus_30_is_the_first_of_31_day_months_only() -> None:
    assert days("0 0 L-30 * *", date(2025, 1, 2), 3) == [
        date(2025, 3, 1),
        date(2025, 5, 1),
        date(2025, 7, 1),
    ]


def test_l_minus_n_mixes_with_plain_days_in_a_list() -> None:
    assert days("0 0 1,L-1 * *", date(2025, 2, 1), 4) == [
        date(2025, 2, 1),
        date(2025, 2, 27),
        date(2025, 3, 1),
        date(2025, 3, 30),
    ]


# --- nL: the last weekday n of the month -------------------------------------------


@pytest.mark.parametrize(
    ("month", "fires"),
    [
        (date(2025, 2, 1), date(2025, 2, 28)),  # four Fridays: 7, 14, 21, 28
        (date(2025, 1, 1), date(2025, 1, 31)),  # five Fridays: 3 ... 31
        (date(2025, 5, 1), date(2025, 5, 30)),  # five Fridays: 2 ... 30
        (date(2025, 6, 1), date(2025, 6, 27)),  # four Fridays, June ends on a Monday
    ],
)
@pytest.mark.parametrize("expr", ["0 0 * * 5L", "0 0 * * L5", "0 0 * * friL", "0 0 * * FRIL"])
def test_5l_is_the_last_friday(expr: str, month: date, fires: date) -> None:
    assert days(expr, month, 1) == [fires]


def test_5l_is_written_as_croniters_l5() -> None:
    assert parse_cron("0 0 * * 5L").minutes == "0 0 * * L5"
    assert parse_cron("0 0 * * Lfri").minutes == "0 0 * * L5"


@pytest.mark.parametrize("expr", ["0 0 * * 7L", "0 0 * * 0L", "0 0 * * sunL", "0 0 * * L7"])
def test_seven_and_zero_are_sunday_for_the_last_weekday_too(expr: str) -> None:
    assert days(expr, date(2025, 8, 1), 2) == [date(2025, 8, 31), date(2025, 9, 28)]


def test_several_last_weekdays_in_a_list() -> None:
    assert days("0 0 * * 1L,5L", date(2025, 2, 1), 3) == [
        date(2025, 2, 24),
        date(2025, 2, 28),
        date(2025, 3, 28),
    ]


# --- the OR rule --------------------------------------------------------------------


def test_w_or_a_weekday_fires_on_either() -> None:
    assert days("0 0 15W * mon", date(2025, 2, 1), 5) == [
        date(2025, 2, 3),
        date(2025, 2, 10),
        date(2025, 2, 14),  # the weekday nearest Saturday the 15th
        date(2025, 2, 17),
        date(2025, 2, 24),
    ]


def test_a_day_or_the_last_friday_fires_on_either() -> None:
    assert days("0 0 13 * 5L", date(2025, 6, 1), 4) == [
        date(2025, 6, 13),
        date(2025, 6, 27),
        date(2025, 7, 13),
        date(2025, 7, 25),
    ]


def test_a_day_or_an_nth_weekday_fires_on_either() -> None:
    # croniter 5.0.1 alone finds no date at all for this one
    assert days("0 0 13 * 5#3", date(2025, 1, 1), 4) == [
        date(2025, 1, 13),
        date(2025, 1, 17),
        date(2025, 2, 13),
        date(2025, 2, 21),
    ]


def test_the_last_day_or_the_last_monday_fires_on_either() -> None:
    # croniter 5.0.1 alone skips 31 January and 28 February here
    assert days("0 0 L * 1L", date(2025, 1, 1), 4) == [
        date(2025, 1, 27),
        date(2025, 1, 31),
        date(2025, 2, 24),
        date(2025, 2, 28),
    ]


def test_a_question_mark_or_star_leaves_the_other_field_alone() -> None:
    assert days("0 0 L-1 * ?", date(2025, 2, 1), 1) == [date(2025, 2, 27)]
    assert days("0 0 ? * 5L", date(2025, 2, 1), 1) == [date(2025, 2, 28)]
    # croniter's rule: a * in the list lifts the restriction, so not every day
    assert days("0 0 *,6 * 5L", date(2025, 2, 1), 1) == [date(2025, 2, 28)]


# --- six fields --------------------------------------------------------------------


def test_seconds_first_with_the_new_day_forms() -> None:
    assert walk("30 0 9 15W * *", datetime(2025, 2, 1), 2) == [
        datetime(2025, 2, 14, 9, 0, 30),
        datetime(2025, 3, 14, 9, 0, 30),
    ]
    assert walk("*/20 59 23 LW * *", datetime(2025, 5, 30, 23, 59, 30), 3) == [
        datetime(2025, 5, 30, 23, 59, 40),
        datetime(2025, 6, 30, 23, 59, 0),
        datetime(2025, 6, 30, 23, 59, 20),
    ]
    assert walk("0 0 0 * * 5L", datetime(2025, 2, 1), 1) == [datetime(2025, 2, 28)]
    assert parse_cron("0 0 0 L-3 * *").seconds == (0,)


# --- refusals ---------------------------------------------------------------------


W_ALONE = "W takes one day, as in 15W or LW"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            "0 0 1,15W * *",
            f"cron expression '0 0 1,15W * *': day-of-month field '1,15W' puts W in a list"
            f" or range; {W_ALONE}",
        ),
        (
            "0 0 1-15W * *",
            f"cron expression '0 0 1-15W * *': day-of-month field '1-15W' puts W in a list"
            f" or range; {W_ALONE}",
        ),
        (
            "0 0 LW,L-3 * *",
            f"cron expression '0 0 LW,L-3 * *': day-of-month field 'LW,L-3' puts W in a list"
            f" or range; {W_ALONE}",
        ),
        ("0 0 W * *", f"cron expression '0 0 W * *': bad day-of-month field 'W' ({DOM_ALLOWED})"),
        (
            "0 0 0W * *",
            f"cron expression '0 0 0W * *': bad day-of-month field '0W' ({DOM_ALLOWED})",
        ),
        (
            "0 0 32W * *",
            f"cron expression '0 0 32W * *': bad day-of-month field '32W' ({DOM_ALLOWED})",
        ),
        (
            "0 0 15W/2 * *",
            f"cron expression '0 0 15W/2 * *': bad day-of-month field '15W/2' ({DOM_ALLOWED})",
        ),
        (
            "0 0 L-31 * *",
            f"cron expression '0 0 L-31 * *': bad day-of-month field 'L-31' ({DOM_ALLOWED})",
        ),
        (
            "0 0 L-31W * *",
            f"cron expression '0 0 L-31W * *': bad day-of-month field 'L-31W' ({DOM_ALLOWED})",
        ),
        (
            "0 0 L- * *",
            f"cron expression '0 0 L- * *': bad day-of-month field 'L-' ({DOM_ALLOWED})",
        ),
        (
            "0 0 ?,L-3 * *",
            f"cron expression '0 0 ?,L-3 * *': bad day-of-month field '?,L-3' ({DOM_ALLOWED})",
        ),
        (
            "0 0 0 L-40 * *",
            f"cron expression '0 0 0 L-40 * *': bad day-of-month field 'L-40' ({DOM_ALLOWED})",
        ),
        ("0 0 * * 8L", f"cron expression '0 0 * * 8L': bad day-of-week field '8L' ({DOW_ALLOWED})"),
        (
            "0 0 * * 5L,1",
            f"cron expression '0 0 * * 5L,1': bad day-of-week field '5L,1' ({DOW_ALLOWED})",
        ),
        ("0 0 30W 2 *", "cron expression '0 0 30W 2 *' never matches a date"),
        ("0 0 L-30 2 *", "cron expression '0 0 L-30 2 *' never matches a date"),
        ("0 0 L-30 4,6 *", "cron expression '0 0 L-30 4,6 *' never matches a date"),
    ],
)
def test_refusals_name_the_expression_and_say_why(expr: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_cron(expr)
    assert str(caught.value) == message


# --- against a brute force -------------------------------------------------------

DayTest = Callable[[date], bool]


def _length(day: date) -> int:
    return calendar.monthrange(day.year, day.month)[1]


def _nearest_weekday_by_search(day: date, target: int) -> bool:
    """The weekday of the month closest to ``target``: a search, not Quartz's rule."""
    length = _length(day)
    if target < 1 or target > length:
        return False
    weekdays = [n for n in range(1, length + 1) if day.replace(day=n).weekday() < 5]
    return day.day == min(weekdays, key=lambda n: abs(n - target))


def _cron_weekday(day: date) -> int:
    return (day.weekday() + 1) % 7


month_day_forms = st.one_of(
    st.integers(1, 31).map(lambda n: (f"{n}W", lambda d: _nearest_weekday_by_search(d, n))),
    st.just(("LW", lambda d: _nearest_weekday_by_search(d, _length(d)))),
    st.integers(0, 30).map(
        lambda n: (
            f"L-{n}W",
            lambda d: _nearest_weekday_by_search(d, _length(d) - n),
        )
    ),
    st.integers(0, 30).map(lambda n: (f"L-{n}", lambda d: d.day == _length(d) - n)),
    st.lists(st.integers(0, 30), min_size=2, max_size=3, unique=True).map(
        lambda ns: (
            ",".join(f"L-{n}" for n in ns),
            lambda d: any(d.day == _length(d) - n for n in ns),
        )
    ),
    st.integers(1, 31).map(lambda n: (str(n), lambda d: d.day == n)),
    st.just(("L", lambda d: d.day == _length(d))),
    st.just(("*", None)),
)
weekday_forms = st.one_of(
    st.integers(0, 7).map(
        lambda n: (
            f"{n}L",
            lambda d: _cron_weekday(d) == n % 7 and (d + timedelta(days=7)).month != d.month,
        )
    ),
    st.sampled_from(["sun", "mon", "tue", "wed", "thu", "fri", "sat"]).map(
        lambda name: (
            f"{name}L",
            lambda d: d.strftime("%a").lower() == name and (d + timedelta(days=7)).month != d.month,
        )
    ),
    st.tuples(st.integers(0, 6), st.integers(1, 5)).map(
        lambda pair: (
            f"{pair[0]}#{pair[1]}",
            lambda d: _cron_weekday(d) == pair[0] and (d.day - 1) // 7 + 1 == pair[1],
        )
    ),
    st.integers(0, 6).map(lambda n: (str(n), lambda d: _cron_weekday(d) == n)),
    st.just(("*", None)),
    st.just(("?", None)),
)
month_forms = st.one_of(
    st.just(("*", frozenset(range(1, 13)))),
    st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True).map(
        lambda ms: (",".join(map(str, ms)), frozenset(ms))
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    month_day_forms,
    month_forms,
    weekday_forms,
    st.sampled_from([2024, 2025, 2026, 2027, 2028, 2100]),
)
def test_a_year_of_matches_equals_a_day_by_day_check(
    month_day: tuple[str, DayTest | None],
    month: tuple[str, frozenset[int]],
    weekday: tuple[str, DayTest | None],
    year: int,
) -> None:
    (dom_text, dom_test), (month_text, months), (dow_text, dow_test) = month_day, month, weekday
    expr = f"0 12 {dom_text} {month_text} {dow_text}"

    def brute(day: date) -> bool:
        if day.month not in months:
            return False
        if dom_test is not None and dow_test is not None:
            return dom_test(day) or dow_test(day)  # both restricted: either
        if dom_test is not None:
            return dom_test(day)
        return dow_test(day) if dow_test is not None else True

    first = date(year, 1, 1)
    expected = [
        first + timedelta(days=n)
        for n in range((date(year + 1, 1, 1) - first).days)
        if brute(first + timedelta(days=n))
    ]
    try:
        cron = parse_cron(expr)
    except InvalidSchedule as refused:
        # refused only if it never matches, so not in this year either
        assert "never matches a date" in str(refused)
        assert expected == []
        return
    found: list[date] = []
    after = datetime(year - 1, 12, 31, 12, 0)
    while True:
        upcoming = next_wall_time(cron, after)
        assert upcoming is not None
        if upcoming.year > year:
            break
        assert upcoming.time() == datetime(2000, 1, 1, 12, 0).time()
        found.append(upcoming.date())
        after = upcoming
    assert found == expected
