"""A producer keeps the metadata of every topic it sent to (``scheduler.patches.topic_metadata``).

aiokafka's client asks for every topic's metadata until a send meets a topic it
does not know; from then on it asks only for the topics it was told about, and
each answer replaces its whole view. A topic sent to while the full view still
knew it used to drop out at the first narrower answer; a batch queued for it
then waited forever (a worker started on a fresh broker sent nothing for
minutes). Real broker, real producer.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

import scheduler.app  # noqa: F401  (installs the patch)
from scheduler.devtools.broker import LocalBroker
from tests.support import create_topics

pytestmark = pytest.mark.integration


async def test_a_topic_known_from_the_full_view_survives_a_narrower_update(
    kafka: LocalBroker,
) -> None:
    tag = uuid.uuid4().hex[:8]
    early, late = f"meta-early-{tag}", f"meta-late-{tag}"
    await create_topics(kafka.bootstrap, early, partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        # The producer's metadata covers every topic, ``early`` included, once
        # the broker's own view has it (just created: it may take a moment).
        for _ in range(100):
            if producer.client.cluster.partitions_for_topic(early) is not None:
                break
            await asyncio.sleep(0.1)
            await producer.client.force_metadata_update()
        assert producer.client.cluster.partitions_for_topic(early) == {0, 1}
        assert not producer.client._topics
        await producer.send_and_wait(early, b"one", partition=0)
        # A topic created after it started: the first send asks for it by name,
        # and the answer covers only the topics the client tracks.
        await create_topics(kafka.bootstrap, late, partitions=2)
        await producer.send_and_wait(late, b"two", partition=1)
        await producer.client.force_metadata_update()

        assert early in producer.client._topics
        assert producer.client.cluster.partitions_for_topic(early) == {0, 1}
        # A batch queued for ``early`` finds its leader and goes out.
        sent = await producer.send(early, b"three", partition=1)
        assert (await sent).offset == 0
    finally:
        await producer.stop()
