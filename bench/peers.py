"""The workloads against the peers: APScheduler 3 (memory, SQLite) and rq-scheduler + RQ.

Each peer delivers over HTTP to the same target as our service, with the
instant each firing was scheduled for in the JSON body; the target measures
the lateness. Every workload starts the peer afresh (its own process, its
own SQLite file or redis-server) and stops it after.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from redis import Redis
from rq_scheduler import Scheduler

from bench import procs, stats
from bench.config import burst_due
from bench.ours import Context, sleep_until, watch_recovery
from bench.rq_peer import deliver
from scheduler.devtools.redis import command as redis_command

APS = ("apscheduler-memory", "apscheduler-sqlite")
RQ = "rq-scheduler"
SYSTEMS = (*APS, RQ)
RQ_WORKERS = 2
RQ_INTERVAL = 1.0
"""Seconds between rq-scheduler's polls; its default is 60, 1 is the finest it is used at."""
WARM_UP = 20
#: Registration rates to plan a burst's lead time by until the run measured one.
DEFAULT_RATES = {"apscheduler-memory": 5_000.0, "apscheduler-sqlite": 500.0, RQ: 2_000.0}


def _error(exc: BaseException) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}"}


class Aps:
    """One APScheduler process (``bench.aps_peer``) and its control endpoint."""

    def __init__(self, ctx: Context, system: str) -> None:
        self.ctx = ctx
        self.system = system
        self.store = system.split("-", 1)[1]
        self.db = ctx.work / "data" / f"{system}-{uuid.uuid4().hex[:6]}.sqlite"
        self.proc: Any = None
        self.port = 0

    async def start(self) -> Aps:
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.port = procs.free_port()
        self.proc = procs.spawn(
            [
                procs.PYTHON,
                "-m",
                "bench.aps_peer",
                "--store",
                self.store,
                "--db",
                str(self.db),
                "--port",
                str(self.port),
            ],
            log=self.ctx.log(self.system),
        )
        await asyncio.to_thread(procs.wait_port, self.port, self.proc, 60, self.system)
        return self

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid]

    async def add(self, **spec: Any) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=float(spec.get("cap") or 600) + 600)
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"http://127.0.0.1:{self.port}/add", json=spec, timeout=timeout) as resp,
        ):
            resp.raise_for_status()
            return dict(await resp.json())

    async def jobs(self) -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{self.port}/jobs", timeout=aiohttp.ClientTimeout(total=120)
            ) as resp,
        ):
            return int((await resp.json())["count"])

    async def register(
        self, kind: str, prefix: str, count: int, url: str, cap: float | None = None, **spec: Any
    ) -> tuple[int, float]:
        done = await self.add(kind=kind, prefix=prefix, count=count, url=url, cap=cap, **spec)
        return int(done["added"]), float(done["seconds"])

    def kill9(self) -> None:
        procs.kill9(self.proc)

    def stop(self) -> None:
        procs.kill(self.proc)


class RqStack:
    """redis-server, rq-scheduler process(es) and RQ workers, all started here."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.system = RQ
        self.redis_port = 0
        self.redis: Any = None
        self.schedulers: list[Any] = []
        self.workers: list[Any] = []
        self.dir = ctx.work / "data" / f"redis-{uuid.uuid4().hex[:6]}"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    async def start(self, schedulers: int = 1) -> RqStack:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.redis_port = procs.free_port()
        self.redis = procs.spawn(
            redis_command(self.redis_port, self.dir),
            log=self.ctx.log(f"redis-{self.redis_port}"),
        )
        await asyncio.to_thread(procs.wait_port, self.redis_port, self.redis, 30, "redis-server")
        for _ in range(schedulers):
            self.start_scheduler()
        for index in range(RQ_WORKERS):
            self.workers.append(
                procs.spawn(
                    [str(procs.BIN / "rq"), "worker", "--url", self.url, "--quiet", "default"],
                    log=self.ctx.log(f"rq-worker-{self.redis_port}-{index}"),
                )
            )
        await asyncio.sleep(2)
        for proc in [*self.schedulers, *self.workers]:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[:3]} exited with {proc.returncode}")
        return self

    def start_scheduler(self) -> None:
        name = uuid.uuid4().hex[:8]
        self.schedulers.append(
            procs.spawn(
                [
                    procs.PYTHON,
                    "-m",
                    "bench.rq_peer",
                    "--url",
                    self.url,
                    "--interval",
                    str(RQ_INTERVAL),
                    "--name",
                    name,
                ],
                log=self.ctx.log(f"rq-scheduler-{self.redis_port}-{name}"),
            )
        )

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in [self.redis, *self.schedulers, *self.workers] if p.poll() is None]

    def client(self) -> Scheduler:
        return Scheduler(connection=Redis.from_url(self.url))

    def _register(
        self,
        kind: str,
        prefix: str,
        count: int,
        url: str,
        cap: float | None,
        at: float = 0,
        spread: float = 0,
        start: float = 0,
        step: float = 0,
        interval: float = 1,
        paused: bool = False,
    ) -> tuple[int, float]:
        """``enqueue_at`` (date) or ``schedule`` (interval) ``count`` times; ``paused`` is moot."""
        scheduler = self.client()
        started = time.monotonic()
        added = 0
        for index in range(count):
            job_id = f"{prefix}{index}"
            if kind == "date":
                when = datetime.fromtimestamp(at + index * spread, UTC)
                scheduler.enqueue_at(
                    when, deliver, url, job_id, at + index * spread, job_id=job_id,
                    job_result_ttl=0,
                )  # fmt: skip
            else:
                when = datetime.fromtimestamp(start + index * step, UTC)
                # No result_ttl: a repeating job whose result expires is deleted with it.
                scheduler.schedule(when, deliver, args=(url, job_id), interval=interval, id=job_id)
            added += 1
            if cap is not None and added % 500 == 0 and time.monotonic() - started > cap:
                break
        return added, time.monotonic() - started

    async def register(
        self, kind: str, prefix: str, count: int, url: str, cap: float | None = None, **spec: Any
    ) -> tuple[int, float]:
        return await asyncio.to_thread(self._register, kind, prefix, count, url, cap, **spec)

    def kill9_scheduler(self, index: int = 0) -> None:
        procs.kill9(self.schedulers.pop(index))

    def stop(self) -> None:
        for proc in [*self.workers, *self.schedulers]:
            procs.kill(proc)
        procs.kill(self.redis)
        shutil.rmtree(self.dir, ignore_errors=True)


Peer = Aps | RqStack


async def start(ctx: Context, system: str, **kwargs: Any) -> Peer:
    if system == RQ:
        return await RqStack(ctx).start(**kwargs)
    return await Aps(ctx, system).start()


async def warm_up(ctx: Context, peer: Peer, run: str) -> None:
    """A few firings a second from now, so that pools and imports are warm."""
    before = await ctx.http.count(run)
    await peer.register("date", f"{run}-warm-", WARM_UP, ctx.http.url(run), at=time.time() + 1)
    seen = await ctx.http.wait_count(run, before + WARM_UP, 60)
    if seen < before + WARM_UP:
        raise RuntimeError(f"warm-up: {seen - before} of {WARM_UP} firings arrived")


def rss_mib(pids: list[int]) -> float:
    return round(sum(procs.rss_bytes(pid) for pid in pids) / 2**20, 1)


# --------------------------------------------------------------------------- burst


async def burst(ctx: Context, system: str, n: int) -> dict[str, Any]:
    peer = await start(ctx, system)
    try:
        run = f"burst{n}-{system}-{uuid.uuid4().hex[:6]}"
        await warm_up(ctx, peer, run)
        rate = ctx.rates.get(system, DEFAULT_RATES[system])
        due = burst_due(n, rate, time.time())
        seen0 = await ctx.http.count(run)
        sent_at = time.time()
        _, seconds = await peer.register("date", "b-", n, ctx.http.url(run), at=due)
        stored_at = sent_at + seconds
        timeout = min(300.0, max(60.0, n / 100))
        await ctx.http.wait_count(run, seen0 + n, due + timeout - time.time())
        await asyncio.sleep(2)
        records = await ctx.http.dump(run)
        result = stats.burst(records, {f"b-{i}" for i in range(n)}, due)
        result.update(
            {
                "n": n,
                "registered_s": round(seconds, 3),
                "lead_s": round(due - sent_at, 3),
                "stored_before_due_s": round(due - stored_at, 3),
            }
        )
        if stored_at > due:
            result["note"] = f"registration ended {stored_at - due:.1f} s after the due instant"
        if result["missing"]:
            result["note"] = (
                result.get("note", "") + f" {result['missing']:,} not delivered {timeout:g} s after"
            ).strip()
        return result
    finally:
        peer.stop()


# --------------------------------------------------------------------------- steady


async def steady(ctx: Context, system: str) -> dict[str, Any]:
    rate, seconds = ctx.sizes.steady_rate, ctx.sizes.steady_seconds
    peer = await start(ctx, system)
    try:
        run = f"steady-{system}-{uuid.uuid4().hex[:6]}"
        await warm_up(ctx, peer, run)
        # The first instants after the registration should be done (paused, for APScheduler).
        begin = time.time() + 2 + rate / ctx.rates.get(system, DEFAULT_RATES[system])
        starts = [begin + i / rate for i in range(rate)]
        _, took = await peer.register(
            "interval", "s-", rate, ctx.http.url(run), start=begin, step=1 / rate, interval=1,
            paused=True,
        )  # fmt: skip
        low = math.ceil(max(time.time(), begin)) + 3.0
        high = low + seconds
        await sleep_until(high + 10)
        records = [r for r in await ctx.http.dump(run) if r[3].startswith("s-")]
        expected = stats.expected_instants(starts, 1.0, low, high)
        result = stats.steady(records, expected, (low, high))
        result.update({"schedules": rate, "seconds": seconds, "registered_s": round(took, 3)})
        return result
    finally:
        peer.stop()


# ------------------------------------------------------------------ registration, scale, restart


async def registration(ctx: Context, system: str) -> dict[str, dict[str, Any]]:
    """Register far-future one-shots (capped in time), read the memory, then kill -9 and restart."""
    n = ctx.sizes.registration
    out: dict[str, dict[str, Any]] = {}
    peer = await start(ctx, system)
    try:
        try:
            first = math.ceil(time.time()) + 86_400
            added, seconds = await peer.register(
                "date", "r-", n, "http://127.0.0.1:9/never", cap=ctx.sizes.peer_cap_seconds,
                at=first, spread=1,
            )  # fmt: skip
            out["registration"] = {"n": n, "applied": added, "rate": round(added / seconds)}
            out["registration"]["seconds"] = round(seconds, 1)
            if added < n:
                out["registration"]["note"] = (
                    f"stopped at the {ctx.sizes.peer_cap_seconds:g} s cap: {added:,} of {n:,}"
                )
            ctx.rates[system] = added / seconds
        except Exception as exc:
            out["registration"] = _error(exc)
            return out
        try:
            await asyncio.sleep(5)
            out["scale"] = {"schedules": added, "rss_mib": rss_mib(peer.pids)}
            if isinstance(peer, RqStack):
                out["scale"]["redis_rss_mib"] = rss_mib([peer.redis.pid])
            else:
                out["scale"]["jobs_in_store"] = await peer.jobs()
        except Exception as exc:
            out["scale"] = _error(exc)
        try:
            out["restart"] = await _restart(ctx, peer, added)
        except Exception as exc:
            out["restart"] = _error(exc)
    finally:
        peer.stop()
    return out


async def _restart(ctx: Context, peer: Peer, held: int) -> dict[str, Any]:
    count = ctx.sizes.recurring
    run = f"restart-{peer.system}-{uuid.uuid4().hex[:6]}"
    await warm_up(ctx, peer, run)
    await peer.register(
        "interval", "p-", count, ctx.http.url(run), start=time.time() + 1, step=1 / count,
        interval=1,
    )  # fmt: skip
    await asyncio.sleep(8)
    schedules = {f"p-{i}" for i in range(count)}
    killed = time.time()
    if isinstance(peer, RqStack):
        peer.kill9_scheduler()
        peer.start_scheduler()
    else:
        peer.kill9()
        await peer.start()
        jobs = await peer.jobs()
        if jobs == 0:
            # Nothing can come back: say so now rather than after watching for it.
            return {
                "schedules_held": held + count,
                "jobs_after_restart": 0,
                "came_back": 0,
                "error": "the job store came back empty: every schedule was lost",
            }
    result = await watch_recovery(ctx.http, run, schedules, killed, ctx.sizes.outage_watch_seconds)
    result["schedules_held"] = held + count
    if isinstance(peer, Aps):
        result["jobs_after_restart"] = await peer.jobs()
    return result


# --------------------------------------------------------------------------- failover


async def failover(ctx: Context) -> dict[str, Any]:
    """Two rq-scheduler processes on one Redis (they take turns under a lock); kill -9 one."""
    count = ctx.sizes.recurring
    stack = await RqStack(ctx).start(schedulers=2)
    try:
        run = f"failover-{RQ}-{uuid.uuid4().hex[:6]}"
        await warm_up(ctx, stack, run)
        await stack.register(
            "interval", "f-", count, ctx.http.url(run), start=time.time() + 1, step=1 / count,
            interval=1,
        )  # fmt: skip
        await asyncio.sleep(10)
        schedules = {f"f-{i}" for i in range(count)}
        killed = time.time()
        stack.kill9_scheduler(0)
        result = await watch_recovery(
            ctx.http, run, schedules, killed, ctx.sizes.outage_watch_seconds
        )
        records = await ctx.http.dump(run)
        threshold = result["on_time_threshold_s"]
        result["first_on_time_s"] = stats.first_on_time(records, schedules, killed, threshold)
        return result
    finally:
        stack.stop()


# --------------------------------------------------------------------------- idle


async def idle_start(ctx: Context, system: str) -> Peer:
    return await start(ctx, system)
