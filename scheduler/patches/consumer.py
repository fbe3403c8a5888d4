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
"""

from __future__ import annotations

from time import monotonic
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver

REPLACES = (
    "faust.transport.drivers.aiokafka:aiokafka",
    "aiokafka.consumer.fetcher:Fetcher._proc_fetch_request",
    "aiokafka:AIOKafkaConsumer.seek_to_committed",
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
            if offset and offset > 0:
                self._fetcher.seek_to(tp, offset)
        return committed


class _AiokafkaForFaust:
    """aiokafka as Faust's driver sees it: the same, but for its consumer class."""

    def __getattr__(self, name: str) -> Any:
        return Consumer if name == "AIOKafkaConsumer" else getattr(aiokafka, name)


def install() -> None:
    driver.aiokafka = _AiokafkaForFaust()  # type: ignore[attr-defined]
