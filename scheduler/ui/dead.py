"""The latest dead letters, read from the tail of ``firings-dead`` for the dashboard.

The topic itself is the record (it outlives workers and their caches), so
the page reads its last records: a consumer outside any group, each
partition from ``PER_PARTITION`` records before its end to the end it had
when the read began. One read at a time per worker, and each is bounded in
records and in time, so a page view costs the broker little and can never
hang a worker.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from scheduler import kafka_auth
from scheduler.app import settings
from scheduler.topics import dead_topic, name_of

#: Records read back from the end of each partition.
PER_PARTITION = 50
#: The most letters one page shows (newest first).
SHOWN = 100
#: How long one read may take before it shows what it has.
READ_S = 5.0

_one_at_a_time = asyncio.Lock()


def topic_name() -> str:
    return name_of(dead_topic)


async def latest(limit: int = SHOWN) -> list[dict[str, Any]]:
    """The newest ``limit`` dead letters (dicts as written), newest first."""
    async with _one_at_a_time:
        letters = await _read_tail()
    letters.sort(key=lambda letter: str(letter.get("dead_at") or ""), reverse=True)
    return letters[:limit]


async def _read_tail() -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        group_id=None,
        request_timeout_ms=int(READ_S * 1000),
        **kafka_auth.client_options(settings),
    )
    letters: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(READ_S):
            topic = topic_name()
            partitions = [TopicPartition(topic, p) for p in await _partitions(topic)]
            if not partitions:
                return []
            await consumer.start()
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
            left = {}
            for tp in partitions:
                first = max(starts[tp], ends[tp] - PER_PARTITION)
                if ends[tp] > first:
                    consumer.seek(tp, first)
                    left[tp] = ends[tp]
            while left:
                batches = await consumer.getmany(*left, timeout_ms=500)
                for tp, records in batches.items():
                    for record in records:
                        if record.offset < left.get(tp, 0):
                            letters.append(_letter(record.value))
                    if records and records[-1].offset + 1 >= left.get(tp, 0):
                        left.pop(tp, None)
    except TimeoutError:
        pass  # what was read in time is shown
    finally:
        try:
            await consumer.stop()
        except asyncio.CancelledError:
            # aiokafka 0.14: stopping a consumer whose no-group task never got to
            # run re-raises that task's cancellation; only a cancellation of ours
            # (the request's) goes on.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
    return letters


async def _partitions(topic: str) -> list[int]:
    """The topic's partitions, as the broker has them (none if it does not exist yet)."""
    admin = AIOKafkaAdminClient(**kafka_auth.client_options(settings))
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return sorted(
        part["partition"]
        for found in described
        if found.get("error_code") == 0
        for part in found.get("partitions") or ()
    )


def _letter(value: bytes | None) -> dict[str, Any]:
    try:
        letter = json.loads(value or b"")
    except ValueError:
        return {
            "reason": "unreadable record",
            "record": (value or b"")[:200].decode(errors="replace"),
        }
    return letter if isinstance(letter, dict) else {"reason": "not a JSON object"}
