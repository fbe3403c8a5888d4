"""Changelog records go to recovery's queue in bulk, undecoded.

Upstream: each changelog record passes through Faust's general
per-partition handler before recovery's queue: it waits for the producer's
buffer to ebb, decodes key and value into an ``Event`` (the app's
serializers, its ``create_event``) and puts that on the queue; around it,
Faust's consumer loop builds a message, tracks the partition's highwater and
read offset, and races flow control, per record.

Ours: a partition whose only subscriber is the changelog queue gets a
:class:`ChangelogFeed` as its handler (``Conductor._build_handler``), and
each fetch's records of such partitions go onto the queue in bulk as
:class:`ChangelogRecord` (``Consumer._wait_next_records``), with the same
flow control and back-pressure. Recovery uses nothing else: the tables are
RocksDB stores, and ``apply_changelog_batch`` writes each record's raw
``message.key`` and ``message.value``; recovery keeps its own offsets.

Why: on a restart from an empty data dir that handler and the loop around it
were most of the worker's CPU (``bench/`` restart workload, py-spy).
"""

from __future__ import annotations

from typing import Any

from faust.transport.conductor import Conductor
from faust.transport.consumer import Consumer as FaustConsumer

REPLACES = (
    "faust.transport.conductor:Conductor._build_handler",
    "faust.transport.consumer:Consumer._wait_next_records",
)
USES = (
    "faust.tables.manager:TableManager._changelog_queue",
    "faust.topics:Topic._queue",
    "faust.transport.conductor:Conductor._tp_to_callback",
    "faust.transport.consumer:Consumer.flow_active",
    "faust.transport.consumer:Consumer.on_buffer_full",
    "faust.transport.consumer:Consumer.on_buffer_drop",
    "faust.sensors.base:Sensor.on_topic_buffer_full",
    "mode.utils.queues:FlowControlQueue.put_nowait_enhanced",
)


class ChangelogRecord:
    """One changelog record as recovery reads it: its partition, offset, key and value, raw.

    It stands where Faust would put an ``Event``, and is its own ``message``:
    recovery and the RocksDB store read ``event.message.tp``, ``.partition``,
    ``.offset``, ``.key``, ``.value`` and ``.generation_id``, nothing else.
    """

    __slots__ = ("generation_id", "key", "offset", "partition", "tp", "value")

    def __init__(
        self, tp: Any, offset: int, key: bytes | None, value: bytes | None, generation_id: int
    ) -> None:
        self.generation_id = generation_id
        self.tp = tp
        self.partition = tp.partition
        self.offset = offset
        self.key = key
        self.value = value

    @property
    def message(self) -> ChangelogRecord:
        return self


class ChangelogFeed:
    """Puts the records of one changelog partition on the changelog queue, undecoded.

    The same flow control and back-pressure as Faust's handler: records wait
    while partitions move, and a queue under pressure pauses the partition's
    fetching. :meth:`on_message` takes one message from Faust's consumer loop,
    :meth:`put_records` a whole fetch (see :func:`_wait_next_records_fed`).
    """

    __slots__ = ("_acquire", "_on_full", "_on_full_sensor", "drop", "queue", "tp")

    def __init__(self, app: Any, tp: Any, queue: Any) -> None:
        self.tp = tp
        self.queue = queue
        self._acquire = app.flow_control.acquire
        self._on_full = app.consumer.on_buffer_full
        self._on_full_sensor = app.sensors.on_topic_buffer_full
        consumer_on_buffer_drop = app.consumer.on_buffer_drop

        def drop() -> None:
            consumer_on_buffer_drop(tp)

        # One callable per partition: the queue keeps it in a set until the pressure drops.
        self.drop = drop

    def high(self) -> None:
        self._on_full_sensor(self.tp)
        self._on_full(self.tp)

    async def on_message(self, message: Any) -> None:
        await self.put_records([message], message.generation_id)

    async def put_records(self, records: list[Any], generation: int) -> None:
        """Queue ``records``, fetched in consumer ``generation`` (recovery drops older ones)."""
        await self._acquire()  # waits while partitions move, as for any record
        queue, tp = self.queue, self.tp
        for record in records:
            entry = ChangelogRecord(tp, record.offset, record.key, record.value, generation)
            if queue.full():
                self._on_full_sensor(tp)
                await queue.put(entry)
            else:
                queue.put_nowait_enhanced(
                    entry, on_pressure_high=self.high, on_pressure_drop=self.drop
                )


_build_handler = Conductor._build_handler


def _build_changelog_handler(self: Any, tp: Any, channels: Any) -> Any:
    queue = self.app.tables._changelog_queue  # the attributes, not the properties that create them
    if queue is not None and channels and all(c._queue is queue for c in channels):
        return ChangelogFeed(self.app, tp, queue).on_message
    return _build_handler(self, tp, channels)


_wait_next_records = FaustConsumer._wait_next_records


async def _wait_next_records_fed(self: Any, timeout: float) -> Any:
    """Faust's fetch, with changelog partitions' records handed to their feed in bulk.

    What Faust's consumer loop does per record (a message object, the
    partition's highwater, a read offset, a race against flow control) is most
    of a record's cost in recovery, and none of it matters for a changelog:
    recovery keeps its own offsets. The other partitions' records go on to
    Faust as fetched. Only while flow is active, as Faust's loop requires.
    """
    records, active = await _wait_next_records(self, timeout)
    generation = self.app.consumer_generation_id
    if records and self.flow_active:
        callbacks = self.app.topics._tp_to_callback
        feeds = {tp: feed for tp in records if (feed := _feed_of(callbacks.get(tp)))}
        for tp, feed in feeds.items():
            await feed.put_records(records[tp], generation)
        if feeds:
            records = {tp: fetched for tp, fetched in records.items() if tp not in feeds}
    return records, active


def _feed_of(callback: Any) -> ChangelogFeed | None:
    feed = getattr(callback, "__self__", None)
    return feed if isinstance(feed, ChangelogFeed) else None


def install() -> None:
    Conductor._build_handler = _build_changelog_handler  # type: ignore[method-assign]
    FaustConsumer._wait_next_records = _wait_next_records_fed  # type: ignore[method-assign]
