"""A seek back after dropped records reaches a partition that has no commit (real broker).

Faust seeks back to the committed offsets after it drops fetched records
(``scheduler.patches.consumer``, (3)). These tests drive the consumer class
Faust's driver builds, on a real broker, through the two ways back: a
partition with no commit goes to its start, and one committed further on
goes back to its commit. Reading a partition to its end stands in for the
fetch whose records Faust dropped: the position has passed them either way.
A partition whose log no longer starts at 0 goes to where it starts.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.structs import OffsetAndMetadata

import scheduler.app  # noqa: F401  (installs the adjustments)
from scheduler.devtools.broker import LocalBroker
from scheduler.patches.consumer import Consumer

pytestmark = pytest.mark.integration

RECORDS = 3


@pytest.fixture
async def partition(kafka: LocalBroker) -> TopicPartition:
    """A fresh one-partition topic holding :data:`RECORDS` records."""
    topic = f"seek-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(RECORDS):
            await producer.send_and_wait(topic, f"r{n}".encode(), partition=0)
    finally:
        await producer.stop()
    return TopicPartition(topic, 0)


@asynccontextmanager
async def assigned(
    kafka: LocalBroker, partition: TopicPartition, reset: str = "earliest"
) -> AsyncIterator[Consumer]:
    """The consumer class Faust's driver builds, started and given ``partition``."""
    instance = Consumer(
        bootstrap_servers=kafka.bootstrap,
        group_id=f"group-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset=reset,
    )
    await instance.start()
    try:
        instance.assign([partition])
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
async def consumer(kafka: LocalBroker, partition: TopicPartition) -> AsyncIterator[Consumer]:
    async with assigned(kafka, partition) as instance:
        yield instance


async def read_all(consumer: Consumer, tp: TopicPartition) -> list[bytes]:
    """Every record from the position to the end of ``tp``."""
    end = (await consumer.end_offsets([tp]))[tp]
    values: list[bytes] = []
    while await consumer.position(tp) < end:
        batch = await consumer.getmany(tp, timeout_ms=5_000)
        assert batch, "no records came before the end of the partition"
        values.extend(record.value for record in batch[tp])
    return values


async def test_a_partition_with_no_commit_goes_back_to_its_start(
    consumer: Consumer, partition: TopicPartition
) -> None:
    assert await read_all(consumer, partition) == [b"r0", b"r1", b"r2"]
    assert await consumer.position(partition) == RECORDS

    # The seek back to the commits alone leaves it where it is: there is none.
    assert await consumer.seek_to_committed() == {partition: None}
    assert await consumer.position(partition) == RECORDS

    assert await consumer.seek_to_start(partition) == [partition]
    assert await consumer.position(partition) == 0
    assert await read_all(consumer, partition) == [b"r0", b"r1", b"r2"]


async def test_a_log_that_no_longer_starts_at_0_is_read_from_where_it_starts(
    kafka: LocalBroker, partition: TopicPartition
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.delete_records({partition: RecordsToDelete(before_offset=1)})
    finally:
        await admin.close()
    async with assigned(kafka, partition) as consumer:
        assert await read_all(consumer, partition) == [b"r1", b"r2"]

        assert await consumer.seek_to_start(partition) == [partition]
        # Offset 0 is out of range now: the policy (earliest) puts it at 1.
        assert await read_all(consumer, partition) == [b"r1", b"r2"]
        assert await consumer.position(partition) == RECORDS


async def test_under_another_reset_policy_nothing_is_sought(
    kafka: LocalBroker, partition: TopicPartition
) -> None:
    async with assigned(kafka, partition, reset="latest") as latest:
        assert await latest.position(partition) == RECORDS
        assert await latest.seek_to_start(partition) == []
        assert await latest.position(partition) == RECORDS


async def test_a_partition_committed_further_on_goes_back_there(
    consumer: Consumer, partition: TopicPartition
) -> None:
    # Committed after the read: the consumer starts fetching when it is
    # assigned, so a commit made before might come after its first fetch.
    assert await read_all(consumer, partition) == [b"r0", b"r1", b"r2"]
    await consumer.commit({partition: OffsetAndMetadata(2, "")})
    assert await consumer.seek_to_committed() == {partition: 2}
    assert await read_all(consumer, partition) == [b"r2"]


async def test_a_partition_no_longer_assigned_is_left_out(
    consumer: Consumer, partition: TopicPartition
) -> None:
    assert await read_all(consumer, partition) == [b"r0", b"r1", b"r2"]
    gone = TopicPartition(partition.topic, 1)
    assert await consumer.seek_to_start(gone, partition) == [partition]
    assert await consumer.position(partition) == 0
