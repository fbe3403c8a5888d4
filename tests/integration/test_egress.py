"""The egress policy on a real worker, a real HTTP server, Redis and Kafka.

A denied literal target is refused at the edge (POST and topic alike); a name
that resolves to a denied address is dead-lettered with ``egress_denied``
and nothing reaches the target; a Kafka cluster whose bootstrap address is
allowed but which advertises a denied broker is refused the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.devtools.broker import LocalBroker
from scheduler.domain.retry import Outcome
from scheduler.targets.egress import Policy
from scheduler.targets.executors import Executors
from tests.support import (
    Clients,
    Collector,
    HttpTarget,
    free_port,
    read_topic,
    send_commands,
)

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="egress", application="exec", group="itest")


def now(key: str, kind: str, connection: dict[str, Any]) -> dict[str, Any]:
    return {
        "client": CLIENTS.client(key),
        "type": "now",
        "task": {"type": kind, "connection": connection, "data": {"job": key}},
    }


async def test_denied_targets_are_refused_at_the_edge_or_dead_lettered(
    make_worker: Any, http_target: HttpTarget, redis_url: str, kafka: LocalBroker
) -> None:
    # 127.0.0.1 denied: every target of this test lives there, under the name
    # "localhost" (which the edge cannot judge without a lookup) or literally.
    worker = make_worker(extra_env={"SCHEDULER_EGRESS_DENY": "127.0.0.1/32"}).start()
    http_port = http_target.url.rsplit(":", 1)[1]
    redis_port = redis_url.rsplit(":", 1)[1].split("/", 1)[0]

    for host in ("http://169.254.169.254/latest/meta-data", f"{http_target.url}/ok/literal"):
        response = httpx.post(
            f"{worker.url}/commands", content=json.dumps(now("literal", "rest", {"host": host}))
        )
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == "egress_denied" and "task.connection.host" in json.dumps(body)

    # No tokens here: still, a page of another site cannot post a command through
    # a visitor's browser (which names that site in Origin).
    forged = httpx.post(
        f"{worker.url}/commands",
        content=json.dumps(now("forged", "rest", {"host": "http://10.0.0.1/x"})),
        headers={"Origin": "http://elsewhere.example"},
    )
    assert forged.status_code == 403 and forged.json()["error"] == "cross_origin"
    same = httpx.post(
        f"{worker.url}/commands",
        content=json.dumps(now("same-site", "rest", {"host": "http://10.0.0.1/x"})),
        headers={"Origin": worker.url},
    )
    assert same.status_code == 202, same.text

    await send_commands(worker, now("topic-literal", "rest", {"host": f"{http_target.url}/ok/t"}))
    rejected = await read_topic(
        worker.bootstrap,
        worker.topic("schedule-commands-rejected"),
        until=lambda found: len(found) >= 1,
        timeout=60,
    )
    assert rejected[0]["value"]["error"] == "egress_denied"

    named = {
        "by-name-rest": now("by-name-rest", "rest", {"host": f"http://localhost:{http_port}/ok/n"}),
        "by-name-redis": now(
            "by-name-redis",
            "redis",
            {"host": f"redis://localhost:{redis_port}", "topic": "egress-test", "mode": "publish"},
        ),
        "by-name-kafka": now(
            "by-name-kafka",
            "kafka",
            {"host": f"localhost:{kafka.port}", "topic": worker.topic("egress-out")},
        ),
    }
    async with Collector(worker.bootstrap, worker.topic("firings-dead")) as dead:
        await send_commands(worker, *named.values())
        await dead.wait(
            lambda _: all(dead.values(schedule_id=CLIENTS.sid(key)) for key in named),
            timeout=60,
        )
        for key in named:
            record = dead.values(schedule_id=CLIENTS.sid(key))[0]
            assert record["reason"].startswith("egress_denied") or any(
                e["error"].startswith("egress_denied") for e in record["errors"]
            ), record
            assert "127.0.0.1" in json.dumps(record["errors"]), record
    assert http_target.of("n") == [] and http_target.of("literal") == []
    assert worker.alive()


def kafka_firing(bootstrap: str, topic: str) -> dict[str, Any]:
    return {
        "firing_id": "fir_advertised",
        "schedule_id": "sch_advertised",
        "scheduled_for": "2030-01-01T00:00:00.000000Z",
        "attempt": 1,
        "task": {
            "type": "kafka",
            "connection": {"host": bootstrap, "topic": topic},
            "data": {"x": 1},
            "timeout": 20.0,
        },
    }


async def test_a_denied_broker_advertised_behind_an_allowed_bootstrap_is_refused(
    tmp_path: Path,
) -> None:
    # The broker listens on 127.0.0.1 and advertises itself as "localhost":
    # bootstrapping at 127.0.0.1 is allowed, the broker it then names is not.
    port = free_port()
    broker = LocalBroker(
        port=port,
        data_dir=tmp_path / "kafka",
        extra_properties={"advertised.listeners": f"PLAINTEXT://localhost:{port}"},
    )
    broker.start(timeout=120)
    try:
        firing = kafka_firing(f"127.0.0.1:{port}", "advertised")
        guarded = Executors(policy=Policy.of(None, "localhost"))
        open_ = Executors()
        try:
            refused = await guarded.deliver(firing)
            delivered = await open_.deliver(firing)
        finally:
            await guarded.close()
            await open_.close()
    finally:
        broker.stop()
    assert refused.outcome is Outcome.PERMANENT, refused
    assert refused.error is not None and refused.error.startswith("egress_denied"), refused
    assert f"advertised at localhost:{port}" in refused.error
    # The same cluster without the rule takes the record: the refusal was the policy's.
    assert delivered.ok, delivered
