"""Private parts of Faust and aiokafka that the rest of the service calls, one function each.

Nothing here is replaced. The rest of the service reaches a library's
private or undocumented parts only through these functions, so that an
upgrade that moves one breaks here, and the guard test names it.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from aiokafka.errors import ProducerClosed
from aiokafka.structs import TopicPartition

REPLACES: tuple[str, ...] = ()
USES = (
    "faust.stores.rocksdb:Store._db_for_partition",
    "faust.stores.rocksdb:Store._dbs_for_actives",
    "faust.stores.rocksdb:Store.set_persisted_offset",
    "faust.tables.manager:TableManager.recovery",
    "faust.tables.recovery:Recovery.completed",
    "faust.tables.recovery:Recovery.in_recovery",
    "faust.transport.drivers.aiokafka:Producer._ensure_producer",
    "faust.transport.consumer:Consumer._committed_offset",
    "aiokafka:AIOKafkaConsumer._client",
    "aiokafka:AIOKafkaProducer._message_accumulator",
    "aiokafka.producer.message_accumulator:MessageAccumulator._batches",
    "aiokafka.producer.message_accumulator:MessageBatch._builder",
    "aiokafka.producer.message_accumulator:MessageAccumulator._append_batch",
    "aiokafka.producer.message_accumulator:MessageAccumulator._closed",
    "aiokafka.producer.message_accumulator:MessageAccumulator._exception",
    "aiokafka.client:AIOKafkaClient.force_metadata_update",
)


def partition_db(table: Any, partition: int) -> Any:
    """The RocksDB (rocksdict) holding ``table``'s slice for ``partition``.

    The tables' hot paths read and write it directly (``scheduler.tables``).
    """
    return table.data._db_for_partition(partition)


def active_dbs(table: Any) -> list[Any]:
    """The RocksDBs of ``table``'s partitions this worker is active for (not standbys).

    For reading in key order from a key on (``GET /schedules`` pages).
    """
    return list(table.data._dbs_for_actives())


def persist_offset(table: Any, tp: Any, offset: int) -> None:
    """Record in ``tp``'s RocksDB how far its changelog is applied there, as Faust does."""
    table.data.set_persisted_offset(tp, offset)


def settling(app: Any) -> bool:
    """Whether a rebalance, or the recovery of the tables that ends it, is under way.

    A recovery resumes Faust's flow to read the changelogs before the tables
    are restored; Faust ends the rebalance once they are, and the partitions
    are seeked to their commits. ``in_recovery`` is set on the app by
    Faust's recovery, once one has started.
    """
    return bool(app.rebalancing or getattr(app, "in_recovery", False))


def tables_recovered(app: Any) -> bool:
    """Whether the tables of every assigned partition have recovered from their changelogs."""
    return bool(app.tables.recovery.completed.is_set())


def aiokafka_producer(app: Any) -> Any:
    """The aiokafka producer under Faust's, for prebuilt record batches (``scheduler.outbox``)."""
    return app.producer._ensure_producer()


def queued_batch(producer: Any, topic: str, partition: int) -> tuple[Any, Any] | None:
    """The last batch of ``topic[partition]`` still queued in aiokafka's ``producer``
    (not yet taken by its sender), as its future and its builder; None if none is.

    Records appended to the builder go with the batch, as ``producer.send``
    appends its own (``scheduler.outbox``). A builder closed, or full, takes no more.
    """
    queued = producer._message_accumulator._batches.get(TopicPartition(topic, partition))
    if not queued:
        return None
    batch = queued[-1]
    return batch.future, batch._builder


def queue_batches(producer: Any, topic: str, partition: int, builders: list[Any]) -> list[Any]:
    """Queue ``builders`` on ``topic[partition]`` of aiokafka's ``producer`` now, in order,
    behind any batch queued there; the future of each.

    ``send_batch`` queues one and waits until the partition has nothing queued
    before the next, so a partition's next batch could not be queued until
    its caller got a turn of the loop after the last one left. Queued
    together, the sender takes the next one into its next request by itself,
    as it does with batches it re-queues for a retry. The partition must be
    one the producer's metadata knows (``partitions_for``), as ``send_batch``
    would check.
    """
    accumulator = producer._message_accumulator
    # What add_batch checks before it queues.
    if accumulator._closed:
        raise ProducerClosed()
    if accumulator._exception is not None:
        raise copy.copy(accumulator._exception)
    tp = TopicPartition(topic, partition)
    return [asyncio.shield(accumulator._append_batch(builder, tp).future) for builder in builders]


def committed_offsets(consumer: Any) -> Any:
    """Faust's committed offset per partition (the next to read; None or absent: unknown).

    Read, never written: a mapping Faust fills when partitions are assigned
    and at each commit. Where a consumer's lag starts (``scheduler.streams.consumption``).
    """
    return consumer._committed_offset


async def refresh_metadata(consumer: Any) -> None:
    """Ask the broker for fresh metadata now (aiokafka refreshes it only on its own schedule)."""
    await consumer._client.force_metadata_update()


def install() -> None:
    """Nothing to install: these are called."""
