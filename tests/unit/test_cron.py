"""The croniter adapter: field order, next wall time, and what is refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.cron import CronExpression, next_wall_time, parse_cron
from scheduler.domain.errors import InvalidSchedule

START = datetime(2025, 1, 1, 10, 0)  # a Wednesday


def walk(expr: str, after: datetime = START, count: int = 4) -> list[datetime]:
    cron = parse_cron(expr)
    found: list[datetime] = []
    for _ in range(count):
        upcoming = next_wall_time(cron, after)
        assert upcoming is not None
        found.append(upcoming)
        after = upcoming
    return found


# --- parsing --------------------------------------------------------------


def test_five_fields_are_minute_hour_dom_month_dow() -> None:
    cron = parse_cron("15 9 * * 1-5")
    assert cron == CronExpression(text="15 9 * * 1-5", minutes="15 9 * * 1-5", seconds=(0,))
    assert not cron.has_seconds


def test_six_fields_put_seconds_first() -> None:
    cron = parse_cron("30 15 9 * * 1-5")
    assert cron.minutes == "15 9 * * 1-5"
    assert cron.seconds == (30,)
    assert cron.has_seconds


def test_seconds_field_takes_lists_ranges_and_steps() -> None:
    assert parse_cron("*/10 * * * * *").seconds == (0, 10, 20, 30, 40, 50)
    assert parse_cron("5,50 * * * * *").seconds == (5, 50)
    assert parse_cron("10-12 * * * * *").seconds == (10, 11, 12)
    assert parse_cron("* * * * * *").seconds == tuple(range(60))


def test_parse_is_cached_and_the_result_frozen() -> None:
    cron = parse_cron("0 0 * * *")
    assert parse_cron("0 0 * * *") is cron
    with pytest.raises(dataclasses.FrozenInstanceError):
        cron.text = "1 1 * * *"  # type: ignore[misc]


def test_extra_whitespace_between_fields_is_fine() -> None:
    assert parse_cron("  0\t9  * * *  ").minutes == "0 9 * * *"


FIELD_COUNT = (
    "5 fields (minute hour day-of-month month day-of-week)"
    " or 6 fields (second minute hour day-of-month month day-of-week)"
)
DOM_ALLOWED = "allowed 1-31, L, L-n with n up to 30, nW or LW"
DOW_ALLOWED = "allowed 0-7 or sun-sat, d#n for the nth, dL or Ld for the last"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("", f"cron expression '' has 0 fields; expected {FIELD_COUNT}"),
        ("daily", f"cron expression 'daily' has 1 field; expected {FIELD_COUNT}"),
        ("* * * *", f"cron expression '* * * *' has 4 fields; expected {FIELD_COUNT}"),
        (
            "0 0 0 1 1 * 2030",
            f"cron expression '0 0 0 1 1 * 2030' has 7 fields; expected {FIELD_COUNT}",
        ),
        ("61 * * * *", "cron expression '61 * * * *': bad minute field '61' (allowed 0-59)"),
        ("* 24 * * *", "cron expression '* 24 * * *': bad hour field '24' (allowed 0-23)"),
        (
            "0 0 0 * *",
            f"cron expression '0 0 0 * *': bad day-of-month field '0' ({DOM_ALLOWED})",
        ),
        (
            "0 0 * 13 *",
            "cron expression '0 0 * 13 *': bad month field '13' (allowed 1-12 or jan-dec)",
        ),
        (
            "0 0 * * 8",
            f"cron expression '0 0 * * 8': bad day-of-week field '8' ({DOW_ALLOWED})",
        ),
        (
            "0 0 * * funday",
            f"cron expression '0 0 * * funday': bad day-of-week field 'funday' ({DOW_ALLOWED})",
        ),
        ("*/0 * * * *", "cron expression '*/0 * * * *': bad minute field '*/0' (allowed 0-59)"),
        ("x * * * *", "cron expression 'x * * * *': bad minute field 'x' (allowed 0-59)"),
        (
            "60 * * * * *",
            "cron expression '60 * * * * *': bad second field '60' (allowed 0-59)",
        ),
        (
            "0 0 0 0 * *",
            f"cron expression '0 0 0 0 * *': bad day-of-month field '0' ({DOM_ALLOWED})",
        ),
        (
            "H * * * *",
            "cron expression 'H * * * *': minute field 'H' uses H or R, which are not supported",
        ),
        (
            "0 R(0-5) * * *",
            "cron expression '0 R(0-5) * * *': hour field 'R(0-5)' uses H or R,"
            " which are not supported",
        ),
        ("0 0 30 2 *", "cron expression '0 0 30 2 *' never matches a date"),
        ("0 0 31 4,6,9,11 *", "cron expression '0 0 31 4,6,9,11 *' never matches a date"),
    ],
)
def test_bad_expressions_are_refused_with_a_message_naming_them(expr: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_cron(expr)
    assert str(caught.value) == message


def test_mixing_nth_weekday_with_plain_days_is_refused() -> None:
    with pytest.raises(InvalidSchedule, match=r"'0 0 \* \* 1,2#3'"):
        parse_cron("0 0 * * 1,2#3")


def test_invalid_schedule_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_cron("nonsense")


# --- next wall time -----------------------------------------------------------


def test_next_wall_time_is_strictly_after() -> None:
    cron = parse_cron("0 10 * * *")
    assert next_wall_time(cron, datetime(2025, 1, 1, 9, 59, 59, 999_999)) == datetime(
        2025, 1, 1, 10, 0
    )
    assert next_wall_time(cron, datetime(2025, 1, 1, 10, 0)) == datetime(2025, 1, 2, 10, 0)
    assert next_wall_time(cron, datetime(2025, 1, 1, 10, 0, 0, 1)) == datetime(2025, 1, 2, 10, 0)


def test_seconds_first_30_fires_at_second_30_of_every_minute() -> None:
    assert walk("30 * * * * *") == [
        datetime(2025, 1, 1, 10, 0, 30),
        datetime(2025, 1, 1, 10, 1, 30),
        datetime(2025, 1, 1, 10, 2, 30),
        datetime(2025, 1, 1, 10, 3, 30),
    ]


def test_seconds_first_is_strict_about_the_current_second() -> None:
    cron = parse_cron("30 * * * * *")
    assert next_wall_time(cron, datetime(2025, 1, 1, 10, 0, 29, 999_999)) == datetime(
        2025, 1, 1, 10, 0, 30
    )
    assert next_wall_time(cron, datetime(2025, 1, 1, 10, 0, 30)) == datetime(2025, 1, 1, 10, 1, 30)


def test_every_ten_seconds() -> None:
    assert walk("*/10 * * * * *", datetime(2025, 1, 1, 10, 0, 45), 3) == [
        datetime(2025, 1, 1, 10, 0, 50),
        datetime(2025, 1, 1, 10, 1, 0),
        datetime(2025, 1, 1, 10, 1, 10),
    ]


def test_seconds_carry_into_the_next_matching_minute() -> None:
    # second 5 and 50 of 00:00 on the first of each month
    assert walk("5,50 0 0 1 * *", datetime(2025, 1, 1, 0, 0, 50), 3) == [
        datetime(2025, 2, 1, 0, 0, 5),
        datetime(2025, 2, 1, 0, 0, 50),
        datetime(2025, 3, 1, 0, 0, 5),
    ]


def test_weekdays_at_nine() -> None:
    assert walk("0 9 * * 1-5", datetime(2025, 1, 2, 9, 0)) == [
        datetime(2025, 1, 3, 9, 0),  # Friday
        datetime(2025, 1, 6, 9, 0),  # Monday
        datetime(2025, 1, 7, 9, 0),
        datetime(2025, 1, 8, 9, 0),
    ]


def test_day_names_and_month_names() -> None:
    assert walk("0 9 * jan mon-fri", datetime(2025, 1, 30, 12, 0), 2) == [
        datetime(2025, 1, 31, 9, 0),
        datetime(2026, 1, 1, 9, 0),
    ]


@pytest.mark.parametrize("expr", ["0 0 * * 7", "0 0 * * 0", "0 0 * * sun", "0 0 0 * * 7"])
def test_seven_and_zero_are_sunday_in_both_forms(expr: str) -> None:
    # croniter's own six-field mode rejects 7; the adapter keeps it Sunday
    assert {day.strftime("%a") for day in walk(expr)} == {"Sun"}


@pytest.mark.parametrize(
    ("expr", "fires"),
    [
        ("5-5 * * * *", [datetime(2025, 1, 1, 10, 5), datetime(2025, 1, 1, 11, 5)]),
        ("0 11-11 * * *", [datetime(2025, 1, 1, 11, 0), datetime(2025, 1, 2, 11, 0)]),
        ("0 0 * * fri-fri", [datetime(2025, 1, 3), datetime(2025, 1, 10)]),
        ("7-7/3 * * * * *", [datetime(2025, 1, 1, 10, 0, 7), datetime(2025, 1, 1, 10, 1, 7)]),
    ],
)
def test_a_range_with_equal_ends_is_one_value(expr: str, fires: list[datetime]) -> None:
    # croniter alone would read ``a-a`` as the whole cycle
    assert walk(expr, count=2) == fires


def test_day_of_month_and_day_of_week_are_ored_when_both_are_restricted() -> None:
    # the 13th, or any Friday
    assert walk("0 0 13 * fri", datetime(2025, 6, 1), 4) == [
        datetime(2025, 6, 6),
        datetime(2025, 6, 13),
        datetime(2025, 6, 20),
        datetime(2025, 6, 27),
    ]


def test_last_day_of_month_and_nth_weekday() -> None:
    assert walk("0 0 L * *", datetime(2024, 1, 15), 2) == [
        datetime(2024, 1, 31),
        datetime(2024, 2, 29),
    ]
    assert walk("0 0 * * 5#3", datetime(2025, 1, 1), 2) == [
        datetime(2025, 1, 17),
        datetime(2025, 2, 21),
    ]


def test_february_29_waits_for_a_leap_year() -> None:
    assert walk("0 0 29 2 *", datetime(2025, 1, 1), 2) == [
        datetime(2028, 2, 29),
        datetime(2032, 2, 29),
    ]


def test_the_end_of_the_calendar_gives_none() -> None:
    assert next_wall_time(parse_cron("* * * * *"), datetime(9999, 12, 31, 23, 59)) is None
    assert next_wall_time(parse_cron("* * * * * *"), datetime(9999, 12, 31, 23, 59, 59)) is None
    assert next_wall_time(parse_cron("0 0 1 1 *"), datetime(9999, 6, 1)) is None


def test_next_wall_time_refuses_an_aware_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        next_wall_time(parse_cron("* * * * *"), datetime(2025, 1, 1, tzinfo=UTC))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(alphabet="0123456789*/-,#?LlWwHhRrmonfrijaMONJAN()@", min_size=1, max_size=6),
        min_size=5,
        max_size=6,
    )
)
def test_any_text_either_parses_or_is_refused_as_an_invalid_schedule(fields: list[str]) -> None:
    expr = " ".join(fields)
    try:
        cron = parse_cron(expr)
    except InvalidSchedule as exc:
        assert repr(expr) in str(exc)
    else:
        assert next_wall_time(cron, START) is not None
