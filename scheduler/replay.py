"""``scheduler replay``: move the worker group's committed offsets back on one topic.

Every piece of state lives in Kafka, so replay is an offset reset: the
workers' consumer group (``SCHEDULER_APP_ID``) reads a topic again from an
instant, or from its beginning, the next time they start.

- ``schedule-commands``: re-applies the commands. Time is each record's own
  Kafka timestamp, so the schedules come out as they were; an upsert never
  moves a schedule back to an instant it already handled, so a replay does
  not fire old instants again.
- ``firings``: delivers the firings again, each with its own ``firing_id``
  (the ``Idempotency-Key``), e.g. after a target lost what it received.
- ``firings-retry``: waits out and sends the recorded retries again.

Kafka takes offsets for a group only while the group has no live member, so
every worker must be stopped first. A stopped worker keeps its place in the
group (static membership) until its session timeout ends; replay waits for
that, up to ``wait`` seconds, and then refuses with the members it saw.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler import kafka_auth
from scheduler.domain.errors import BrokerError, SchedulerError
from scheduler.patches import private
from scheduler.settings import Settings

REPLAYABLE = ("schedule-commands", "firings", "firings-retry")
_IDLE_STATES = frozenset({"Empty", "Dead"})


@dataclass(frozen=True)
class Move:
    """One partition's committed offset before and after the replay."""

    partition: int
    committed: int | None
    target: int

    @property
    def records(self) -> int | None:
        """How many records the group reads again (None: it had no offset)."""
        return None if self.committed is None else max(self.committed - self.target, 0)


async def replay(
    settings: Settings,
    topic: str,
    since: datetime | None,
    *,
    dry_run: bool = False,
    wait: float = 30.0,
) -> list[Move]:
    """Plan the offsets for ``topic`` from ``since`` (None: the beginning), and commit them.

    With ``dry_run`` nothing is committed and the group may be running.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    if topic not in REPLAYABLE:
        raise SchedulerError(f"topic: {topic!r} cannot be replayed; choose one of {REPLAYABLE}")
    name = settings.topic(topic)
    consumer = AIOKafkaConsumer(
        group_id=settings.app_id,
        enable_auto_commit=False,
        **kafka_auth.client_options(settings),
    )
    try:
        await kafka_auth.explained(settings, consumer.start())
    except BrokerError:
        await consumer.stop()
        raise
    try:
        partitions = await _partitions(consumer, name)
        tps = [TopicPartition(name, p) for p in partitions]
        consumer.assign(tps)
        moves = await _plan(consumer, tps, since)
        if not dry_run:
            await _wait_idle(settings, wait)
            await consumer.commit(
                {TopicPartition(name, m.partition): OffsetAndMetadata(m.target, "") for m in moves}
            )
        return moves
    finally:
        await consumer.stop()


async def _partitions(consumer: Any, topic: str) -> list[int]:
    for _ in range(20):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        await private.refresh_metadata(consumer)
    raise SchedulerError(f"topic: {topic!r} does not exist on this broker")


async def _plan(consumer: Any, tps: list[Any], since: datetime | None) -> list[Move]:
    if since is None:
        targets = await consumer.beginning_offsets(tps)
    else:
        ends = await consumer.end_offsets(tps)
        found = await consumer.offsets_for_times({tp: int(since.timestamp() * 1000) for tp in tps})
        # No record at or after ``since``: nothing to replay there, start at the end.
        targets = {tp: found[tp].offset if found.get(tp) else ends[tp] for tp in tps}
    moves = []
    for tp in tps:
        committed = await consumer.committed(tp)
        moves.append(Move(tp.partition, committed, int(targets[tp])))
    return moves


async def _wait_idle(settings: Settings, wait: float) -> None:
    """Return once the group has no member; refuse after ``wait`` seconds."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka_auth.client_options(settings))
    await kafka_auth.explained(settings, admin.start())
    try:
        deadline = time.monotonic() + wait
        while True:
            state, members = await _group_state(admin, settings.app_id)
            if state in _IDLE_STATES:
                return
            if time.monotonic() >= deadline:
                raise SchedulerError(
                    f"group {settings.app_id!r} is {state} with {len(members)} live member(s)"
                    f" ({', '.join(members)}): stop every worker of the group, then replay"
                    f" (a stopped worker leaves after its session timeout,"
                    f" {settings.session_timeout:g} s)"
                )
            await asyncio.sleep(1.0)
    finally:
        await admin.close()


async def _group_state(admin: Any, group: str) -> tuple[str, list[str]]:
    responses = await admin.describe_consumer_groups([group])
    for response in responses:
        for described in response.groups:
            # (error_code, group_id, state, protocol_type, protocol, members, ...)
            if described[1] == group:
                members = [str(member[0]) for member in described[5]]
                return str(described[2]), members
    return "Dead", []
