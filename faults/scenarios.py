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

from faults.harness import BlackHole, Cluster, HttpTarget, Load, Verdict, received, verify

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
    loads: list[Load],
    seconds: float,
    inject: Any,
    *,
    workers: int = 3,
    drain: float = DRAIN_S,
    prepare: Any = None,
    **cluster: Any,
) -> tuple[Outcome, list[Load], list[Any], float]:
    """Start a cluster, register ``loads``, run ``inject`` over the window, and verify.

    ``prepare(cluster)`` runs after the cluster started and before the loads
    are registered (to start extra targets); the returned value of ``inject``
    is ignored. Only the loads given are verified.
    """
    cluster_ = Cluster(work, workers=workers, **cluster)
    await cluster_.start()
    try:
        if prepare is not None:
            await prepare(cluster_)
        for load in loads:
            await load.register(cluster_)
        await asyncio.sleep(SETTLE_S)
        low = time.time()
        faults: list[str] = []
        sampler = asyncio.ensure_future(_sample(cluster_))
        try:
            await inject(cluster_, low, low + seconds, faults)
            high = low + seconds
            await asyncio.sleep(max(high - time.time(), 0) + drain)
        finally:
            sampler.cancel()
        got = await received(cluster_)
        verdict = verify(loads, got, low, high)
        peak = max((m.peak_rss for m in cluster_.members), default=0) / 2**20
        alive = sum(1 for m in cluster_.members if m.proc is not None and m.proc.poll() is None)
        schedules = sum(load.count for load in loads)
        outcome = Outcome(name, faults, schedules, seconds, verdict, round(peak, 1))
        outcome.recovered = {"workers_alive_at_end": alive, "workers": len(cluster_.members)}
        return outcome, loads, got, high
    finally:
        await cluster_.stop()


async def _sample(cluster: Cluster) -> None:
    while True:
        cluster.sample()
        await asyncio.sleep(1)


async def kill_rotation(
    work: Path,
    *,
    schedules: int = 150,
    seconds: float = 60,
    every: float = 20,
    wipe: bool = False,
    name: str = "kill -9 rotation",
) -> Outcome:
    """Every ``every`` s one of three workers is killed with -9 and started again.

    With ``wipe``, its data directory is deleted before it starts again: it
    rebuilds its tables from the changelogs, mid-load.
    """

    async def inject(cluster: Cluster, low: float, high: float, faults: list[str]) -> None:
        turn = 0
        while time.time() + every <= high:
            await asyncio.sleep(every)
            member = cluster.members[turn % len(cluster.members)]
            member.kill9()
            if wipe:
                member.wipe()
            faults.append(
                f"{time.time() - low:.0f}s: kill -9 worker {member.index}"
                + (", data directory deleted" if wipe else "")
            )
            member.start()
            turn += 1

    outcome, *_ = await _run(name, work, [Load(schedules)], seconds, inject)
    if outcome.faults:
        per_kill = outcome.verdict.duplicated / len(outcome.faults)
        assert outcome.recovered is not None
        outcome.recovered["duplicated_per_kill"] = round(per_kill, 1)
        outcome.recovered["firings_per_s"] = schedules
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

    outcome, loads, got, high = await _run(
        f"broker down {outage:g} s", work, [Load(schedules)], seconds, inject
    )
    # Lateness once the broker has been back for RECOVERY_S: the goal is p99 <= 250 ms.
    if "at" in restarted and outcome.recovered is not None:
        since = restarted["at"] + RECOVERY_S
        after = verify(loads, got, since, max(since, high))
        outcome.recovered.update(
            {"p99_late_s_from_20s_after": after.p99_late_s, "instants_then": after.expected}
        )
    return outcome


async def kill_once(work: Path, *, schedules: int = 100, seconds: float = 30) -> Outcome:
    """One worker of three killed with -9 at 100 firings/s: how many duplicates it costs."""
    return await kill_rotation(
        work, schedules=schedules, seconds=seconds, every=seconds / 2, name="one kill -9"
    )


async def empty_data_dir(
    work: Path, *, schedules: int = 150, seconds: float = 60, every: float = 30
) -> Outcome:
    """Workers killed with -9 and started again on an empty data directory, mid-load."""
    return await kill_rotation(
        work,
        schedules=schedules,
        seconds=seconds,
        every=every,
        wipe=True,
        name="worker restarted with an empty data directory",
    )


async def targets_down(
    work: Path, *, schedules: int = 150, seconds: float = 90, outage: float = 15
) -> Outcome:
    """Each kind of target down in turn, for longer than several retry waits, then back.

    The REST target answers 503; ``redis-server`` is killed with -9 and
    started again on its append-only file; the Kafka target cluster (its own
    broker) is killed with -9 and started again. Retries wait 2 s.
    """

    async def inject(cluster: Cluster, low: float, high: float, faults: list[str]) -> None:
        gap = max((high - low - 3 * outage) / 4, 1)

        def say(what: str) -> None:
            faults.append(f"{time.time() - low:.0f}s: {what}")

        assert cluster.target_broker is not None
        await asyncio.sleep(gap)
        cluster.http.down = True
        say("REST target answers 503")
        await asyncio.sleep(outage)
        cluster.http.down = False
        say(f"REST target back ({cluster.http.refused} requests refused)")
        await asyncio.sleep(gap)
        await asyncio.to_thread(cluster.redis.kill9)
        say("kill -9 redis-server")
        await asyncio.sleep(outage)
        await asyncio.to_thread(cluster.redis.start)
        say("redis-server started again")
        await asyncio.sleep(gap)
        await asyncio.to_thread(cluster.target_broker.kill9)
        say("kill -9 the Kafka target cluster")
        await asyncio.sleep(outage)
        await asyncio.to_thread(cluster.target_broker.start)
        say("Kafka target cluster started again")

    outcome, *_ = await _run(
        f"targets down {outage:g} s each",
        work,
        [Load(schedules)],
        seconds,
        inject,
        drain=DRAIN_S + outage,
        target_cluster=True,
    )
    return outcome


async def black_hole(
    work: Path,
    *,
    schedules: int = 150,
    seconds: float = 60,
    holes: int = 100,
    hole_timeout: float = 30,
) -> Outcome:
    """``holes`` schedules firing every second at a server that accepts and never answers.

    Beside them, the load's healthy targets must keep their lateness (goal:
    p99 <= 250 ms) with nothing missing. Only the healthy load is verified.
    """
    hole = BlackHole()

    async def prepare(cluster: Cluster) -> None:
        await hole.start()

    sunk = Load(
        holes,
        name="hole",
        kinds=("rest",),
        rest_url=hole.url,
        task={"timeout": hole_timeout},
        timely=False,
    )
    healthy = Load(schedules)

    async def inject(cluster: Cluster, low: float, high: float, faults: list[str]) -> None:
        # The black-holed schedules were registered with the healthy ones.
        await asyncio.sleep(high - low)
        faults.append(
            f"{holes} schedules/s at a black hole ({hole_timeout:g} s timeout): "
            f"{hole.requests} requests swallowed on {hole.connections} connections"
        )

    try:
        outcome, _, got, high = await _run(
            "black-hole target", work, [healthy, sunk], seconds, inject, prepare=prepare
        )
    finally:
        await hole.stop()
    # Only the healthy load is judged: the black-holed instants are meant to wait.
    low = high - seconds
    outcome.verdict = verify(healthy, got, low, high)
    outcome.schedules = schedules
    assert outcome.recovered is not None
    outcome.recovered["black_holed_requests"] = hole.requests
    return outcome


async def pending_retries(
    work: Path,
    *,
    schedules: int = 150,
    seconds: float = 90,
    failing: int = 20_000,
    down: float = 45,
    retry_wait: int = 30,
) -> Outcome:
    """``failing`` one-shots due at once to a REST target that answers 503 for ``down`` s.

    Each failure waits ``retry_wait`` s for its retry, so tens of thousands
    wait at once; once the target is back, every one of them must arrive,
    and the healthy load beside them must keep its lateness.
    """
    flaky = HttpTarget()
    flaky.down = True
    due_in = int(SETTLE_S) + 10

    async def prepare(cluster: Cluster) -> None:
        await flaky.start()

    waiting = Load(
        failing,
        interval=due_in,
        name="retry",
        kinds=("rest",),
        one_shot=True,
        spread=5,
        rest_url=flaky.url,
        task={"retry_wait": retry_wait},
        timely=False,
    )
    healthy = Load(schedules)

    async def inject(cluster: Cluster, low: float, high: float, faults: list[str]) -> None:
        await asyncio.sleep(down - (time.time() - low) + (due_in - SETTLE_S))
        flaky.down = False
        faults.append(
            f"{failing} one-shots failed at a REST target answering 503, waiting "
            f"{retry_wait} s per retry; {time.time() - low:.0f}s: target back "
            f"({flaky.refused} requests refused)"
        )

    try:
        outcome, _, got, high = await _run(
            "pending retries",
            work,
            [healthy, waiting],
            seconds,
            inject,
            prepare=prepare,
            drain=DRAIN_S + retry_wait,
        )
    finally:
        await flaky.stop()
    got = got + flaky.received
    low = high - seconds
    outcome.verdict = verify([healthy, waiting], got, low, high)
    # The one-shots over all time, not only the window: each must have arrived.
    retried = verify(waiting, got, 0, high + DRAIN_S + retry_wait)
    assert outcome.recovered is not None
    outcome.recovered["retried_expected"] = retried.expected
    outcome.recovered["retried_delivered"] = retried.delivered
    outcome.recovered["retried_missing"] = retried.missing
    outcome.recovered["healthy_p99_late_s"] = verify(healthy, got, low, high).p99_late_s
    return outcome


SCENARIOS = {
    "kill-rotation": kill_rotation,
    "kill-once": kill_once,
    "broker-outage": broker_outage,
    "targets-down": targets_down,
    "black-hole": black_hole,
    "empty-data-dir": empty_data_dir,
    "pending-retries": pending_retries,
}
