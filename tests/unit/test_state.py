"""The stored schedule: how commands and timer wake-ups change it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Command, parse_command
from scheduler.domain.state import (
    MAX_PER_WAKE,
    ScheduleRecord,
    Status,
    apply,
    describe,
    firing,
    firing_bytes,
    first_fire,
    next_instant,
    revoke,
    revokes,
    wake,
)
from tests.commands import example

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
T0 = datetime(2030, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
"""Acceptance of the first command in most tests (half a second past midnight)."""

CLIENT = {
    "operation": "op#1",
    "application": "chef",
    "group": "system",
    "key": "12345678",
    "type": "scheduler",
}


def command(**changes: Any) -> Command:
    """A valid upsert (every 10 s after acceptance), with ``changes`` applied."""
    defaults = {"type": "delay-recur", "schedule": "10", "timezone": "UTC", "client": CLIENT}
    return parse_command(example(**{**defaults, **changes}))


def action(name: str) -> Command:
    return parse_command({"action": name, "client": CLIENT})


def created(cmd: Command | None = None, at: datetime = T0) -> ScheduleRecord:
    record = apply(None, cmd or command(), at)
    assert record is not None
    return record


def applied(current: ScheduleRecord | None, cmd: Command, at: datetime) -> ScheduleRecord:
    record = apply(current, cmd, at)
    assert record is not None
    return record


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- apply: upsert ---------------------------------------------------------------------------


def test_an_upsert_creates_an_active_schedule_at_its_first_instant() -> None:
    cmd = command()
    record = created(cmd)
    assert record.schedule_id == cmd.schedule_id
    assert record.command == cmd
    assert record.status is Status.ACTIVE
    assert record.accepted_at == record.created_at == record.updated_at == T0
    assert record.next_fire_at == T0 + 10 * SECOND
    assert record.timed == T0 + 10 * SECOND
    assert record.fire_count == 0
    assert record.missed_count == 0
    assert record.last_wake is None
    assert record.last_batch == ()


def test_an_update_keeps_created_at_and_fire_count_and_reanchors_on_its_acceptance() -> None:
    first = created()
    fired = wake(first, T0 + 10 * SECOND, T0 + 10 * SECOND).record
    assert fired.fire_count == 1
    later = T0 + 15 * SECOND
    update = command(schedule="20", name="renamed")
    record = applied(fired, update, later)
    assert record.command == update
    assert record.created_at == T0
    assert record.accepted_at == later
    assert record.updated_at == later
    assert record.fire_count == 1
    assert record.last_fired_at == T0 + 10 * SECOND
    assert record.next_fire_at == later + 20 * SECOND
    assert record.status is Status.ACTIVE


def test_an_upsert_of_a_paused_schedule_keeps_it_paused() -> None:
    paused = applied(created(), action("pause"), T0 + SECOND)
    later = T0 + 5 * SECOND
    record = applied(paused, command(schedule="20"), later)
    assert record.status is Status.PAUSED
    assert record.paused
    assert record.next_fire_at == later + 20 * SECOND
    assert record.timed is None


def test_an_upsert_once_max_fires_is_spent_completes_the_schedule() -> None:
    record = created(command(max_fires=1))
    record = wake(record, T0 + 10 * SECOND, T0 + 10 * SECOND).record
    assert record.status is Status.COMPLETED
    again = applied(record, command(max_fires=1, schedule="5"), T0 + 20 * SECOND)
    assert again.status is Status.COMPLETED
    assert again.next_fire_at is None
    raised = applied(record, command(max_fires=3), T0 + 20 * SECOND)
    assert raised.status is Status.ACTIVE
    assert raised.next_fire_at == T0 + 30 * SECOND


def test_an_upsert_whose_end_has_passed_is_completed_at_once() -> None:
    record = created(
        command(type="cron", schedule="0 * * * *", start="2029-01-01T00:00", end="2029-06-01T00:00")
    )
    assert record.status is Status.COMPLETED
    assert record.next_fire_at is None
    assert record.timed is None


# --- apply: delete, pause, resume, unknown -------------------------------------------------


def test_delete_removes_the_schedule() -> None:
    assert apply(created(), action("delete"), T0 + SECOND) is None


def test_pause_stops_the_timer_and_keeps_the_instant() -> None:
    record = created()
    paused = applied(record, action("pause"), T0 + SECOND)
    assert paused.status is Status.PAUSED
    assert paused.paused
    assert paused.updated_at == T0 + SECOND
    assert paused.next_fire_at == record.next_fire_at
    assert paused.timed is None
    assert applied(paused, action("pause"), T0 + 2 * SECOND) is paused


def test_resume_of_a_recurring_schedule_continues_after_the_resume_without_a_burst() -> None:
    # Every minute at second 0; paused for five minutes.
    record = created(command(type="cron", schedule="0 * * * * *"))
    assert record.next_fire_at == utc("2030-01-01T00:01:00")
    paused = applied(record, action("pause"), utc("2030-01-01T00:00:30"))
    resumed = applied(paused, action("resume"), utc("2030-01-01T00:05:30"))
    assert resumed.status is Status.ACTIVE
    assert resumed.next_fire_at == utc("2030-01-01T00:06:00")
    assert resumed.updated_at == utc("2030-01-01T00:05:30")
    assert resumed.timed == utc("2030-01-01T00:06:00")


def test_resume_of_a_delay_recur_stays_on_its_original_grid() -> None:
    paused = applied(created(), action("pause"), T0 + SECOND)
    resumed = applied(paused, action("resume"), T0 + 35 * SECOND)
    assert resumed.next_fire_at == T0 + 40 * SECOND


def test_resume_exactly_on_an_instant_continues_after_it() -> None:
    paused = applied(created(), action("pause"), T0 + SECOND)
    resumed = applied(paused, action("resume"), T0 + 30 * SECOND)
    assert resumed.next_fire_at == T0 + 40 * SECOND


def test_resume_of_a_one_shot_keeps_its_instant_even_when_it_passed() -> None:
    instant = utc("2030-01-01T00:10:00")
    record = created(command(type="date", schedule="2030-01-01T00:10:00"))
    paused = applied(record, action("pause"), T0 + MINUTE)
    resumed = applied(paused, action("resume"), T0 + 20 * MINUTE)
    assert resumed.status is Status.ACTIVE
    assert resumed.next_fire_at == instant
    # The misfire policy (fire_once, one hour of grace) decides when it wakes.
    outcome = wake(resumed, instant, T0 + 20 * MINUTE)
    assert outcome.fire == (instant,)
    assert outcome.record.status is Status.COMPLETED


def test_resume_past_the_end_completes_the_schedule() -> None:
    record = created(command(type="cron", schedule="0 * * * * *", end="2030-01-01T00:03:00"))
    paused = applied(record, action("pause"), T0 + SECOND)
    resumed = applied(paused, action("resume"), utc("2030-01-01T00:04:00"))
    assert resumed.status is Status.COMPLETED
    assert resumed.next_fire_at is None


def test_resume_of_an_active_schedule_changes_nothing() -> None:
    record = created()
    assert applied(record, action("resume"), T0 + SECOND) is record


def test_trigger_leaves_the_schedule_as_it_is() -> None:
    record = created()
    assert applied(record, action("trigger"), T0 + SECOND) is record


@pytest.mark.parametrize("name", ["delete", "pause", "resume", "trigger"])
def test_an_action_on_an_unknown_schedule_is_rejected_naming_it(name: str) -> None:
    cmd = action(name)
    with pytest.raises(InvalidCommand) as info:
        apply(None, cmd, T0)
    assert info.value.error == "unknown_schedule"
    assert info.value.field == "client"
    assert cmd.schedule_id in info.value.detail
    assert name in info.value.detail


# --- first_fire and bounds -----------------------------------------------------------------


def test_a_date_in_the_past_keeps_its_instant() -> None:
    cmd = command(type="date", schedule="2020-01-01T00:00:00")
    assert first_fire(cmd, T0) == utc("2020-01-01T00:00:00")
    record = created(cmd)
    assert record.status is Status.ACTIVE
    assert record.next_fire_at == utc("2020-01-01T00:00:00")


def test_a_date_is_local_to_its_zone() -> None:
    cmd = command(type="date", schedule="2030-01-02T09:00:00", timezone="Asia/Seoul")
    assert first_fire(cmd, T0) == utc("2030-01-02T00:00:00")


def test_relative_one_shots_count_from_acceptance() -> None:
    assert first_fire(command(type="delay", schedule="50"), T0) == T0 + 50 * SECOND
    assert first_fire(command(type="now", schedule=None), T0) == T0


def test_a_recurring_schedule_starts_strictly_after_acceptance() -> None:
    assert first_fire(command(type="cron", schedule="* * * * * *"), T0) == utc(
        "2030-01-01T00:00:01"
    )
    assert first_fire(command(), T0) == T0 + 10 * SECOND


def test_start_is_inclusive_and_end_is_inclusive() -> None:
    cmd = command(
        type="cron",
        schedule="0 * * * * *",
        start="2030-01-01T01:00:00",
        end="2030-01-01T01:02:00",
    )
    first = first_fire(cmd, T0)
    assert first == utc("2030-01-01T01:00:00")
    walked = [first]
    while (upcoming := next_instant(cmd, T0, walked[-1])) is not None:
        walked.append(upcoming)
    assert walked == [
        utc("2030-01-01T01:00:00"),
        utc("2030-01-01T01:01:00"),
        utc("2030-01-01T01:02:00"),
    ]


def test_start_and_end_are_local_to_the_zone() -> None:
    cmd = command(
        type="cron", schedule="0 * * * *", timezone="Asia/Seoul", start="2030-01-01T12:00:00"
    )
    assert first_fire(cmd, T0) == utc("2030-01-01T03:00:00")


def test_a_start_already_passed_does_not_hold_the_schedule_back() -> None:
    cmd = command(type="cron", schedule="0 * * * * *", start="2029-01-01T00:00:00")
    assert first_fire(cmd, T0) == utc("2030-01-01T00:01:00")


def test_the_last_instant_before_end_completes_the_schedule() -> None:
    record = created(command(type="cron", schedule="0 * * * * *", end="2030-01-01T00:02:00"))
    record = wake(record, utc("2030-01-01T00:01:00"), utc("2030-01-01T00:01:00")).record
    assert record.status is Status.ACTIVE
    outcome = wake(record, utc("2030-01-01T00:02:00"), utc("2030-01-01T00:02:00"))
    assert outcome.fire == (utc("2030-01-01T00:02:00"),)
    assert outcome.record.status is Status.COMPLETED
    assert outcome.record.next_fire_at is None


# --- wake ----------------------------------------------------------------------------------


def test_a_wake_at_the_awaited_instant_fires_it_and_advances() -> None:
    record = created()
    due = T0 + 10 * SECOND
    outcome = wake(record, due, due + timedelta(milliseconds=3))
    assert outcome.changed
    assert outcome.fire == (due,)
    after = outcome.record
    assert after.status is Status.ACTIVE
    assert after.next_fire_at == due + 10 * SECOND
    assert after.fire_count == 1
    assert after.last_fired_at == due
    assert after.missed_count == 0
    assert after.last_wake == due
    assert after.last_batch == (due,)


def test_a_wake_for_another_instant_is_stale() -> None:
    record = created()
    outcome = wake(record, T0 + 20 * SECOND, T0 + 20 * SECOND)
    assert outcome.fire == ()
    assert not outcome.changed
    assert outcome.record is record


def test_a_wake_of_a_paused_schedule_is_stale() -> None:
    paused = applied(created(), action("pause"), T0 + SECOND)
    due = T0 + 10 * SECOND
    assert paused.next_fire_at == due
    outcome = wake(paused, due, due)
    assert outcome.fire == ()
    assert not outcome.changed
    assert outcome.record is paused


def test_a_replayed_wake_resends_its_batch_without_changing_anything() -> None:
    due = T0 + 10 * SECOND
    after = wake(created(), due, due).record
    replay = wake(after, due, due + 5 * SECOND)
    assert replay.fire == (due,)
    assert not replay.changed
    assert replay.record is after


def test_a_replayed_wake_that_fired_nothing_sends_nothing() -> None:
    record = created(command(misfire_policy="skip"))
    due = T0 + 10 * SECOND
    after = wake(record, due, due + 5 * SECOND).record
    assert after.last_batch == ()
    assert after.missed_count == 1
    replay = wake(after, due, due + 6 * SECOND)
    assert replay.fire == ()
    assert not replay.changed


def test_a_late_wake_counts_what_the_policy_does_not_fire() -> None:
    record = created()  # fire_once
    due = T0 + 10 * SECOND
    outcome = wake(record, due, T0 + 45 * SECOND)
    # Due 10, 20, 30, 40 s after acceptance, all late: the latest fires.
    assert outcome.fire == (T0 + 40 * SECOND,)
    after = outcome.record
    assert after.missed_count == 3
    assert after.last_missed_at == T0 + 30 * SECOND
    assert after.fire_count == 1
    assert after.next_fire_at == T0 + 50 * SECOND
    assert after.last_wake == due


def test_the_wake_threshold_decides_what_is_on_time() -> None:
    record = created(command(misfire_policy="skip"))
    due = T0 + 10 * SECOND
    assert wake(record, due, due + 2 * SECOND).fire == ()
    assert wake(record, due, due + 2 * SECOND, threshold=3 * SECOND).fire == (due,)


def test_max_fires_completes_the_schedule() -> None:
    record = created(command(max_fires=2))
    record = wake(record, T0 + 10 * SECOND, T0 + 10 * SECOND).record
    assert record.status is Status.ACTIVE
    outcome = wake(record, T0 + 20 * SECOND, T0 + 20 * SECOND)
    assert outcome.fire == (T0 + 20 * SECOND,)
    assert outcome.record.status is Status.COMPLETED
    assert outcome.record.next_fire_at is None
    assert outcome.record.fire_count == 2
    assert outcome.record.timed is None


def test_max_fires_caps_a_catch_up_and_counts_the_rest_missed() -> None:
    record = created(command(max_fires=2, misfire_policy="fire_all"))
    outcome = wake(record, T0 + 10 * SECOND, T0 + 45 * SECOND)
    assert outcome.fire == (T0 + 10 * SECOND, T0 + 20 * SECOND)
    assert outcome.record.status is Status.COMPLETED
    assert outcome.record.fire_count == 2
    assert outcome.record.missed_count == 2


def test_a_one_shot_completes_after_its_wake() -> None:
    cmd = command(type="delay", schedule="50")
    record = created(cmd)
    due = T0 + 50 * SECOND
    outcome = wake(record, due, due)
    assert outcome.fire == (due,)
    assert outcome.record.status is Status.COMPLETED
    assert outcome.record.next_fire_at is None
    assert outcome.record.timed is None


def test_an_expired_one_shot_completes_without_firing() -> None:
    cmd = command(type="date", schedule="2020-01-01T00:00:00")
    record = created(cmd)
    outcome = wake(record, utc("2020-01-01T00:00:00"), T0)
    assert outcome.fire == ()
    assert outcome.changed
    assert outcome.record.status is Status.COMPLETED
    assert outcome.record.missed_count == 1
    assert outcome.record.last_missed_at == utc("2020-01-01T00:00:00")


def test_an_update_accepted_before_the_last_wake_does_not_stall_a_recurring_schedule() -> None:
    """A per-second cron updated by a command whose Kafka timestamp is just
    before an instant that the timer has already woken for (the wake reached
    the keyed topic first). The update brings the record back to that same
    instant; the following wake for it must not leave the schedule waiting for
    it forever.
    """
    cmd = command(type="cron", schedule="* * * * * *")
    record = created(cmd)  # accepted at 00:00:00.5
    due = utc("2030-01-01T00:00:01")
    record = wake(record, due, due + timedelta(milliseconds=5)).record
    assert record.next_fire_at == utc("2030-01-01T00:00:02")

    update = command(type="cron", schedule="* * * * * *", name="renamed")
    updated = applied(record, update, utc("2030-01-01T00:00:00.800000"))
    # It does not go back to the instant already woken for...
    assert updated.next_fire_at == due + timedelta(seconds=1)

    # ...and a late wake for that instant changes nothing and fires nothing new.
    outcome = wake(updated, due, due + timedelta(milliseconds=900))
    assert outcome.record.next_fire_at == due + timedelta(seconds=1)
    assert outcome.record.status is Status.ACTIVE


def test_resubmitting_a_fired_date_schedule_does_not_leave_it_waiting_forever() -> None:
    """The same date sent again after it fired (to change its payload, say) is
    active again at the old instant. Whether the wake for it fires again or
    not, the schedule must not stay active waiting for an instant already woken.
    """
    cmd = command(type="date", schedule="2030-01-01T00:10:00")
    instant = utc("2030-01-01T00:10:00")
    done = wake(created(cmd), instant, instant).record
    assert done.status is Status.COMPLETED

    again = applied(done, command(type="date", schedule="2030-01-01T00:10:00", name="x"), T0 + HOUR)
    outcome = wake(again, instant, T0 + HOUR + SECOND)
    after = outcome.record
    assert not (after.status is Status.ACTIVE and after.next_fire_at == instant)


# --- serialisation -------------------------------------------------------------------------


def test_a_record_survives_a_json_round_trip() -> None:
    record = replace(
        created(command(misfire_policy="fire_all", max_fires=7)),
        fire_count=3,
        last_fired_at=T0 + timedelta(seconds=30, microseconds=123_456),
        missed_count=2,
        last_missed_at=T0 + timedelta(seconds=20, microseconds=1),
        last_wake=T0 + 10 * SECOND,
        last_batch=(T0 + 10 * SECOND, T0 + timedelta(seconds=20, microseconds=999_999)),
    )
    data = json.loads(json.dumps(record.to_json()))
    assert data["accepted_at"] == "2030-01-01T00:00:00.500000Z"
    assert data["status"] == "active"
    assert ScheduleRecord.from_json(data) == record


def test_a_fresh_record_survives_a_json_round_trip() -> None:
    for cmd in (command(type="now", schedule=None), command(type="delay", schedule=12.5)):
        record = created(cmd)
        assert ScheduleRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    paused = applied(created(), action("pause"), T0 + SECOND)
    assert ScheduleRecord.from_json(paused.to_json()) == paused


def test_a_completed_record_serialises_its_missing_instant_as_null() -> None:
    record = wake(created(command(type="now", schedule=None)), T0, T0).record
    data = record.to_json()
    assert data["next_fire_at"] is None
    assert data["status"] == "completed"
    assert ScheduleRecord.from_json(data) == record


# --- describe and firing -------------------------------------------------------------------


def test_describe_shows_the_next_instant_in_utc_and_in_the_zone() -> None:
    cmd = command(type="date", schedule="2030-01-02T09:00:00", timezone="Asia/Seoul")
    view = describe(created(cmd))
    assert view["next_fire_at"] == "2030-01-02T00:00:00.000Z"
    assert view["next_fire_at_local"] == "2030-01-02T09:00:00+09:00"
    assert view["schedule_id"] == cmd.schedule_id
    assert view["status"] == "active"
    assert view["paused"] is False
    assert view["type"] == "date"
    assert view["timezone"] == "Asia/Seoul"
    assert view["client"] == CLIENT
    assert view["misfire_policy"] == "fire_once"
    assert view["accepted_at"] == "2030-01-01T00:00:00.500Z"
    json.dumps(view)


def test_describe_uses_the_summer_offset_in_summer() -> None:
    cmd = command(type="date", schedule="2030-07-01T09:00:00.250", timezone="America/New_York")
    view = describe(created(cmd))
    assert view["next_fire_at"] == "2030-07-01T13:00:00.250Z"
    assert view["next_fire_at_local"] == "2030-07-01T09:00:00.250000-04:00"


def test_describe_of_a_paused_and_of_a_completed_schedule() -> None:
    paused = describe(applied(created(), action("pause"), T0 + SECOND))
    assert paused["status"] == "paused"
    assert paused["paused"] is True
    assert paused["updated_at"] == "2030-01-01T00:00:01.500Z"
    done = describe(wake(created(command(type="now", schedule=None)), T0, T0).record)
    assert done["status"] == "completed"
    assert done["next_fire_at"] is None
    assert done["next_fire_at_local"] is None
    assert done["fire_count"] == 1
    assert done["last_fired_at"] == "2030-01-01T00:00:00.500Z"


def test_a_firing_carries_everything_an_executor_needs() -> None:
    cmd = command()
    record = created(cmd)
    scheduled = T0 + 10 * SECOND
    fired_at = scheduled + timedelta(microseconds=2_345)
    body = firing(record, scheduled, "fir_abc", fired_at)
    task = body.pop("task")
    assert body == {
        "firing_id": "fir_abc",
        "schedule_id": cmd.schedule_id,
        "scheduled_for": "2030-01-01T00:00:10.500000Z",
        "fired_at": "2030-01-01T00:00:10.502345Z",
        "attempt": 1,
        "name": "bbb",
        "client": CLIENT,
    }
    assert cmd.task is not None
    assert task == cmd.task.model_dump(mode="json")
    assert task["type"] == "rest"
    assert task["connection"]["host"] == "http://localhost:3000/api/run"
    assert task["connection"]["headers"] == {"Content-Type": "application/json"}
    assert task["data"] == {"instanceName": "delay-test-999", "variables": {}}
    assert task["failed_policy"] == "retry"
    assert task["retry_wait"] == 60
    body["task"] = task
    json.dumps(body)


def test_firing_bytes_is_the_firing_as_json() -> None:
    record = created(command(name="naïve ☃"))
    scheduled = T0 + 10 * SECOND
    fired_at = scheduled - 4 * SECOND
    encoded = firing_bytes(record, scheduled, "fir_abc", fired_at)
    assert json.loads(encoded) == firing(record, scheduled, "fir_abc", fired_at)


# --- stored form -----------------------------------------------------------------------------


def test_a_record_reads_back_from_its_bytes_with_its_command_encoding() -> None:
    task = {**example()["task"], "data": {"note": ',"command":{"x":1}'}}
    cmd = command(task=task, end="2031-01-01T00:00:00")
    record = wake(created(cmd), T0 + 10 * SECOND, T0 + 5 * SECOND).record
    stored = record.to_bytes()
    assert json.loads(stored) == record.to_json()  # still one JSON object
    again = ScheduleRecord.from_bytes(stored)
    assert again == record
    assert again.command.json_bytes == cmd.json_bytes
    assert again.to_bytes() == stored


def test_a_records_state_is_written_as_json_would_write_it() -> None:
    # to_bytes() writes the state members by hand: byte for byte what the
    # json module gives for them, in every shape a record takes.
    from scheduler.domain.ids import compact_json

    fresh = created()
    woken = wake(fresh, T0 + 10 * SECOND, T0 + 5 * SECOND, ahead=30 * SECOND).record
    late = wake(fresh, T0 + 10 * SECOND, T0 + 5 * MINUTE).record
    paused = apply(woken, action("pause"), T0 + 6 * SECOND)
    one_shot = created(command(type="date", schedule="2030-01-01T00:00:10"))
    assert one_shot.next_fire_at is not None
    done = wake(one_shot, one_shot.next_fire_at, one_shot.next_fire_at).record
    shapes = [fresh, woken, late, paused, done, replace(fresh, last_batch=(T0, T0 + SECOND))]
    assert woken.ahead and late.missed_count and done.next_fire_at is None
    for record in shapes:
        assert record is not None
        expected = compact_json(record._state_json())
        assert record._state_text() + "}" == expected
        stored = record.to_bytes()
        assert json.loads(stored) == record.to_json()
        assert stored.startswith(expected[:-1].encode() + b',"command":')


# --- fire-ahead ------------------------------------------------------------------------------


def test_an_instant_woken_ahead_fires_and_is_remembered_as_ahead() -> None:
    due = T0 + 10 * SECOND
    outcome = wake(created(), due, due - 4 * SECOND)
    assert outcome.fire == (due,)
    assert outcome.record.ahead == (due,)
    assert outcome.record.before_ahead is None
    assert outcome.record.fire_count == 1
    assert outcome.record.next_fire_at == due + 10 * SECOND
    # The next wake-up after the instant forgets it (it is no longer pending).
    later = wake(outcome.record, due + 10 * SECOND, due + 10 * SECOND)
    assert later.record.ahead == ()
    assert later.record.before_ahead is None


def test_several_instants_ahead_are_all_pending() -> None:
    cmd = command(schedule="1")
    record = created(cmd)
    now = T0 + SECOND - timedelta(milliseconds=200)
    for step in range(1, 4):
        record = wake(record, T0 + step * SECOND, now).record
    assert record.ahead == (T0 + SECOND, T0 + 2 * SECOND, T0 + 3 * SECOND)
    assert record.before_ahead is None
    assert record.fire_count == 3


def test_a_pause_revokes_the_instants_ahead_and_rolls_the_record_back() -> None:
    cmd = command(schedule="1")
    record = created(cmd)
    record = wake(record, T0 + SECOND, T0 + SECOND).record  # fired on time
    woken_at = T0 + 1.5 * SECOND
    for step in (2, 3, 4):
        record = wake(record, T0 + step * SECOND, woken_at).record
    assert record.before_ahead == T0 + SECOND
    pause = action("pause")
    assert revokes(record, pause)
    back, revoked = revoke(record, T0 + 2.5 * SECOND)
    assert revoked == (T0 + 3 * SECOND, T0 + 4 * SECOND)
    assert back.fire_count == 2
    assert back.last_fired_at == T0 + 2 * SECOND
    assert back.next_fire_at == T0 + 3 * SECOND
    assert back.ahead == (T0 + 2 * SECOND,)
    paused = applied(back, pause, T0 + 2.5 * SECOND)
    assert paused.status is Status.PAUSED and paused.next_fire_at == T0 + 3 * SECOND
    # Revoking everything ahead goes back to what was fired before them.
    back, revoked = revoke(record, T0 + 1.2 * SECOND)
    assert len(revoked) == 3 and back.last_fired_at == T0 + SECOND and back.ahead == ()


def test_a_one_shot_revoked_ahead_keeps_its_instant() -> None:
    due = T0 + 30 * SECOND
    one_shot = created(command(type="date", schedule="2030-01-01T00:00:30.5"))
    done = wake(one_shot, due, due - 3 * SECOND).record
    assert done.status is Status.COMPLETED and done.ahead == (due,)
    back, revoked = revoke(done, due - 2 * SECOND)
    assert revoked == (due,)
    assert back.status is Status.ACTIVE and back.next_fire_at == due
    assert back.fire_count == 0 and back.last_fired_at is None and back.last_batch == ()
    # Deleted or paused before its instant: it never fires; changed: it fires anew.
    paused = applied(back, action("pause"), due - 2 * SECOND)
    assert paused.status is Status.PAUSED and paused.next_fire_at == due
    moved = applied(back, command(type="date", schedule="2030-01-01T00:00:40.5"), due - SECOND)
    assert moved.next_fire_at == due + 10 * SECOND and moved.status is Status.ACTIVE


def test_what_revokes_instants_ahead() -> None:
    cmd = command(schedule="1")
    record = wake(created(cmd), T0 + SECOND, T0).record
    assert revokes(record, action("delete")) and revokes(record, action("pause"))
    assert revokes(record, command(schedule="2"))
    assert not revokes(record, command(schedule="1"))  # re-registered unchanged
    assert not revokes(record, action("trigger")) and not revokes(record, action("resume"))
    nothing_ahead = wake(created(cmd), T0 + SECOND, T0 + SECOND).record
    assert not revokes(nothing_ahead, action("delete"))


def test_a_wake_ahead_fires_the_following_instants_within_the_fire_ahead() -> None:
    record = created(command(schedule="1"))
    due = T0 + SECOND
    outcome = wake(record, due, due - 5 * SECOND, ahead=5 * SECOND)
    # Each schedule takes a fixed share from half to all of the span (spreading
    # the wake-ups of schedules registered together): here 2.5 s to 5 s.
    count = len(outcome.fire)
    assert 3 <= count <= 6
    assert outcome.fire == tuple(due + k * SECOND for k in range(count))
    assert outcome.record.next_fire_at == due + count * SECOND
    assert outcome.record.fire_count == count
    assert outcome.record.ahead == outcome.fire
    # Never more than MAX_PER_WAKE at once, and never past max_fires.
    fast = created(command(schedule="1"))
    many = wake(fast, T0 + SECOND, T0, ahead=30 * SECOND)
    assert len(many.fire) == MAX_PER_WAKE
    assert many.record.next_fire_at == many.fire[-1] + SECOND
    capped = wake(created(command(schedule="1", max_fires=3)), due, T0, ahead=5 * SECOND)
    assert len(capped.fire) == 3
    assert capped.record.status is Status.COMPLETED and capped.record.next_fire_at is None


@pytest.mark.parametrize("policy", ["fire_once", "fire_all", "skip"])
@pytest.mark.parametrize("grace", [0.5, 1.0, 2.0, 3600.0])
@pytest.mark.parametrize(
    "schedule",
    [
        {"type": "date", "schedule": "2030-01-01T00:10:00"},
        {"type": "delay", "schedule": "30"},
        {"type": "now"},
    ],
)
def test_a_one_shot_woken_decides_as_the_misfire_plan_does(
    monkeypatch: pytest.MonkeyPatch, policy: str, grace: float, schedule: dict[str, Any]
) -> None:
    # wake() takes a short cut for a one-shot woken on time; whatever the
    # lateness, the policy and the grace, it must give what the plan gives.
    from scheduler.domain import state

    record = created(command(misfire_policy=policy, misfire_grace=grace, **schedule))
    due = record.next_fire_at
    assert due is not None
    lates = [-10, -1, 0, 0.4, 0.5, 0.500001, 0.9, 1, 1.000001, 1.5, 2, 2.5, 3600, 3600.000001]
    for pending in ((), (due + HOUR,)):
        before = replace(record, ahead=pending, before_ahead=T0 if pending else None)
        for late in lates:
            now = due + timedelta(seconds=late)
            short = wake(before, due, now, ahead=5 * SECOND)
            monkeypatch.setattr(state, "_one_shot", lambda _command: False)
            planned = wake(before, due, now, ahead=5 * SECOND)
            monkeypatch.undo()
            assert short == planned, (late, pending)

    # And on time the short cut is taken: no misfire plan is made.
    def no_plan(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("misfire.plan was called for a one-shot woken on time")

    monkeypatch.setattr(state.misfire, "plan", no_plan)
    for late in (-10, 0, min(0.5, grace)):
        short = wake(record, due, due + timedelta(seconds=late))
        assert short.fire == (due,) and short.record.status is Status.COMPLETED


def test_a_wake_up_carries_over_every_field_it_does_not_decide() -> None:
    # wake() builds the new record field by field (faster than replace):
    # a field added to ScheduleRecord later must be carried over there too.
    from dataclasses import MISSING, fields

    decided = {"status", "next_fire_at", "fire_count", "last_fired_at", "missed_count",
               "last_missed_at", "last_wake", "last_batch", "ahead", "before_ahead"}  # fmt: skip
    record = created()
    due = record.next_fire_at
    assert due is not None
    # Each field it does not decide holds a value of its own, not a default
    # (a field added with a default gets a marker object).
    own: dict[str, Any] = {"created_at": T0 - HOUR, "updated_at": T0 - MINUTE}
    for field in fields(ScheduleRecord):
        defaulted = field.default is not MISSING or field.default_factory is not MISSING
        if field.name not in decided and field.name not in own and defaulted:
            own[field.name] = object()
    record = replace(record, **own)
    for one_shot in (False, True):
        before = record
        if one_shot:
            before = replace(record, command=command(type="date", schedule="2030-01-01T00:00:10"))
            before = replace(before, next_fire_at=utc("2030-01-01T00:00:10"))
        instant = before.next_fire_at
        assert instant is not None
        woken = wake(before, instant, instant).record
        assert woken != before
        for field in fields(ScheduleRecord):
            if field.name not in decided:
                assert getattr(woken, field.name) == getattr(before, field.name), field.name
