"""Pending retries wait on the broker in delay tiers, not in a worker's memory."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from scheduler.domain.retry import TIERS_S, tier_for
from scheduler.streams.retries import HOLD_MAX
from tests.support import Clients, HttpTarget, Worker, instant, metric, read_topic, send_commands

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="tiers", application="exec", group="itest")
client, sid_of = CLIENTS.client, CLIENTS.sid


def test_each_wait_goes_to_the_longest_tier_not_over_it() -> None:
    assert tier_for(4.99) is None
    assert tier_for(5) == 5
    assert tier_for(29.9) == 5
    assert tier_for(3_599) == 600
    assert tier_for(7 * 86_400) == TIERS_S[-1]


async def test_a_retry_waits_in_its_tier_and_is_never_early(
    worker: Worker, http_target: HttpTarget
) -> None:
    command = {
        "client": client("tiered"),
        "type": "now",
        "task": {
            "type": "rest",
            "connection": {"host": f"{http_target.url}/fail/tiered?times=1"},
            "failed_policy": "retry",
            "retry_wait": 7,
        },
    }
    await send_commands(worker, command)
    deadline = time.monotonic() + 40
    while len(http_target.of("tiered")) < 2:
        assert time.monotonic() < deadline, http_target.of("tiered")
        await asyncio.sleep(0.1)
    first, second = http_target.of("tiered")
    assert second["arrived"] - first["arrived"] >= 7.0
    assert second["headers"]["X-Attempt"] == "2"
    # It went through the 5 s tier, as the same record.
    hopped = await read_topic(
        worker.bootstrap, worker.topic("firings-retry-5s"), lambda found: len(found) >= 1
    )
    assert hopped[0]["value"]["firing_id"] == first["headers"]["Idempotency-Key"]
    assert instant(hopped[0]["value"]["not_before"]) <= second["arrived"]


async def test_many_pending_retries_are_held_a_few_per_partition_and_committed(
    make_worker: Any, http_target: HttpTarget
) -> None:
    """20,000 retries due in an hour: the worker moves them all to the one-hour
    tier that fits and commits them, holds ``HOLD_MAX`` a partition of it plus
    what had been fetched when it paused, delivers none early, and a kill -9
    and restart changes none of that."""
    worker: Worker = make_worker(partitions=2)
    worker.start()
    count = 20_000
    not_before = datetime.now(UTC) + timedelta(hours=1)
    await produce_retries(worker, http_target, count, not_before)

    # Just under an hour is left when they are read: the 10-minute tier.
    tier = worker.topic(f"firings-retry-{tier_for(3_590)}s")
    await wait_until(lambda: committed_total(worker, worker.topic("firings-retry")), count, 120)
    # Only the head of each partition is held.
    held = metric(worker, "scheduler_retries_held")
    assert 0 < held <= worker.partitions * (HOLD_MAX + FETCHED_BEFORE_PAUSE), held
    assert await end_total(worker, tier) == count
    assert http_target.of("pending") == []

    worker.stop(signal.SIGKILL)
    # Through make_worker, so that it is stopped after the test.
    again = make_worker(
        app_id=worker.app_id,
        prefix=worker.prefix,
        partitions=worker.partitions,
        web_port=worker.web_port,
    ).start()
    await asyncio.sleep(5)
    held = metric(again, "scheduler_retries_held")
    assert 0 < held <= again.partitions * (HOLD_MAX + FETCHED_BEFORE_PAUSE), held
    assert http_target.of("pending") == []
    assert await end_total(again, tier) == count  # no record was sent on twice


#: Records Faust took before a pause landed and hands on all the same: what
#: the client had fetched of the partition (about 1 MiB, a few thousand of
#: ours; 2,500 seen of each of two partitions after a restart).
FETCHED_BEFORE_PAUSE = 4_096


async def test_a_tier_partition_paused_and_resumed_loses_no_retry_and_sends_none_twice(
    make_worker: Any, http_target: HttpTarget
) -> None:
    """Far more retries than a partition holds, due within a minute: each passes
    through tiers whose partitions are paused and resumed many times over; every
    one is delivered, once, never early, and the worker stays up."""
    worker: Worker = make_worker(partitions=2)
    worker.start()
    count = 600
    not_before = datetime.now(UTC) + timedelta(seconds=12)
    await produce_retries(worker, http_target, count, not_before)
    deadline = time.monotonic() + 90
    while len(http_target.of("pending")) < count:
        assert time.monotonic() < deadline, len(http_target.of("pending"))
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)
    arrived = http_target.of("pending")
    keys = [hit["headers"]["Idempotency-Key"] for hit in arrived]
    assert len(keys) == len(set(keys)) == count
    assert min(hit["arrived"] for hit in arrived) >= not_before.timestamp()
    assert worker.alive()


async def produce_retries(
    worker: Worker, http_target: HttpTarget, count: int, not_before: datetime
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        stamp = not_before.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for index in range(count):
            sid = sid_of(f"pending-{index}")
            record = {
                "firing_id": f"fir_pending_{index}",
                "schedule_id": sid,
                "scheduled_for": stamp,
                "attempt": 2,
                "not_before": stamp,
                "task": {
                    "type": "rest",
                    "connection": {"host": f"{http_target.url}/ok/pending"},
                    "failed_policy": "retry",
                    "timeout": 5.0,
                },
            }
            await producer.send(
                worker.topic("firings-retry"), json.dumps(record).encode(), key=sid.encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


async def committed_total(worker: Worker, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=worker.bootstrap, group_id=worker.app_id, enable_auto_commit=False
    )
    await consumer.start()
    try:
        total = 0
        for partition in range(worker.partitions):
            offset = await consumer.committed(TopicPartition(topic, partition))
            total += offset or 0
    finally:
        await consumer.stop()
    return total


async def end_total(worker: Worker, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=worker.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(worker.partitions)]
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    return sum(ends.values())


async def wait_until(read: Any, wanted: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (value := await read()) < wanted:
        assert time.monotonic() < deadline, f"{value} of {wanted}"
        await asyncio.sleep(0.5)
