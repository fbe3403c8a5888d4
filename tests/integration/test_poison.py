"""Poison mixed with valid commands, on the topic and through ``POST /commands``.

Every valid command is stored, every other one is on the rejected topic (or
answered 400) with a reason, and the counts add up. The commands are
generated (hypothesis, derandomized) around a valid one, plus hand-picked
poison: random bytes, deep nesting, lone surrogates, line breaks in
headers, huge numbers, NaN.
"""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import parse_command
from tests.support import Clients, Worker, eventually, read_topic, send_commands

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="poison", application="edge", group="itest")


def valid(key: str) -> dict[str, Any]:
    return {
        "client": CLIENTS.client(key),
        "type": "delay",
        "schedule": "3600",
        "task": {"type": "rest", "connection": {"host": "http://127.0.0.1:9/hook"}},
    }


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def mutated(draw: st.DrawFn, index: int) -> dict[str, Any]:
    """A valid command with one field replaced, removed or added."""
    command = valid(f"gen-{index}")
    where = draw(st.sampled_from(["type", "schedule", "task", "client", "timezone", "extra"]))
    if draw(st.booleans()) and where in command:
        del command[where]
    else:
        command[where] = draw(json_values)
    return command


def generated(count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.integers(0, 10**6).flatmap(mutated))
    def collect(command: dict[str, Any]) -> None:
        found.append(command)

    collect()
    return found


def poison() -> list[bytes]:
    rng = random.Random(7)
    deep = b"[" * 100_000 + b"]" * 100_000
    header_break = valid("crlf")
    header_break["task"]["connection"]["headers"] = {"X-Evil": "a\r\nInjected: yes"}
    return [
        *(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))) for _ in range(10)),
        deep,
        b'{"client": {"operation": "\\ud800", "application": "a", "group": "g", "key": "k",'
        b' "type": "t"}, "type": "now", "task": {"type": "rest", "connection":'
        b' {"host": "http://127.0.0.1:9/"}}}',
        json.dumps(header_break).encode(),
        json.dumps(valid("huge")).replace('"3600"', "1e999").encode(),
        json.dumps(valid("nan")).replace('"3600"', "NaN").encode(),
        json.dumps(valid("bigint")).replace('"3600"', "9" * 5000).encode(),
        b"",
        b"null",
    ]


def is_valid(raw: bytes) -> bool:
    try:
        parse_command(raw, max_bytes=262_144)
    except InvalidCommand:
        return False
    return True


async def test_on_the_topic_every_command_is_stored_or_rejected_and_the_counts_add_up(
    worker: Worker,
) -> None:
    commands = [json.dumps(c).encode() for c in generated(60)] + poison()
    commands += [json.dumps(valid(f"plain-{i}")).encode() for i in range(10)]
    good = [raw for raw in commands if is_valid(raw)]
    bad = [raw for raw in commands if not is_valid(raw)]
    assert len(good) >= 10 and len(bad) >= 16
    await send_commands(worker, *commands)
    rejected = await read_topic(
        worker.bootstrap,
        worker.topic("schedule-commands-rejected"),
        until=lambda found: len(found) >= len(bad),
        timeout=60,
        quiet=True,
    )
    seen = {r["value"]["command"] for r in rejected}
    unsaid = [raw[:100] for raw in bad if raw.decode("utf-8", "replace") not in seen]
    assert not unsaid, unsaid
    assert len(rejected) == len(bad)
    assert all(r["value"]["error"] and r["value"]["detail"] for r in rejected)
    for raw in good:
        sid = json.loads(raw)["client"]
        sid = CLIENTS.sid(sid["key"]) if sid.get("operation") == "poison" else None
        if sid is not None:
            await eventually(
                lambda sid=sid: httpx.get(f"{worker.url}/schedules/{sid}").status_code == 200
            )
    assert worker.alive()


async def test_through_post_every_poison_is_a_400_never_a_500(worker: Worker) -> None:
    statuses = []
    for raw in [json.dumps(c).encode() for c in generated(30)] + poison():
        response = httpx.post(
            f"{worker.url}/commands",
            content=raw,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        statuses.append(response.status_code)
        expected = 202 if is_valid(raw) else 400
        if response.status_code == 413:
            expected = 413
        assert response.status_code == expected, (raw[:120], response.text[:300])
        if expected != 202:
            assert response.json()["detail"]
    assert 500 not in statuses
