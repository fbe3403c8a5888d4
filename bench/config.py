"""Sizes of each mode, and the goals of issues 7 and 30, in one place."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Sizes:
    mode: str
    bursts: tuple[int, ...]
    steady_rate: int
    steady_seconds: int
    registration: int
    recurring: int
    """Recurring 1 s schedules whose firings show a restart or a failover."""
    idle_seconds: int
    peer_cap_seconds: float
    """How long a peer may take to register (the rest is reported as not reached)."""
    outage_watch_seconds: float
    """How long after a kill a restart/failover may take before it is called failed."""
    empty_restart_watch_seconds: float


QUICK = Sizes(
    mode="quick",
    bursts=(1_000,),
    steady_rate=200,
    steady_seconds=10,
    registration=20_000,
    recurring=50,
    idle_seconds=15,
    peer_cap_seconds=10,
    outage_watch_seconds=45,
    empty_restart_watch_seconds=60,
)
DEFAULT = Sizes(
    mode="default",
    bursts=(10_000,),
    steady_rate=2_000,
    steady_seconds=60,
    registration=100_000,
    recurring=100,
    idle_seconds=60,
    peer_cap_seconds=60,
    outage_watch_seconds=60,
    empty_restart_watch_seconds=120,
)
LONG = Sizes(
    mode="long",
    bursts=(10_000, 100_000),
    steady_rate=2_000,
    steady_seconds=60,
    registration=1_000_000,
    recurring=100,
    idle_seconds=60,
    peer_cap_seconds=180,
    outage_watch_seconds=120,
    empty_restart_watch_seconds=600,
)


def outputs(mode: str) -> tuple[str, str]:
    """The report and the results directory (under ``bench/``) of a run of ``mode``.

    A ``--long`` run writes beside the default run's, not over it: the default
    run stays the headline, the long one adds the 1,000,000 and 100,000 sizes.
    """
    if mode == "long":
        return "RESULTS-long.md", "results-long"
    return "RESULTS.md", "results"


WORKLOADS = ("idle", "registration", "burst", "steady", "failover")
"""In the order they run. ``registration`` also measures scale and restart on its data."""

#: Names ``--only`` accepts, and the workload that produces each.
ALIASES = {
    "idle": "idle",
    "registration": "registration",
    "scale": "registration",
    "restart": "registration",
    "burst": "burst",
    "steady": "steady",
    "failover": "failover",
}


#: Burst and steady run on one worker, then on this many workers of one app:
#: one per core of this machine (a worker is one Python process, one core at most).
SCALED = 2


def scaled(count: int) -> str:
    """The name of our rows measured on ``count`` workers: ``ours``, ``ours2``."""
    return "ours" if count == 1 else f"ours{count}"


#: Our rows in burst and steady: per number of workers, per target.
DELIVERY_ROWS = [f"{scaled(count)}-{kind}" for count in (1, SCALED) for kind in ("kafka", "http")]


#: Seconds from the first command of a burst to its instant, for the sizes that fix it.
#: Issue 30 states its burst so: 100,000 one-shots produced at full speed 30 s
#: before their instant. Other sizes plan the lead by the registration rate
#: measured in the run (:func:`burst_due`).
BURST_LEAD_S = {100_000: 30.0}


def burst_due(n: int, rate: float, now: float) -> int:
    """The instant (epoch seconds) of a burst of ``n`` whose commands start at ``now``.

    A fixed lead holds for every system: registering the burst is then part of
    what is measured, under the same condition for all, and the other goals of
    that size (issue 7's) are measured under it too. Without one: 5 s plus 1.5
    times what registering ``n`` should take at ``rate``, so that each system is
    measured firing a crowd it has stored, not registering it.
    """
    lead = BURST_LEAD_S.get(n)
    if lead is None:
        lead = 5 + 1.5 * n / rate
    return math.ceil(now + lead)


@dataclass(frozen=True)
class Goal:
    """``metric`` of ``workload`` for ``system`` should be ``op`` ``limit`` (in ``unit``)."""

    workload: str
    system: str
    metric: str
    op: Literal["<=", ">="]
    limit: float
    unit: str
    label: str
    size: int | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def met(self, value: float) -> bool:
        return value <= self.limit if self.op == "<=" else value >= self.limit


def goals(sizes: Sizes) -> list[Goal]:
    """The issue's goals for the sizes this run uses (a burst goal exists per size)."""
    found: list[Goal] = []
    burst_goals = {10_000: (0.35, 3.0), 100_000: (2.0, 20.0)}
    steady_goals = (
        ("p99", "s", {"kafka": 0.100, "http": 0.250}),
        ("missing", "", {"kafka": 0, "http": 0}),
    )
    targets = (("kafka", "Kafka"), ("http", "HTTP"))
    rate = sizes.steady_rate
    for count in (1, SCALED):
        ours, on = scaled(count), "" if count == 1 else f", {count} workers"
        for n in sizes.bursts:
            kafka_p99, http_all = burst_goals.get(n, burst_goals[10_000])
            kafka_label = f"burst {n:,} Kafka p99{on}"
            http_label = f"burst {n:,} HTTP all delivered{on}"
            found += [
                Goal("burst", f"{ours}-kafka", "p99", "<=", kafka_p99, "s", kafka_label, n),
                Goal("burst", f"{ours}-http", "last", "<=", http_all, "s", http_label, n),
            ]
        if count == 1 and 100_000 in sizes.bursts:
            # Issue 30, on one worker: the whole burst stored before its instant,
            # which is 30 s after its first command (BURST_LEAD_S), and delivered
            # within 1 s of it. Stated for the Kafka target: REST deliveries have
            # their own goal above (all delivered within 20 s), as the target's
            # POSTs, not the scheduler, set how fast 100,000 of them go.
            found += [
                Goal(
                    "burst",
                    f"{ours}-{kind}",
                    "stored_before_due_s",
                    ">=",
                    0,
                    "s",
                    f"burst 100,000 all stored before the instant ({target})",
                    100_000,
                )
                for kind, target in targets
            ]
            found.append(
                Goal(
                    "burst",
                    f"{ours}-kafka",
                    "p99",
                    "<=",
                    1.0,
                    "s",
                    "burst 100,000 Kafka p99, 30 s lead (issue 30)",
                    100_000,
                )
            )
        for metric, unit, limits in steady_goals:
            for kind, target in targets:
                label = f"steady {rate:,}/s {target} {metric}{on}"
                found.append(
                    Goal("steady", f"{ours}-{kind}", metric, "<=", limits[kind], unit, label)
                )
    found += [
        Goal(
            "registration",
            "ours",
            "rate",
            ">=",
            30_000,
            "commands/s",
            f"registration ({sizes.registration:,} commands)",
        ),
        Goal(
            "registration",
            scaled(SCALED),
            "rate",
            ">=",
            # 1,000,000 stored in 20 s by all the workers of one machine.
            50_000,
            "commands/s",
            f"registration ({sizes.registration:,} commands), {SCALED} workers: the machine",
        ),
        Goal(
            "scale",
            "ours",
            "rss_mib",
            "<=",
            500,
            "MiB",
            f"scale: RSS with {sizes.registration:,} schedules"
            + (" (goal is for 1,000,000)" if sizes.registration != 1_000_000 else ""),
        ),
        Goal("restart", "ours-data", "recovered_s", "<=", 5, "s", "restart with data dir"),
        Goal("restart", "ours-empty", "recovered_s", "<=", 30, "s", "restart from empty data dir"),
        Goal("failover", "ours", "first_on_time_s", "<=", 10, "s", "failover"),
        Goal("idle", "ours", "millicores", "<=", 4, "millicores", "idle CPU"),
        Goal("idle", "ours", "rss_mib", "<=", 80, "MiB", "idle RSS"),
    ]
    return found
