"""Bearer tokens on the web view, across two workers (real workers, real Kafka).

With ``SCHEDULER_WEB_TOKENS`` set, every endpoint but ``/health`` answers 401
without a known token; a lookup routed to the worker that owns the schedule,
and the list gathered from every worker, work with the caller's token; the
CLI sends the first token; Faust's own table and router pages are gone.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import httpx
import pytest

from tests.support import SCHEDULER, Clients, Worker, eventually, send_commands

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="tokens", application="web", group="itest")
TOKENS = "first-token,second-token"
KEYS = [f"k{index}" for index in range(12)]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def schedule(key: str) -> dict[str, Any]:
    return {
        "client": CLIENTS.client(key),
        "type": "delay",
        "schedule": "3600",
        "task": {"type": "rest", "connection": {"host": "http://127.0.0.1:9/x"}},
    }


async def test_tokens_guard_every_endpoint_but_health_on_every_worker(make_worker: Any) -> None:
    env = {"SCHEDULER_WEB_TOKENS": TOKENS}
    first: Worker = make_worker(partitions=4, extra_env=env).start()
    second: Worker = make_worker(
        app_id=first.app_id, prefix=first.prefix, partitions=4, extra_env=env
    ).start()
    await send_commands(first, *(schedule(key) for key in KEYS))

    # Open: the probe an orchestrator uses.
    assert httpx.get(f"{first.url}/health").status_code == 200
    # Closed without a token, or with one that is not configured.
    for headers in ({}, bearer("wrong"), {"Authorization": "Basic Zmlyc3Q="}):
        answer = httpx.get(f"{first.url}/schedules", headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.json()["error"] == "unauthorized"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    refused = httpx.post(f"{first.url}/commands", content=json.dumps(schedule("sneak")))
    assert refused.status_code == 401
    assert httpx.get(f"{first.url}/schedules/{CLIENTS.sid(KEYS[0])}").status_code == 401

    # Every schedule, looked up through the first worker with the second token:
    # those the second worker owns are routed there, the token with them.
    for key in KEYS:
        sid = CLIENTS.sid(key)
        seen: list[str] = []

        def routed(sid: str = sid, seen: list[str] = seen) -> Any:
            r = httpx.get(f"{first.url}/schedules/{sid}", headers=bearer("second-token"))
            seen.append(f"{r.status_code} {r.text[:200]}")
            return r.status_code == 200 and r

        # A rebalance after the second worker joined may take a while: say what came back.
        try:
            found = await eventually(routed, timeout=60)
        except AssertionError:
            raise AssertionError(f"{sid} not found via the first worker: {seen[-3:]}") from None
        assert found.json()["schedule_id"] == sid
    listed = httpx.get(
        f"{first.url}/schedules",
        params={"operation": "tokens", "limit": "100"},
        headers=bearer("first-token"),
    )
    assert listed.status_code == 200, listed.text
    assert {item["schedule_id"] for item in listed.json()["schedules"]} >= {
        CLIENTS.sid(key) for key in KEYS
    }
    # The sneaked command was never stored.
    assert (
        httpx.get(
            f"{second.url}/schedules/{CLIENTS.sid('sneak')}", headers=bearer("first-token")
        ).status_code
        == 404
    )

    # Faust's own pages (every table's contents, the partition map) are off.
    for path in ("/router/", "/table/schedules/", "/graph/", "/stats/"):
        assert httpx.get(f"{first.url}{path}", headers=bearer("first-token")).status_code == 404

    # The CLI sends the first configured token.
    done = subprocess.run(
        [SCHEDULER, "get", CLIENTS.sid(KEYS[0]), "--url", first.url, "--json"],
        env={**os.environ, "SCHEDULER_WEB_TOKENS": TOKENS},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert CLIENTS.sid(KEYS[0]) in done.stdout
