"""A redis task's ``connection.host``: a URL, or ``host:port`` as the service we replace took it.

One reading (``scheduler.domain.models.redis_url``) serves validation, the
egress check at the edge and the executor, so the policy judges the server
that is connected to.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Command, parse_command, redis_url
from scheduler.domain.retry import Outcome
from scheduler.targets.egress import Policy, check_command, refusal, targets_of
from scheduler.targets.executors import Executors


def redis_command(host: str) -> dict[str, Any]:
    return {
        "client": {"operation": "o", "application": "a", "group": "g", "key": "k", "type": "t"},
        "type": "now",
        "task": {"type": "redis", "connection": {"host": host, "topic": "jobs"}},
    }


def parsed(host: str) -> Command:
    return parse_command(json.dumps(redis_command(host)).encode())


@pytest.mark.parametrize(
    ("written", "url"),
    [
        ("10.0.0.5:6380", "redis://10.0.0.5:6380"),
        ("cache.internal:6379", "redis://cache.internal:6379"),
        ("redis:6379", "redis://redis:6379"),  # a compose service called redis
        ("cache", "redis://cache:6379"),
        ("10.0.0.5", "redis://10.0.0.5:6379"),
        ("localhost.:06379", "redis://localhost.:6379"),
        ("[fd12::5]:6380", "redis://[fd12::5]:6380"),
        ("[::1]", "redis://[::1]:6379"),
        ("redis://10.0.0.5:6379/2", "redis://10.0.0.5:6379/2"),
        ("rediss://:{{secret:REDIS_PW}}@cache:6380", "rediss://:{{secret:REDIS_PW}}@cache:6380"),
        ("REDIS://cache", "REDIS://cache"),
        ("unix:///var/run/redis.sock", "unix:///var/run/redis.sock"),  # for egress to refuse
    ],
)
def test_each_written_form_means_one_url(written: str, url: str) -> None:
    assert redis_url(written) == url
    assert parsed(written).task is not None  # and is valid


FORMS = "must be a redis:// or rediss:// URL, host:port or host for a redis task"
PORT = "the port must be a number from 1 to 65535"
WIDE_6379 = "\uff16\uff13\uff17\uff19"  # digits to str.isdigit, not to a port


@pytest.mark.parametrize(
    ("written", "why", "shown"),
    [
        ("cache:notaport", PORT, "cache:notaport"),
        ("cache:70000", PORT, "cache:70000"),
        ("cache:0", PORT, "cache:0"),
        ("cache:", PORT, "cache:"),
        (f"cache:{WIDE_6379}", PORT, f"cache:{WIDE_6379}"),
        (":6379", "names no host", ":6379"),
        ("my cache:6379", "holds a space", "my cache:6379"),
        ("::1", "an IPv6 address is written in brackets, as [::1]:6379", "::1"),
        ("[cache]:6379", "holds no IPv6 address between its brackets", "[cache]:6379"),
        (
            "user:pw@cache:6379",
            "a user or password goes in a URL: redis://:password@host:port",
            "***@cache:6379",
        ),
        ("-cache", FORMS, "-cache"),
        ("[::1]6379", FORMS, "[::1]6379"),
        ("http://cache:6379", FORMS, None),
        ("redis://cache:99999", PORT, None),
        ("redis://:pw@cache:x", PORT, "redis://:***@cache:x"),
        ("redis:///0", "names no host", None),
    ],
)
def test_bad_hosts_are_refused_naming_the_field_and_value(
    written: str, why: str, shown: str | None
) -> None:
    with pytest.raises(ValueError, match=r"^connection\.host: ") as direct:
        redis_url(written)
    with pytest.raises(InvalidCommand) as caught:
        parsed(written)
    exc = caught.value
    assert exc.error == "invalid_command"
    assert exc.field == "task.connection.host"
    expected = f"task.connection.host: {why} (got {shown or written!r})"
    assert exc.detail == expected
    assert str(direct.value) == expected.removeprefix("task.")
    assert "pw" not in exc.detail


def test_the_command_keeps_the_host_as_written() -> None:
    command = parsed("10.0.0.5:6380")
    assert command.task is not None and command.task.connection.host == "10.0.0.5:6380"
    assert b'"host":"10.0.0.5:6380"' in command.json_bytes
    stored = Command.from_json_bytes(command.json_bytes)
    assert stored.task is not None and stored.task.connection.host == "10.0.0.5:6380"


def test_a_stored_command_is_read_back_even_if_its_host_is_refused_now() -> None:
    # Accepted before the URL's port was checked: readable, and its delivery fails.
    text = json.dumps(redis_command("redis://cache:99999")).replace(" ", "").encode()
    stored = Command.from_json_bytes(text)
    assert stored.task is not None and stored.task.connection.host == "redis://cache:99999"


def redis_task(host: str) -> dict[str, Any]:
    return {"type": "redis", "connection": {"host": host, "topic": "jobs"}}


@pytest.mark.parametrize(
    ("written", "target"),
    [
        ("10.0.0.5:6380", ("10.0.0.5", 6380)),
        ("cache", ("cache", 6379)),
        ("[fd12::5]:6380", ("fd12::5", 6380)),
        ("redis://cache:6381/0", ("cache", 6381)),
        ("rediss://:pw@cache", ("cache", None)),
    ],
)
def test_egress_judges_the_server_the_host_means(
    written: str, target: tuple[str, int | None]
) -> None:
    assert targets_of(redis_task(written)) == [target]


@pytest.mark.parametrize(
    "written",
    [
        "169.254.169.254:6379",
        "169.254.169.254",
        "[fe80::1]:6379",
        "[::ffff:169.254.169.254]:6379",
        "127.0.0.1:6066",  # the worker's own web port
        "localhost:6066",
        "unix:///var/run/redis.sock",
    ],
)
def test_a_denied_host_port_is_refused_at_the_edge(written: str) -> None:
    policy = Policy.of(None, None, own_port=6066)
    assert refusal(redis_task(written), policy) is not None
    with pytest.raises(InvalidCommand) as caught:
        check_command(parsed(written), policy)
    assert caught.value.error == "egress_denied"
    assert caught.value.field == "task.connection.host"
    assert caught.value.value == written


def test_an_allowed_host_port_passes_the_edge() -> None:
    policy = Policy.of(None, None, own_port=6066)
    for written in ("10.0.0.5:6379", "127.0.0.1:6379", "cache.internal"):
        check_command(parsed(written), policy)
    allow_list = Policy.of("10.0.0.0/8", None)
    assert refusal(redis_task("10.0.0.5:6379"), allow_list) is None
    assert "not in SCHEDULER_EGRESS_ALLOW" in (refusal(redis_task("192.168.1.5"), allow_list) or "")


def firing(host: str) -> dict[str, Any]:
    return {
        "firing_id": "fir_1",
        "schedule_id": "sch_1",
        "scheduled_for": "2030-01-01T00:00:00.000Z",
        "attempt": 1,
        "task": {**redis_task(host), "timeout": 1.0},
    }


async def test_the_executor_connects_to_the_url_the_host_means() -> None:
    executors = Executors(policy=Policy.of(None, None, own_port=6066))
    try:
        assert await executors._pinned_url(redis_url("127.0.0.1:6390")) == "redis://127.0.0.1:6390"
        assert await executors._pinned_url(redis_url("[::1]")) == "redis://[::1]:6379"
        metadata = firing("169.254.169.254:6379")
        denied = await executors._redis_send(metadata, metadata["task"])
        assert denied.outcome is Outcome.PERMANENT
        assert denied.error is not None and denied.error.startswith("egress_denied: ")
        # A command stored before its host was checked so: refused for good, said why.
        stored = firing("redis://cache:99999")
        bad = await executors._redis_send(stored, stored["task"])
        assert bad.outcome is Outcome.PERMANENT
        assert bad.error is not None and bad.error.startswith("invalid target: connection.host")
    finally:
        await executors.close()
