"""Every firing record is settled: delivered, retried or dead-lettered, never stuck or lost.

Real Kafka, real HTTP targets, ``scheduler worker`` processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.support import Clients, Collector, HttpTarget, Worker, send_commands

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="settle", application="exec", group="itest")
client, sid_of = CLIENTS.client, CLIENTS.sid


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rest(key: str, url: str, **task: Any) -> dict[str, Any]:
    return {
        "client": client(key),
        "type": "now",
        "task": {"type": "rest", "connection": {"host": url}, "data": {"job": key}, **task},
    }


async def test_unreadable_and_unconcludable_records_end_in_firings_dead(
    worker: Worker, http_target: HttpTarget
) -> None:
    """Garbage on ``firings`` and ``firings-retry``, and a firing whose policy no
    longer validates: each is dead-lettered with a reason, and a valid firing
    behind them on the same partitions is still delivered."""
    async with Collector(worker.bootstrap, worker.topic("firings-dead")) as dead:
        for partition in range(worker.partitions):
            await produce_to(worker, "firings", partition, b"\x00not json")
        await produce_to(worker, "firings-retry", 0, b'{"firing_id": "fir_x"}')
        # A firing as a worker of an older version might have written it: its
        # retry_max_age is beyond today's bound, so its policy cannot be read.
        bad_policy = {
            "firing_id": "fir_badpolicy",
            "schedule_id": sid_of("bad-policy"),
            "scheduled_for": now_text(),
            "attempt": 1,
            "task": {
                "type": "rest",
                "connection": {"host": f"{http_target.url}/status/bad-policy?status=503"},
                "failed_policy": "retry",
                "retry_max_age": 1e300,
                "timeout": 5.0,
            },
        }
        await produce_to(worker, "firings", 0, json.dumps(bad_policy).encode())
        await send_commands(worker, rest("after", f"{http_target.url}/ok/after"))
        await dead.wait(lambda values: len(values) >= worker.partitions + 2, timeout=40)
        await asyncio.sleep(1)
        values = dead.values()
    unreadable = [v for v in values if "unreadable record" in v["reason"]]
    assert len(unreadable) == worker.partitions + 1, values
    assert any(v["record"] == "\x00not json" for v in unreadable)
    assert any("firings-retry" in v["source"] for v in unreadable)
    concluded = [v for v in values if v.get("firing_id") == "fir_badpolicy"]
    assert len(concluded) == 1
    assert concluded[0]["reason"].startswith("cannot conclude the delivery: ValidationError")
    assert "retry_max_age" in concluded[0]["reason"]
    assert concluded[0]["errors"][-1]["error"] == "HTTP 503 Service Unavailable"
    assert len(http_target.of("bad-policy")) == 1
    assert len(http_target.of("after")) == 1


async def test_a_refused_dead_letter_stops_the_worker_before_its_firing_is_committed(
    make_worker: Any, http_target: HttpTarget
) -> None:
    """The broker refuses a dead letter (the topic takes no record that big):
    the worker commits nothing past the firing and stops, so the firing is
    read again by the next owner rather than lost."""
    worker: Worker = make_worker(partitions=1)
    await create_limited(worker, "firings-dead", 3000)
    worker.start()
    await send_commands(worker, rest("fine", f"{http_target.url}/ok/fine"))
    await wait_for(lambda: len(http_target.of("fine")) == 1, 30)
    committed_before = await wait_committed(worker, lambda offset: offset >= 1, 30)

    big = {"job": "x" * 5_000}
    command = rest("too-big", f"{http_target.url}/status/too-big?status=400")
    command["task"]["data"] = big
    await send_commands(worker, command)
    await wait_for(lambda: len(http_target.of("too-big")) == 1, 30)
    await wait_for(lambda: not worker.alive(), 60)
    assert "the broker refused" in worker.tail(200)
    committed = await committed_offset(worker)
    assert committed == committed_before == 1, (committed_before, committed)


async def test_a_refused_firing_is_fired_again_once_the_broker_takes_it(
    make_worker: Any, http_target: HttpTarget
) -> None:
    """The broker refuses the firing a wake-up writes (``firings`` takes no record
    that big): the worker stops without committing the wake-up, and once the
    topic takes such records a restarted worker fires it. Committed past, the
    schedule would read as fired and the firing would be lost."""
    worker: Worker = make_worker(partitions=1)
    await create_limited(worker, "firings", 3000)
    worker.start()
    command = rest("late-big", f"{http_target.url}/ok/late-big")
    command.update({"type": "delay", "schedule": "3"})
    command["task"]["data"] = {"job": "x" * 5_000}
    await send_commands(worker, command)
    await wait_for(lambda: not worker.alive(), 60)
    assert "the broker refused" in worker.tail(200)
    assert http_target.of("late-big") == []

    admin = AIOKafkaAdminClient(bootstrap_servers=worker.bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(
            ConfigResourceType.TOPIC, worker.topic("firings"), {"max.message.bytes": "1000000"}
        )
        await admin.alter_configs([resource])
    finally:
        await admin.close()
    # Through make_worker, so that it is stopped after the test.
    make_worker(app_id=worker.app_id, prefix=worker.prefix, partitions=worker.partitions).start()
    await wait_for(lambda: len(http_target.of("late-big")) == 1, 60)
    assert http_target.of("late-big")[0]["body"] == {"job": "x" * 5_000}


async def create_limited(worker: Worker, topic: str, max_bytes: int) -> None:
    """Create the worker's ``topic`` before it starts, taking no record over ``max_bytes``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=worker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    worker.topic(topic),
                    worker.partitions,
                    1,
                    topic_configs={"max.message.bytes": str(max_bytes)},
                )
            ]
        )
    finally:
        await admin.close()


# ---------------------------------------------------------------- helpers


async def produce_to(worker: Worker, topic: str, partition: int, value: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            worker.topic(topic), value=value, key=b"garbage", partition=partition
        )
    finally:
        await producer.stop()


async def wait_for(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def committed_offset(worker: Worker) -> int:
    """The worker group's committed offset of ``firings`` partition 0 (-1: none)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=worker.bootstrap, group_id=worker.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        offset = await consumer.committed(TopicPartition(worker.topic("firings"), 0))
    finally:
        await consumer.stop()
    return -1 if offset is None else int(offset)


async def wait_committed(worker: Worker, done: Any, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        offset = await committed_offset(worker)
        if done(offset):
            return offset
        if time.monotonic() > deadline:
            raise AssertionError(f"firings offset committed: {offset}")
        await asyncio.sleep(0.5)
