"""The fault scenarios: each injects its faults into a running cluster under load, then verifies.

Each returns a :class:`Outcome`: the faults injected, the verifier's counts
for the instants due in the window the faults were injected in, and the
workers' peak memory.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from faults.harness import Cluster, Load, Verdict, received, verify

#: Seconds between the load's registration and the window's start (all applied).
SETTLE_S = 8.0
#: Seconds after the window for the last of its instants to arrive (retries included).
DRAIN_S = 25.0
#: Seconds after the broker is back from which lateness must be normal again.
RECOVERY_S = 20.0


@dataclass
class Outcome:
    scenario: str
    faults: list[str]
    schedules: int
    window_s: float
    verdict: Verdict
    peak_rss_mib: float
    recovered: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.verdict.ok()
        return out


async def _run(
    name: str,
    work: Path,
    schedules: int,
    seconds: float,
    inject: Any,
    *,
    workers: int = 3,
) -> tuple[Outcome, Load, list[Any], float]:
    cluster = Cluster(work, workers=workers)
    load = Load(schedules)
    await cluster.start()
    try:
        await load.register(cluster)
        await asyncio.sleep(SETTLE_S)
        low = time.time()
        faults: list[str] = []
        sampler = asyncio.ensure_future(_sample(cluster))
        try:
            await inject(cluster, low, low + seconds, faults)
            high = low + seconds
            await asyncio.sleep(max(high - time.time(), 0) + DRAIN_S)
        finally:
            sampler.cancel()
        got = await received(cluster)
        verdict = verify(load, got, low, high)
        peak = max((m.peak_rss for m in cluster.members), default=0) / 2**20
        alive = sum(1 for m in cluster.members if m.proc is not None and m.proc.poll() is None)
        outcome = Outcome(name, faults, schedules, seconds, verdict, round(peak, 1))
        outcome.recovered = {"workers_alive_at_end": alive, "workers": len(cluster.members)}
        return outcome, load, got, high
    finally:
        await cluster.stop()


async def _sample(cluster: Cluster) -> None:
    while True:
        cluster.sample()
        await asyncio.sleep(1)


async def kill_rotation(
    work: Path, *, schedules: int = 150, seconds: float = 60, every: float = 20
) -> Outcome:
    """Every ``every`` s one of three workers is killed with -9 and started again."""

    async def inject(cluster: Cluster, low: float, high: float, faults: list[str]) -> None:
        turn = 0
        while time.time() + every <= high:
            await asyncio.sleep(every)
            member = cluster.members[turn % len(cluster.members)]
            member.kill9()
            faults.append(f"{time.time() - low:.0f}s: kill -9 worker {member.index}")
            member.start()
            turn += 1

    outcome, *_ = await _run("kill -9 rotation", work, schedules, seconds, inject)
    return outcome


async def broker_outage(
    work: Path, *, schedules: int = 150, seconds: float = 60, outage: float = 15
) -> Outcome:
    """The broker is killed with -9 mid-load, and started again ``outage`` s later."""
    restarted: dict[str, float] = {}

    async def inject(cluster: Cluster, low: float, high: float, faults: list[str]) -> None:
        await asyncio.sleep(max((high - low - outage) / 3, 1))
        await asyncio.to_thread(cluster.broker.kill9)
        faults.append(f"{time.time() - low:.0f}s: kill -9 the broker")
        await asyncio.sleep(outage)
        await asyncio.to_thread(cluster.broker.start)
        restarted["at"] = time.time()
        faults.append(f"{time.time() - low:.0f}s: broker started again")
        for member in cluster.members:
            if member.proc is not None and member.proc.poll() is not None:
                faults.append(f"worker {member.index} had exited: {member.proc.returncode}")

    outcome, load, got, high = await _run(
        f"broker down {outage:g} s", work, schedules, seconds, inject
    )
    # Lateness once the broker has been back for RECOVERY_S: the goal is p99 <= 250 ms.
    if "at" in restarted and outcome.recovered is not None:
        since = restarted["at"] + RECOVERY_S
        after = verify(load, got, since, max(since, high))
        outcome.recovered.update(
            {"p99_late_s_from_20s_after": after.p99_late_s, "instants_then": after.expected}
        )
    return outcome


SCENARIOS = {"kill-rotation": kill_rotation, "broker-outage": broker_outage}
