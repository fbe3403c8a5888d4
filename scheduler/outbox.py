"""The records one batch of events produces, sent as one Kafka batch per partition.

The command and wake-up agents take their records a batch at a time
(``Stream.take_events``). Everything such a batch writes (the tables'
changelog records, the firings, re-keyed commands) is collected here per
topic partition and handed to the aiokafka producer as a few prebuilt
batches (``create_batch`` / ``send_batch``) instead of a record at a time
through Faust's ``Topic.send``: in the burst profile (bench/) that per-record
path cost more than everything the scheduler itself computes per firing.

Guarantee: :meth:`Outbox.send` returns once every batch is queued on the
producer Faust uses, which the agent does before its events are
acknowledged; Faust flushes that producer before it commits any offset. So
no offset is committed before the records its events produced are written
(at-least-once, as before). The worker therefore runs Faust with
``at_least_once`` only: under ``exactly_once`` these records would have to
be part of Faust's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from scheduler import metrics
from scheduler.app import app

log = logging.getLogger(__name__)

_failed = metrics.counter("scheduler_produce_failed_total", "record batches the broker refused")

#: Called with the offset of the last record of a batch once it is written.
OnWritten = Callable[[int], None]


class _Pending:
    __slots__ = ("builder", "on_written", "partition", "topic")

    def __init__(self, topic: str, partition: int, builder: Any, on_written: OnWritten | None):
        self.topic = topic
        self.partition = partition
        self.builder = builder
        self.on_written = on_written


class Outbox:
    """Records for several topic partitions, appended now, produced by :meth:`send`."""

    def __init__(self) -> None:
        self._producer: Any = app.producer._ensure_producer()  # type: ignore[attr-defined]
        self._open: dict[tuple[str, int], _Pending] = {}
        self._full: list[_Pending] = []

    def __len__(self) -> int:
        return sum(p.builder.record_count() for p in (*self._open.values(), *self._full))

    def add(
        self,
        topic: str,
        partition: int,
        key: bytes,
        value: bytes | None,
        on_written: OnWritten | None = None,
    ) -> None:
        pending = self._open.get((topic, partition))
        if pending is None:
            pending = self._start(topic, partition, on_written)
        if pending.builder.append(timestamp=None, key=key, value=value) is None:
            # That batch is full (producer_batch_bytes): keep it, start another.
            self._full.append(pending)
            pending = self._start(topic, partition, on_written)
            if pending.builder.append(timestamp=None, key=key, value=value) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes exceeds a whole batch")

    def _start(self, topic: str, partition: int, on_written: OnWritten | None) -> _Pending:
        pending = _Pending(topic, partition, self._producer.create_batch(), on_written)
        self._open[(topic, partition)] = pending
        return pending

    async def send(self) -> None:
        """Queue every batch on the producer (in the order the records were added)."""
        batches, self._full = [*self._full, *self._open.values()], []
        self._open = {}
        for pending in batches:
            count = pending.builder.record_count()
            future = await self._producer.send_batch(
                pending.builder, pending.topic, partition=pending.partition
            )
            future.add_done_callback(_reporter(pending, count))


def _reporter(pending: _Pending, count: int) -> Callable[[Any], None]:
    def report(future: Any) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            _failed.inc()
            log.error(
                "could not produce %d records to %s[%d]: %s: %s",
                count,
                pending.topic,
                pending.partition,
                type(exc).__name__,
                exc,
            )
            return
        if pending.on_written is not None:
            pending.on_written(future.result().offset + count - 1)

    return report
