"""The command path: ``schedule-commands`` handled a fetch at a time.

The records of ``schedule-commands`` never become Faust events: each fetch
call's records of a partition are handed over as one list
(``scheduler.patches.bulk_fetch``) and wait here, in a bounded backlog,
until :func:`handle_commands` takes them, up to ``BATCH_MAX`` at once. A
batch is decoded and judged in one call (``scheduler.admission.admit_batch``,
the judgement ``POST /commands`` makes), and each command is then applied,
re-keyed or rejected as before (``scheduler.streams.accept.accept``), in one
:class:`~scheduler.streams.batch.Batch`: its table writes, changelog
records and firings are queued on the producer before the partition's
offset may be committed (``bulk_fetch.done``), and Faust flushes the
producer before it commits.

Ownership: only records fetched in the current consumer generation, of
partitions Faust had active, are handed over; a batch of an earlier
generation is dropped, to be read again from the committed offset. A
revocation waits for the batch being handled, then drops the backlog and
the revoked partitions' watermarks.

Bounds: the backlog holds at most about ``BACKLOG_MAX`` records. Past it the
partition that brought more is paused in the client (which keeps its
position, ``scheduler.patches.wake_fetch.pause_fetching``), and every paused
partition is resumed once the backlog is down to ``BACKLOG_RESUME``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from scheduler import metrics, tables
from scheduler.admission import admit_batch
from scheduler.app import app
from scheduler.patches import bulk_fetch, produce_guard
from scheduler.patches.wake_fetch import pause_fetching, resume_fetching
from scheduler.streams import records as stored
from scheduler.streams.accept import accept
from scheduler.streams.batch import YIELD_EVERY, Batch
from scheduler.tables import schedules
from scheduler.topics import commands_topic, name_of

log = logging.getLogger(__name__)

#: The most commands handled as one batch.
BATCH_MAX = 2_000
#: Records the backlog holds before the partition that brought more is paused:
#: four batches, enough to keep the path busy while the client fetches more;
#: each record held is memory the worker keeps after a backlog has drained.
BACKLOG_MAX = 8_000
#: Paused partitions are resumed once the backlog is down to this.
BACKLOG_RESUME = 2_000
#: Seconds a batch works before it gives the event loop a turn (looked at every
#: ``YIELD_EVERY`` commands): firings due meanwhile are delivered between two
#: such stretches. A turn for every ``YIELD_EVERY`` commands, as the Faust
#: agents take, cost a command more than the rest of its glue.
TURN_AFTER_S = 0.002


class Backlog:
    """Fetched records of ``schedule-commands``, by partition, in the order fetched."""

    def __init__(self) -> None:
        self.parts: deque[tuple[Any, list[Any], int]] = deque()
        self.count = 0
        #: The most records it held at once since the worker started.
        self.peak = 0
        self.ready = asyncio.Event()
        self.paused: set[Any] = set()

    def add(self, tp: Any, records: list[Any], generation: int) -> None:
        """The sink ``bulk_fetch`` calls, in the consumer's own fetch loop."""
        if not records:
            return
        self.parts.append((tp, records, generation))
        self.count += len(records)
        self.peak = max(self.peak, self.count)
        self.ready.set()
        if self.count >= BACKLOG_MAX and tp not in self.paused:
            self.paused.add(tp)
            pause_fetching(app.consumer, tp)

    def take(self, most: int) -> list[tuple[Any, list[Any], int]]:
        """Up to ``most`` records, in whole lists or a list's head."""
        taken: list[tuple[Any, list[Any], int]] = []
        room = most
        while self.parts and room > 0:
            tp, records, generation = self.parts[0]
            if len(records) <= room:
                self.parts.popleft()
                taken.append((tp, records, generation))
                room -= len(records)
            else:
                taken.append((tp, records[:room], generation))
                self.parts[0] = (tp, records[room:], generation)
                room = 0
        self.count -= most - room
        if not self.parts:
            self.ready.clear()
        return taken

    def resume_if_low(self) -> None:
        if self.paused and self.count <= BACKLOG_RESUME:
            for tp in self.paused:
                resume_fetching(app.consumer, tp)
            self.paused.clear()

    def drop(self) -> None:
        """Forget everything: a rebalance moves every position back to its commit."""
        self.parts.clear()
        self.count = 0
        self.ready.clear()
        self.paused.clear()


backlog = Backlog()
metrics.gauge(
    "scheduler_command_backlog",
    lambda: backlog.count,
    "records of schedule-commands fetched and waiting for the command path",
)
metrics.gauge(
    "scheduler_command_backlog_peak",
    lambda: backlog.peak,
    "the most records of schedule-commands that waited at once since the worker started",
)
#: Held while a batch is handled; a revocation waits for it.
_handling = asyncio.Lock()

bulk_fetch.divert(name_of(commands_topic), backlog.add)


@app.task  # type: ignore[untyped-decorator]
async def handle_commands() -> None:
    """Take batches off the backlog and handle them, for as long as the worker runs."""
    while True:
        await backlog.ready.wait()
        async with _handling:
            parts = backlog.take(BATCH_MAX)
            await handle(parts)
        backlog.resume_if_low()


async def handle(parts: list[tuple[Any, list[Any], int]]) -> None:
    """Handle one batch of records, then let their offsets be committed."""
    generation = app.consumer_generation_id
    live = [(tp, records) for tp, records, fetched_in in parts if fetched_in == generation]
    if not live:
        return
    batch = Batch()
    await batch.begin()
    try:
        _prefetch(live)
        handled = 0
        turned = time.monotonic()
        for tp, records in live:
            judged = admit_batch([record.value or b"" for record in records])
            partition = tp.partition
            for record, command in zip(records, judged, strict=True):
                try:
                    await accept(
                        record.key,
                        record.value or b"",
                        record.timestamp / 1000,
                        partition,
                        command,
                        batch,
                    )
                except Exception:
                    # A record we fail on must not stop the ones after it.
                    log.exception("record at %s[%d]@%d failed", tp.topic, partition, record.offset)
                handled += 1
                if handled % YIELD_EVERY == 0 and time.monotonic() - turned >= TURN_AFTER_S:
                    await batch.pause()
                    turned = time.monotonic()
    finally:
        try:
            await batch.end()
        except Exception as exc:
            # Not marked done: nothing of the batch is committed, and the worker stops.
            produce_guard.refused(exc, "a batch's records", app.consumer)
            raise
    for tp, records in live:
        bulk_fetch.done(app.consumer, tp, records[-1].offset + 1)


def _prefetch(live: list[tuple[Any, list[Any]]]) -> None:
    """Read the schedules the batch names, one multi-get per partition (``tables.prefetch``)."""
    for tp, records in live:
        keys = [r.key for r in records if isinstance(r.key, bytes) and not stored.is_cached(r.key)]
        if keys:
            tables.prefetch(schedules, tp.partition, keys)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    async with _handling:
        backlog.drop()
        bulk_fetch.forget(revoked)


@app.on_partitions_assigned.connect  # type: ignore[arg-type]
async def _on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
    # The client forgot what it had paused (records of the new generation may
    # already wait: they stay).
    backlog.paused.clear()
