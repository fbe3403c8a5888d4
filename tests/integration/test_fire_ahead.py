"""Firings written ahead of their instant (``fire_ahead``): held, delivered on time, revocable.

Each schedule here is due a few seconds after it is registered, inside the
worker's default 5 s fire-ahead, so its firing is on ``firings`` before its
instant and an executor holds it. What must hold: nothing arrives before
its instant, and a delete, a pause or a change accepted before the instant
stops the held firing from going out.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from scheduler.streams.delivery import PREBUILD_MIN
from tests.support import (
    Clients,
    Collector,
    HttpTarget,
    Worker,
    create_topics,
    eventually,
    instant,
    metric,
    send_commands,
)

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="ahead", application="exec", group="itest")
client, sid_of = CLIENTS.client, CLIENTS.sid

#: Seconds from registration to the instant: inside the fire-ahead, with room
#: for the firing to be written and for the test to act before the instant.
LEAD_S = 4.0


def due_in(seconds: float) -> str:
    """A whole-millisecond UTC instant ``seconds`` from now, as a ``date`` schedule."""
    moment = datetime.fromtimestamp(round(time.time() + seconds, 3), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dated(key: str, url: str, at: str, data: Any) -> dict[str, Any]:
    return {
        "client": client(key),
        "type": "date",
        "schedule": at,
        "timezone": "UTC",
        "task": {"type": "rest", "connection": {"host": f"{url}/ok/{key}"}, "data": data},
    }


def schedule(worker: Worker, key: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx.get(f"{worker.url}/schedules/{sid_of(key)}").json()
    return found


async def fired_ahead(firings: Collector, key: str) -> dict[str, Any]:
    """The firing of ``key`` once it is on ``firings``; it must be ahead of its instant."""
    await firings.wait(lambda _: bool(firings.values(schedule_id=sid_of(key))), timeout=LEAD_S)
    firing = firings.values(schedule_id=sid_of(key))[0]
    assert instant(firing["fired_at"]) < instant(firing["scheduled_for"])
    return firing


async def test_a_held_firing_arrives_at_its_instant_not_before(
    worker: Worker, http_target: HttpTarget
) -> None:
    """Due within the lead, it is fired by the agent that stores it: no wake-up goes
    to the timer and back, the command's own batch writes the firing."""
    sent_before = metric(worker, "scheduler_wakeups_sent_total")
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        at = due_in(LEAD_S)
        await send_commands(worker, dated("on-time", http_target.url, at, {"v": 1}))
        firing = await fired_ahead(firings, "on-time")
        await eventually(lambda: http_target.of("on-time"), timeout=LEAD_S + 20)
    calls = http_target.of("on-time")
    assert len(calls) == 1
    assert calls[0]["headers"]["X-Scheduled-For"] == firing["scheduled_for"]
    assert calls[0]["headers"]["Idempotency-Key"] == firing["firing_id"]
    assert instant(at) <= calls[0]["arrived"] < instant(at) + 1.0
    assert metric(worker, "scheduler_wakeups_sent_total") == sent_before
    stored = schedule(worker, "on-time")
    assert stored["status"] == "completed" and stored["fire_count"] == 1


async def test_delete_and_pause_revoke_held_firings(
    worker: Worker, http_target: HttpTarget
) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        at = due_in(LEAD_S)
        await send_commands(
            worker,
            dated("deleted", http_target.url, at, {"v": 1}),
            dated("paused", http_target.url, at, {"v": 1}),
        )
        held = {key: await fired_ahead(firings, key) for key in ("deleted", "paused")}
        await send_commands(
            worker,
            {"action": "delete", "client": client("deleted")},
            {"action": "pause", "client": client("paused")},
        )
        await firings.wait(
            lambda _: len([r for r in firings.values() if "revoked" in r]) >= 2, timeout=LEAD_S
        )
        revoked = {r["schedule_id"]: r for r in firings.values() if "revoked" in r}
        assert revoked[sid_of("deleted")]["revoked"] == [held["deleted"]["firing_id"]]
        assert revoked[sid_of("deleted")]["by"] == "delete"
        assert revoked[sid_of("paused")]["revoked"] == [held["paused"]["firing_id"]]
        assert revoked[sid_of("paused")]["by"] == "pause"
        # Past the instant, with time for a stray delivery to show up.
        await asyncio.sleep(max(instant(at) - time.time(), 0) + 2.0)
    assert http_target.of("deleted") == []
    assert http_target.of("paused") == []
    # The pause took the firing back out of the schedule's count: its instant stands.
    paused = schedule(worker, "paused")
    assert paused["status"] == "paused"
    assert paused["fire_count"] == 0
    assert instant(paused["next_fire_at"]) == instant(at)
    assert httpx.get(f"{worker.url}/schedules/{sid_of('deleted')}").status_code == 404
    # Resumed after its instant, the one-shot fires once, late (misfire policy fire_once).
    await send_commands(worker, {"action": "resume", "client": client("paused")})
    await eventually(lambda: http_target.of("paused"), timeout=30)
    await asyncio.sleep(1.0)
    assert len(http_target.of("paused")) == 1


async def test_a_change_replaces_the_held_firing(worker: Worker, http_target: HttpTarget) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        at = due_in(LEAD_S)
        await send_commands(worker, dated("changed", http_target.url, at, {"v": 1}))
        first = await fired_ahead(firings, "changed")
        # Same instant, new payload: the held v1 firing is revoked, v2 fires instead.
        await send_commands(worker, dated("changed", http_target.url, at, {"v": 2}))
        await eventually(lambda: http_target.of("changed"), timeout=LEAD_S + 20)
        await asyncio.sleep(1.5)
        revocations = [r for r in firings.values(schedule_id=sid_of("changed")) if "revoked" in r]
    calls = http_target.of("changed")
    assert [c["body"] for c in calls] == [{"v": 2}]
    assert revocations and revocations[0]["revoked"] == [first["firing_id"]]
    assert calls[0]["headers"]["X-Scheduled-For"] == first["scheduled_for"]
    assert instant(at) <= calls[0]["arrived"]
    # An unchanged upsert (a client re-registering) leaves a held firing alone.
    again = due_in(LEAD_S)
    await send_commands(worker, dated("same", http_target.url, again, {"v": 1}))
    await eventually(lambda: schedule(worker, "same").get("fire_count") == 1, timeout=LEAD_S)
    await send_commands(worker, dated("same", http_target.url, again, {"v": 1}))
    await eventually(lambda: http_target.of("same"), timeout=LEAD_S + 20)
    await asyncio.sleep(1.5)
    assert len(http_target.of("same")) == 1


@pytest.mark.parametrize("count", [12, 300, PREBUILD_MIN + 200])
async def test_held_kafka_firings_go_out_together_keyed_and_partitioned_as_one_by_one(
    worker: Worker, count: int
) -> None:
    """Kafka firings due at one instant are produced as prebuilt batches: same records.

    12 firings over 3 partitions go one by one; 300 fill a batch on every
    partition (``executors.MIN_BATCH``), and the partitions are queued at once;
    a crowd of ``PREBUILD_MIN`` or more is appended to its batches before the
    instant, its records stamped with the instant itself.
    """
    from aiokafka import AIOKafkaConsumer
    from aiokafka.partitioner import DefaultPartitioner

    topic = worker.topic(f"ahead-orders-{count}")
    await create_topics(worker.bootstrap, topic, partitions=3)
    at = due_in(LEAD_S)
    keys = [f"order-{count}-{n}" for n in range(count)]

    def kafka_task(n: int) -> dict[str, Any]:
        connection = {"host": worker.bootstrap, "topic": topic}
        if n % 2:
            connection["key"] = f"custom-{n}"
        return {"type": "kafka", "connection": connection, "data": {"order": n}}

    prebuilt_before = metric(worker, "scheduler_kafka_prebuilt_total")
    await send_commands(
        worker,
        *(
            {"client": client(key), "type": "date", "schedule": at, "task": kafka_task(n)}
            for n, key in enumerate(keys)
        ),
    )
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=worker.bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    got: list[Any] = []
    arrived: list[float] = []
    try:
        deadline = time.monotonic() + LEAD_S + 30
        while len(got) < len(keys) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                got.extend(records)
                arrived.extend(time.time() for _ in records)
    finally:
        await consumer.stop()
    assert len(got) == len(keys)
    assert min(arrived) >= instant(at)
    partitioner = DefaultPartitioner()
    by_order = {json.loads(r.value)["order"]: r for r in got}
    for n, key in enumerate(keys):
        record = by_order[n]
        expected_key = f"custom-{n}" if n % 2 else sid_of(key)
        assert record.key == expected_key.encode()
        assert record.partition == partitioner(record.key, [0, 1, 2], [0, 1, 2])
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["X-Schedule-Id"] == sid_of(key)
        assert headers["X-Scheduled-For"] == at.replace("Z", "000Z")
        assert headers["Idempotency-Key"].startswith("fir_") and headers["X-Attempt"] == "1"
    prebuilt = metric(worker, "scheduler_kafka_prebuilt_total") - prebuilt_before
    if count >= PREBUILD_MIN:
        assert prebuilt == count
        assert {record.timestamp for record in got} == {int(instant(at) * 1000)}
    else:
        assert prebuilt == 0
        assert min(record.timestamp for record in got) >= int(instant(at) * 1000)
