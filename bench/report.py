"""bench/RESULTS.md and bench/results/chart.png, from the results the run collected.

Every number in the report comes from ``results`` (measured) or from the
bench's own configuration (goals, sizes, settings): none is typed here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench import config, stats
from bench.config import SCALED, Goal, Sizes, scaled
from bench.profile import RATE

NAMES = {
    "ours-kafka": "kafka-scheduler → Kafka",
    "ours-http": "kafka-scheduler → HTTP",
    f"{scaled(SCALED)}-kafka": f"kafka-scheduler, {SCALED} workers → Kafka",
    f"{scaled(SCALED)}-http": f"kafka-scheduler, {SCALED} workers → HTTP",
    "ours": "kafka-scheduler",
    scaled(SCALED): f"kafka-scheduler, {SCALED} workers",
    "ours-data": "kafka-scheduler, same data dir",
    "ours-empty": "kafka-scheduler, empty data dir",
    "apscheduler-memory": "APScheduler 3, memory store",
    "apscheduler-sqlite": "APScheduler 3, SQLite store",
    "rq-scheduler": "rq-scheduler + RQ workers",
    "kafka-broker": "Kafka broker (reference)",
    "redis-server": "redis-server (reference)",
}
COLORS = {
    "ours-kafka": "#1f77b4",
    "ours-http": "#6baed6",
    f"{scaled(SCALED)}-kafka": "#08519c",
    f"{scaled(SCALED)}-http": "#9ecae1",
    "ours": "#1f77b4",
    scaled(SCALED): "#08519c",
    "ours-data": "#1f77b4",
    "ours-empty": "#6baed6",
    "apscheduler-memory": "#ff7f0e",
    "apscheduler-sqlite": "#d62728",
    "rq-scheduler": "#2ca02c",
    "kafka-broker": "#bbbbbb",
    "redis-server": "#dddddd",
}
ORDER = list(NAMES)
SHORT = {
    "ours-kafka": "ours\n→ Kafka",
    "ours-http": "ours\n→ HTTP",
    f"{scaled(SCALED)}-kafka": f"ours, {SCALED} w.\n→ Kafka",
    f"{scaled(SCALED)}-http": f"ours, {SCALED} w.\n→ HTTP",
    "ours": "ours",
    scaled(SCALED): f"ours, {SCALED} w.",
    "apscheduler-memory": "APScheduler\nmemory",
    "apscheduler-sqlite": "APScheduler\nSQLite",
    "rq-scheduler": "rq-scheduler\n+ RQ",
}


SCALED_NOTE = (
    f"*{SCALED} workers*: {SCALED} `scheduler worker` processes of one app, one per core of "
    "this machine (a worker is one Python process and uses one core at most). Faust splits "
    "the partitions between them, and each keeps a standby copy of the other's tables "
    "(`SCHEDULER_STANDBY_REPLICAS`, 1 by default). Their worker CPU is added up. The "
    "one-worker columns measure a single process, as the goals' Go peer ran one instance."
)


def name(system: str) -> str:
    return NAMES.get(system, system)


def ordered(rows: dict[str, Any]) -> list[str]:
    return sorted(rows, key=lambda s: ORDER.index(s) if s in ORDER else len(ORDER))


# --------------------------------------------------------------------------- formatting


def secs(value: Any) -> str:
    if not isinstance(value, int | float) or math.isnan(value):
        return "-"
    if abs(value) < 0.1:
        return f"{value * 1000:.0f} ms"
    if abs(value) < 10:
        return f"{value:.2f} s"
    return f"{value:.1f} s"


def num(value: Any, unit: str = "") -> str:
    if not isinstance(value, int | float) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:,.1f}"
    return f"{text}{unit}"


def cores(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "-"


def mib(value: Any) -> str:
    return num(value, " MiB")


def show(value: Any, unit: str) -> str:
    if unit == "s":
        return secs(value)
    if unit == "MiB":
        return mib(value)
    return num(value, f" {unit}" if unit else "")


def cell(row: dict[str, Any], key: str, fmt: Any) -> str:
    if "na" in row:
        return "n/a"
    if key in row and row[key] is not None:
        return str(fmt(row[key]))
    if "error" in row:
        return "**failed**"
    return "-"


def table(rows: dict[str, dict[str, Any]], lines: list[tuple[str, str, Any]]) -> list[str]:
    """Metrics down, systems across; then the errors and notes of the systems, if any."""
    systems = ordered(rows)
    out = [
        "| | " + " | ".join(name(s) for s in systems) + " |",
        "|---|" + "---:|" * len(systems),
    ]
    for label, key, fmt in lines:
        out.append(f"| {label} | " + " | ".join(cell(rows[s], key, fmt) for s in systems) + " |")
    notes = []
    for s in systems:
        row = rows[s]
        for kind in ("na", "error", "note"):
            if row.get(kind):
                text = str(row[kind]).replace("\n", " ").strip()
                if len(text) > 600:
                    text = text[:600] + " …"
                label = {"na": "not applicable", "error": "failed", "note": "note"}[kind]
                notes.append(f"- {name(s)}, {label}: {text}")
    return [*out, "", *notes] if notes else out


# --------------------------------------------------------------------------- goals


def goal_key(goal: Goal) -> str:
    return f"burst-{goal.size}" if goal.workload == "burst" else goal.workload


def goal_rows(results: dict[str, Any], sizes: Sizes) -> list[dict[str, Any]]:
    out = []
    for goal in config.goals(sizes):
        entry = results["workloads"].get(goal_key(goal))
        row: dict[str, Any] = {"goal": goal, "value": None, "verdict": "not measured"}
        if entry is not None:
            measured = entry.get("rows", {}).get(goal.system, {})
            value = measured.get(goal.metric)
            if isinstance(value, int | float) and not math.isnan(value):
                row["value"] = value
                row["verdict"] = verdict(goal, value)
            elif "error" in measured:
                row["verdict"] = "**failed**: " + str(measured["error"]).splitlines()[0][:200]
            elif goal.metric == "last" and measured.get("missing"):
                row["verdict"] = f"**missed**: {measured['missing']:,} never delivered"
        out.append(row)
    return out


def verdict(goal: Goal, value: float) -> str:
    if goal.met(value):
        return "met"
    if goal.op == "<=":
        over = value - goal.limit
        times = f" ({value / goal.limit:.1f}x the goal)" if goal.limit > 0 else ""
        return f"**missed** by {show(over, goal.unit)}{times}"
    short = goal.limit - value
    times = f" ({goal.limit / value:.1f}x short)" if value > 0 else ""
    return f"**missed** by {show(short, goal.unit)}{times}"


# --------------------------------------------------------------------------- the chart


def chart(results: dict[str, Any], sizes: Sizes, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = results["workloads"]
    fig, axes = plt.subplots(2, 3, figsize=(18, 10.5))
    fig.suptitle(
        f"kafka-scheduler vs APScheduler 3 and rq-scheduler — {results['meta'].get('date', '')}, "
        f"{results['meta'].get('machine', {}).get('cores', '?')} cores, "
        f"{sizes.mode} run (dashed lines: goals)",
        fontsize=13,
    )

    hatches = ["", "///", "..."]

    def label_of(value: float, unit: str) -> str:
        if unit == "s":
            return f"{value * 1000:.0f}ms" if value < 0.1 else f"{value:.2g}s"
        if value >= 10_000:
            return f"{value / 1000:.0f}k"
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}"

    def bars(
        ax: Any,
        title: str,
        rows: dict[str, Any],
        keys: list[tuple[str, str]],
        unit: str,
    ) -> None:
        systems = [s for s in ordered(rows) if not rows[s].get("reference")]
        width = 0.8 / max(1, len(keys))
        for k, (key, label) in enumerate(keys):
            values = []
            for s in systems:
                v = rows[s].get(key)
                values.append(v if isinstance(v, int | float) and v > 0 else 0)
            xs = [i + (k - (len(keys) - 1) / 2) * width for i in range(len(systems))]
            ax.bar(
                xs,
                values,
                width,
                label=label,
                color=[COLORS.get(s, "#888") for s in systems],
                alpha=1.0 - 0.25 * k,
                hatch=hatches[k % len(hatches)],
                edgecolor="black",
                linewidth=0.4,
            )
            for x, s, v in zip(xs, systems, values, strict=True):
                row = rows[s]
                if v > 0:
                    text, color = label_of(v, unit), "black"
                elif isinstance(row.get(key), str):
                    text, color = row[key], "dimgray"
                elif "na" in row:
                    text, color = "n/a", "dimgray"
                elif row.get(key) == 0:
                    text, color = "0", "black"
                elif "error" in row:
                    text, color = "failed", "darkred"
                else:
                    text, color = "none", "darkred"
                ax.annotate(
                    text,
                    (x, v if v > 0 else 0),
                    xycoords=("data", "data" if v > 0 else "axes fraction"),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=6.5,
                    rotation=90 if len(keys) > 1 else 0,
                    color=color,
                )
        for i, s in enumerate(systems):
            if rows[s].get("missing"):
                ax.annotate(
                    f"{rows[s]['missing']:,} missing",
                    (i, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, -10),
                    textcoords="offset points",
                    ha="center",
                    fontsize=7.5,
                    color="darkred",
                )
        ax.set_xticks(range(len(systems)))
        ax.set_xticklabels([SHORT.get(s, s) for s in systems], fontsize=8)
        ax.set_yscale("log")
        ax.margins(y=0.15)
        ax.set_title(title, fontsize=10.5, pad=20 if len(keys) > 1 else 6)
        if len(keys) > 1:
            ax.legend(
                fontsize=7.5,
                loc="lower center",
                bbox_to_anchor=(0.5, 1.0),
                ncol=len(keys),
                frameon=False,
                borderaxespad=0.1,
            )
        ax.grid(axis="y", alpha=0.3)

    def goal_line(ax: Any, value: float, label: str) -> None:
        ax.axhline(value, linestyle="--", color="black", linewidth=1)
        ax.annotate(
            label,
            (1.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(-3, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
        )

    def empty(ax: Any, title: str) -> None:
        ax.set_title(title, fontsize=11)
        ax.text(0.5, 0.5, "not measured in this run", ha="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])

    n = sizes.bursts[0]
    burst = workloads.get(f"burst-{n}")
    ax = axes[0][0]
    if burst:
        bars(
            ax,
            f"burst: {n:,} one-shots due in the same second — lateness (s)",
            burst["rows"],
            [("p50", "p50"), ("p99", "p99"), ("last", "last delivery")],
            "s",
        )
        for goal in config.goals(sizes):
            # The other burst goal (stored before the instant) is no lateness.
            lateness = goal.metric in ("p99", "last")
            ours = goal.system.startswith("ours-")
            if goal.workload == "burst" and goal.size == n and ours and lateness:
                goal_line(ax, goal.limit, goal.label)
    else:
        empty(ax, "burst")

    steady = workloads.get("steady")
    ax = axes[0][1]
    if steady:
        bars(
            ax,
            f"steady: {sizes.steady_rate:,} firings/s for {sizes.steady_seconds} s — lateness (s)",
            steady["rows"],
            [("p50", "p50"), ("p99", "p99"), ("max", "max")],
            "s",
        )
        for goal in config.goals(sizes):
            if (
                goal.workload == "steady"
                and goal.metric == "p99"
                and goal.system.startswith("ours-")
            ):
                goal_line(ax, goal.limit, goal.label)
        labels = []
        for s in ordered(steady["rows"]):
            rate = steady["rows"][s].get("rate")
            shown = f"\n{rate:,.0f}/s" if isinstance(rate, int | float) else ""
            labels.append(SHORT.get(s, s) + shown)
        ax.set_xticklabels(labels, fontsize=8)
    else:
        empty(ax, "steady")

    reg = workloads.get("registration")
    ax = axes[0][2]
    if reg:
        bars(
            ax,
            f"registration: commands stored and timed per second ({sizes.registration:,})",
            reg["rows"],
            [("rate", "commands/s")],
            "/s",
        )
        goal_line(ax, 30_000, "goal")
    else:
        empty(ax, "registration")

    ax = axes[1][0]
    scale, idle = workloads.get("scale"), workloads.get("idle")
    if scale or idle:
        rows: dict[str, dict[str, Any]] = {}
        for s, row in (scale or {}).get("rows", {}).items():
            rows.setdefault(s, {})["scale"] = row.get("rss_mib")
            if "error" in row:
                rows[s]["error"] = row["error"]
        for s, row in (idle or {}).get("rows", {}).items():
            if not row.get("reference"):
                rows.setdefault(s, {})["idle"] = row.get("rss_mib")
        bars(
            ax,
            f"memory (MiB RSS): idle, and with {sizes.registration:,} schedules",
            rows,
            [("idle", "idle"), ("scale", f"{sizes.registration:,} schedules")],
            "MiB",
        )
        for goal in config.goals(sizes):
            if goal.metric == "rss_mib":
                goal_line(
                    ax, goal.limit, "scale goal (1M)" if goal.workload == "scale" else "idle goal"
                )
    else:
        empty(ax, "memory")

    ax = axes[1][1]
    restart, failover = workloads.get("restart"), workloads.get("failover")
    if restart or failover:
        rows = {}
        for s, row in (restart or {}).get("rows", {}).items():
            key = "data" if s != "ours-empty" else "empty"
            target = "ours" if s.startswith("ours") else s
            rows.setdefault(target, {})[f"restart_{key}"] = row.get("recovered_s")
            if not s.startswith("ours"):
                rows[target]["restart_empty"] = "n/a"
            if row.get("jobs_after_restart") == 0:
                rows[target]["restart_data"] = "all lost"
        for s, row in (failover or {}).get("rows", {}).items():
            rows.setdefault(s, {})["failover"] = (
                "n/a" if "na" in row else row.get("first_on_time_s")
            )
        bars(
            ax,
            "recovery (s): until every schedule is back on time",
            rows,
            [
                ("restart_data", "restart, same data"),
                ("restart_empty", "restart, empty data dir"),
                ("failover", "failover: first on-time firing"),
            ],
            "s",
        )
        for goal in config.goals(sizes):
            if goal.workload in ("restart", "failover"):
                goal_line(ax, goal.limit, goal.label)
    else:
        empty(ax, "restart / failover")

    ax = axes[1][2]
    if idle:
        bars(
            ax,
            f"idle CPU (millicores over {idle.get('seconds', '?')} s)",
            idle["rows"],
            [("millicores", "millicores")],
            "millicores",
        )
        goal_line(ax, 4, "goal")
    else:
        empty(ax, "idle")

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- RESULTS.md


def _sizes(results: dict[str, Any]) -> Sizes:
    mode = results["meta"].get("mode", "default")
    return {"quick": config.QUICK, "long": config.LONG}.get(mode, config.DEFAULT)


def write(results: dict[str, Any], here: Path) -> None:
    sizes = _sizes(results)
    name, results_dir = config.outputs(sizes.mode)
    chart_path = here / results_dir / "chart.png"
    chart_error = None
    try:
        chart(results, sizes, chart_path)
    except Exception as exc:  # the numbers matter more than the picture
        chart_error = f"{type(exc).__name__}: {exc}"
    long = None
    if sizes.mode != "long":
        long_json = here / config.outputs("long")[1] / "results.json"
        if long_json.exists():
            try:
                long = json.loads(long_json.read_text())
            except ValueError:
                long = None
    (here / name).write_text(markdown(results, sizes, chart_error, long))


#: Workloads whose goals a --long run measures at the sizes the issue states.
LONG_ONLY = ("registration", "scale", "restart", "burst-100000")


def long_rows(long: dict[str, Any]) -> list[str]:
    """The goals the last ``--long`` run measured at 1,000,000 schedules and the 100k burst."""
    meta = long.get("meta", {})
    rows = [r for r in goal_rows(long, config.LONG) if goal_key(r["goal"]) in LONG_ONLY]
    rows = [r for r in rows if r["verdict"] != "not measured"]
    if not rows:
        return []
    out = [
        "",
        f"At those sizes, the last `--long` run ([RESULTS-long.md](RESULTS-long.md), "
        f"`{meta.get('command')}` on {meta.get('date')}, commit `{meta.get('commit') or '?'}`) "
        "measured:",
        "",
        *goal_table(rows),
    ]
    return out


def goal_table(rows: list[dict[str, Any]]) -> list[str]:
    """Goal rows (:func:`goal_rows`) as a table: goal, target, measured, verdict."""
    out = ["| goal | target | measured | verdict |", "|---|---|---|---|"]
    for row in rows:
        goal = row["goal"]
        out.append(
            f"| {goal.label} | {goal.op} {show(goal.limit, goal.unit)} | "
            f"{show(row['value'], goal.unit) if row['value'] is not None else '-'} | "
            f"{row['verdict']} |"
        )
    return out


def markdown(
    results: dict[str, Any],
    sizes: Sizes,
    chart_error: str | None,
    long: dict[str, Any] | None = None,
) -> str:
    meta = results["meta"]
    w = results["workloads"]
    machine = meta.get("machine", {})
    v = meta.get("versions", {})
    settings = meta.get("settings", {})
    out: list[str] = [
        "# Benchmarks: kafka-scheduler vs APScheduler 3 and rq-scheduler",
        "",
        f"Written by `{meta.get('command')}` on {meta.get('date')} "
        f"({meta.get('elapsed_s', 0) / 60:.0f} min, {sizes.mode} sizes, commit "
        f"`{meta.get('commit') or '?'}`). Machine: {machine.get('cores')} cores "
        f"({machine.get('cpu') or 'unknown CPU'}), {machine.get('memory_gib')} GiB, "
        f"{machine.get('os')}. Every number below was measured by that run and written by "
        "`bench/report.py`.",
        "",
        f"Versions: Kafka {v.get('kafka')}, Python {v.get('python')}, faust-streaming "
        f"{v.get('faust-streaming')}, aiokafka {v.get('aiokafka')}, rocksdict "
        f"{v.get('rocksdict')}, APScheduler {v.get('APScheduler')}, SQLAlchemy "
        f"{v.get('SQLAlchemy')} (SQLite {v.get('sqlite')}), rq {v.get('rq')}, rq-scheduler "
        f"{v.get('rq-scheduler')}, redis-server {v.get('redis-server')}, py-spy {v.get('py-spy')}"
        + (f", confluent-kafka {v['confluent-kafka']}." if v.get("confluent-kafka") else "."),
        "",
    ]
    if meta.get("only"):
        out += [
            f"This run re-measured only: {', '.join(meta['only'])}; the other workloads are "
            "from the earlier run named in their section.",
            "",
        ]
    if chart_error:
        out += [f"The chart could not be drawn: {chart_error}", ""]
    else:
        out += [f"![results at a glance]({config.outputs(sizes.mode)[1]}/chart.png)", ""]

    out += ["## Goals (issues 7 and 30)", "", *goal_table(goal_rows(results, sizes))]
    if sizes.registration < 1_000_000:
        out += [
            "",
            f"The registration, scale and restart goals are stated for 1,000,000 schedules; "
            f"this run used {sizes.registration:,} (the `--long` run uses 1,000,000).",
        ]
        out += long_rows(long) if long else []
    out.append("")
    out += limits(results, sizes)

    for n in sizes.bursts:
        entry = w.get(f"burst-{n}")
        out += [f"## Burst: {n:,} one-shot schedules due in the same second", ""]
        if not entry:
            out += ["Not measured in this run.", ""]
            continue
        out += [
            _ran(entry),
            "",
            "Lateness is arrival at the target minus the due instant. *Fired*: for our "
            "service, `fired_at - scheduled_for` of the firing records on the `firings` topic; "
            "negative when the firing was written ahead of its instant (`fire_ahead`, 5 s by "
            "default) and held by the executor until then. "
            "*Stored before due*: "
            "how long before the due instant the last schedule was stored (negative: the "
            "burst started before registration ended). "
            + (
                f"The commands are produced at full speed from {config.BURST_LEAD_S[n]:g} s "
                "before the instant (issue 30; *lead* is what it was, less the time "
                "the commands took to build), for every system. Our worker CPU and "
                "profile cover registering too, from the first command."
                if n in config.BURST_LEAD_S
                else "The instant is 5 s plus 1.5 times what registering the burst should take "
                "at the rate the run measured, after the first command."
            ),
            "",
            SCALED_NOTE,
            "",
            *table(
                entry["rows"],
                [
                    ("delivered", "delivered", num),
                    ("missing", "missing", num),
                    ("duplicates", "duplicates", num),
                    ("lateness p50", "p50", secs),
                    ("lateness p99", "p99", secs),
                    ("last delivery", "last", secs),
                    ("fired (on `firings`) p50", "fired_p50", secs),
                    ("fired (on `firings`) p99", "fired_p99", secs),
                    ("worker CPU (cores)", "worker_cores", cores),
                    ("Kafka broker CPU (cores)", "broker_cores", cores),
                    ("machine CPU busy", "machine_busy_pct", lambda x: num(x, " %")),
                    ("lead (first command to instant)", "lead_s", secs),
                    ("registering took", "registered_s", secs),
                    ("stored before due", "stored_before_due_s", secs),
                ],
            ),
            "",
        ]

    entry = w.get("steady")
    out += [f"## Steady: {sizes.steady_rate:,} firings/s for {sizes.steady_seconds} s", ""]
    if entry:
        out += [
            _ran(entry),
            "",
            f"{sizes.steady_rate:,} schedules firing every second, their phases spread evenly "
            "over the second. Counted: the instants due inside the window; *rate*: "
            "deliveries that arrived inside it, per second. A firing not delivered within "
            "the grace after the window counts as missing. Our worker counts the instants it "
            "did not fire itself (`scheduler_missed_instants_total`: more than 1 s late when "
            "due, coalesced by the `fire_once` misfire policy).",
            "",
            SCALED_NOTE,
            "",
            *table(
                entry["rows"],
                [
                    ("rate achieved", "rate", lambda x: num(x, "/s")),
                    ("expected", "expected", num),
                    ("missing", "missing", num),
                    ("duplicates", "duplicates", num),
                    ("lateness p50", "p50", secs),
                    ("lateness p99", "p99", secs),
                    ("lateness max", "max", secs),
                    (f"lateness p99 after the first {stats.SETTLE:g} s", "p99_settled", secs),
                    ("fired (on `firings`) p50", "fired_p50", secs),
                    ("fired (on `firings`) p99", "fired_p99", secs),
                    ("worker CPU (cores)", "worker_cores", cores),
                    ("Kafka broker CPU (cores)", "broker_cores", cores),
                    ("machine CPU busy", "machine_busy_pct", lambda x: num(x, " %")),
                    (f"more than {stats.ON_TIME:g} s late", "late_over_1s", num),
                    ("instants the worker coalesced or skipped", "worker_missed", num),
                ],
            ),
            "",
        ]
    else:
        out += ["Not measured in this run.", ""]

    entry = w.get("registration")
    out += [f"## Registration: {sizes.registration:,} commands into one worker", ""]
    if entry:
        out += [
            _ran(entry),
            "",
            "Our service: the commands wait on `schedule-commands` before the worker starts; "
            "the rate is `scheduler_commands_applied_total` (stored in the table and in the "
            "due index) per second while it drains them. APScheduler: `add_job` in the "
            "running scheduler's process. rq-scheduler: `enqueue_at` from one client. Peers "
            f"stop at a {sizes.peer_cap_seconds:g} s cap.",
            "",
            *table(
                entry["rows"],
                [
                    ("commands stored", "applied", num),
                    ("commands/s", "rate", lambda x: num(x, "/s")),
                    ("seconds", "seconds", secs),
                    ("producer's own rate", "produce_rate", lambda x: num(x, "/s")),
                    ("worker start to first stored", "first_applied_after_start_s", secs),
                    ("worker CPU per command", "cpu_us_per_command", lambda x: num(x, " µs")),
                    (
                        "floor: Faust's consumer alone, records/s",
                        "floor_rate",
                        lambda x: num(x, "/s"),
                    ),
                    ("floor: CPU per record", "floor_cpu_us", lambda x: num(x, " µs")),
                ],
            ),
            "",
            "The floor (`bench/floor.py`): a worker with the same Faust and aiokafka, patched "
            "as ours, whose one agent takes the same commands in batches as ours do and "
            "acknowledges them, with nothing else: no parsing, validation or storage. It is "
            "as fast as any agent of ours can be handed commands on this machine.",
            "",
            *budget(entry["rows"].get("ours", {})),
        ]
    else:
        out += ["Not measured in this run.", ""]

    entry = w.get("scale")
    out += ["## Scale: resident memory holding the registered schedules", ""]
    if entry:
        out += [
            _ran(entry),
            "",
            "VmRSS of the process and its children (for rq-scheduler: redis-server, the "
            "scheduler and the workers), a few seconds after the last registration.",
            "",
            *table(
                entry["rows"],
                [
                    ("active schedules", "schedules", num),
                    ("RSS", "rss_mib", mib),
                    ("of which redis-server", "redis_rss_mib", mib),
                    ("RocksDB data dir", "data_dir_mib", mib),
                    ("instants in timer memory", "timer_pending", num),
                ],
            ),
            "",
        ]
    else:
        out += ["Not measured in this run.", ""]

    entry = w.get("restart")
    out += ["## Restart: kill -9 the only worker, start it again", ""]
    if entry:
        out += [
            _ran(entry),
            "",
            f"Besides the registered schedules, {sizes.recurring:,} schedules fire every "
            "second (ours to Kafka, peers over HTTP). The process is killed with SIGKILL and "
            "started again at once: ours first with its data dir, then (killed again) with an "
            "empty one; APScheduler on the same store; for rq-scheduler the scheduler process "
            "(the schedules live in redis). *Recovered*: from the kill until every schedule "
            "delivered again and none has been late since. *Late* means more than "
            f"{stats.ON_TIME:g} s; for a system whose normal running is later than that, "
            f"more than its worst lateness in the {stats.BASELINE:g} s before the kill plus "
            f"{stats.MARGIN:g} s (rq-scheduler polls, so it is often a little over a second "
            "late): the threshold row shows which.",
            "",
            *table(
                entry["rows"],
                [
                    ("schedules held", "schedules_held", num),
                    ("recovered after", "recovered_s", secs),
                    ("all delivered again after", "caught_up_s", secs),
                    ("worker ready after", "ready_s", secs),
                    ("late deliveries", "late_deliveries", num),
                    ("max lateness", "max_lateness", secs),
                    ("on-time threshold", "on_time_threshold_s", secs),
                    ("redelivered (same firing id)", "duplicates", num),
                    ("jobs in the store after restart", "jobs_after_restart", num),
                ],
            ),
            "",
        ]
    else:
        out += ["Not measured in this run.", ""]

    entry = w.get("failover")
    out += ["## Failover: kill -9 one of two workers", ""]
    if entry:
        out += [
            _ran(entry),
            "",
            f"{sizes.recurring:,} schedules fire every second to Kafka; after the kill, "
            "*first on-time firing*: the survivor's first delivery, not late (as defined "
            "for the restart), of a schedule in a partition the killed worker "
            f"owned (session timeout {settings.get('session_timeout_s')} s). For rq-scheduler "
            "two scheduler processes share one redis; one is killed.",
            "",
            *table(
                entry["rows"],
                [
                    ("first on-time firing after", "first_on_time_s", secs),
                    ("all lost schedules on time after", "recovered_s", secs),
                    ("survivor ready (owns all) after", "ready_s", secs),
                    ("schedules lost with the worker", "lost_schedules", num),
                    ("max lateness (lost)", "max_lateness", secs),
                    ("max lateness (kept)", "kept_max_lateness", secs),
                    ("on-time threshold", "on_time_threshold_s", secs),
                    ("redelivered (same firing id)", "duplicates", num),
                ],
            ),
            "",
        ]
    else:
        out += ["Not measured in this run.", ""]

    entry = w.get("idle")
    out += ["## Idle: an empty scheduler doing nothing", ""]
    if entry:
        out += [
            _ran(entry),
            "",
            f"CPU (utime + stime from /proc) over {entry.get('seconds')} s, and VmRSS, after "
            "the system had settled; all measured at the same time. The Kafka broker and "
            "redis-server rows are the stores, for reference.",
            "",
            *table(
                entry["rows"],
                [
                    ("CPU", "millicores", lambda x: num(x, " millicores")),
                    ("RSS", "rss_mib", mib),
                    ("processes", "processes", num),
                ],
            ),
            "",
        ]
    else:
        out += ["Not measured in this run.", ""]

    out += profiles(results.get("profiles", {}), config.outputs(sizes.mode)[1])
    out += method(meta, sizes)
    return "\n".join(out) + "\n"


#: Why each workload's goals are hard for this design; the numbers beside it come
#: from the run (CPU from /proc, shares from the py-spy profiles).
WHY = {
    "burst": (
        "A worker fires each instant ahead of time (`SCHEDULER_FIRE_AHEAD`, 5 s, and up to "
        "30 s for a crowd): the schedule's new state and the firing are written, and the "
        "executor holds the firing until its instant, so the instant itself costs only the "
        "delivery. A new schedule of the compiled lane's shape (`scheduler/streams/fastlane.py`) "
        "is stored and indexed, and its timer wakes it, a crowd's members early; any other "
        "command whose instant is already within its timer's lead (a member of a crowd) is "
        "fired by the agent as it applies the command, in the same batch, with no due-index "
        "entry and no wake-up (`scheduler/streams/apply.py`). Waking, firing and holding "
        "a schedule cost far more than storing it, and on one worker share its core with "
        "the storing (see *registering took* and *fired*). A crowd of Kafka "
        "firings due together is appended to its producer batches a second before its "
        "instant, and at the instant every partition's batches are queued at once; REST "
        "firings go one POST each over kept-alive connections "
        "(`scheduler/targets/http1.py`), at most 256 in flight."
        " On one worker, registering each schedule, firing it and holding its "
        "firing share one core, and the bench's lead (30 s for 100,000, as issue 30 states "
        "it; otherwise 5 s plus 1.5 times what registering the crowd should take at the rate "
        "measured in this run) can be shorter than that CPU when the crowd is large: the "
        "last schedules are then still being registered at the instant, "
        "and their firings are written after it (see *registering took*, *stored before due*, "
        "*worker CPU* and *fired*). Two workers, one per core, split the partitions and so "
        "the work: see their columns."
    ),
    "steady": (
        "Every firing is still a full pass through the worker (wake-up, state write, the "
        "firing produced, consumed again and delivered), in one Python process; firing "
        "ahead takes the timing out of that pass, not its CPU. One worker at this rate "
        "runs close to a full core (see the worker CPU below), so its event loop is rarely "
        "free: a held firing waits for whatever runs when its instant comes (a slice of "
        "wake-ups, a bulk take of queued firings, a garbage collection). The executor "
        "takes queued firings in bulk and goes first while they wait "
        "(`scheduler/streams/delivery.py`), so firings no longer reach it late; what is "
        "left varies from run to run with the rest of the machine's load. Two workers, "
        "one per core, have the room: see their columns."
    ),
    "registration": (
        "A fetch's commands go to the command path as lists, not through Faust's stream "
        "machinery (`scheduler/streams/bulk.py`); a new schedule of a common shape is then "
        "decoded, checked and encoded by the compiled lane (`native/`, "
        "`scheduler/streams/fastlane.py`; any other command is validated with pydantic), "
        "looked up in RocksDB (one multi-get a batch), and stored with two changelog records "
        "(the schedule and its due-index entry); a batch's RocksDB writes go as one write "
        "batch per partition and its records as one Kafka batch per partition. What is left "
        "is fetching, RocksDB, producing and the event loop, in one Python process per "
        "worker: with a command's own work at zero cost, one worker stored 48,000 to 65,000 "
        "commands/s on this machine (measured with a throwaway patch; the commit that wrote "
        "this sentence gives the figures). Two workers on this machine share its two cores "
        "with the broker."
    ),
    "idle": (
        "What an idle worker still does: aiokafka's fetch routine in the consumer thread "
        "(it looks around every 200 ms, every second once idle, and long-polls the broker "
        "every 2 s; see `scheduler/patches/consumer.py`), Faust's fetch loop (a `getmany` "
        "across threads "
        "every second), a group heartbeat every second (failover waits for one), the commit "
        "timer, Faust's stalled-stream check, and each partition timer's look at the "
        "due-index every 15 s. (Taken out, in `scheduler/patches/`: the sampler of Faust's "
        "statistics sensor, which woke the loop every second, `QuietMonitor`; mode's two "
        "keepalives of the consumer thread, which woke both loops every second, "
        "`QuietConsumerThread`; and the agents' supervisors' look every 5 s, now once a "
        "minute, `PatientSupervisor`.)"
    ),
    "failover": (
        "The survivor learns of the dead worker's partitions only when the group coordinator "
        "gives up on it (the session timeout) and the survivor's next heartbeat hears of the "
        "rebalance. Firings the dead worker had written ahead are read again from `firings` "
        "and delivered at their instants; later instants wait until the survivor has "
        "recovered the tables of the partitions it got (the standby copy makes that short) "
        "and their timers start."
    ),
    "scale": (
        "RocksDB memtables (4 MiB x 2 per partition for schedules) and block caches are "
        "bounded; the rest grows with the Python objects of the schedules held in memory."
    ),
    "restart": (
        "A restarted worker rejoins its group as the same static member, then reads what "
        "its data dir lacks from the changelogs before its timers start; from an empty data "
        "dir that is every schedule."
    ),
}
PROFILE_OF = {
    "burst": ("burst-kafka", "burst-http"),
    "steady": ("steady-kafka", "steady-http"),
    "registration": ("registration",),
}


#: ``bench.pieces``' steps, as the budget table names them.
PIECES = (
    ("lane", "the compiled lane: decode, check, id, partition, first instant, record, index key"),
    ("lookup", "RocksDB multi-get of the batch's keys"),
    ("store", "the due-index key; RocksDB write batches of record and entry"),
    ("records", "both changelog records into Kafka record batches"),
)
#: What the lane does, as the Python path does it (for commands the lane declines).
PYTHON_PIECES = (
    ("parse", "decode and validate the command (pydantic)"),
    ("schedule_id", "its schedule id (SHA-256 of the client tuple)"),
    ("partition", "the partition murmur2 gives the id"),
    ("apply", "its first instant and the new record"),
    ("encode", "the record's JSON"),
)


def registration_goal_us() -> float:
    """µs of CPU a command may cost for one worker on one core to meet the registration goal."""
    found = next(g for g in config.goals(config.DEFAULT) if g.workload == "registration")
    return 1e6 / found.limit


def budget(ours: dict[str, Any]) -> list[str]:
    """Where a command's CPU goes, against what the goal allows (``bench.pieces``)."""
    pieces = ours.get("pieces_us")
    total = ours.get("cpu_us_per_command")
    floor = ours.get("floor_cpu_us")
    failed = [
        f"{what} could not be measured: {ours[key]}"
        for key, what in (
            ("floor_error", "The floor (`bench/floor.py`)"),
            ("pieces_error", "The command's steps (`bench/pieces.py`)"),
        )
        if key in ours
    ]
    if failed:
        return [*failed, ""]
    if not isinstance(total, int | float) or not isinstance(pieces, dict):
        return []
    allowed = registration_goal_us()
    rows = [(f"{label} (`{key}`)", pieces.get(key)) for key, label in PIECES]
    counted = sum(v for _, v in rows if isinstance(v, int | float))
    rows.append(
        (
            "the rest: fetching (aiokafka, in the consumer's thread), the command path's "
            "glue (the backlog, coroutines, bookkeeping, the timer's offer, metrics), "
            "sending the records, the event loop, the garbage collector",
            total - counted,
        )
    )
    python = [pieces.get(key) for key, _ in PYTHON_PIECES]
    if all(isinstance(v, int | float) for v in python):
        spelled = ", ".join(
            f"{label} {num(v, ' µs')}" for (_, label), v in zip(PYTHON_PIECES, python, strict=True)
        )
        python_line = [
            f"The lane's step, done by the Python path (for a command the lane declines, "
            f"`scheduler/streams/fastlane.py`): {spelled}; "
            f"{num(sum(python), ' µs')} in all, against the lane's "
            f"{num(pieces.get('lane'), ' µs')}.",
            "",
        ]
    else:
        python_line = []
    out = [
        "Where a command's CPU goes. The worker's CPU a command, split: each step of the "
        "command path timed alone on the same commands, "
        f"{pieces.get('batch', 0):,} at a time, in a process with nothing else to do "
        "(`bench/pieces.py`, median of its rounds); the rest is the difference. Faust's "
        f"consumer (the floor above, {num(floor, ' µs')} a record) is no longer on this "
        "path: the records of `schedule-commands` go to the command backlog a fetch at a "
        "time (`scheduler/streams/bulk.py`). At the goal "
        f"one core may spend {num(allowed, ' µs')} a command.",
        "",
        "| | µs of CPU a command |",
        "|---|---:|",
        *(f"| {label} | {num(value, ' µs')} |" for label, value in rows),
        f"| **the worker, all of it** | **{num(total, ' µs')}** |",
        f"| the goal's budget ({num(1e6 / allowed, '/s')} on one core) | {num(allowed, ' µs')} |",
        "",
        *python_line,
    ]
    return out


def limits(results: dict[str, Any], sizes: Sizes) -> list[str]:
    """For every workload with a goal missed: by how much, what the run saw, and why."""
    missed: dict[str, list[dict[str, Any]]] = {}
    for row in goal_rows(results, sizes):
        if row["verdict"] != "met" and row["value"] is not None:
            missed.setdefault(row["goal"].workload, []).append(row)
    if not missed:
        return []
    out = ["## What limits the goals still missed", ""]
    w = results["workloads"]
    for workload, rows in missed.items():
        gaps = "; ".join(f"{row['goal'].label}: {row['verdict']}" for row in rows)
        out.append(f"- **{workload}** ({gaps}). {WHY.get(workload, '')}")
        seen = []
        for goal in [row["goal"] for row in rows]:
            entry = w.get(goal_key(goal), {}).get("rows", {}).get(goal.system, {})
            if isinstance(entry.get("worker_cores"), int | float):
                seen.append(
                    f"{name(goal.system)}: worker {entry['worker_cores']:.2f} cores, machine "
                    f"{entry.get('machine_busy_pct', float('nan')):.0f}% busy"
                )
        ours = w.get("registration", {}).get("rows", {}).get("ours", {})
        if workload == "registration" and ours.get("floor_rate"):
            floor = ours["floor_rate"]
            goal = rows[0]["goal"]
            where = (
                "below the goal: no agent behind Faust's consumer reaches it in one worker here"
                if floor < goal.limit
                else "above the goal"
            )
            seen.append(
                f"Faust's consumer alone, taking the same commands and doing nothing with "
                f"them (`bench/floor.py`), drains {num(floor, '/s')} at "
                f"{num(ours.get('floor_cpu_us'), ' µs')} of CPU a record, {where}; the "
                f"command path no longer goes through it (`scheduler/streams/bulk.py`). The "
                f"worker spends {num(ours.get('cpu_us_per_command'), ' µs')} a command"
            )
            pieces = ours.get("pieces_us")
            if isinstance(pieces, dict) and isinstance(pieces.get("sum"), int | float):
                allowed = registration_goal_us()
                own = pieces["sum"]
                seen.append(
                    f"the command path's own steps, each timed alone (`bench/pieces.py`), "
                    f"add up to {num(own, ' µs')} a command ({own / allowed:.1f}x the "
                    f"{num(allowed, ' µs')} the goal allows one core), before fetching, "
                    f"sending and the path's glue: see the budget under Registration"
                )
        for key in PROFILE_OF.get(workload, ()):
            summary = results.get("profiles", {}).get(key, {}).get("summary") or {}
            packs = summary.get("packages", [])[:5]
            if packs:
                shares = ", ".join(f"{p['package']} {p['pct']}%" for p in packs)
                seen.append(f"profile `{key}` (see Profiles below): {shares}")
        if seen:
            out.append("  Measured: " + "; ".join(sorted(set(seen))) + ".")
    out.append("")
    return out


def _ran(entry: dict[str, Any]) -> str:
    return f"Measured {entry.get('ran_at')} by `{entry.get('command')}`."


def profiles(found: dict[str, Any], results_dir: str = "results") -> list[str]:
    out = ["## Profiles of the worker", ""]
    if not found:
        return [*out, "No profile was taken in this run.", ""]
    out += [
        "py-spy sampled the worker (`--nonblocking`, so it did not pause it) while it "
        "worked; open the files in https://www.speedscope.app. Shares are of the samples in "
        "which py-spy found the worker's threads running; the worker's CPU time from /proc "
        "(in the burst and steady tables) is the more exact measure of how busy it was.",
        "",
    ]
    for key in sorted(found):
        entry = found[key]
        link = f"[{entry['file']}]({results_dir}/{entry['file']})" if entry.get("file") else ""
        out += [f"### {key}: {entry.get('what', '')} {link}", ""]
        if entry.get("error"):
            out += [f"No profile: {entry['error']}", ""]
            continue
        summary = entry.get("summary") or {}
        busy = summary.get("seconds_sampled") or 0
        wall = entry.get("wall_s") or 0
        share = f" ({100 * busy / wall:.0f}% of one core)" if wall else ""
        out += [
            f"Busy {busy} s of the {wall} s sampled{share}: "
            f"{summary.get('samples', 0):,} samples at {RATE} Hz.",
            "",
            "| self time, by function | % | | by package of the running frame | % |",
            "|---|---:|---|---|---:|",
        ]
        selfs = summary.get("self", [])[:10]
        packs = summary.get("packages", [])[:10]
        for i in range(max(len(selfs), len(packs))):
            a = selfs[i] if i < len(selfs) else {"frame": "", "pct": ""}
            b = packs[i] if i < len(packs) else {"package": "", "pct": ""}
            out.append(f"| `{a['frame']}` | {a['pct']} | | {b['package']} | {b['pct']} |")
        own = summary.get("scheduler_inclusive", [])[:8]
        if own:
            out += [
                "",
                "Our own code, inclusive: "
                + "; ".join(f"`{o['frame'].split(' (')[0]}` {o['pct']}%" for o in own)
                + ".",
            ]
        out.append("")
    return out


def method(meta: dict[str, Any], sizes: Sizes) -> list[str]:
    settings = meta.get("settings", {})
    return [
        "## How it was measured",
        "",
        "- **One target for all.** Every system delivers to the same aiohttp server, in its "
        "own process, which records each request's arrival time next to the instant it was "
        "scheduled for: `X-Scheduled-For` from our service, the JSON body from the peers. "
        "For Kafka delivery a consumer in its own process (librdkafka's, through "
        "confluent-kafka, assigned to every partition) records each record's arrival, "
        "stamped when the consumer hands it over, against its `X-Scheduled-For` header. "
        "Lateness is measured there, never by the system under test.",
        f"- **Our service**: a local Kafka {meta.get('versions', {}).get('kafka')} (KRaft) "
        f"started by the bench; `scheduler worker` processes with "
        f"`SCHEDULER_PARTITIONS={settings.get('partitions')}`, "
        f"`SCHEDULER_SESSION_TIMEOUT={settings.get('session_timeout_s')}`, "
        "`SCHEDULER_LOG_LEVEL=warning`, each workload on its own app id and topic prefix. "
        "Commands are JSON produced to `schedule-commands` with aiokafka, keyed by schedule "
        "id; one-shots are `date` schedules with an explicit UTC offset, recurring ones "
        "`delay-recur` of 1 s (their acceptance timestamps spread over one second).",
        "- **APScheduler 3**: `AsyncIOScheduler` in its own process with a `MemoryJobStore` "
        "or a `SQLAlchemyJobStore` on a SQLite file; jobs are `DateTrigger` / "
        "`IntervalTrigger`; an executor posts each due instant with one pooled aiohttp "
        "session; `misfire_grace_time` 3600 s and `coalesce` as our service's defaults. "
        "The steady workload's interval jobs are added with the scheduler paused, then "
        "resumed: each `add_job` on a running scheduler wakes it to process every due job, "
        "which, once jobs are firing, makes a bulk load quadratic.",
        f"- **rq-scheduler**: a redis-server started by the bench, `rqscheduler`'s loop "
        f"polling every {settings.get('rq_interval_s')} s (its default is 60 s), and "
        f"{settings.get('rq_workers')} default (forking) `rq worker` processes whose job "
        "POSTs with urllib. rq-scheduler stores instants in whole seconds and re-schedules "
        "a repeating job from the moment it was queued, so its steady rate drifts below one "
        "a second per schedule.",
        "- **Memory** is VmRSS from /proc of the process and its children; **CPU** is utime "
        "+ stime from /proc/PID/stat.",
        "- Machine-wide contention is part of the result: the broker, the target and the "
        "system under test share the same cores; the systems run one after another, never "
        "at the same time (except the idle measurement, which is quiet).",
        "",
    ]
