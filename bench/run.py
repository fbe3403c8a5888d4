"""Run every workload against our service and the peers, side by side; write bench/RESULTS.md.

    .venv/bin/python -m bench.run [--quick | --long] [--only NAME ...]

``--quick`` is a smoke run of a few minutes; the default is what
``make bench`` runs; ``--long`` adds the 100,000 burst and the 1,000,000-command
registration, scale and restart. ``--only`` runs some workloads (idle,
registration, scale, restart, burst, steady, failover; scale and restart
come with registration) and merges them into the results of the last run
of the same mode. A ``--long`` run writes ``RESULTS-long.md`` and
``results-long/``, beside the default run's ``RESULTS.md`` and ``results/``.

Everything the bench starts (Kafka, workers, targets, peers, redis) runs in
its own process group and is stopped at the end, on Ctrl-C, or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import ours, peers, procs, report
from bench.config import (
    ALIASES,
    DEFAULT,
    DELIVERY_ROWS,
    LONG,
    QUICK,
    SCALED,
    WORKLOADS,
    Sizes,
    outputs,
    scaled,
)
from bench.target import HttpTarget

HERE = Path(__file__).resolve().parent
IDLE_SETTLE = 10.0

log = logging.getLogger("bench")


def versions() -> dict[str, str]:
    from scheduler.devtools.broker import KAFKA_VERSION

    found = {"kafka": KAFKA_VERSION, "python": platform.python_version()}
    for name in (
        "faust-streaming",
        "aiokafka",
        "aiohttp",
        "rocksdict",
        "APScheduler",
        "SQLAlchemy",
        "rq",
        "rq-scheduler",
        "redis",
        "py-spy",
        "confluent-kafka",
    ):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    try:
        out = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout
        found["redis-server"] = out.split("v=")[1].split()[0] if "v=" in out else out.strip()
    except OSError:
        found["redis-server"] = "not installed"
    import sqlite3

    found["sqlite"] = sqlite3.sqlite_version
    return found


def commit() -> str:
    """The commit checked out, with ``+changes`` if the code differs from it (results aside)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=procs.ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", "scheduler", "*.py")
    except OSError:
        return ""
    return f"{head}+changes" if head and changed else head


class Run:
    """One invocation: its sizes, its context, and the results as they come in."""

    def __init__(self, sizes: Sizes, only: list[str], command: str, work: Path) -> None:
        self.sizes = sizes
        self.report_name, results_dir = outputs(sizes.mode)
        self.results_dir = HERE / results_dir
        self.results_json = self.results_dir / "results.json"
        self.only = only
        self.command = command
        self.work = work
        self.results: dict[str, Any] = {"meta": {}, "workloads": {}, "profiles": {}}
        self.ctx: ours.Context | None = None
        self.broker: ours.Broker | None = None
        self.started = time.time()
        # Taken now: what the run measures is the code as it was when it started.
        self.commit = commit()

    # ------------------------------------------------------------------ bookkeeping

    def load_previous(self) -> None:
        """With --only, keep the other workloads of the last run of the same mode."""
        if not self.only or not self.results_json.exists():
            return
        try:
            previous = json.loads(self.results_json.read_text())
        except ValueError:
            return
        if previous.get("meta", {}).get("mode") != self.sizes.mode:
            return
        self.results["workloads"] = previous.get("workloads", {})
        self.results["profiles"] = previous.get("profiles", {})

    def meta(self) -> dict[str, Any]:
        return {
            "mode": self.sizes.mode,
            "sizes": self.sizes.__dict__,
            "command": self.command,
            "only": self.only,
            "date": datetime.fromtimestamp(self.started, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "elapsed_s": round(time.time() - self.started),
            "machine": {**procs.machine(), "os": platform.platform()},
            "versions": versions(),
            "commit": self.commit,
            "settings": {
                "partitions": ours.PARTITIONS,
                "session_timeout_s": ours.SESSION_TIMEOUT,
                "rq_workers": peers.RQ_WORKERS,
                "rq_interval_s": peers.RQ_INTERVAL,
            },
        }

    def record(self, name: str, entry: dict[str, Any]) -> None:
        entry.setdefault("rows", {})
        entry["ran_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        entry["command"] = self.command
        self.results["workloads"][name] = entry
        self.save()

    def save(self) -> None:
        assert self.ctx is not None
        self.results["meta"] = self.meta()
        self.results["profiles"].update(self.ctx.profiles)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.results_json.write_text(json.dumps(self.results, indent=1, default=str) + "\n")
        for name, entry in self.results["workloads"].items():
            path = self.results_dir / f"{name}.json"
            path.write_text(json.dumps(entry, indent=1, default=str))
        for path in self.results_dir.glob("*.json"):
            # A workload of another mode (burst-1000 after a --quick run) is not this run's.
            stale = path.stem not in self.results["workloads"] and path != self.results_json
            if stale and not path.name.startswith("profile-"):
                path.unlink()
        report.write(self.results, HERE)

    async def guarded(
        self, label: str, make: Callable[[], Awaitable[Any]], timeout: float
    ) -> tuple[Any, str | None]:
        """Run one measurement; a failure or a time-out is an error row, never a gap."""
        started = time.monotonic()
        print(f"[bench] {label} ...", flush=True)
        try:
            value = await asyncio.wait_for(make(), timeout)
        except TimeoutError:
            error = f"timed out after {timeout:g} s"
        except Exception as exc:
            log.debug("%s failed", label, exc_info=True)
            error = f"{type(exc).__name__}: {exc}"
            (self.work / "logs").mkdir(parents=True, exist_ok=True)
            with (self.work / "logs" / "errors.log").open("a") as handle:
                handle.write(f"== {label}\n{traceback.format_exc()}\n")
        else:
            print(f"[bench] {label}: {time.monotonic() - started:.0f} s", flush=True)
            return value, None
        print(f"[bench] {label}: FAILED {error}", flush=True)
        return None, error

    # ------------------------------------------------------------------ workloads

    async def idle(self) -> None:
        assert self.ctx is not None
        seconds = self.sizes.idle_seconds
        started: dict[str, Any] = {}
        rows: dict[str, dict[str, Any]] = {}
        try:
            worker, error = await self.guarded(
                "idle: start our worker",
                lambda: ours.idle_start(self.ctx),  # type: ignore[arg-type]
                180,
            )
            if error:
                rows["ours"] = {"error": error}
            else:
                started["ours"] = worker
            for system in peers.SYSTEMS:
                peer, error = await self.guarded(
                    f"idle: start {system}",
                    lambda system=system: peers.idle_start(self.ctx, system),  # type: ignore[misc]
                    120,
                )
                if error:
                    rows[system] = {"error": error}
                else:
                    started[system] = peer
            await asyncio.sleep(IDLE_SETTLE)
            pids: dict[str, list[int]] = {}
            for system, thing in started.items():
                if system == "ours":
                    pids[system] = [thing.pid]
                elif system == peers.RQ:
                    pids[system] = [p.pid for p in [*thing.schedulers, *thing.workers]]
                    pids["redis-server"] = [thing.redis.pid]
                else:
                    pids[system] = thing.pids
            if self.broker is not None and self.broker.pid:
                pids["kafka-broker"] = [self.broker.pid]
            print(f"[bench] idle: measuring {seconds} s", flush=True)
            before = {s: sum(procs.cpu_seconds(p) for p in ps) for s, ps in pids.items()}
            await asyncio.sleep(seconds)
            for system, ps in pids.items():
                cpu = sum(procs.cpu_seconds(p) for p in ps) - before[system]
                rows[system] = {
                    "millicores": round(cpu / seconds * 1000, 1),
                    "rss_mib": peers.rss_mib(ps),
                    "processes": len(ps),
                }
                if system in ("kafka-broker", "redis-server"):
                    rows[system]["reference"] = True
        finally:
            for thing in started.values():
                thing.stop()
        self.record("idle", {"seconds": seconds, "rows": rows})

    async def registration(self) -> None:
        assert self.ctx is not None
        sizes = self.sizes
        rows: dict[str, dict[str, dict[str, Any]]] = {
            "registration": {},
            "scale": {},
            "restart": {},
        }
        budget = 900 + sizes.registration / 200
        found, error = await self.guarded(
            f"registration/scale/restart: ours ({sizes.registration:,})",
            lambda: ours.registration(self.ctx),  # type: ignore[arg-type]
            budget,
        )
        if error:
            for name in ("registration", "scale"):
                rows[name]["ours"] = {"error": error}
            rows["restart"]["ours-data"] = {"error": error}
            rows["restart"]["ours-empty"] = {"error": error}
        else:
            rows["registration"]["ours"] = found.get("registration", {"error": "no result"})
            rows["registration"][scaled(SCALED)] = found.get(
                "registration-scaled", {"error": "not reached"}
            )
            rows["scale"]["ours"] = found.get("scale", {"error": "not reached"})
            restart = found.get("restart", {"error": "not reached"})
            if "error" in restart:
                restart = {"ours-data": restart, "ours-empty": restart}
            rows["restart"].update(restart)
        for system in peers.SYSTEMS:
            found, error = await self.guarded(
                f"registration/scale/restart: {system}",
                lambda system=system: peers.registration(self.ctx, system),  # type: ignore[misc]
                sizes.peer_cap_seconds + sizes.outage_watch_seconds + 300,
            )
            for name in ("registration", "scale", "restart"):
                if error:
                    rows[name][system] = {"error": error}
                else:
                    rows[name][system] = found.get(name, {"error": "not reached"})
        n = sizes.registration
        self.record("registration", {"n": n, "rows": rows["registration"]})
        self.record("scale", {"n": n, "rows": rows["scale"]})
        self.record("restart", {"n": n, "recurring": sizes.recurring, "rows": rows["restart"]})

    async def burst(self) -> None:
        assert self.ctx is not None
        for n in self.sizes.bursts:
            rows: dict[str, dict[str, Any]] = {}
            found, error = await self.guarded(
                f"burst {n:,}: ours",
                lambda n=n: ours.burst(self.ctx, n),  # type: ignore[misc]
                600 + n / 50,
            )
            if error:
                rows.update({system: {"error": error} for system in DELIVERY_ROWS})
            else:
                rows.update(found)
            for system in peers.SYSTEMS:
                found, error = await self.guarded(
                    f"burst {n:,}: {system}",
                    lambda n=n, system=system: peers.burst(self.ctx, system, n),  # type: ignore[misc]
                    600 + n / 20,
                )
                rows[system] = {"error": error} if error else found
            self.record(f"burst-{n}", {"n": n, "rows": rows})

    async def steady(self) -> None:
        assert self.ctx is not None
        rows: dict[str, dict[str, Any]] = {}
        budget = 4 * self.sizes.steady_seconds + 300
        found, error = await self.guarded(
            "steady: ours",
            lambda: ours.steady(self.ctx),  # type: ignore[arg-type]
            4 * budget,
        )
        if error:
            rows.update({system: {"error": error} for system in DELIVERY_ROWS})
        else:
            rows.update(found)
        for system in peers.SYSTEMS:
            found, error = await self.guarded(
                f"steady: {system}",
                lambda system=system: peers.steady(self.ctx, system),  # type: ignore[misc]
                budget,
            )
            rows[system] = {"error": error} if error else found
        self.record(
            "steady",
            {"rate": self.sizes.steady_rate, "seconds": self.sizes.steady_seconds, "rows": rows},
        )

    async def failover(self) -> None:
        assert self.ctx is not None
        rows: dict[str, dict[str, Any]] = {}
        budget = 300 + self.sizes.outage_watch_seconds
        found, error = await self.guarded(
            "failover: ours",
            lambda: ours.failover(self.ctx),  # type: ignore[arg-type]
            budget,
        )
        rows["ours"] = {"error": error} if error else found["ours"]
        for system in peers.APS:
            rows[system] = {
                "na": "APScheduler 3 has no clustering: two schedulers must not share a job "
                "store, so there is no second one to take over"
            }
        found, error = await self.guarded(
            f"failover: {peers.RQ}",
            lambda: peers.failover(self.ctx),  # type: ignore[arg-type]
            budget,
        )
        rows[peers.RQ] = {"error": error} if error else found
        self.record("failover", {"recurring": self.sizes.recurring, "rows": rows})

    # ------------------------------------------------------------------ the run

    async def main(self, selected: list[str]) -> None:
        self.load_previous()
        http = HttpTarget(self.work / "logs" / "http-target.log")
        self.ctx = ours.Context(
            sizes=self.sizes, work=self.work, results=self.results_dir, http=http
        )
        try:
            self.broker = ours.Broker(self.work)
            print("[bench] starting Kafka ...", flush=True)
            self.ctx.bootstrap = await asyncio.to_thread(self.broker.start)
            self.ctx.broker_pid = self.broker.pid
            for name in WORKLOADS:
                if name in selected:
                    await getattr(self, name)()
        finally:
            http.stop()
            if self.broker is not None:
                await asyncio.to_thread(self.broker.stop)
            procs.stop_all()
            self.save()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a smoke run of a few minutes")
    mode.add_argument("--long", action="store_true", help="adds the 100k burst and 1M commands")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(ALIASES), metavar="NAME", help="run only these"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the data directories (logs are always kept)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    sizes = QUICK if args.quick else LONG if args.long else DEFAULT
    selected = sorted({ALIASES[name] for name in args.only}) if args.only else list(WORKLOADS)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "kafka", "scheduler.devtools.broker"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    procs.install_cleanup()
    shown = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "-m", "bench.run", *shown])
    work = Path(tempfile.mkdtemp(prefix="kafka-scheduler-bench-"))
    print(f"[bench] {sizes.mode} run; work directory {work}", flush=True)
    run = Run(sizes, args.only or [], command, work)
    try:
        asyncio.run(run.main(selected))
    finally:
        if not args.keep:
            # The logs are small and say why something failed; the data is not.
            for name in ("data", "kafka"):
                shutil.rmtree(work / name, ignore_errors=True)
        print(f"[bench] logs in {work / 'logs'}", flush=True)
    print(
        f"[bench] wrote {HERE / run.report_name} in {time.time() - run.started:.0f} s", flush=True
    )


if __name__ == "__main__":
    main()
