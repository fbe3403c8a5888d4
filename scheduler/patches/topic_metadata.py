"""aiokafka's client keeps the metadata of every topic it was asked to send to.

Upstream: aiokafka's client fetches metadata for every topic until a send
finds a topic missing; from then on only for the topics it was asked about
(``_topics``), and each answer replaces the whole view. A topic first sent
to while the full view knew it is never added, so the first narrower answer
drops it: a batch for it already queued then finds no leader, and the sender
asks for metadata again, for the same topics, forever.

Ours: every topic waited on is added to ``_topics``.

Why: seen on a fresh broker, a worker sent hundreds of metadata requests a
second and none of its wake-ups or firings for minutes, after its changelog
topics were created moments before the first send to them.
"""

from __future__ import annotations

from typing import Any

from aiokafka.client import AIOKafkaClient

REPLACES = ("aiokafka.client:AIOKafkaClient._wait_on_metadata",)
USES = ("aiokafka.client:AIOKafkaClient._topics", "aiokafka.client:AIOKafkaClient.cluster")

_wait_on_metadata = AIOKafkaClient._wait_on_metadata


async def _wait_on_metadata_tracked(self: Any, topic: str) -> Any:
    if topic not in self._topics and self.cluster.partitions_for_topic(topic) is not None:
        self._topics.add(topic)
    return await _wait_on_metadata(self, topic)


def install() -> None:
    AIOKafkaClient._wait_on_metadata = _wait_on_metadata_tracked
