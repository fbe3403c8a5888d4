"""The command path on a real broker: a backlog drained a fetch at a time, bounded, committed.

A worker is started on tens of thousands of commands already waiting, more
than its backlog holds (``scheduler.streams.bulk.BACKLOG_MAX``), of every
kind the path handles: keyed by their schedule id (applied in the batch),
keyed otherwise (re-keyed to ``schedule-commands-keyed``), and refused.
Every one must be stored or rejected, the backlog must stay within its
bound, the group must commit the topic to its end, and a restart must find
nothing left to read.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from scheduler.streams import bulk
from tests.integration.test_recovery import committed_to_end
from tests.support import Clients, Worker, eventually, metric, read_topic

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="op", application="batches", group="g")
KEYED = 24_000
UNKEYED = 500
BAD_JSON = 100
BAD_FIELD = 100
PARTITIONS = 4
#: aiokafka hands over at most this many records a fetch call (scheduler.app.MAX_POLL_RECORDS).
MAX_POLL_RECORDS = 500


def upsert(n: int) -> dict[str, Any]:
    return {
        "client": CLIENTS.client(f"k{n}"),
        "type": "date",
        "schedule": "2031-01-01T00:00:00Z",
        "task": {"type": "rest", "connection": {"host": "http://127.0.0.1:9/never"}},
    }


def commands() -> list[tuple[bytes | None, bytes]]:
    out: list[tuple[bytes | None, bytes]] = []
    for n in range(KEYED):
        out.append((CLIENTS.sid(f"k{n}").encode(), json.dumps(upsert(n)).encode()))
    for n in range(KEYED, KEYED + UNKEYED):
        out.append((None, json.dumps(upsert(n)).encode()))
    for n in range(BAD_JSON):
        out.append((f"bad{n}".encode(), b'{"client": '))
    for n in range(BAD_FIELD):
        out.append((f"bad{n}".encode(), json.dumps({**upsert(n), "timezon": "UTC"}).encode()))
    # Under the command size limit, yet six times that once escaped in a
    # rejection: more than the broker takes, were the text not cut.
    out.append((b"control", b"\x01" * 200_000))
    return out


async def produce_fast(
    bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        sent = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def test_a_backlog_is_stored_within_its_bound_and_committed(make_worker: Any) -> None:
    first: Worker = make_worker(partitions=PARTITIONS).start()  # creates the topics
    first.stop()
    await produce_fast(first.bootstrap, first.topic("schedule-commands"), commands())

    worker: Worker = make_worker(app_id=first.app_id, prefix=first.prefix, partitions=PARTITIONS)
    worker.data_dir = first.data_dir
    worker.start()
    applied = await eventually(
        lambda: (n := metric(worker, "scheduler_commands_applied_total")) >= KEYED + UNKEYED and n,
        timeout=180,
    )
    assert applied == KEYED + UNKEYED

    rejected = await read_topic(
        worker.bootstrap,
        worker.topic("schedule-commands-rejected"),
        lambda found: len(found) >= BAD_JSON + 1 + BAD_FIELD,
    )
    errors = sorted(record["value"]["error"] for record in rejected)
    assert errors == ["bad_json"] * (BAD_JSON + 1) + ["invalid_command"] * BAD_FIELD
    (control,) = [record["value"] for record in rejected if record["key"] == b"control"]
    assert control["command_truncated"] is True and control["command_bytes"] == 200_000
    assert all(
        record["value"]["field"] == "timezon"
        for record in rejected
        if record["value"]["error"] == "invalid_command"
    )

    for n in (0, KEYED - 1, KEYED, KEYED + UNKEYED - 1):  # first and last of both kinds
        found = httpx.get(f"{worker.url}/schedules/{CLIENTS.sid(f'k{n}')}", timeout=10)
        assert found.status_code == 200, n
        assert found.json()["next_fire_at"] == "2031-01-01T00:00:00.000Z"

    # The backlog held no more than its bound and one fetch call's records per
    # partition that were already on their way when it passed it.
    peak = metric(worker, "scheduler_command_backlog_peak")
    assert 0 < peak <= bulk.BACKLOG_MAX + PARTITIONS * MAX_POLL_RECORDS
    assert metric(worker, "scheduler_command_backlog") == 0

    await committed_to_end(worker, "schedule-commands", timeout=30)
    worker.stop()

    # Started again on the same data: the commit left nothing of the topic to read.
    again: Worker = make_worker(app_id=first.app_id, prefix=first.prefix, partitions=PARTITIONS)
    again.data_dir = first.data_dir
    again.start()
    await asyncio.sleep(3)
    assert metric(again, "scheduler_commands_accepted_total") == 0
    assert metric(again, "scheduler_commands_rejected_total") == 0
