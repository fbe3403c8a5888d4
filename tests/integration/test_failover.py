"""Scale by adding workers; kill one with kill -9 and lose nothing."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.devtools.broker import LocalBroker
from scheduler.domain.ids import firing_id
from scheduler.domain.timefmt import format_utc, parse_utc
from tests.support import Clients, Collector, Worker, send_commands

pytestmark = pytest.mark.integration

SCHEDULES = 200
PARTITIONS = 6
CLIENTS = Clients(operation="op", application="failover", group="g")


def command(n: int) -> dict[str, Any]:
    return {
        "client": CLIENTS.client(f"k{n}"),
        "type": "delay-recur",
        "schedule": 1,
        "misfire_policy": "fire_all",
        "task": {"type": "rest", "connection": {"host": "http://127.0.0.1:9/x"}},
    }


def health(worker: Worker) -> dict[str, Any]:
    return dict(httpx.get(f"{worker.url}/health", timeout=5).json())


async def settled(workers: list[Worker], timeout: float = 90) -> dict[str, list[int]]:
    """Wait until the live workers own every partition between them, each ready."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            states = {w.url: health(w) for w in workers}
            owned = sorted(p for s in states.values() for p in s["active_partitions"])
            if owned == list(range(PARTITIONS)) and all(
                s["ready"] and s["active_partitions"] for s in states.values()
            ):
                return {url: s["active_partitions"] for url, s in states.items()}
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"workers did not settle: {[w.tail(20) for w in workers]}")
        await asyncio.sleep(0.5)


async def test_three_workers_share_schedules_and_survive_a_kill_9(
    kafka: LocalBroker, tmp_path: Path
) -> None:
    first = Worker(kafka.bootstrap, tmp_path / "w0", partitions=PARTITIONS)
    workers = [first] + [first.sibling(tmp_path / f"w{n}") for n in (1, 2)]
    try:
        for w in workers:
            w.start()
        await settled(workers)
        async with Collector(kafka.bootstrap, first.topic("firings")) as firings:
            await send_commands(first, *(command(n) for n in range(SCHEDULES)))
            await asyncio.sleep(6)
            victim = workers[1]
            killed_at = time.time()
            victim.stop(sig=signal.SIGKILL)
            survivors = [w for w in workers if w is not victim]
            await settled(survivors)
            await asyncio.sleep(6)
            cutoff = time.time() - 3
            listing = httpx.get(
                f"{survivors[0].url}/schedules",
                params={"application": "failover", "limit": "1000"},
                timeout=30,
            ).json()["schedules"]
            # A lookup by id answers from any worker: Faust routes it to the owner.
            routed = {
                w.url: [
                    httpx.get(f"{w.url}/schedules/{item['schedule_id']}", timeout=10).status_code
                    for item in listing[:40]
                ]
                for w in survivors
            }
            await asyncio.sleep(1)
            records = [r["value"] for r in firings.records]
    finally:
        for w in workers:
            w.stop()

    assert len(listing) == SCHEDULES
    assert all(codes == [200] * 40 for codes in routed.values()), routed
    fired: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for f in records:
        fired[f["schedule_id"]][f["scheduled_for"]].add(f["firing_id"])
    missing = []
    for item in listing:
        sid = item["schedule_id"]
        accepted = parse_utc(item["accepted_at"])
        k = 1
        while (accepted + timedelta(seconds=k)).timestamp() <= cutoff:
            at = format_utc(accepted + timedelta(seconds=k), micros=True)
            if at not in fired[sid]:
                missing.append((sid, at))
            k += 1
    assert missing == [], f"{len(missing)} nominal instants never fired, e.g. {missing[:5]}"
    # Duplicates exist only as copies of one firing: same id, derived from the instant.
    for sid, by_instant in fired.items():
        for at, ids in by_instant.items():
            assert ids == {firing_id(sid, parse_utc(at))}
    # Before the kill, in steady state, every instant went out exactly once.
    steady = [f for f in records if parse_utc(f["scheduled_for"]).timestamp() < killed_at - 1.5]
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for f in steady:
        counts[(f["schedule_id"], f["scheduled_for"])] += 1
    assert steady and max(counts.values()) == 1
