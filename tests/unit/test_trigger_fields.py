"""The trigger math from a command's fields (``next_fire_parts``, ``validate_parts``,
``Command.fire_after``) is the trigger math of the spec those fields make."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.domain.errors import InvalidSchedule
from scheduler.domain.ids import compact_json
from scheduler.domain.triggers import (
    TriggerSpec,
    next_fire,
    next_fire_parts,
    validate,
    validate_parts,
)
from tests.unit.test_state import SECOND, T0, applied, command, created

ACCEPTED = datetime(2025, 3, 8, 12, 0, 0, 250_000, tzinfo=UTC)
AFTERS = [ACCEPTED + timedelta(minutes=m) for m in (-90, 0, 1, 59, 60 * 24 * 2)]

SPECS = [
    ("cron", "*/5 * * * *", "Asia/Seoul", None),
    ("cron", "30 2 * * *", "America/New_York", None),  # the DST gap on 2025-03-09
    ("date", "2025-03-09T02:30:00", "America/New_York", None),
    ("date", "2025-03-08T13:00:00+09:00", "UTC", None),
    ("delay", "90", "UTC", None),
    ("delay", "PT1H30M", "Europe/Berlin", None),
    ("delay-recur", "PT10M", "UTC", None),
    ("delay-recur", "60", "UTC", ACCEPTED + timedelta(minutes=5, seconds=7)),
    ("now", "", "UTC", None),
]


@pytest.mark.parametrize(("kind", "expression", "zone", "start"), SPECS)
def test_next_fire_parts_is_next_fire_of_the_spec(
    kind: str, expression: str, zone: str, start: datetime | None
) -> None:
    spec = TriggerSpec(kind, expression, zone, ACCEPTED, start)
    for after in AFTERS:
        expected = next_fire(spec, after)
        assert next_fire_parts(kind, expression, zone, ACCEPTED, start, after) == expected


@pytest.mark.parametrize(
    ("kind", "expression", "zone"),
    [
        ("cron", "61 * * * *", "UTC"),
        ("date", "next tuesday", "UTC"),
        ("delay", "-5", "UTC"),
        ("delay", "99999999999999", "UTC"),
        ("delay-recur", "0.5", "UTC"),
        ("cron", "0 9 * * *", "Mars/Olympus_Mons"),
        ("weekly", "", "UTC"),
    ],
)
def test_validate_parts_refuses_what_validate_refuses_with_the_same_words(
    kind: str, expression: str, zone: str
) -> None:
    with pytest.raises(InvalidSchedule) as by_spec:
        validate(TriggerSpec(kind, expression, zone, ACCEPTED))
    with pytest.raises(InvalidSchedule) as by_fields:
        validate_parts(kind, expression, zone, ACCEPTED)
    assert str(by_fields.value) == str(by_spec.value)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"type": "delay-recur", "schedule": "60", "start": "2025-03-08T12:07:00"},
        {"type": "cron", "schedule": "0 9 * * 1-5", "timezone": "Asia/Seoul"},
        {"type": "cron", "schedule": "*/10 * * * *", "end": "2025-03-08T13:00:00"},
        {"type": "date", "schedule": "2025-03-09T02:30:00", "timezone": "America/New_York"},
        {"type": "delay", "schedule": "50"},
        {"type": "now"},
    ],
)
def test_fire_after_is_next_fire_of_the_commands_trigger(changes: dict[str, str]) -> None:
    cmd = command(**changes)
    for after in AFTERS:
        assert cmd.fire_after(ACCEPTED, after) == next_fire(cmd.trigger(ACCEPTED), after)


def test_fire_after_refuses_a_naive_acceptance_as_the_spec_does() -> None:
    naive = ACCEPTED.replace(tzinfo=None)
    cmd = command(type="date", schedule="2030-01-01T00:00:00")
    with pytest.raises(ValueError, match="timezone-aware"):
        TriggerSpec("date", "2030-01-01T00:00:00", "UTC", naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        cmd.fire_after(naive, ACCEPTED)


def test_an_updated_records_state_is_written_as_json_would_write_it() -> None:
    # An upsert of a stored schedule shares its acceptance object with
    # updated_at only, not with created_at: the text written for each is its own.
    updated = applied(created(), command(schedule="20"), T0 + 3 * SECOND)
    assert updated.updated_at is updated.accepted_at
    assert updated.created_at is not updated.accepted_at
    assert updated.created_at != updated.accepted_at
    assert updated._state_text() + "}" == compact_json(updated._state_json())
