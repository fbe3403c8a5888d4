"""Run the fault scenarios and write their report.

    .venv/bin/python -m faults.run            # the long form: writes faults/REPORT.md
    .venv/bin/python -m faults.run --short    # the form CI runs (tests/faults), printed only
    .venv/bin/python -m faults.run --only kill-rotation

The long form runs each scenario for several minutes with hundreds of
schedules firing every second; the short form, a minute with fewer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faults.harness import Verdict
from faults.scenarios import SCENARIOS, Outcome

REPORT = Path(__file__).parent / "REPORT.md"
RESULTS = Path(__file__).parent / "results.json"

SHORT: dict[str, dict[str, Any]] = {
    "kill-rotation": {"schedules": 90, "seconds": 45, "every": 20},
    "kill-once": {"schedules": 100, "seconds": 30},
    "broker-outage": {"schedules": 90, "seconds": 50, "outage": 15},
    "targets-down": {"schedules": 60, "seconds": 50, "outage": 10},
    "black-hole": {"schedules": 90, "seconds": 30, "holes": 50, "hole_timeout": 30},
    "empty-data-dir": {"schedules": 90, "seconds": 35, "every": 20},
    "pending-retries": {
        "schedules": 60,
        "seconds": 50,
        "failing": 3000,
        "down": 20,
        "retry_wait": 10,
    },
}
LONG: dict[str, dict[str, Any]] = {
    "kill-rotation": {"schedules": 300, "seconds": 300, "every": 20},
    "kill-once": {"schedules": 100, "seconds": 30},
    "broker-outage": {"schedules": 300, "seconds": 120, "outage": 15},
    "targets-down": {"schedules": 300, "seconds": 120, "outage": 20},
    "black-hole": {"schedules": 300, "seconds": 120, "holes": 100, "hole_timeout": 60},
    "empty-data-dir": {"schedules": 300, "seconds": 120, "every": 30},
    "pending-retries": {
        "schedules": 300,
        "seconds": 150,
        "failing": 30_000,
        "down": 60,
        "retry_wait": 30,
    },
}


async def run(names: list[str], sizes: dict[str, dict[str, Any]]) -> list[Outcome]:
    outcomes = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as work:
            print(f"[faults] {name} {sizes[name]} ...", flush=True)
            outcome = await SCENARIOS[name](Path(work), **sizes[name])
            print(f"[faults] {name}: {json.dumps(outcome.as_dict(), default=str)}", flush=True)
            outcomes.append(outcome)
    return outcomes


def report(outcomes: list[Outcome], command: str) -> str:
    lines = [
        "# Fault suite report",
        "",
        f"Written by `{command}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, machine "
        f"`{platform.node()}`. Real Kafka 4.1.1, three `scheduler worker` processes, an "
        "HTTP server, redis-server (append-only file, fsync always) and a Kafka target topic "
        "(on a cluster of its own in `targets down`). The load is `delay-recur` "
        "schedules firing every second (`fire_all`, retries every 2 s), spread evenly over "
        "REST, Kafka and Redis targets; `pending retries` adds one-shots to a failing target, "
        "`black-hole target` schedules at a server that never answers (not verified). The "
        "verifier knows every nominal instant due in the window in which the faults were "
        "injected, and counts what the targets received. Scenarios: `faults/scenarios.py`; "
        "sizes: `LONG` in `faults/run.py`.",
        "",
        "- **delivered**: instants received at least once, with the right firing id.",
        "- **missing**: instants never received.",
        "- **duplicated**: extra deliveries of an instant (same firing id: allowed).",
        "- **wrong**: deliveries with another id, or for an instant that should not exist.",
        "- **lateness**: from the instant to the first arrival (REST and Kafka targets).",
        "",
        "| scenario | faults | schedules | window s | expected | delivered | missing "
        "| duplicated | wrong | worst late s | p99 late s | peak worker RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        v = o.verdict
        lines.append(
            f"| {o.scenario} | {len(o.faults)} | {o.schedules} | {o.window_s:g} | {v.expected} "
            f"| {v.delivered} | {v.missing} | {v.duplicated} | {v.wrong} | {v.worst_late_s} "
            f"| {v.p99_late_s} | {o.peak_rss_mib} |"
        )
    lines += ["", *goals(outcomes), "", "## Faults and recovery", ""]
    for o in outcomes:
        lines.append(f"**{o.scenario}**: " + "; ".join(o.faults))
        if o.recovered:
            lines.append(f"  Recovery: {json.dumps(o.recovered)}")
        if o.verdict.missing_examples or o.verdict.wrong_examples:
            lines.append(
                f"  Examples: missing {o.verdict.missing_examples}, "
                f"wrong {o.verdict.wrong_examples}"
            )
        lines.append("")
    return "\n".join(lines)


def goals(outcomes: list[Outcome]) -> list[str]:
    """The issue's goals that these runs measure, each with its figure."""
    by = {o.scenario: o for o in outcomes}
    out = ["## Goals", ""]
    every = all(o.verdict.missing == 0 and o.verdict.wrong == 0 for o in outcomes)
    out.append(f"- Every scenario 0 missing, 0 wrong: {'yes' if every else 'NO'}.")
    once = by.get("one kill -9")
    if once and once.recovered:
        dup = once.verdict.duplicated
        out.append(f"- Duplicates after one kill -9 at 100 firings/s <= 100: {dup}.")
    hole = by.get("black-hole target")
    if hole:
        out.append(
            "- Healthy targets beside a black hole, p99 lateness <= 250 ms, none missing: "
            f"{hole.verdict.p99_late_s * 1000:.0f} ms, {hole.verdict.missing} missing."
        )
    for o in outcomes:
        if o.scenario.startswith("broker down") and o.recovered:
            p99 = o.recovered.get("p99_late_s_from_20s_after")
            if p99 is not None:
                out.append(
                    "- Broker down: workers up, every instant delivered, p99 <= 250 ms from "
                    f"20 s after it is back: {o.recovered['workers_alive_at_end']} of "
                    f"{o.recovered['workers']} up, {o.verdict.missing} missing, "
                    f"{p99 * 1000:.0f} ms."
                )
    pending = by.get("pending retries")
    if pending and pending.recovered:
        r = pending.recovered
        out.append(
            f"- Pending retries: {r['retried_delivered']} of {r['retried_expected']} one-shots "
            f"delivered once their target was back ({r['retried_missing']} missing); healthy "
            f"load beside them p99 {r['healthy_p99_late_s'] * 1000:.0f} ms."
        )
    out.append(
        "- 100,000 pending retries add <= 20 MiB to a worker: measured by "
        "`python -m bench.retries`, see `bench/results/retries.md`."
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m faults.run", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the short form CI runs")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), metavar="NAME")
    args = parser.parse_args()
    names = args.only or list(SCENARIOS)
    sizes = SHORT if args.short else LONG
    outcomes = asyncio.run(run(names, sizes))
    command = "python -m faults.run" + (" --short" if args.short else "")
    if args.only and not args.short and RESULTS.exists():
        # A long run of some scenarios replaces their rows; the others stay as measured.
        fresh = {o.scenario for o in outcomes}
        kept = [o for o in load(RESULTS) if o.scenario not in fresh]
        order = {o.scenario: i for i, o in enumerate(load(RESULTS))}
        outcomes = sorted(kept + outcomes, key=lambda o: order.get(o.scenario, len(order)))
        command += " (and --only " + " ".join(args.only) + " for the rows it names)"
    text = report(outcomes, command)
    print(text)
    if not args.short:
        REPORT.write_text(text)
        RESULTS.write_text(
            json.dumps([o.as_dict() for o in outcomes], indent=2, default=str) + "\n"
        )


def load(path: Path) -> list[Outcome]:
    """The outcomes a long run saved."""
    out = []
    for item in json.loads(path.read_text()):
        item.pop("ok", None)
        item["verdict"] = Verdict(**item["verdict"])
        out.append(Outcome(**item))
    return out


if __name__ == "__main__":
    main()
