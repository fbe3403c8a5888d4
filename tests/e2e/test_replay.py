"""``scheduler replay``: an offset reset of the workers' group, as an operator runs it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import SCHEDULER, Clients, HttpTarget, Worker, metric, send_commands

pytestmark = pytest.mark.e2e

CLIENTS = Clients(operation="op", application="replay", group="e2e")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCHEDULER, *args], env=env, capture_output=True, text=True, timeout=120)


async def arun(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, env, *args)


def now_command(key: str, url: str) -> dict[str, Any]:
    return {
        "name": key,
        "client": CLIENTS.client(key),
        "type": "now",
        "timezone": "UTC",
        "task": {"type": "rest", "connection": {"host": url}, "data": {"key": key}},
    }


async def arrivals(target: HttpTarget, name: str, count: int, timeout: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout
    while len(target.of(name)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: {len(target.of(name))} deliveries, wanted {count}")
        await asyncio.sleep(0.1)
    return target.of(name)


async def test_replay_of_firings_delivers_them_again_with_their_ids(
    make_worker: Any, http_target: HttpTarget, tmp_path: Path
) -> None:
    worker: Worker = make_worker()
    await asyncio.to_thread(worker.start)
    env = worker.env()
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    await send_commands(worker, now_command("again", f"{http_target.url}/ok/again"))
    [first] = await arrivals(http_target, "again", 1)

    refused = await arun(env, "replay", "firings", "--since", since, "--wait", "0")
    assert refused.returncode == 2, refused.stdout
    assert worker.app_id in refused.stderr and "stop every worker" in refused.stderr
    await asyncio.to_thread(worker.stop)

    planned = await arun(env, "replay", "firings", "--since", since, "--json", "--dry-run")
    assert planned.returncode == 0, planned.stderr
    plan = json.loads(planned.stdout)
    assert plan["dry_run"] is True and plan["topic"] == worker.topic("firings")
    assert sum(p["records"] or 0 for p in plan["partitions"]) == 1

    done = await arun(env, "replay", "firings", "--since", since, "--json", "--wait", "30")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["partitions"] == plan["partitions"]

    again = worker.sibling(tmp_path / "after-replay")
    await asyncio.to_thread(again.start)
    try:
        try:
            _, second = await arrivals(http_target, "again", 2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker log:\n{again.tail(120)}") from None
        for name in ("Idempotency-Key", "X-Scheduled-For", "X-Schedule-Id"):
            assert second["headers"][name] == first["headers"][name]
        await asyncio.sleep(2)
        assert len(http_target.of("again")) == 2
    finally:
        await asyncio.to_thread(again.stop)


async def test_replay_of_commands_rebuilds_the_same_schedules_without_firing_again(
    make_worker: Any, http_target: HttpTarget, tmp_path: Path
) -> None:
    worker: Worker = make_worker()
    await asyncio.to_thread(worker.start)
    env = worker.env()
    cron = {
        **now_command("cron", f"{http_target.url}/ok/cron"),
        "type": "cron",
        "schedule": "0 9 * * 1-5",
        "timezone": "Asia/Seoul",
    }
    await send_commands(worker, now_command("once", f"{http_target.url}/ok/once"), cron)
    await arrivals(http_target, "once", 1)
    before = httpx.get(f"{worker.url}/schedules/{CLIENTS.sid('cron')}", timeout=10).json()
    await asyncio.to_thread(worker.stop)

    done = await arun(env, "replay", "schedule-commands", "--from-beginning", "--json")
    assert done.returncode == 0, done.stderr
    moved = json.loads(done.stdout)["partitions"]
    assert sum(p["records"] or 0 for p in moved) == 2 and all(p["target"] == 0 for p in moved)

    # An empty data dir too: the table comes back from its changelog, then the
    # commands are applied again on top of it.
    again = worker.sibling(tmp_path / "empty")
    await asyncio.to_thread(again.start)
    try:
        deadline = time.monotonic() + 60
        while metric(again, "scheduler_commands_applied_total") < 2:
            assert time.monotonic() < deadline, "the replayed commands were not applied"
            await asyncio.sleep(0.2)
        after = httpx.get(f"{again.url}/schedules/{CLIENTS.sid('cron')}", timeout=10).json()
        assert after["next_fire_at"] == before["next_fire_at"]
        assert after["status"] == before["status"] == "active"
        await asyncio.sleep(3)
        assert len(http_target.of("once")) == 1
    finally:
        await asyncio.to_thread(again.stop)


def test_replay_names_a_bad_instant_and_a_missing_choice(worker: Worker) -> None:
    env = worker.env()
    bad = run(env, "replay", "firings", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since" in bad.stderr and "yesterday-ish" in bad.stderr
    neither = run(env, "replay", "firings")
    assert neither.returncode == 2 and "--from-beginning" in neither.stderr
