"""The egress policy: which targets a worker may connect to (scheduler.targets.egress)."""

from __future__ import annotations

import ipaddress

import pytest

from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import parse_command
from scheduler.targets.egress import EgressDenied, Policy, check_command, refusal, resolve


def rest(url: str) -> dict[str, object]:
    return {"type": "rest", "connection": {"host": url}}


def test_metadata_and_link_local_addresses_are_denied_by_default() -> None:
    policy = Policy.of(None, None)
    assert "169.254.0.0/16" in (
        refusal(rest("http://169.254.169.254/latest/meta-data"), policy) or ""
    )
    assert refusal(rest("http://[fe80::1]/x"), policy) is not None
    assert refusal(rest("http://[fd00:ec2::254]/x"), policy) is not None


def test_private_ranges_and_loopback_are_allowed_by_default() -> None:
    policy = Policy.of(None, None)
    for url in ("http://10.1.2.3/x", "http://192.168.0.5:8080/x", "http://127.0.0.1:9000/x"):
        assert refusal(rest(url), policy) is None, url


def test_the_workers_own_web_port_on_this_host_is_denied() -> None:
    policy = Policy.of(None, None, own_port=6066)
    assert "own web port" in (refusal(rest("http://127.0.0.1:6066/commands"), policy) or "")
    assert "own web port" in (refusal(rest("http://localhost:6066/commands"), policy) or "")
    assert refusal(rest("http://127.0.0.1:6067/commands"), policy) is None


def test_unix_sockets_are_never_targets() -> None:
    policy = Policy.of("0.0.0.0/0", None)
    task = {"type": "redis", "connection": {"host": "unix:///var/run/redis.sock"}}
    assert refusal(task, policy) == "unix sockets are not allowed as targets"


def test_deny_rules_win_and_wildcards_match_subdomains_only() -> None:
    policy = Policy.of(None, "*.internal.example, 10.9.0.0/16")
    assert refusal(rest("https://db.internal.example/x"), policy) is not None
    assert refusal(rest("https://internal.example.org/x"), policy) is None
    assert refusal(rest("http://10.9.3.4/x"), policy) is not None
    assert refusal(rest("http://10.8.3.4/x"), policy) is None


def test_allow_rules_make_an_allow_list_and_can_open_a_default_denial() -> None:
    policy = Policy.of("hooks.example.com, 169.254.10.0/24", None)
    assert refusal(rest("https://hooks.example.com/x"), policy) is None
    assert refusal(rest("http://169.254.10.7/x"), policy) is None
    assert "not in SCHEDULER_EGRESS_ALLOW" in (refusal(rest("http://10.0.0.1/x"), policy) or "")
    address = ipaddress.ip_address("93.184.216.34")
    assert policy.judge_address(address, 443, "hooks.example.com") is None  # named, allowed


def test_every_kafka_bootstrap_host_is_checked() -> None:
    policy = Policy.of(None, None)
    task = {"type": "kafka", "connection": {"host": "10.0.0.1:9092,169.254.169.254:9092"}}
    assert refusal(task, policy) is not None


async def test_a_name_is_connected_to_only_at_addresses_that_were_checked() -> None:
    assert await resolve("localhost", 80, Policy.of(None, None)) != []
    with pytest.raises(EgressDenied, match="not in SCHEDULER_EGRESS_ALLOW"):
        await resolve("localhost", 80, Policy.of("10.0.0.0/8", None))
    with pytest.raises(EgressDenied, match="SCHEDULER_EGRESS_DENY"):
        await resolve("localhost", 80, Policy.of(None, "127.0.0.0/8, ::1/128"))


def test_the_edge_rejects_a_denied_literal_target_naming_the_field_and_value() -> None:
    command = parse_command(
        b'{"client": {"operation": "o", "application": "a", "group": "g", "key": "k",'
        b' "type": "t"}, "type": "now", "task": {"type": "rest",'
        b' "connection": {"host": "http://169.254.169.254/latest"}}}'
    )
    with pytest.raises(InvalidCommand) as caught:
        check_command(command, Policy.of(None, None))
    assert caught.value.error == "egress_denied"
    assert caught.value.field == "task.connection.host"
    assert "169.254.169.254" in caught.value.detail


def test_an_ipv4_address_inside_ipv6_is_judged_as_the_ipv4_address() -> None:
    policy = Policy.of(None, "10.0.0.0/8", own_port=6066)
    for url in (
        "http://[::ffff:169.254.169.254]/latest",
        "http://[2002:a9fe:a9fe::1]/latest",  # 6to4
        "http://[::ffff:127.0.0.1]:6066/commands",
        "http://[::ffff:10.0.0.5]/x",
    ):
        assert refusal(rest(url), policy) is not None, url


def test_an_allowed_name_that_resolves_to_metadata_is_still_denied() -> None:
    policy = Policy.of("*.example.com", None)
    metadata = ipaddress.ip_address("169.254.169.254")
    assert policy.judge_address(metadata, 80, "rebind.example.com") is not None
    opened = Policy.of("*.example.com, 169.254.169.254/32", None)
    assert opened.judge_address(metadata, 80, "rebind.example.com") is None
