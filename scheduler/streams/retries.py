"""Retries wait on the broker, not in memory: delay tiers, each read no faster than it falls due.

A failed firing's retry record goes to ``firings-retry`` (the contract
topic, ``scheduler.streams.delivery.conclude``). The agent reading it
routes each record by how long it still has to wait:

- due (``not_before`` reached): delivered now;
- due within the shortest tier: held in memory until then (at most
  ``TIERS_S[0]`` seconds, so their number is bounded by the failure rate,
  not by how many retries are pending);
- later: sent on to the delay tier ``firings-retry-{d}s`` of the longest
  delay ``d`` it still has to wait, and acknowledged once the broker has it.

Every record of a tier waits the same ``d`` after its Kafka timestamp, and
those timestamps grow along a partition, so a tier partition's head is
always the record due first there. A tier agent holds the records it has
read per partition, releases each head ``d`` after its timestamp and routes
it again (delivered, held, or on to a shorter tier). Once a partition holds
``HOLD_MAX`` records, fetching it is paused (in aiokafka itself:
``scheduler.patches.wake_fetch``), and resumed when half have gone; what
was fetched before the pause still arrives and is held too, a fetch's worth
at most. A pending retry therefore costs broker space, not worker memory,
and a restart reads each tier from its last commit and holds again what is
not yet due: offsets only move forward, and nothing is sent early.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
from collections import defaultdict, deque
from typing import Any

from scheduler import clock, metrics
from scheduler.app import app
from scheduler.domain.retry import TIERS_S, tier_for
from scheduler.domain.timefmt import parse_utc
from scheduler.patches.wake_fetch import pause_fetching, resume_fetching
from scheduler.streams import delivery
from scheduler.topics import retry_tier_topics, retry_topic

log = logging.getLogger(__name__)

#: Records a tier holds per partition before it pauses the partition.
HOLD_MAX = 16
#: Hops to a tier (a send and its broker acknowledgement) under way at once.
HOPS_IN_FLIGHT = 128
#: Retries due within the shortest tier waiting in memory at once; more wait
#: on the broker (the agent reads no further) until one is delivered.
SOON_MAX = 2_000

_hops = metrics.counter("scheduler_retry_hops_total", "retry records sent on to a delay tier")
_held_count = 0
metrics.gauge(
    "scheduler_retries_held",
    lambda: _held_count,
    "retry records read from a delay tier and held until their tier's delay has passed",
)
_soon_count = 0
metrics.gauge(
    "scheduler_retries_due_soon",
    lambda: _soon_count,
    "retries due within the shortest tier, waiting in memory",
)

_hop_slots: asyncio.Semaphore | None = None
_soon_slots: asyncio.Semaphore | None = None
#: Per partition: the tasks working on its records (cancelled when it is revoked).
_tasks: dict[Any, set[asyncio.Future[None]]] = defaultdict(set)


def hop_slots() -> asyncio.Semaphore:
    global _hop_slots
    if _hop_slots is None:
        _hop_slots = asyncio.Semaphore(HOPS_IN_FLIGHT)
    return _hop_slots


def soon_slots() -> asyncio.Semaphore:
    global _soon_slots
    if _soon_slots is None:
        _soon_slots = asyncio.Semaphore(SOON_MAX)
    return _soon_slots


def _spawn(tp: Any, work: Any, slot: asyncio.Semaphore) -> None:
    """Run ``work`` for partition ``tp``; ``slot`` (acquired by the caller) is released when
    it ends, even if it is cancelled before it started."""
    task = asyncio.ensure_future(work)
    _tasks[tp].add(task)
    task.add_done_callback(_tasks[tp].discard)
    task.add_done_callback(lambda _: slot.release())


def _stale(event: Any) -> bool:
    """Read before the last rebalance: its partition may be another worker's now."""
    return bool(event.message.generation_id != app.consumer_generation_id)


async def route(stream: Any, event: Any) -> None:
    """Deliver, hold briefly, or send on to a tier; the event is acknowledged when settled."""
    global _soon_count
    try:
        record = json.loads(event.value)
        not_before = parse_utc(record["not_before"])
    except Exception as exc:
        await delivery.bury_unreadable(stream, event, exc)
        return
    tp = event.message.tp
    left = (not_before - clock.now()).total_seconds()
    tier = tier_for(left) if left > 0 else None
    slot = delivery.slots() if left <= 0 else hop_slots() if tier is not None else soon_slots()
    await slot.acquire()
    if _stale(event):
        slot.release()
        return
    if left <= 0:
        _spawn(tp, _attempt(stream, event, record), slot)
    elif tier is None:
        _soon_count += 1
        _spawn(tp, _attempt_when_due(stream, event, record, left), slot)
    else:
        _spawn(tp, _hop(stream, event, tier), slot)


async def _attempt(stream: Any, event: Any, record: dict[str, Any]) -> None:
    """Deliver a due retry (a delivery slot is held for it)."""
    try:
        await delivery.attempt(record)
    except Exception as exc:
        delivery.stuck(record.get("firing_id"), exc)
        return
    await stream.ack(event)


async def _attempt_when_due(stream: Any, event: Any, record: dict[str, Any], left: float) -> None:
    """Wait (under ``soon_slots``) until the retry is due, then deliver it."""
    global _soon_count
    try:
        not_before = parse_utc(record["not_before"])
        await asyncio.sleep(left)
        while (rest := (not_before - clock.now()).total_seconds()) > 0:
            await asyncio.sleep(rest + 0.001)  # never early
    finally:
        _soon_count -= 1
    async with delivery.slots():
        await _attempt(stream, event, record)


async def _hop(stream: Any, event: Any, tier: int) -> None:
    """Send the record as it is to ``tier``; acknowledge it once the broker has it."""
    try:
        key = event.key if isinstance(event.key, bytes) else None
        await delivery.produce_raw(retry_tier_topics[tier], key, event.value)
    except Exception as exc:
        delivery.stuck(f"retry record at {event.message.tp}@{event.message.offset}", exc)
        return
    _hops.inc()
    await stream.ack(event)


@app.agent(retry_topic, name="retry-firings")
async def retry_firings(stream: Any) -> Any:
    async for event in stream.noack().events():
        await route(stream, event)


class _Tier:
    """One delay tier's held records, per partition, and the task that releases them."""

    def __init__(self, delay: int) -> None:
        self.delay = delay
        self.held: dict[Any, deque[Any]] = {}
        self.paused: set[Any] = set()
        self.stream: Any = None
        self._alarm: asyncio.Future[None] | None = None
        self._task: asyncio.Future[None] | None = None

    def due_at(self, event: Any) -> float:
        return float(event.message.timestamp) + self.delay

    def hold(self, stream: Any, event: Any) -> None:
        global _held_count
        self.stream = stream
        tp = event.message.tp
        queue = self.held.get(tp)
        if queue is None:
            queue = self.held[tp] = deque()
        queue.append(event)
        _held_count += 1
        if len(queue) >= HOLD_MAX and tp not in self.paused:
            self.paused.add(tp)
            pause_fetching(app.consumer, tp)
        if len(queue) == 1:
            _ring(self._alarm)  # a new head: maybe due before the one slept for
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._release())

    async def _release(self) -> None:
        global _held_count
        loop = asyncio.get_running_loop()
        while any(self.held.values()):
            now = clock.now().timestamp()
            heads = [(self.due_at(queue[0]), tp) for tp, queue in self.held.items() if queue]
            heapq.heapify(heads)
            first = heads[0][0]
            if first > now:
                self._alarm = loop.create_future()
                timer = loop.call_later(first - now, _ring, self._alarm)
                try:
                    await self._alarm
                finally:
                    timer.cancel()
                    self._alarm = None
                continue
            for due, tp in heads:
                if due > now:
                    break
                # Looked up again after every await: a rebalance may have taken it.
                while (queue := self.held.get(tp)) and self.due_at(queue[0]) <= now:
                    event = queue.popleft()
                    _held_count -= 1
                    await route(self.stream, event)
                if queue is not None and tp in self.paused and len(queue) <= HOLD_MAX // 2:
                    self.paused.discard(tp)
                    resume_fetching(app.consumer, tp)

    def forget(self, partitions: set[Any]) -> None:
        """Drop what revoked partitions held, unacknowledged: their next owner reads it."""
        global _held_count
        for tp in partitions:
            queue = self.held.pop(tp, None)
            if queue:
                _held_count -= len(queue)
                queue.clear()  # a release under way must not go on with them
            self.paused.discard(tp)


def _ring(alarm: asyncio.Future[None] | None) -> None:
    if alarm is not None and not alarm.done():
        alarm.set_result(None)


_tiers = {delay: _Tier(delay) for delay in TIERS_S}


def _tier_agent(delay: int) -> Any:
    tier = _tiers[delay]

    async def hold_until_due(stream: Any) -> Any:
        async for event in stream.noack().events():
            tier.hold(stream, event)

    hold_until_due.__name__ = f"retry_tier_{delay}s"
    return app.agent(retry_tier_topics[delay], name=f"retry-tier-{delay}s")(hold_until_due)


tier_agents = [_tier_agent(delay) for delay in TIERS_S]


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _drop_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    """The partitions' next owner reads these retries again; keeping them would send them twice."""
    partitions = set(revoked)
    for tier in _tiers.values():
        tier.forget(partitions)
    for tp in partitions:
        for task in list(_tasks.pop(tp, ())):
            task.cancel()
