"""Changelog recovery that reads its queue a batch at a time.

Faust's ``Recovery._slurp_changelogs`` takes the changelog records from its
queue one by one, each through ``asyncio.wait_for(queue.get(), 5)``: a task,
a future, a timer handle and at least two turns of the event loop per record.
After each record it also asks whether recovery is done, which builds a
``Counter`` over every active partition. A worker starting from an empty data
dir with 100,000 schedules (about 200,000 changelog records) spent 28 s of
CPU there in a profile, most of it in that per-record machinery.

This replacement keeps Faust's bookkeeping (offsets per partition, table
buffers flushed at their size, the end-of-recovery and standby-ready signals,
the estimate of the time left) and changes how the queue is read: whatever the
queue holds is taken at once (up to ``BATCH`` records), and the end checks run
once per batch. Only an empty queue is awaited, with Faust's 5 s timeout.

One deliberate difference: Faust logs a record of a partition that is neither
active nor standby and then applies it with the previous record's table; here
it is logged and skipped.

Before the queue, each changelog record passed through Faust's general
per-partition handler: it waits for the producer's buffer to ebb, decodes key
and value into an ``Event`` (the app's serializers, its ``create_event``) and
puts that on the queue. Recovery uses none of it: the tables are RocksDB stores,
and ``apply_changelog_batch`` writes each record's raw ``message.key`` and
``message.value``. With 1,000,000 schedules (2,000,000 changelog records) that
handler was 38% of a restart's CPU on an empty data dir (py-spy), and Faust's
consumer loop around it, per record, much of the rest. So a partition whose only
subscriber is the changelog queue gets a :class:`ChangelogFeed`: each fetch's
records go onto the queue in bulk as :class:`ChangelogRecord`, with the same
flow control and back-pressure.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import Any

from faust.tables.recovery import Recovery
from faust.transport.conductor import Conductor
from faust.transport.consumer import Consumer as FaustConsumer
from faust.utils.tracing import finish_span
from mode import Service

logger = logging.getLogger(__name__)

BATCH = 2_000
"""Records taken from the queue before the end checks run and the loop yields."""

QUEUE_WAIT_S = 5.0
"""How long an empty queue is awaited before the checks run anyway (Faust's value)."""


async def _skip_aborted_transactions(recovery: Any) -> None:
    """Move an active partition stuck below its highwater at an aborted transaction's marker."""
    offsets = recovery.active_offsets
    for tp, highwater in recovery.active_highwaters.items():
        offset = offsets[tp]
        if highwater is None or offset is None or offset >= highwater:
            continue
        if await recovery.app.consumer.position(tp) >= highwater:
            logger.info("changelog %s: aborted transaction up to the highwater %s", tp, highwater)
            offsets[tp] = highwater


def _end_if_done(recovery: Any) -> None:
    if recovery.in_recovery and not recovery.need_recovery():
        recovery.flush_buffers()
        recovery._set_recovery_ended()
        if recovery._actives_span is not None:
            recovery._actives_span.set_tag("Actives-Ready", True)
        recovery.signal_recovery_end.set()
    standbys_ready = recovery._standbys_span is None and recovery.tables.standbys_ready
    if not standbys_ready and not recovery.standby_remaining_total():
        if recovery._standbys_span:
            finish_span(recovery._standbys_span)
            recovery._standbys_span = None
        recovery.tables.on_standbys_ready()


def _take(queue: Any, first: Any | None) -> list[Any]:
    events = [] if first is None else [first]
    while len(events) < BATCH and not queue.empty():
        events.append(queue.get_nowait())
    return events


async def _apply(recovery: Any, events: list[Any]) -> None:
    active_tps, standby_tps = recovery.active_tps, recovery.standby_tps
    tp_to_table = recovery.tp_to_table
    buffers, buffer_sizes = recovery.buffers, recovery.buffer_sizes
    started = monotonic()
    active = 0
    generation = recovery.app.consumer_generation_id
    for event in events:
        message = event.message
        if message.generation_id != generation:
            # Fetched before partitions moved: recovery has sought every
            # changelog partition again, and this record's turn comes again.
            continue
        tp = message.tp
        offset = message.offset
        if tp in active_tps:
            offsets = recovery.active_offsets
            recovery._active_events_received_at[tp] = started
            active += 1
        elif tp in standby_tps:
            offsets = recovery.standby_offsets
            recovery._standby_events_received_at.setdefault(tp, started)
        else:
            logger.warning("changelog record of an unassigned partition skipped: %s@%s", tp, offset)
            continue
        seen = offsets.get(tp)
        if seen is not None and offset <= seen:
            continue
        offsets[tp] = offset
        table = tp_to_table[tp]
        buffer = buffers[table]
        buffer.append(event)
        await table.on_changelog_event(event)
        size = buffer_sizes.get(tp)
        if size is None:
            active_tp = offsets is recovery.active_offsets
            size = table.recovery_buffer_size if active_tp else table.standby_buffer_size
            buffer_sizes[tp] = size
        if len(buffer) >= size:
            table.apply_changelog_batch(buffer)
            buffer.clear()
            recovery._last_flush_at = monotonic()
    if active:
        _note_processing_time(recovery, started, active)


def _note_processing_time(recovery: Any, started: float, count: int) -> None:
    """Feed Faust's estimate of the time left: one sample per active record."""
    now = monotonic()
    last = recovery._last_active_event_processed_at
    per_record = (now - (started if last is None else last)) / count
    samples = recovery._processing_times
    limit = recovery.num_samples_required_for_estimate
    samples.extend([per_record] * min(count, limit))
    while len(samples) > limit:
        samples.popleft()
    recovery._last_active_event_processed_at = now


async def _slurp_changelogs(self: Any) -> None:
    queue = self.tables.changelog_queue
    idle_rounds = 0
    while not self.should_stop:
        try:
            self.signal_recovery_end.clear()
            first = None
            if queue.empty():
                try:
                    first = await asyncio.wait_for(queue.get(), timeout=QUEUE_WAIT_S)
                except TimeoutError:
                    idle_rounds += 1
                    if self.should_stop:
                        return
                    if self.app.in_transaction and idle_rounds > 1:
                        await _skip_aborted_transactions(self)
                    _end_if_done(self)
                    continue
            idle_rounds = 0
            await _apply(self, _take(queue, first))
            _end_if_done(self)
            await asyncio.sleep(0)
        except Exception as exc:
            logger.warning("error in changelog recovery: %r", exc)


# Faust's is a Service.task (started with the service); so is this one.
Recovery._slurp_changelogs = Service.task(_slurp_changelogs)  # type: ignore[method-assign]


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


Conductor._build_handler = _build_changelog_handler  # type: ignore[method-assign]


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


FaustConsumer._wait_next_records = _wait_next_records_fed  # type: ignore[method-assign]
