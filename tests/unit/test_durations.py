"""ISO-8601 durations for ``delay`` and ``delay-recur``, beside plain seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.domain.errors import InvalidSchedule
from scheduler.domain.triggers import TriggerSpec, fire_times, next_fire, validate

ACCEPTED = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def delay(expression: str, kind: str = "delay") -> TriggerSpec:
    return TriggerSpec(kind=kind, expression=expression, zone="UTC", accepted_at=ACCEPTED)


@pytest.mark.parametrize(
    ("expression", "span"),
    [
        ("PT10M", timedelta(minutes=10)),
        ("PT1.5S", timedelta(seconds=1, milliseconds=500)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT0.000001S", timedelta(microseconds=1)),
        ("PT0.1S", timedelta(microseconds=100_000)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("P2W", timedelta(weeks=2)),
        ("P1D", timedelta(days=1)),
        ("PT36H", timedelta(hours=36)),
        ("PT1H30M15S", timedelta(hours=1, minutes=30, seconds=15)),
        ("PT1.5H", timedelta(minutes=90)),
        ("PT1,5S", timedelta(seconds=1.5)),  # ISO's decimal comma
        ("pt10m", timedelta(minutes=10)),
        (" PT10M ", timedelta(minutes=10)),
        ("60", timedelta(seconds=60)),  # plain seconds still work
        ("1.5", timedelta(seconds=1.5)),
    ],
)
def test_a_delay_fires_that_long_after_acceptance(expression: str, span: timedelta) -> None:
    validate(delay(expression))
    assert next_fire(delay(expression), ACCEPTED) == ACCEPTED + span


def test_minutes_and_months_are_told_apart_by_the_t() -> None:
    # PT1M is a minute; P1M (a month) is refused below
    assert next_fire(delay("PT1M"), ACCEPTED) == ACCEPTED + timedelta(minutes=1)


def test_a_recurring_delay_takes_a_duration() -> None:
    assert fire_times(delay("PT15M", "delay-recur"), ACCEPTED, 3) == [
        ACCEPTED + timedelta(minutes=15),
        ACCEPTED + timedelta(minutes=30),
        ACCEPTED + timedelta(minutes=45),
    ]


@given(
    st.integers(0, 400),
    st.integers(0, 48),
    st.integers(0, 120),
    st.integers(0, 100_000),
    st.integers(0, 999_999),
)
def test_a_duration_is_exact_to_the_microsecond(
    days: int, hours: int, minutes: int, seconds: int, micros: int
) -> None:
    span = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds, microseconds=micros)
    text = f"P{days}DT{hours}H{minutes}M{seconds}.{micros:06d}S"
    if span <= timedelta(0):
        with pytest.raises(InvalidSchedule):
            validate(delay(text))
    else:
        assert next_fire(delay(text), ACCEPTED) == ACCEPTED + span


NOT_A_DELAY = "is not a positive number of seconds or ISO-8601 duration (e.g. 90, 1.5, PT10M)"
CALENDAR = (
    "counts years or months, whose length depends on the calendar;"
    " write weeks, days or smaller units (e.g. P30D)"
)


@pytest.mark.parametrize(
    ("kind", "expression", "message"),
    [
        ("delay", "P1Y", f"delay 'P1Y' {CALENDAR}"),
        ("delay", "P1M", f"delay 'P1M' {CALENDAR}"),
        ("delay", "P1Y2M3D", f"delay 'P1Y2M3D' {CALENDAR}"),
        ("delay-recur", "P0Y1D", f"delay 'P0Y1D' {CALENDAR}"),
        ("delay", "PT", f"delay 'PT' {NOT_A_DELAY}"),
        ("delay", "P", f"delay 'P' {NOT_A_DELAY}"),
        ("delay", "P1DT", f"delay 'P1DT' {NOT_A_DELAY}"),
        ("delay", "PT0S", f"delay 'PT0S' {NOT_A_DELAY}"),
        ("delay", "P0D", f"delay 'P0D' {NOT_A_DELAY}"),
        ("delay", "PT0.0000001S", f"delay 'PT0.0000001S' {NOT_A_DELAY}"),
        ("delay", "-PT10M", f"delay '-PT10M' {NOT_A_DELAY}"),
        ("delay", "PT10", f"delay 'PT10' {NOT_A_DELAY}"),
        ("delay", "PT1M2H", f"delay 'PT1M2H' {NOT_A_DELAY}"),  # out of order
        ("delay", "P1W2D", f"delay 'P1W2D' {NOT_A_DELAY}"),  # weeks stand alone in ISO 8601
        ("delay", "P1.5.2D", f"delay 'P1.5.2D' {NOT_A_DELAY}"),
        ("delay", "10M", f"delay '10M' {NOT_A_DELAY}"),
        ("delay", "-5", f"delay '-5' {NOT_A_DELAY}"),
        ("delay", "abc", f"delay 'abc' {NOT_A_DELAY}"),
        ("delay", "", f"delay '' {NOT_A_DELAY}"),
        (
            "delay-recur",
            "PT0.5S",
            "delay-recur 'PT0.5S' is shorter than the minimum interval of 1 s",
        ),
        (
            "delay",
            "P99999999999D",
            "delay 'P99999999999D' is too large: it ends after the year 9999",
        ),
        ("delay", "P3000000D", "delay 'P3000000D' is too large: it ends after the year 9999"),
    ],
)
def test_refusals_name_the_value_and_say_why(kind: str, expression: str, message: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        validate(delay(expression, kind))
    assert str(caught.value) == message
