"""The records one batch of events produces, sent as one Kafka batch per partition.

The command agents (``scheduler.streams.accept`` and ``apply``) take their
events a batch at a time (``scheduler.streams.batch.in_batches``, over
``scheduler.patches.batching.take_batches``). Everything such a batch writes (the tables'
changelog records, the firings, re-keyed commands) is collected here per
topic partition and handed to the aiokafka producer, as prebuilt batches
(``create_batch`` / ``send_batch``) when a partition gets many, rather than
a record at a time through Faust's ``Topic.send``: that per-record path
costs more than everything the scheduler itself computes per firing
(measured in bench/, see bench/RESULTS.md).

Guarantee: :meth:`Outbox.send` returns once every batch is queued on the
producer Faust uses, which the agent does before its events are
acknowledged; Faust flushes that producer before it commits any offset. So
no offset is committed before the records its events produced are written
(at-least-once, as before). A record the broker refuses stops all commits
and the worker (``scheduler.patches.produce_guard``), so its events are read
again rather than committed past. The worker therefore runs Faust with
``at_least_once`` only: under ``exactly_once`` these records would have to
be part of Faust's transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from scheduler import metrics
from scheduler.app import app
from scheduler.patches import private, produce_guard

_failed = metrics.counter(
    "scheduler_produce_failed_total", "records or record batches the broker refused"
)

#: Called with the offset of the last record of a batch once it is written.
OnWritten = Callable[[int], None]


#: Below this many records for one partition, records are sent one by one:
#: ``send_batch`` first waits for the partition's previous batch to leave
#: (up to a linger plus a round trip), which stalls an agent that handles many
#: small batches, as in a steady stream of firings.
MIN_BATCH = 64


class Outbox:
    """Records for several topic partitions, collected now, produced by :meth:`send`."""

    def __init__(self) -> None:
        self._producer: Any = private.aiokafka_producer(app)
        self._records: dict[tuple[str, int], list[tuple[bytes, bytes | None]]] = {}
        self._on_written: dict[tuple[str, int], OnWritten] = {}
        #: Set by a writer whose firings must reach the broker before its
        #: table writes do; honoured by the subclass that owns the tables.
        self.firings_first = False

    def __len__(self) -> int:
        return sum(len(records) for records in self._records.values())

    def add(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        on_written: OnWritten | None = None,
    ) -> None:
        self.records_of(topic, partition, on_written).append((key, value))

    def records_of(
        self, topic: str, partition: int, on_written: OnWritten | None = None
    ) -> list[tuple[bytes, bytes | None]]:
        """The list :meth:`add` appends to for this partition, for a caller adding many.

        Good until :meth:`send` or :meth:`deliver`, which take the lists away.
        """
        tp = (topic, partition)
        records = self._records.get(tp)
        if records is None:
            records = self._records[tp] = []
            if on_written is not None:
                self._on_written[tp] = on_written
        return records

    async def send(self) -> None:
        """Queue every record on the producer, in the order added per partition."""
        collected, self._records = self._records, {}
        await self._queue(collected)

    async def deliver(self, topic: str) -> None:
        """Send ``topic``'s records now and wait until the broker has them (or refused them)."""
        mine = {tp: records for tp, records in self._records.items() if tp[0] == topic}
        for tp in mine:
            del self._records[tp]
        pending = await self._queue(mine)
        if pending:
            await asyncio.wait(pending)
        for future in pending:
            if future.cancelled() or future.exception() is not None:
                # The refusal was reported (and commits stopped) by _Reporter;
                # raising keeps the caller from moving the tables on.
                raise RuntimeError(f"the broker did not take the records for {topic}")

    async def _queue(self, collected: dict[tuple[str, int], list[Any]]) -> list[Any]:
        """Queue the records; the future of every send."""
        sent: list[Any] = []
        for (topic, partition), records in collected.items():
            report = _Reporter(topic, partition, self._on_written.pop((topic, partition), None))
            if not records:  # taken by a writer (records_of) that then wrote nothing
                continue
            if len(records) < MIN_BATCH:
                await self._one_by_one(topic, partition, records, report)
            else:
                await self._batched(topic, partition, records, report)
            sent.extend(report.sent)
        return sent

    async def _one_by_one(
        self, topic: str, partition: int, records: list[Any], report: _Reporter
    ) -> Any:
        future = None
        for key, value in records:
            future = await self._producer.send(topic, value, key=key, partition=partition)
            future.add_done_callback(report.failure)
            report.sent.append(future)
        assert future is not None  # a partition is collected with its first record
        future.add_done_callback(lambda done: report.written(done, 1))
        return future

    async def _batched(
        self, topic: str, partition: int, records: list[Any], report: _Reporter
    ) -> Any:
        joined = self._join(topic, partition, records, report)
        if joined == len(records):
            return None
        builder = self._producer.create_batch()
        for key, value in records[joined:]:
            if builder.append(timestamp=None, key=key, value=value) is None:
                # Full (producer_batch_bytes): send it, go on with another.
                await self._submit(builder, topic, partition, report)
                builder = self._producer.create_batch()
                if builder.append(timestamp=None, key=key, value=value) is None:
                    raise ValueError(f"a record of {len(value or b'')} bytes exceeds a batch")
        return await self._submit(builder, topic, partition, report)

    def _join(self, topic: str, partition: int, records: list[Any], report: _Reporter) -> int:
        """Append what fits of ``records`` to the partition's batch still queued; how many.

        ``send_batch`` waits until the partition has no batch queued, and the
        producer's sender takes one batch a partition into each request, with
        one request at a time to a broker. So a batch per partition for each
        of the agent's batches made every agent batch wait for a round trip
        to the broker, and the commands a round trip could carry were as many
        as one agent batch held, with the worker's core partly idle (figures
        in the commit that added this). Appended to the queued batch, as
        ``producer.send`` does with one record, everything the agent produced
        while a request was out goes in the next one.
        """
        queued = private.queued_batch(self._producer, topic, partition)
        if queued is None:
            return 0
        future, builder = queued
        joined = 0
        for key, value in records:
            if builder.append(timestamp=None, key=key, value=value) is None:
                break  # full or closed: the rest goes in a batch of its own
            joined += 1
        if joined:
            # The batch's offset is its first record's; ours end at the count.
            last = builder.record_count()
            future.add_done_callback(report.failure)
            report.sent.append(future)
            future.add_done_callback(lambda done: report.written(done, last))
        return joined

    async def _submit(self, builder: Any, topic: str, partition: int, report: _Reporter) -> Any:
        count = builder.record_count()
        future = await self._producer.send_batch(builder, topic, partition=partition)
        future.add_done_callback(report.failure)
        report.sent.append(future)
        future.add_done_callback(lambda done: report.written(done, count))
        return future


class _Reporter:
    """Counts and logs a refused record or batch; moves the persisted offset on success."""

    __slots__ = ("on_written", "partition", "sent", "topic")

    def __init__(self, topic: str, partition: int, on_written: OnWritten | None) -> None:
        self.topic = topic
        self.partition = partition
        self.on_written = on_written
        #: Every send's future, for whoever must know that all of them were written.
        self.sent: list[Any] = []

    def failure(self, future: Any) -> None:
        if future.cancelled() or future.exception() is None:
            return
        exc = future.exception()
        _failed.inc()
        produce_guard.refused(exc, f"records for {self.topic}[{self.partition}]", app.consumer)

    def written(self, future: Any, count: int) -> None:
        if self.on_written is None or future.cancelled() or future.exception() is not None:
            return
        self.on_written(future.result().offset + count - 1)
