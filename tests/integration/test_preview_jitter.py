"""Preview of a stored schedule from its owner, and jitter on a real delivery.

A real worker, a real HTTP target: ``GET /schedules/{id}/preview`` and
``scheduler preview ID`` answer from the stored record (paused: nothing);
a jittered schedule's firings arrive at their instant plus the offset their
firing id gives, never before, with ``X-Scheduled-For`` the nominal instant.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import timedelta
from typing import Any

import httpx
import pytest

from scheduler.domain import jitter
from tests.support import SCHEDULER, Clients, HttpTarget, Worker, eventually, instant, send_commands

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="preview", application="exec", group="itest")


def upsert(key: str, url: str, **fields: Any) -> dict[str, Any]:
    return {
        "client": CLIENTS.client(key),
        "task": {"type": "rest", "connection": {"host": url}, "data": {"job": key}},
        **fields,
    }


async def test_a_stored_schedule_is_previewed_by_id_over_http_and_the_cli(
    worker: Worker, http_target: HttpTarget
) -> None:
    sid = CLIENTS.sid("hourly")
    await send_commands(
        worker,
        upsert(
            "hourly",
            f"{http_target.url}/ok/hourly",
            type="cron",
            schedule="0 9 * * *",
            timezone="Asia/Seoul",
            max_fires=2,
        ),
    )
    await eventually(lambda: httpx.get(f"{worker.url}/schedules/{sid}").status_code == 200)
    answer = httpx.get(f"{worker.url}/schedules/{sid}/preview", params={"count": 5})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "active" and len(body["instants"]) == 2  # max_fires leaves two
    assert all(item["local"].endswith("T09:00:00+09:00") for item in body["instants"])
    assert all(item["utc"].endswith("T00:00:00.000Z") for item in body["instants"])

    too_many = httpx.get(f"{worker.url}/schedules/{sid}/preview", params={"count": 1001})
    assert too_many.status_code == 400 and too_many.json()["field"] == "count"
    missing = httpx.get(f"{worker.url}/schedules/sch_{'0' * 32}/preview")
    assert missing.status_code == 404

    printed = subprocess.run(
        [SCHEDULER, "preview", sid, "--url", worker.url, "--count", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.split() == [body["instants"][0]["utc"], body["instants"][0]["local"]]

    await send_commands(worker, {"client": CLIENTS.client("hourly"), "action": "pause"})

    def paused() -> bool:
        got = httpx.get(f"{worker.url}/schedules/{sid}/preview").json()
        return got["status"] == "paused" and got["instants"] == []

    await eventually(paused)


async def test_jittered_firings_arrive_after_their_instant_by_their_own_offset(
    worker: Worker, http_target: HttpTarget
) -> None:
    spread = 1.5
    await send_commands(
        worker,
        upsert(
            "jittered",
            f"{http_target.url}/ok/jittered",
            type="delay-recur",
            schedule="2",  # a jitter must be less than the interval
            max_fires=6,
            jitter=spread,
        ),
    )
    await eventually(lambda: len(http_target.of("jittered")) >= 6, timeout=60)
    await asyncio.sleep(1)
    calls = http_target.of("jittered")
    assert len(calls) == 6
    offsets = []
    for call in calls:
        nominal = instant(call["headers"]["X-Scheduled-For"])
        firing_id = call["headers"]["Idempotency-Key"]
        offset = jitter.offset(firing_id, spread).total_seconds()
        offsets.append(offset)
        assert call["arrived"] >= nominal + offset, (call, offset)
        assert call["arrived"] - (nominal + offset) < 0.5, (call, offset)
    # Instants two seconds apart: their offsets are their ids', not one shared delay.
    assert len({round(o, 3) for o in offsets}) == len(offsets)
    assert max(offsets) - min(offsets) > timedelta(milliseconds=100).total_seconds()
    details = json.dumps(calls[0]["headers"])
    assert "X-Scheduled-For" in details
