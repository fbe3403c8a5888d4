"""A worker started on an empty data dir rebuilds its tables from the changelogs.

The changelogs hold more than one batch of recovery (scheduler.patches.recovery takes
up to 2,000 records at a time) and more than one table buffer (1,000), with
schedules overwritten, paused and deleted, so the order of records within a
partition matters: a table rebuilt out of order would show it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from scheduler.devtools.broker import LocalBroker
from scheduler.domain.timefmt import format_utc
from tests.support import Clients, Collector, Worker, create_topics, metric, produce

pytestmark = pytest.mark.integration

SCHEDULES = 3_000
CLIENTS = Clients(operation="op", application="recovery", group="g")


def listing(worker: Worker) -> dict[str, dict[str, Any]]:
    items = httpx.get(
        f"{worker.url}/schedules",
        params={"application": "recovery", "limit": "10000"},
        timeout=60,
    ).json()["schedules"]
    return {item["schedule_id"]: item for item in items}


def upsert(n: int, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client": CLIENTS.client(f"k{n}"),
        "type": "cron",
        # 09:mm on 1 January only: a weekday 09:mm in Seoul (00:mm UTC) fired
        # during runs at that hour and changed schedules between the listing
        # and the kill (CI, 2026-12-04 00:16 UTC).
        "schedule": f"{n % 60} 9 1 1 *",
        "timezone": "Asia/Seoul",
        "task": {"type": "rest", "connection": {"host": "http://127.0.0.1:9/never"}},
    }
    body.update(fields)
    return body


async def committed_to_end(worker: Worker, *topics: str, timeout: float = 60) -> None:
    """Wait until the worker's group has committed every record of ``topics``."""
    names = [worker.topic(t) for t in topics]
    admin = AIOKafkaAdminClient(bootstrap_servers=worker.bootstrap)
    reader = AIOKafkaConsumer(bootstrap_servers=worker.bootstrap, group_id=None)
    await admin.start()
    await reader.start()
    try:
        tps = [TopicPartition(n, p) for n in names for p in range(worker.partitions)]
        ends = await reader.end_offsets(tps)
        deadline = time.monotonic() + timeout
        while True:
            done = await admin.list_consumer_group_offsets(worker.app_id)
            behind = {
                tp: end
                for tp, end in ends.items()
                if end and (tp not in done or done[tp].offset < end)
            }
            if not behind:
                return
            assert time.monotonic() < deadline, f"not committed: {behind}"
            await asyncio.sleep(0.5)
    finally:
        await reader.stop()
        await admin.close()


YEARLY = "0 0 1 1 *"


def action(name: str, n: int) -> dict[str, Any]:
    return {"action": name, "client": CLIENTS.client(f"k{n}")}


async def test_an_empty_data_dir_gets_every_schedule_back_in_order(
    kafka: LocalBroker, tmp_path: Path
) -> None:
    worker = Worker(kafka.bootstrap, tmp_path / "w0", partitions=4)
    topic = worker.topic("soon-out")
    await create_topics(kafka.bootstrap, topic)
    commands: list[dict[str, Any]] = [upsert(n) for n in range(SCHEDULES)]
    # Overwritten, paused and deleted: later records of the same key win.
    # A cron that cannot fire during the test either (*/5 could).
    commands += [upsert(n, schedule=YEARLY, timezone="UTC") for n in range(0, SCHEDULES, 3)]
    commands += [action("pause", n) for n in range(1, SCHEDULES, 7)]
    commands += [action("delete", n) for n in range(2, SCHEDULES, 11)]
    again: Worker | None = None
    try:
        await asyncio.to_thread(worker.start)
        # Keyed by schedule id, as a producer that needs a key's commands kept
        # in order must send them: unkeyed, a pause could land on another
        # partition than its upsert and be applied first (CI, 2026-12-06).
        await produce(kafka.bootstrap, worker.topic("schedule-commands"), keyed(commands))
        await applied(worker, len(commands))
        # Sent once the rest is stored, and due after the kill: fired before
        # it, the one-shot would show nothing of the recovered due index, and
        # it would differ between the two listings (CI, 2026-12-07).
        due_at = int(time.time()) + 20
        due = format_utc(datetime.fromtimestamp(due_at, UTC), micros=True)
        soon = {
            "client": CLIENTS.client("soon"),
            "type": "date",
            "schedule": due,
            "task": {"type": "kafka", "connection": {"host": kafka.bootstrap, "topic": topic}},
        }
        await produce(kafka.bootstrap, worker.topic("schedule-commands"), keyed([soon]))
        await applied(worker, len(commands) + 1)
        before = listing(worker)
        # Commands whose offsets are not committed yet would be applied again
        # after the restart (at least once), an upsert before its delete, and
        # the listing would show that replay in progress, not the recovery.
        await committed_to_end(worker, "schedule-commands", "schedule-commands-keyed")
        worker.stop(sig=signal.SIGKILL)
        assert time.time() < due_at, "too slow here: the one-shot was due before the kill"

        again = worker.sibling(tmp_path / "empty", same_port=True)
        async with Collector(kafka.bootstrap, topic) as out:
            await asyncio.to_thread(again.start)
            after = listing(again)
            await out.wait(lambda records: len(records) >= 1, timeout=60)
    finally:
        if again is not None:
            again.stop()
        worker.stop()

    deleted = {CLIENTS.sid(f"k{n}") for n in range(2, SCHEDULES, 11)}
    assert len(before) == SCHEDULES + 1 - len(deleted)
    assert not deleted & set(after)
    # The one-shot may have fired on the new worker before its listing.
    one_shot = CLIENTS.sid("soon")
    assert before.pop(one_shot)["status"] == "active" and one_shot in after
    after.pop(one_shot)
    assert after == before
    paused = [s for s in after.values() if s["status"] == "paused"]
    assert len(paused) == len([n for n in range(1, SCHEDULES, 7) if n % 11 != 2])
    rewritten = after[CLIENTS.sid("k3")]
    assert rewritten["schedule"] == YEARLY and rewritten["timezone"] == "UTC"
    # The due index came back too: the one-shot due after the restart fired.
    assert out.records[0]["headers"]["X-Scheduled-For"].decode() == due
    assert due_at <= out.records[0]["arrived"]


def keyed(bodies: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes]]:
    """``bodies`` as records keyed by their schedule ids."""
    return [(CLIENTS.sid(b["client"]["key"]).encode(), json.dumps(b).encode()) for b in bodies]


async def applied(worker: Worker, count: int) -> None:
    deadline = time.monotonic() + 90
    while metric(worker, "scheduler_commands_applied_total") < count:
        assert time.monotonic() < deadline, worker.tail(30)
        await asyncio.sleep(0.3)
