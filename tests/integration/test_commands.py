"""Commands in, schedules stored and looked up: one worker on the real broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from croniter import croniter

from tests.support import Clients, Worker, eventually, read_topic, send_commands

pytestmark = pytest.mark.integration


CLIENTS = Clients(operation="op#1", application="chef", group="itest")
client, sid_of = CLIENTS.client, CLIENTS.sid


def upsert(key: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"job-{key}",
        "client": client(key),
        "type": "cron",
        "schedule": "0 9 * * 1-5",
        "timezone": "Asia/Seoul",
        "task": {
            "type": "rest",
            "connection": {"host": "http://127.0.0.1:9/hook"},
            "data": {"n": key},
        },
    }
    body.update(changes)
    return body


def get(worker: Worker, sid: str) -> httpx.Response:
    return httpx.get(f"{worker.url}/schedules/{sid}", timeout=10)


async def test_unkeyed_cron_command_is_stored_with_its_next_local_instant(worker: Worker) -> None:
    before = datetime.now(UTC)
    await send_commands(worker, upsert("cron-1"))
    response = await eventually(
        lambda: (r := get(worker, sid_of("cron-1"))).status_code == 200 and r
    )
    body = response.json()
    assert body["status"] == "active" and body["paused"] is False
    assert body["type"] == "cron" and body["timezone"] == "Asia/Seoul"
    # Independent check with zoneinfo + croniter: the first weekday 09:00 in Seoul
    # after acceptance (Seoul has no DST, so plain croniter is right there).
    accepted = datetime.fromisoformat(body["accepted_at"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=5) <= accepted <= datetime.now(UTC)
    expected = croniter("0 9 * * 1-5", accepted.astimezone(ZoneInfo("Asia/Seoul"))).get_next(
        datetime
    )
    assert body["next_fire_at"] == expected.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    local = datetime.fromisoformat(body["next_fire_at_local"])
    assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5
    assert local.utcoffset() == timedelta(hours=9)


async def test_date_in_zone_and_with_offset(worker: Worker) -> None:
    await send_commands(
        worker,
        upsert("date-1", type="date", schedule="2030-01-02T09:00:00"),
        upsert("date-2", type="date", schedule="2030-01-02T09:00:00+02:00"),
    )
    one = await eventually(lambda: (r := get(worker, sid_of("date-1"))).status_code == 200 and r)
    two = await eventually(lambda: (r := get(worker, sid_of("date-2"))).status_code == 200 and r)
    assert one.json()["next_fire_at"] == "2030-01-02T00:00:00.000Z"
    assert one.json()["next_fire_at_local"] == "2030-01-02T09:00:00+09:00"
    assert two.json()["next_fire_at"] == "2030-01-02T07:00:00.000Z"


async def test_delay_counts_from_the_record_timestamp(worker: Worker) -> None:
    await send_commands(worker, upsert("delay-1", type="delay", schedule=50))
    body = (
        await eventually(lambda: (r := get(worker, sid_of("delay-1"))).status_code == 200 and r)
    ).json()
    accepted = datetime.fromisoformat(body["accepted_at"].replace("Z", "+00:00"))
    fire = datetime.fromisoformat(body["next_fire_at"].replace("Z", "+00:00"))
    assert fire - accepted == timedelta(seconds=50)


async def test_same_client_tuple_updates_instead_of_adding(worker: Worker) -> None:
    await send_commands(worker, upsert("upd-1", schedule="0 9 * * *"))
    await eventually(lambda: get(worker, sid_of("upd-1")).status_code == 200)
    await send_commands(worker, upsert("upd-1", schedule="30 18 * * *", name="renamed"))
    body = (
        await eventually(
            lambda: (r := get(worker, sid_of("upd-1"))).json().get("name") == "renamed" and r
        )
    ).json()
    assert body["schedule"] == "30 18 * * *"
    assert body["next_fire_at_local"].endswith("T18:30:00+09:00")
    listed = httpx.get(f"{worker.url}/schedules", params={"key": "upd-1"}).json()["schedules"]
    assert [item["schedule_id"] for item in listed] == [sid_of("upd-1")]


async def test_pause_resume_delete(worker: Worker) -> None:
    await send_commands(worker, upsert("life-1", type="delay-recur", schedule=10))
    await eventually(lambda: get(worker, sid_of("life-1")).status_code == 200)
    await send_commands(worker, {"action": "pause", "client": client("life-1")})
    await eventually(lambda: get(worker, sid_of("life-1")).json()["status"] == "paused")
    assert get(worker, sid_of("life-1")).json()["paused"] is True
    await send_commands(worker, {"action": "resume", "client": client("life-1")})
    body = (
        await eventually(
            lambda: (r := get(worker, sid_of("life-1"))).json()["status"] == "active" and r
        )
    ).json()
    assert body["paused"] is False
    await send_commands(worker, {"action": "delete", "client": client("life-1")})
    response = await eventually(
        lambda: (r := get(worker, sid_of("life-1"))).status_code == 404 and r
    )
    assert sid_of("life-1") in response.json()["detail"]


async def test_list_filters_on_client_fields(worker: Worker) -> None:
    other = upsert("list-2")
    other["client"]["application"] = "waiter"
    await send_commands(worker, upsert("list-1"), other)
    await eventually(lambda: get(worker, sid_of("list-1")).status_code == 200)
    found = await eventually(
        lambda: httpx.get(f"{worker.url}/schedules", params={"application": "waiter"}).json()[
            "schedules"
        ]
    )
    assert [item["client"]["key"] for item in found] == ["list-2"]
    chef = httpx.get(f"{worker.url}/schedules", params={"application": "chef"}).json()
    assert "list-2" not in {item["client"]["key"] for item in chef["schedules"]}
    assert "list-1" in {item["client"]["key"] for item in chef["schedules"]}


BAD_INPUTS: list[tuple[str, bytes, str]] = [
    ("broken json", b'{"action": "upsert", "client": ', "bad_json"),
    ("unknown type", json.dumps(upsert("bad-1", type="weekly")).encode(), "invalid_command"),
    ("bad cron", json.dumps(upsert("bad-2", schedule="61 * * * *")).encode(), "invalid_command"),
    ("unknown zone", json.dumps(upsert("bad-3", timezone="Mars/Base")).encode(), "invalid_command"),
    (
        "missing field",
        json.dumps({"type": "now", "task": upsert("x")["task"]}).encode(),
        "invalid_command",
    ),
    (
        "oversized",
        json.dumps(
            upsert(
                "bad-4",
                name="x" * 400,
                task={
                    "type": "rest",
                    "connection": {"host": "http://127.0.0.1:9/"},
                    "data": {"blob": "y" * 300_000},
                },
            )
        ).encode(),
        "too_large",
    ),
]


async def test_bad_input_is_rejected_with_reason_and_original_and_worker_goes_on(
    worker: Worker,
) -> None:
    await send_commands(worker, *(raw for _, raw, _ in BAD_INPUTS))
    await send_commands(worker, {"action": "delete", "client": client("never-existed")})
    await send_commands(worker, upsert("after-bad"))
    rejected = await read_topic(
        worker.bootstrap,
        worker.topic("schedule-commands-rejected"),
        until=lambda found: len(found) >= len(BAD_INPUTS) + 1,
        timeout=60,
    )
    by_text = {item["value"]["command"]: item["value"] for item in rejected}
    for label, raw, error in BAD_INPUTS:
        record = by_text.get(raw.decode())
        assert record is not None, f"{label} not on the rejected topic"
        assert record["error"] == error, label
        assert record["detail"], label
        assert record["received_at"].endswith("Z")
    details = " | ".join(item["detail"] for item in by_text.values())
    assert "Mars/Base" in details and "61 * * * *" in details and "weekly" in details
    assert "client: Field required" in details
    assert f"no schedule {sid_of('never-existed')} to delete" in details
    # Nothing else was lost: the command after the poison ones is stored.
    await eventually(lambda: get(worker, sid_of("after-bad")).status_code == 200)
    assert worker.alive()


async def test_post_commands_validates_and_produces(worker: Worker) -> None:
    bad = httpx.post(f"{worker.url}/commands", json=upsert("http-1", timezone="Nowhere/Land"))
    assert bad.status_code == 400
    assert bad.json()["field"] == "timezone" and "Nowhere/Land" in bad.json()["detail"]
    ok = httpx.post(f"{worker.url}/commands", json=upsert("http-1"))
    assert ok.status_code == 202 and ok.json() == {"schedule_id": sid_of("http-1")}
    await eventually(lambda: get(worker, sid_of("http-1")).status_code == 200)


async def test_post_preview(worker: Worker) -> None:
    response = httpx.post(
        f"{worker.url}/preview",
        params={"after": "2025-03-08T12:00:00Z", "count": "3"},
        json=upsert("prev", schedule="30 2 * * *", timezone="America/New_York"),
    )
    assert response.status_code == 200
    # 02:30 does not exist on 2025-03-09 in New York: it fires at 03:00 EDT (07:00Z).
    assert response.json()["fire_times"] == [
        "2025-03-09T07:00:00.000Z",
        "2025-03-10T06:30:00.000Z",
        "2025-03-11T06:30:00.000Z",
    ]


def metric(worker: Worker, name: str) -> float:
    for line in httpx.get(f"{worker.url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_commands_keyed_by_schedule_id_on_their_partition_skip_the_rekeying_hop(
    worker: Worker,
) -> None:
    sid = sid_of("direct-1")
    partitions = 4  # the worker fixture's topics
    owner = (murmur2(sid.encode()) & 0x7FFFFFFF) % partitions
    before = metric(worker, "scheduler_commands_rekeyed_total")
    await send_commands(worker, upsert("direct-1"), key=sid.encode())
    await eventually(lambda: get(worker, sid).status_code == 200)
    await send_commands(worker, {"action": "pause", "client": client("direct-1")}, key=sid.encode())
    await eventually(lambda: get(worker, sid).json()["status"] == "paused")
    assert metric(worker, "scheduler_commands_rekeyed_total") == before

    # Keyed by the id but on another partition (a producer with another
    # partitioner): re-keyed, and applied on the owner's partition all the same.
    producer = AIOKafkaProducer(bootstrap_servers=worker.bootstrap, acks="all")
    await producer.start()
    try:
        resume = json.dumps({"action": "resume", "client": client("direct-1")}).encode()
        await producer.send_and_wait(
            worker.topic("schedule-commands"),
            value=resume,
            key=sid.encode(),
            partition=(owner + 1) % partitions,
        )
    finally:
        await producer.stop()
    await eventually(lambda: get(worker, sid).json()["status"] == "active")
    assert metric(worker, "scheduler_commands_rekeyed_total") == before + 1
    # An unkeyed command for the same schedule goes the long way, in order after those.
    await send_commands(worker, upsert("direct-1", name="renamed"))
    await eventually(lambda: get(worker, sid).json()["name"] == "renamed")
    assert metric(worker, "scheduler_commands_rekeyed_total") == before + 2


async def test_health_and_metrics(worker: Worker) -> None:
    health = httpx.get(f"{worker.url}/health").json()
    assert health["status"] == "ok" and health["active_partitions"] == [0, 1, 2, 3]
    text = httpx.get(f"{worker.url}/metrics").text
    assert "scheduler_commands_accepted_total" in text


async def test_a_worker_with_an_empty_data_dir_rebuilds_from_the_changelog(
    worker: Worker, tmp_path: Path
) -> None:
    await send_commands(worker, upsert("keep-1", schedule="15 10 * * *"))
    await eventually(lambda: get(worker, sid_of("keep-1")).status_code == 200)
    before = get(worker, sid_of("keep-1")).json()
    worker.stop()
    fresh = worker.sibling(tmp_path / "fresh", same_port=True)
    fresh.start()
    try:
        after = (
            await eventually(lambda: (r := get(fresh, sid_of("keep-1"))).status_code == 200 and r)
        ).json()
        assert after == before
    finally:
        fresh.stop()
        worker.proc = None
        worker.start()
