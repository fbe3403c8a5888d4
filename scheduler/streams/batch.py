"""The batch writer: the agents' records collected per batch and written in order.

The apply agent (and the accept agent, should a record reach it) takes its
events a batch at a time (``scheduler.patches.batching.take_batches``) and
hands each event to a handler together with one :class:`Batch`; the
command path (``scheduler.streams.bulk``) fills one :class:`Batch` per
batch of commands the same way. Everything the handlers write
(table records, firings, re-keyed commands, revocations) goes into it, and
:meth:`Batch.send` writes it out: the staged table writes to RocksDB, the
records to the producer.

One batch at a time writes the tables and queues its changelog records
(``_writing``), so two agents' records for one key reach the changelog in the
order they were written. Each read-modify-write of a schedule (load, decide,
store) runs without an await in between, so the two agents never lose each
other's update.

A batch gives the event loop a turn every ``YIELD_EVERY`` events or due
entries, and while fetched firings wait for the executor it goes on giving
turns until they are taken (:func:`give_way`): a firing is due sooner than
anything a command or a wake-up writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from scheduler import tables
from scheduler.app import app
from scheduler.outbox import Outbox
from scheduler.patches import produce_guard
from scheduler.patches.batching import take_batches
from scheduler.streams import delivery, records
from scheduler.streams.timers import WAKE_KEY
from scheduler.tables import schedules
from scheduler.topics import firings_topic, name_of

log = logging.getLogger(__name__)

#: The most events an agent takes at once.
BATCH_MAX = 1_000

#: Events or due entries handled between two turns given to the event loop.
YIELD_EVERY = 16

#: The most turns :func:`give_way` gives the executor at once.
GIVE_WAY_TURNS = 4_096

#: Records a batch collects before it queues them and lets other writers in.
FLUSH_RECORDS = 5_000

#: Held by the batch that writes the tables, until its records are queued.
_writing = asyncio.Lock()


class Batch(Outbox):
    """The records of one batch of events, written while it holds ``_writing``.

    A batch of wake-up records can hold a hundred thousand due entries, tens
    of seconds of work: so every ``FLUSH_RECORDS`` records it queues what it
    has and lets go of the lock for a moment (:meth:`pause`). The firings so
    far go out then, not at the end, and a batch of commands waiting for the
    lock gets its turn. The order of two agents' records for one key still
    follows the order they were written: a batch queues everything it wrote
    before it lets go.
    """

    def __init__(self) -> None:
        super().__init__()
        self.holding = False

    async def send(self) -> None:
        """The staged table writes to RocksDB, then the records to the producer.

        If a command was woken as it was applied, the batch's firings are
        written first, and only once the broker has them do the tables move:
        a kill -9 in between then leaves the command unapplied, and it fires
        again (same ids) when read again, rather than finding its schedule
        already fired and its firing lost. A replay of the topic by an
        operator finds the schedule fired and fires nothing.
        """
        if self.firings_first:
            self.firings_first = False
            await self.deliver(firings_topic_name())
        tables.flush()
        await super().send()

    async def begin(self) -> None:
        await _writing.acquire()
        self.holding = True

    async def end(self) -> None:
        try:
            await self.send()
        finally:
            self._let_go()

    async def finish(self) -> None:
        """:meth:`end`; if the records cannot be written, stop the worker.

        The events of a batch that could not be written stay unacknowledged,
        and nothing after them may be committed either.
        """
        try:
            await self.end()
        except Exception as exc:
            produce_guard.refused(exc, "a batch's records", app.consumer)
            raise

    async def pause(self) -> None:
        """Give way (:func:`give_way`); queue the records first if there are many."""
        if len(self) < FLUSH_RECORDS:
            await give_way()
            return
        await self.send()
        self._let_go()
        await give_way()
        await self.begin()

    def _let_go(self) -> None:
        if self.holding:
            self.holding = False
            _writing.release()


async def in_batches(stream: Any, handle: Callable[[Any, Batch], Awaitable[None]]) -> None:
    """Handle each event of each batch, then produce what the batch wrote."""
    async for events in take_batches(stream, BATCH_MAX):
        batch = Batch()
        await batch.begin()
        try:
            prefetch(events)
            for index, event in enumerate(events, start=1):
                try:
                    await handle(event, batch)
                except Exception:
                    # A record we fail on must not stop the ones after it.
                    log.exception("record at %s failed", event.message.tp)
                if index % YIELD_EVERY == 0:
                    await batch.pause()
        finally:
            await batch.finish()  # its events stay unacknowledged if it raises (take_batches)


def prefetch(events: list[Any]) -> None:
    """Read the records the batch's events name, one multi-get per partition.

    A batch of commands reads each schedule once, mostly to find it is new;
    one multi-get is cheaper than a ``get`` each (``tables.prefetch``).
    """
    wanted: dict[int, list[bytes]] = {}
    for event in events:
        key = event.key
        partition = event.message.partition
        if key == WAKE_KEY:
            envelope = event.value
            if isinstance(envelope, dict) and envelope.get("kind") == "wakes":
                keys = wanted.setdefault(partition, [])
                keys.extend(sid.encode() for _, sid in envelope["due"])
        elif isinstance(key, bytes):
            wanted.setdefault(partition, []).append(key)
    for partition, keys in wanted.items():
        tables.prefetch(schedules, partition, [key for key in keys if not records.is_cached(key)])


async def give_way() -> None:
    """A turn of the event loop, and more while fetched firings wait for the executor.

    Faust hands a stream one event per turn of the loop, so without the
    extra turns the executor took one firing per ``YIELD_EVERY`` entries
    while a crowd was being woken. Bounded: a stalled executor must not stop
    the writers for good.
    """
    await asyncio.sleep(0)
    turns = 1
    while turns < GIVE_WAY_TURNS and delivery.backlog():
        await asyncio.sleep(0)
        turns += 1


def firings_topic_name() -> str:
    return name_of(firings_topic)
