"""The command format: what is accepted, and what a rejection says."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import (
    Action,
    FailedPolicy,
    RedisMode,
    ScheduleType,
    TaskType,
    parse_command,
)
from tests.commands import example


def command(**changes: Any) -> dict[str, Any]:
    return example(**changes)


def rejected(data: Any) -> InvalidCommand:
    raw = data if isinstance(data, str | bytes) else json.dumps(data)
    with pytest.raises(InvalidCommand) as info:
        parse_command(raw)
    return info.value


def test_the_design_example_is_accepted_with_defaults() -> None:
    cmd = parse_command(json.dumps(command()))
    assert cmd.action is Action.UPSERT
    assert cmd.type is ScheduleType.CRON
    assert cmd.task is not None
    assert cmd.task.type is TaskType.REST
    assert cmd.task.failed_policy is FailedPolicy.RETRY
    assert cmd.task.retry_wait == 60
    assert cmd.task.timeout == 10.0
    assert cmd.schedule_id.startswith("sch_") and len(cmd.schedule_id) == 36


@pytest.mark.parametrize(
    ("kind", "schedule"),
    [
        ("cron", "0 9 * * 1-5"),
        ("cron", "*/10 * * * * *"),
        ("date", "2030-01-02T09:00:00"),
        ("date", "2030-01-02T09:00:00+09:00"),
        ("delay", "50"),
        ("delay", 50),
        ("delay-recur", 10),
        ("now", None),
    ],
)
def test_every_schedule_type_is_accepted(kind: str, schedule: Any) -> None:
    cmd = parse_command(json.dumps(command(type=kind, schedule=schedule)))
    assert cmd.type is not None and cmd.type.value == kind


def test_schedule_id_depends_on_the_five_client_fields_only() -> None:
    a = parse_command(json.dumps(command()))
    b = parse_command(json.dumps(command(name="other", schedule="0 0 * * *")))
    client = dict(command()["client"], key="87654321")
    c = parse_command(json.dumps(command(client=client)))
    assert a.schedule_id == b.schedule_id
    assert a.schedule_id != c.schedule_id


def test_field_boundaries_cannot_collide() -> None:
    one = dict(command()["client"], operation="a", application="b|c")
    two = dict(command()["client"], operation="a|b", application="c")
    assert (
        parse_command(json.dumps(command(client=one))).schedule_id
        != parse_command(json.dumps(command(client=two))).schedule_id
    )


def test_delete_needs_only_the_client() -> None:
    cmd = parse_command(json.dumps({"action": "delete", "client": command()["client"]}))
    assert cmd.action is Action.DELETE


def test_broken_json_is_rejected_as_such() -> None:
    err = rejected('{"action": "upsert", ')
    assert err.error == "bad_json"
    assert "not valid JSON" in err.detail


def test_a_json_array_is_not_a_command() -> None:
    err = rejected("[1, 2]")
    assert err.error == "bad_json"
    assert "must be a JSON object, got list" in err.detail


def test_unknown_schedule_type_names_field_and_value() -> None:
    err = rejected(command(type="weekly"))
    assert err.field == "type"
    assert "'weekly'" in err.detail or '"weekly"' in err.detail
    assert err.detail.startswith("type: ")


def test_bad_cron_names_the_expression() -> None:
    err = rejected(command(schedule="61 * * * *"))
    assert err.field == "schedule"
    assert "61 * * * *" in err.detail


def test_cron_with_wrong_field_count_is_rejected() -> None:
    err = rejected(command(schedule="* * *"))
    assert err.field == "schedule"
    assert "* * *" in err.detail


def test_unknown_timezone_names_the_zone() -> None:
    err = rejected(command(timezone="Mars/Olympus_Mons"))
    assert err.field == "timezone"
    assert "Mars/Olympus_Mons" in err.detail


def test_missing_client_field_is_named() -> None:
    client = dict(command()["client"])
    del client["group"]
    err = rejected(command(client=client))
    assert err.field == "client.group"
    assert "client.group: Field required" in err.detail


def test_missing_task_for_upsert_is_named() -> None:
    err = rejected(command(task=None))
    assert err.field == "task"
    assert "task: is required for an upsert" in err.detail


def test_misspelt_field_is_refused_not_ignored() -> None:
    data = command()
    data["timezon"] = data.pop("timezone")
    err = rejected(data)
    assert err.field == "timezon"
    assert "Extra inputs are not permitted" in err.detail


def test_oversized_command_is_rejected_before_parsing() -> None:
    big = command()
    big["task"]["data"] = {"blob": "x" * 300_000}
    err = rejected(big)
    assert err.error == "too_large"
    assert "more than the limit of 262144 bytes" in err.detail


def test_unknown_failed_policy_is_rejected() -> None:
    data = command()
    data["task"]["failed_policy"] = "pray"
    err = rejected(data)
    assert err.field == "task.failed_policy"
    assert "'pray'" in err.detail or '"pray"' in err.detail


def test_rest_task_needs_an_http_url() -> None:
    data = command()
    data["task"]["connection"]["host"] = "ftp://example"
    err = rejected(data)
    assert err.field == "task.connection.host"
    assert "ftp://example" in err.detail


def test_kafka_task_needs_a_topic() -> None:
    data = command(task={"type": "kafka", "connection": {"host": "127.0.0.1:9092"}, "data": {}})
    err = rejected(data)
    assert err.field == "task.connection.topic"


def test_redis_task_defaults_and_mode() -> None:
    task = {
        "type": "redis",
        "connection": {"host": "redis://127.0.0.1:6379/0", "topic": "jobs", "mode": "stream"},
        "data": {"a": 1},
    }
    cmd = parse_command(json.dumps(command(task=task)))
    assert cmd.task is not None
    assert cmd.task.connection.mode is RedisMode.STREAM


def test_redis_mode_must_be_known() -> None:
    task = {
        "type": "redis",
        "connection": {"host": "redis://127.0.0.1:6379/0", "topic": "jobs", "mode": "shout"},
    }
    err = rejected(command(task=task))
    assert err.field == "task.connection.mode"
    assert "shout" in err.detail


def test_non_positive_delay_is_rejected() -> None:
    err = rejected(command(type="delay", schedule="-5"))
    assert err.field == "schedule"
    assert "-5" in err.detail


def test_unparsable_date_is_rejected() -> None:
    err = rejected(command(type="date", schedule="next tuesday"))
    assert err.field == "schedule"
    assert "next tuesday" in err.detail


def test_a_stored_command_is_read_back_without_the_checks_of_a_new_one() -> None:
    """``from_json_bytes`` trusts what was accepted; ``parse_command`` still checks it all."""
    from scheduler.domain.models import Command

    stored = parse_command(example()).json_bytes
    changed = stored.replace(b'"schedule":"', b'"schedule":"not a ', 1)
    assert changed != stored
    with pytest.raises(InvalidCommand) as raised:
        parse_command(changed)
    assert "schedule" in str(raised.value)
    again = Command.from_json_bytes(changed)
    assert again.schedule is not None and again.schedule.startswith("not a ")
    assert again.json_bytes == changed
    # The shape is still checked: a stored command is a command.
    with pytest.raises(ValueError):
        Command.from_json_bytes(stored.replace(b'"client":', b'"cliant":', 1))


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Evil": "a\r\nInjected: yes"}, "its value holds a line break or NUL"),
        ({"X-Evil": "a\x00b"}, "its value holds a line break or NUL"),
        ({"Bad Name": "x"}, "is not a valid HTTP token"),
        ({f"X-{i}": "v" for i in range(65)}, "at most 64 headers"),
        ({"X-Big": "v" * 20_000}, "more than 16384"),
    ],
)
def test_headers_that_would_break_a_request_are_refused_naming_the_field(
    headers: dict[str, str], message: str
) -> None:
    data = command()
    data["task"]["connection"]["headers"] = headers
    err = rejected(data)
    assert err.field == "task.connection.headers"
    assert message in err.detail


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a": ' + b"9" * 5_000 + b"}"],
    ids=["nested-100k", "int-5000-digits"],
)
def test_json_beyond_the_parsers_limits_is_bad_json_not_a_crash(raw: bytes) -> None:
    err = rejected(raw)
    assert err.error == "bad_json"
    assert len(err.detail) < 300
