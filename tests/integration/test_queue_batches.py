"""Batches queued together on a partition (``private.queue_batches``), as a crowd's are.

``send_batch`` queues one batch and waits until the partition has nothing
queued before the next; a crowd's batches are queued all at once at its
instant, behind whatever the partition has queued, and the producer's sender
takes them on by itself. Real broker, real producer: every record must come
back once, in the order queued, and each batch's future must say where it went.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerClosed

from scheduler.devtools.broker import LocalBroker
from scheduler.patches import private
from tests.integration.test_outbox_join import read_back
from tests.support import create_topics

pytestmark = pytest.mark.integration


async def test_batches_queued_together_go_in_order_behind_what_was_queued(
    kafka: LocalBroker,
) -> None:
    topic = f"queue-batches-{uuid.uuid4().hex[:8]}"
    await create_topics(kafka.bootstrap, topic, partitions=1)
    # As the executors' producers are: idempotent, so sequence numbers must
    # follow the order the batches are taken in.
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap,
        acks="all",
        enable_idempotence=True,
        max_batch_size=16_384,
    )
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"first", partition=0)  # metadata known
        # Queued, not yet taken: the batches below go behind it.
        ahead = await producer.send(topic, b"ahead", partition=0)
        builders, values = [], []
        for b in range(4):
            builder = producer.create_batch()
            for i in range(10):
                value = f"b{b}-{i}".encode() * 100  # 10 x ~500 bytes: a batch each
                assert builder.append(timestamp=None, key=None, value=value) is not None
                values.append(value)
            builders.append(builder)
        futures = private.queue_batches(producer, topic, 0, builders)
        assert len(futures) == 4
        done = await asyncio.wait_for(asyncio.gather(ahead, *futures), timeout=30)
    finally:
        await producer.stop()
    found = await read_back(kafka.bootstrap, topic, 2 + len(values))
    assert [r.value for r in found] == [b"first", b"ahead", *values]
    assert [r.offset for r in found] == list(range(2 + len(values)))
    # Each batch's future carries its first record's offset.
    assert [metadata.offset for metadata in done[1:]] == [2, 12, 22, 32]


async def test_a_stopped_producer_refuses_batches(kafka: LocalBroker) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    builder = producer.create_batch()
    builder.append(timestamp=None, key=None, value=b"x")
    await producer.stop()
    with pytest.raises(ProducerClosed):
        private.queue_batches(producer, "any", 0, [builder])
