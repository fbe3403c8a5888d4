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

Ownership: every record a fetch brings is handed over
(``scheduler.patches.bulk_fetch``, stamped with the generation current when
it returned); a batch of an earlier generation is dropped, to be read again
from the committed offset, and nothing is handled while a rebalance or its
recovery runs (:func:`_flowing`). A revocation waits for the batch being
handled, then drops the backlog and the revoked partitions' watermarks.

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
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Command
from scheduler.patches import bulk_fetch, private
from scheduler.patches.wake_fetch import pause_fetching, resume_fetching
from scheduler.streams import fastlane
from scheduler.streams import records as stored
from scheduler.streams.accept import accept
from scheduler.streams.apply import APPLIED
from scheduler.streams.batch import YIELD_EVERY, Batch, give_way
from scheduler.streams.rejects import ACCEPTED
from scheduler.tables import schedules
from scheduler.topics import commands_topic, name_of

log = logging.getLogger(__name__)

#: The most commands handled as one batch.
BATCH_MAX = 2_000
#: Records the backlog holds before the partition that brought more is paused:
#: four batches, enough to keep the path busy while the client fetches more.
BACKLOG_MAX = 8_000
#: Bytes of commands the backlog holds before the same happens: commands may
#: be large (``SCHEDULER_MAX_COMMAND_BYTES``), and every record held is memory.
BACKLOG_MAX_BYTES = 64 * 1024 * 1024
#: Paused partitions are resumed once the backlog is down to this many records
#: (and below half its bytes).
BACKLOG_RESUME = 2_000
#: Seconds the path works before it gives the event loop a turn (looked at every
#: ``YIELD_EVERY`` commands): firings due meanwhile are delivered between two
#: such stretches. A turn every ``YIELD_EVERY`` commands, as the Faust agents
#: take, was a visible share of a command's CPU (measured in the commit that
#: added this).
TURN_AFTER_S = 0.002

Verdict = Command | InvalidCommand | tuple[fastlane.Taken, bool]
"""What a record holds: its command, why it is refused, or what the compiled lane took of it
(``scheduler.streams.fastlane``) with whether its target is admitted."""

Part = tuple[Any, list[Any], int]
"""A partition, records fetched from it (in offset order), the generation they belong to."""


def _size(records: list[Any]) -> int:
    return sum(len(record.value or b"") for record in records)


class Backlog:
    """Fetched records of a diverted topic, by partition, in the order fetched.

    The bounds are this module's (``BACKLOG_MAX`` and the rest) unless given.
    """

    def __init__(
        self,
        most: int | None = None,
        most_bytes: int | None = None,
        resume: int | None = None,
    ) -> None:
        self.most = BACKLOG_MAX if most is None else most
        self.most_bytes = BACKLOG_MAX_BYTES if most_bytes is None else most_bytes
        self.resume = BACKLOG_RESUME if resume is None else resume
        self.parts: deque[Part] = deque()
        self.count = 0
        self.bytes = 0
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
        self.bytes += _size(records)
        self.peak = max(self.peak, self.count)
        self.ready.set()
        full = self.count >= self.most or self.bytes >= self.most_bytes
        if full and tp not in self.paused:
            self.paused.add(tp)
            pause_fetching(app.consumer, tp)

    def take(self, most: int) -> list[Part]:
        """Up to ``most`` records, in whole lists or a list's head."""
        taken: list[Part] = []
        room = most
        while self.parts and room > 0:
            tp, records, generation = self.parts[0]
            if len(records) <= room:
                self.parts.popleft()
            else:
                self.parts[0] = (tp, records[room:], generation)
                records = records[:room]
            taken.append((tp, records, generation))
            room -= len(records)
            self.bytes -= _size(records)
        self.count -= most - room
        if not self.parts:
            self.ready.clear()
        return taken

    def put_back(self, parts: list[Part]) -> None:
        """Records taken and not handled, back at the head, in the order they were."""
        for tp, records, generation in reversed(parts):
            if records:
                self.parts.appendleft((tp, records, generation))
                self.count += len(records)
                self.bytes += _size(records)
        if self.parts:
            self.ready.set()

    def resume_if_low(self) -> None:
        low = self.count <= self.resume and self.bytes <= self.most_bytes // 2
        if self.paused and low:
            for tp in self.paused:
                resume_fetching(app.consumer, tp)
            self.paused.clear()

    def drop(self) -> None:
        """Forget everything: a rebalance moves every position back to its commit."""
        self.parts.clear()
        self.count = 0
        self.bytes = 0
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
#: Held while a batch is handled; a revocation or a shutdown waits for it.
_handling = asyncio.Lock()


class _Stop:
    """Set once the worker shuts down: the task ends."""

    stopping = False


#: Seconds between two looks at a stopped flow (a rebalance, a shutdown) by a
#: task that has records waiting.
FLOW_POLL_S = 0.05


def flowing() -> bool:
    """Whether commands (and firings, ``scheduler.streams.executor``) may be handled:
    Faust's flow runs, and no rebalance or recovery does.

    Faust stops its flow first thing when partitions move or the worker stops,
    before its last commit and before it closes the tables. The flow alone is
    not enough: a recovery resumes it before the tables are restored
    (``private.settling``), and the backlog may hold records of the new
    assignment fetched meanwhile (``scheduler.patches.bulk_fetch`` keeps them).
    """
    if _Stop.stopping or private.settling(app):
        return False
    return bool(getattr(app.consumer, "flow_active", True))


#: The name the command path (and its unit test) has always called it by.
_flowing = flowing


bulk_fetch.divert(name_of(commands_topic), backlog.add)


@app.task  # type: ignore[untyped-decorator]
async def handle_commands() -> None:
    """Take batches off the backlog and handle them, until the worker shuts down."""
    while not _Stop.stopping:
        await backlog.ready.wait()
        if not _flowing():
            # What waits is dropped at the revocation, or read again after a restart.
            await asyncio.sleep(FLOW_POLL_S)
            continue
        async with _handling:
            parts = backlog.take(BATCH_MAX)
            await handle(parts)
        backlog.resume_if_low()


async def handle(parts: list[Part]) -> None:
    """Handle one batch of records, then let what was handled be committed.

    The commands are judged first, outside the table-writing lock (it takes
    no table), with turns given to the loop; then applied in one
    :class:`Batch`. A rebalance or a shutdown that begins meanwhile (Faust
    stops its flow first) ends the batch at its next turn: what was applied is
    written and may be committed, the rest is read again by whoever owns the
    partition next.
    """
    generation = app.consumer_generation_id
    live = [(tp, records) for tp, records, fetched_in in parts if fetched_in == generation]
    if not live:
        return
    turned = time.monotonic()
    judged: list[list[Verdict]] = []
    for tp, records in live:
        verdicts: list[Verdict] = []
        for start in range(0, len(records), YIELD_EVERY):
            chunk = records[start : start + YIELD_EVERY]
            verdicts += _judge(chunk, tp.partition)
            if time.monotonic() - turned >= TURN_AFTER_S:
                await give_way()
                turned = time.monotonic()
        judged.append(verdicts)
    if not _flowing():
        return
    handled: dict[Any, int] = {}
    count = valid = fast = 0  # before the try: its finally counts them
    batch = Batch()
    await batch.begin()
    try:
        _prefetch(live)
        for (tp, records), verdicts in zip(live, judged, strict=True):
            partition = tp.partition
            lane: fastlane.Writer | None = None  # made at the first command the lane took
            for record, command in zip(records, verdicts, strict=True):
                try:
                    if isinstance(command, tuple):
                        if command[1]:  # its target is admitted
                            lane = lane or fastlane.Writer(partition, batch)
                            stored_here = lane.store(record.key, command[0])
                        else:
                            stored_here = False
                        if not stored_here:  # the Python path after all
                            command = admit_batch([record.value or b""])[0]
                    if isinstance(command, tuple):
                        fast += 1
                    else:
                        lane = None  # this awaits: a writer holds only between awaits
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
                handled[tp] = record.offset + 1
                count += 1
                if not isinstance(command, InvalidCommand):
                    valid += 1
                if count % YIELD_EVERY == 0 and time.monotonic() - turned >= TURN_AFTER_S:
                    await batch.pause()
                    lane = None  # the batch may have sent what the writer holds
                    turned = time.monotonic()
                    if not _flowing():
                        break
            if not _flowing():
                break
    finally:
        # Counted once a batch: an increment costs as much as some of a command's steps.
        ACCEPTED.inc(valid)
        APPLIED.inc(fast)
        fastlane.STORED.inc(fast)
        await batch.finish()  # if it raises, nothing of the batch is marked done
    for tp, next_offset in handled.items():
        bulk_fetch.done(app.consumer, tp, next_offset)


def _judge(chunk: list[Any], partition: int) -> list[Verdict]:
    """What the compiled lane takes of ``chunk``, and for the rest, what ``admit_batch`` says."""
    taken = fastlane.take(chunk, partition)
    declined = [record.value or b"" for record, lane in zip(chunk, taken, strict=True) if not lane]
    if not declined:
        return taken  # type: ignore[return-value]
    rest = iter(admit_batch(declined))
    return [lane if lane else next(rest) for lane in taken]


def _prefetch(live: list[tuple[Any, list[Any]]]) -> None:
    """Read the schedules the batch names, one multi-get per partition (``tables.prefetch``)."""
    for tp, records in live:
        keys = [r.key for r in records if isinstance(r.key, bytes) and not stored.is_cached(r.key)]
        if keys:
            tables.prefetch(schedules, tp.partition, keys)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    # The client forgets what it had paused; records waiting are read again
    # from the commit after the rebalance (Faust seeks every partition there).
    async with _handling:
        backlog.drop()
        bulk_fetch.forget(revoked)


@app.on_before_shutdown.connect  # type: ignore[arg-type]
async def _on_shutdown(sender: Any, **kwargs: Any) -> None:
    """End the task. Faust sends this after its last commit and after it closed the
    tables; the path stopped before both, when Faust stopped its flow (:func:`_flowing`)."""
    _Stop.stopping = True
    backlog.ready.set()  # wakes the task, which then ends
    async with _handling:
        backlog.drop()
