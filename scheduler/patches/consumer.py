"""aiokafka's consumer as Faust builds it: an adaptive fetch wait, committed offsets at once.

Upstream (1): Faust builds its aiokafka consumer with
``fetch_max_wait_ms=1500``, hard-coded: how long the broker holds a fetch
that finds nothing. aiokafka keeps one fetch in flight per broker, built over
the partitions fetchable when it left; a partition that becomes fetchable
meanwhile (Faust resumed it after its stream's buffer drained) waits for that
fetch to come back. Its fetch routine also looks around every 200 ms.

Ours (1): the wait adapts. Short (``FETCH_BUSY_WAIT_MS``) while fetches bring
records or partitions are paused; long (``FETCH_IDLE_WAIT_MS``) once none has
for ``IDLE_AFTER_S`` with nothing paused, and the routine then looks around
every ``ROUTINE_IDLE_S``. An arriving record still ends a long poll at once
(the fetch covers every partition). Idle means no records for a while, not
one empty fetch: a worker with light traffic otherwise flipped to the long
poll between records, and a partition resumed meanwhile (after a rebalance)
waited for that poll.

Why (1): with 1.5 s a steady load settled seconds behind with the CPU half
idle; a short wait throughout cost an idle worker a fetch twice a second.

Upstream (2): ``seek_to_committed`` asks the group coordinator for each
partition's committed offset one partition after the other. Faust seeks every
assigned partition (each topic and changelog times the partition count) after
each rebalance, before the worker is ready.

Ours (2): one request for all of them.

Why (2): the round trips were a large share of a failover.

Upstream (3): records Faust drops move the position past them all the
same: those a fetch brings while the flow is stopped (during a rebalance or
a recovery), after which Faust seeks back to the committed offsets
(``Consumer.perform_seek``), and those of a partition that left the active
set while the fetch was under way (a new assignment pauses the stream
partitions until its recovery ends), which only the seek back at the end
of every recovery reaches. aiokafka's ``seek_to_committed`` seeks only a
partition with a commit above 0, so a partition nobody has committed yet
keeps the position past what was dropped, and its first records are never
read by this owner.

Ours (3): a stream partition with no commit goes back to its start, where aiokafka starts a
partition it has just been given under the ``earliest`` reset policy
(``scheduler.app`` sets it; under another policy this part does nothing, as
upstream). The seek is to offset 0, with no request and no wait: if the log
no longer starts there, the broker answers "out of range" and aiokafka
resets the partition to its earliest offset. Left alone: changelog
partitions (Faust positions them from the offsets its tables keep) and the
topics ``scheduler.patches.bulk_fetch`` diverts (it keeps what Faust would
drop, so a seek back would only hand those records over twice), but for
``firings``, whose executor (``scheduler.streams.executor``) skips what it
was handed already and is sought back as it was as Faust's stream. A commit
of 0 is still not sought, as upstream: at the end of a recovery Faust puts
the stream partitions back before it seeks, so what a fetch hands over in
between is read again after the seek; a replayed firing (its partition
committed at 0 by ``scheduler replay``) was then delivered twice
(``tests/e2e/test_replay.py``). A partition with no commit has the same
window, but holds records only when its owner died before its first
commit: a duplicate there is the at-least-once that firing ids allow, a
record never read is a loss.

Why (3): a worker started after another was killed with -9 before its first
commit now and then never read the retry record or the firing waiting in
its partitions (``tests/integration/test_delivery.py``, the retry that
survives kill -9; the record sat one offset behind the position, with no
commit, and no agent had it). As at every seek back, what was read since
the last commit may be read again: firing ids make that harmless. Not
aiokafka's own reset (a ListOffsets request): that waits for the fetch in
flight, up to an idle consumer's long poll, and nearly every recovery has
such a partition (Faust's leader topic, an unused retry tier never had a
record, so never a commit). The figures are in the commits that made this.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

import aiokafka
from aiokafka.consumer.fetcher import OffsetResetStrategy
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.consumer import ensure_TP
from faust.transport.drivers import aiokafka as driver

from scheduler.patches import bulk_fetch

REPLACES = (
    "faust.transport.drivers.aiokafka:aiokafka",
    "aiokafka.consumer.fetcher:Fetcher._proc_fetch_request",
    "aiokafka:AIOKafkaConsumer.seek_to_committed",
    "faust.transport.consumer:Consumer.perform_seek",
)
USES = (
    "aiokafka:AIOKafkaConsumer._fetcher",
    "aiokafka:AIOKafkaConsumer._subscription",
    "aiokafka:AIOKafkaConsumer._coordinator",
    "aiokafka.consumer.fetcher:Fetcher._fetch_max_wait_ms",
    "aiokafka.consumer.fetcher:Fetcher._fetcher_timeout",
    "aiokafka.consumer.fetcher:Fetcher._subscriptions",
    "aiokafka.consumer.fetcher:Fetcher.seek_to",
    "aiokafka.consumer.group_coordinator:GroupCoordinator.fetch_committed_offsets",
    "aiokafka.consumer.fetcher:Fetcher._default_reset_strategy",
    "faust.transport.consumer:Consumer._read_offset",
    "faust.transport.consumer:Consumer._committed_offset",
    "faust.transport.drivers.aiokafka:Consumer._thread",
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._ensure_consumer",
)

IDLE_AFTER_S = 5.0
FETCH_BUSY_WAIT_MS = 100
FETCH_IDLE_WAIT_MS = 2_000
ROUTINE_BUSY_S = 0.2
ROUTINE_IDLE_S = 1.0


class Consumer(aiokafka.AIOKafkaConsumer):  # type: ignore[misc]
    """The aiokafka consumer Faust's driver builds, once installed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = FETCH_BUSY_WAIT_MS
        super().__init__(*args, **kwargs)

    async def start(self) -> None:
        await super().start()
        fetcher = self._fetcher
        fetch = fetcher._proc_fetch_request

        last_records = monotonic()

        async def fetch_adapting(assignment: Any, node_id: int, request: Any) -> bool:
            nonlocal last_records
            got = bool(await fetch(assignment, node_id, request))
            now = monotonic()
            if got:
                last_records = now
            paused = fetcher._subscriptions.paused_partitions()
            idle = not paused and now - last_records > IDLE_AFTER_S
            fetcher._fetch_max_wait_ms = FETCH_IDLE_WAIT_MS if idle else FETCH_BUSY_WAIT_MS
            fetcher._fetcher_timeout = ROUTINE_IDLE_S if idle else ROUTINE_BUSY_S
            return got

        fetcher._proc_fetch_request = fetch_adapting

    async def seek_to_committed(self, *partitions: Any) -> dict[Any, int | None]:
        """aiokafka's, with the committed offsets asked for in one request."""
        wanted = set(partitions) or self._subscription.assigned_partitions()
        unassigned = wanted - self._subscription.assigned_partitions()
        if unassigned:
            raise aiokafka.errors.IllegalStateError(f"Partitions {unassigned} are not assigned")
        found = await self._coordinator.fetch_committed_offsets(list(wanted))
        committed: dict[Any, int | None] = {}
        for tp in wanted:
            meta = found.get(tp)
            offset = None if meta is None or meta.offset == -1 else meta.offset
            committed[tp] = offset
            if offset and offset > 0:  # as aiokafka: see Ours (3) for why not 0
                self._fetcher.seek_to(tp, offset)
        return committed

    async def seek_to_start(self, *partitions: Any) -> list[Any]:
        """Seek ``partitions`` to their start, under the ``earliest`` reset policy only.

        Offset 0, without a request: where the log starts later, the fetch
        is answered "out of range" and aiokafka resets the partition to its
        earliest offset (the policy). Partitions no longer assigned (a
        rebalance took them since Faust asked) are left to their next owner.
        Returns the partitions sought.
        """
        if self._fetcher._default_reset_strategy != OffsetResetStrategy.EARLIEST:
            return []
        assigned = self._subscription.assigned_partitions()
        sought = [tp for tp in partitions if tp in assigned]
        for tp in sought:
            self._fetcher.seek_to(tp, 0)
        return sought


async def perform_seek(self: Any) -> None:
    """Faust's seek back to the committed offsets, and uncommitted stream partitions to their
    start (Upstream and Ours (3) above)."""
    committed = await self.seek_to_committed()
    self._read_offset.update(
        {
            tp: offset if offset is not None and offset >= 0 else None
            for tp, offset in committed.items()
        }
    )
    self._committed_offset.update(
        {ensure_TP(tp): offset or None for tp, offset in committed.items() if offset is not None}
    )
    changelogs = self.app.tables.changelog_topics
    uncommitted = [
        tp
        for tp, offset in committed.items()
        if offset is None and tp.topic not in changelogs and not bulk_fetch.left_alone(tp.topic)
    ]
    if uncommitted:
        thread = self._thread
        await thread.call_thread(thread._ensure_consumer().seek_to_start, *uncommitted)


class _AiokafkaForFaust:
    """aiokafka as Faust's driver sees it: the same, but for its consumer class."""

    def __getattr__(self, name: str) -> Any:
        return Consumer if name == "AIOKafkaConsumer" else getattr(aiokafka, name)


def install() -> None:
    driver.aiokafka = _AiokafkaForFaust()  # type: ignore[attr-defined]
    FaustConsumer.perform_seek = perform_seek  # type: ignore[method-assign]
