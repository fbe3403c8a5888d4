"""An outbox's records join the batch its partition still has queued in the producer.

``scheduler.outbox.Outbox._join``: rather than wait for the queued batch to
leave (``send_batch``), a partition's records are appended to it, and what
does not fit goes in a batch of its own after it. Real broker, real producer:
the records must come back in the order added, each once, and the offset
reported as written must be the last record's.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from scheduler.devtools.broker import LocalBroker
from scheduler.outbox import Outbox
from scheduler.patches import private
from tests.support import create_topics

pytestmark = pytest.mark.integration


def outbox_on(producer: AIOKafkaProducer) -> Outbox:
    outbox = Outbox.__new__(Outbox)
    outbox._producer = producer
    outbox._records = {}
    outbox._on_written = {}
    outbox.firings_first = False
    return outbox


async def read_back(bootstrap: str, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        found: list[Any] = []
        while len(found) < count:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, f"only {len(found)} of {count} came back"
            for records in batch.values():
                found.extend(records)
        return found
    finally:
        await consumer.stop()


@pytest.mark.parametrize("value_bytes", [10, 1000])
async def test_records_join_the_queued_batch_in_order_and_report_their_last_offset(
    kafka: LocalBroker, value_bytes: int
) -> None:
    """Small records fit in the queued batch; with 1,000 bytes each (16 KiB
    batches) most do not, and go after it in batches of their own."""
    topic = f"outbox-join-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka.bootstrap, topic, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, max_batch_size=16_384)
    await producer.start()
    written: list[int] = []
    try:
        await producer.send_and_wait(topic, b"first", partition=0)  # metadata known
        outbox = outbox_on(producer)
        rounds = [
            [(f"k{r}-{i}".encode(), bytes([65 + r]) * value_bytes) for i in range(100)]
            for r in range(3)
        ]
        # No await lets the sender run between two rounds: the first round's
        # batch is still queued when the second and third come.
        queued = []
        for records in rounds:
            outbox.records_of(topic, 0, written.append).extend(records)
            await outbox.send()
            last = private.queued_batch(producer, topic, 0)
            assert last is not None
            queued.append(last[0])
        await producer.flush()
    finally:
        await producer.stop()

    sent = [record for records in rounds for record in records]
    found = await read_back(kafka.bootstrap, topic, 1 + len(sent))
    assert [(r.key, r.value) for r in found[1:]] == sent
    assert [r.offset for r in found] == list(range(1 + len(sent)))
    if value_bytes == 10:  # all in the first round's batch
        assert queued[0] is queued[1] is queued[2]
        assert sorted(written) == [100, 200, 300]
    else:  # a batch is reported as it is written
        assert len(set(queued)) == 3
        assert {100, 200, 300} <= set(written) and max(written) == 300


async def test_a_queued_batch_that_is_full_takes_nothing_more(kafka: LocalBroker) -> None:
    topic = f"outbox-full-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka.bootstrap, topic, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, max_batch_size=16_384)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"first", partition=0)
        builder = producer.create_batch()
        while builder.append(timestamp=None, key=None, value=b"x" * 1000) is not None:
            pass
        full = builder.record_count()
        await producer.send_batch(builder, topic, partition=0)
        outbox = outbox_on(producer)
        written: list[int] = []
        outbox.records_of(topic, 0, written.append).extend([(b"k", b"after")] * 80)
        await outbox.send()
        await producer.flush()
    finally:
        await producer.stop()
    found = await read_back(kafka.bootstrap, topic, 1 + full + 80)
    assert [r.value for r in found[1 + full :]] == [b"after"] * 80
    assert written == [full + 80]
