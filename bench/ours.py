"""The workloads against our service: a local Kafka, ``scheduler worker`` processes, commands.

Commands are produced as JSON to ``<prefix>schedule-commands`` with aiokafka,
keyed by schedule id, in large batches. Every worker has its own
``SCHEDULER_*`` environment (app id, topic prefix, data dir, web port), the
way ``tests/support.py`` starts them. Progress is read from ``/metrics``
(``scheduler_commands_applied_total``) and readiness from ``/health``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from bench import procs, stats
from bench.config import BURST_LEAD_S, SCALED, Sizes, burst_due, scaled
from bench.kafka_target import KafkaTarget
from bench.profile import Profiler
from bench.target import Control, HttpTarget
from scheduler.devtools.broker import LocalBroker
from scheduler.domain.ids import schedule_id

PARTITIONS = 8
SESSION_TIMEOUT = 6
"""Seconds; what tests/support.py uses. The service default (10 s) would add 4 s to failover."""
WARM_UP = 20
#: A registration rate to plan a burst's lead time by until the run measured one.
DEFAULT_RATE = 3_000.0
NEVER_URL = "http://127.0.0.1:9/never"


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="microseconds")


@dataclass
class Context:
    """What every workload function is handed by ``bench.run``."""

    sizes: Sizes
    work: Path
    results: Path
    http: HttpTarget
    bootstrap: str = ""
    broker_pid: int | None = None
    rates: dict[str, float] = field(default_factory=dict)
    """Registration rates measured in this run, per system, to plan burst lead times."""
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)

    def log(self, name: str) -> Path:
        return self.work / "logs" / f"{name}.log"

    def profile_start(self, name: str, pid: int) -> Profiler:
        return Profiler(
            pid, self.results / f"profile-{name}.speedscope.json", self.log(f"py-spy-{name}")
        )

    def profile_stop(self, name: str, profiler: Profiler, what: str) -> None:
        from bench.profile import summarize

        path = profiler.stop()
        entry: dict[str, Any] = {"what": what, "wall_s": round(profiler.wall_s, 1)}
        if path is None:
            entry["error"] = profiler.error
        else:
            entry["file"] = path.name
            try:
                entry["summary"] = summarize(path)
            except (ValueError, KeyError, OSError) as exc:
                entry["error"] = f"cannot read {path.name}: {exc}"
        self.profiles[name] = entry


class Broker:
    """The local Kafka 4.1.1 every workload of ours (and the Kafka target) uses."""

    def __init__(self, work: Path) -> None:
        self.broker = LocalBroker(port=procs.free_port(), data_dir=work / "kafka")

    def start(self) -> str:
        self.broker.start(timeout=180)
        return self.broker.bootstrap

    def stop(self) -> None:
        self.broker.stop()

    @property
    def pid(self) -> int | None:
        return self.broker.pid


class Counted:
    """Progress read from ``/metrics``: commands applied."""

    async def metrics(self) -> dict[str, float]:
        raise NotImplementedError

    async def applied(self) -> int:
        return int((await self.metrics()).get("scheduler_commands_applied_total", 0))

    async def wait_applied(self, count: int, timeout: float) -> float:
        """Wait until ``count`` commands are applied; the time it happened."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                seen = await self.applied()
            if seen >= count:
                return time.time()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"only {seen} of {count} commands applied after {timeout:g} s")


class Worker(Counted):
    """One ``scheduler worker`` process."""

    def __init__(
        self, ctx: Context, name: str, *, app_id: str, prefix: str, data_dir: Path | None = None
    ) -> None:
        self.ctx = ctx
        self.name = name
        self.app_id = app_id
        self.prefix = prefix
        self.port = procs.free_port()
        self.data_dir = data_dir or ctx.work / "data" / name
        self.proc: Any = None
        self.session_timeout = SESSION_TIMEOUT

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return int(self.proc.pid)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SCHEDULER_BROKER": f"kafka://{self.ctx.bootstrap}",
                "SCHEDULER_APP_ID": self.app_id,
                "SCHEDULER_TOPIC_PREFIX": self.prefix,
                "SCHEDULER_PARTITIONS": str(PARTITIONS),
                "SCHEDULER_WEB_PORT": str(self.port),
                "SCHEDULER_DATA_DIR": str(self.data_dir),
                "SCHEDULER_LOG_LEVEL": os.environ.get("BENCH_WORKER_LOG_LEVEL", "warning"),
                "SCHEDULER_SESSION_TIMEOUT": str(self.session_timeout),
            }
        )
        return env

    def spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = procs.spawn(
            [str(procs.BIN / "scheduler"), "worker"], env=self.env(), log=self.ctx.log(self.name)
        )

    async def start(self, timeout: float = 120) -> Worker:
        self.spawn()
        await self.wait_ready(timeout)
        return self

    async def _get(self, path: str, timeout: float = 5) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=timeout)) as resp,
        ):
            resp.raise_for_status()
            if path == "/metrics":
                return await resp.text()
            return await resp.json()

    async def health(self) -> dict[str, Any]:
        return dict(await self._get("/health"))

    async def metrics(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for line in (await self._get("/metrics")).splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.partition(" ")
                found[name] = float(value)
        return found

    async def wait_ready(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.tail()}")
            try:
                last = await self.health()
                if last["ready"] and last["active_partitions"]:
                    return dict(last)
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                last = exc
            await asyncio.sleep(0.2)
        raise RuntimeError(f"worker not ready in {timeout:g} s (last {last!r}): {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        path = self.ctx.log(self.name)
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def kill9(self) -> None:
        procs.kill9(self.proc)

    def stop(self) -> None:
        procs.kill(self.proc)


class Workers(Counted):
    """The workers of one app (same app id, topics and group), counted as one.

    Faust splits the partitions between them; their metrics are added up.
    """

    def __init__(self, members: list[Worker]) -> None:
        self.members = members
        self.prefix = members[0].prefix

    @property
    def pid(self) -> int:
        """The first worker's: the one profiled."""
        return self.members[0].pid

    @property
    def pids(self) -> list[int]:
        return [member.pid for member in self.members]

    async def start(self, timeout: float = 120) -> Workers:
        for member in self.members:
            member.spawn()
        for member in self.members:
            await member.wait_ready(timeout)
        await settled(self.members, timeout)
        return self

    async def metrics(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for member in self.members:
            for key, value in (await member.metrics()).items():
                total[key] = total.get(key, 0.0) + value
        return total

    def stop(self) -> None:
        for member in self.members:
            member.stop()


def new_apps(ctx: Context, name: str, count: int) -> Workers:
    """``count`` workers of one new app."""
    first = new_app(ctx, name)
    rest = [
        Worker(ctx, f"{first.name}-{i}", app_id=first.app_id, prefix=first.prefix)
        for i in range(1, count)
    ]
    return Workers([first, *rest])


def new_app(ctx: Context, name: str, data_dir: Path | None = None) -> Worker:
    tag = uuid.uuid4().hex[:6]
    return Worker(
        ctx,
        f"{name}-{tag}",
        app_id=f"bench-{name}-{tag}",
        prefix=f"{name}-{tag}-",
        data_dir=data_dir,
    )


# --------------------------------------------------------------------------- commands


def client(run: str, key: int | str) -> dict[str, str]:
    return {
        "operation": "bench",
        "application": "bench",
        "group": run,
        "key": str(key),
        "type": "scheduler",
    }


def sid(run: str, key: int | str) -> str:
    c = client(run, key)
    return schedule_id(c["operation"], c["application"], c["group"], c["key"], c["type"])


def task(kind: str, where: str, bootstrap: str) -> dict[str, Any]:
    """A REST task to URL ``where``, or a Kafka task to topic ``where``."""
    if kind == "http":
        return {"type": "rest", "connection": {"host": where}, "data": {"bench": True}}
    return {
        "type": "kafka",
        "connection": {"host": bootstrap, "topic": where},
        "data": {"bench": True},
    }


def command(run: str, key: int | str, kind: str, schedule: Any, task_: dict[str, Any]) -> dict:
    body: dict[str, Any] = {"client": client(run, key), "type": kind, "task": task_}
    if schedule is not None:
        body["schedule"] = schedule
    return body


def delete(run: str, key: int | str) -> dict[str, Any]:
    return {"action": "delete", "client": client(run, key)}


async def produce(
    bootstrap: str,
    topic: str,
    commands: Iterable[dict[str, Any]],
    timestamps_ms: Sequence[int] | None = None,
) -> float:
    """Send ``commands`` keyed by schedule id, as fast as the producer batches; seconds taken."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
    )
    await producer.start()
    started = time.monotonic()
    try:
        pending: list[asyncio.Future[Any]] = []
        for index, body in enumerate(commands):
            c = body["client"]
            key = schedule_id(c["operation"], c["application"], c["group"], c["key"], c["type"])
            pending.append(
                await producer.send(
                    topic,
                    value=json.dumps(body, separators=(",", ":")).encode(),
                    key=key.encode(),
                    timestamp_ms=timestamps_ms[index] if timestamps_ms is not None else None,
                )
            )
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic() - started


async def emitted(
    ctx: Context,
    worker: Worker | Workers,
    schedules: set[str],
    window: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Lateness at the ``firings`` topic (``fired_at - scheduled_for``): the timer's share.

    Negative when the firing was written ahead of its instant (``fire_ahead``).

    The rest of a delivery's lateness is the executor's: consuming ``firings``
    and delivering. Read from the topic's beginning to its current end.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from bench.target import epoch

    consumer = AIOKafkaConsumer(
        bootstrap_servers=ctx.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    late: list[float] = []
    try:
        parts = [TopicPartition(worker.prefix + "firings", p) for p in range(PARTITIONS)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        wanted = {s.encode() for s in schedules}

        async def behind() -> bool:
            for tp in parts:
                if await consumer.position(tp) < ends[tp]:
                    return True
            return False

        while await behind():
            batch = await consumer.getmany(timeout_ms=1000, max_records=20_000)
            for records in batch.values():
                for record in records:
                    if record.key not in wanted:
                        continue
                    firing = json.loads(record.value)
                    if "firing_id" not in firing:
                        continue  # a revocation, not a firing
                    scheduled = epoch(firing["scheduled_for"])
                    if window is None or window[0] <= scheduled < window[1]:
                        late.append(epoch(firing["fired_at"]) - scheduled)
    finally:
        await consumer.stop()
    found = stats.spread(late)
    return {"fired_p50": found["p50"], "fired_p99": found["p99"], "fired_max": found["max"]}


async def ensure_topics(ctx: Context, worker: Worker) -> None:
    """Create the worker's contract topics before it starts (to fill them with a backlog)."""
    from scheduler.settings import Settings
    from scheduler.worker import ensure_topics as create

    settings = Settings(
        broker=f"kafka://{ctx.bootstrap}",
        app_id=worker.app_id,
        topic_prefix=worker.prefix,
        partitions=PARTITIONS,
    )
    await create(settings)


def partition_of(schedule: str, partitions: int = PARTITIONS) -> int:
    """Where Faust's producer (aiokafka's murmur2 partitioner) puts a schedule's key."""
    return (murmur2(schedule.encode()) & 0x7FFFFFFF) % partitions


async def open_target(ctx: Context, kind: str, run: str) -> tuple[Control, str, KafkaTarget | None]:
    """The reader of ``run``'s deliveries and where a task sends them."""
    if kind == "http":
        return ctx.http, ctx.http.url(run), None
    target = await KafkaTarget.start(ctx.bootstrap, run, ctx.log(f"kafka-target-{run}"))
    return target, run, target


async def warm_up(
    ctx: Context, worker: Worker | Workers, reader: Control, run: str, t: dict
) -> None:
    """A few ``now`` firings first, so that pooled connections and metadata are warm."""
    before_seen = await reader.count(run)
    commands = [command(f"{run}-warm", i, "now", None, t) for i in range(WARM_UP)]
    await produce(ctx.bootstrap, worker.prefix + "schedule-commands", commands)
    seen = await reader.wait_count(run, before_seen + WARM_UP, 60)
    if seen < before_seen + WARM_UP:
        raise RuntimeError(f"warm-up: {seen - before_seen} of {WARM_UP} firings arrived")


async def sleep_until(epoch: float) -> None:
    delay = epoch - time.time()
    if delay > 0:
        await asyncio.sleep(delay)


# --------------------------------------------------------------------------- burst


async def burst(ctx: Context, n: int) -> dict[str, dict[str, Any]]:
    """One worker, then ``SCALED`` workers of a new app; each to Kafka, then to HTTP."""
    out: dict[str, dict[str, Any]] = {}
    for count in (1, SCALED):
        workers = await new_apps(ctx, f"burst{n}", count).start()
        try:
            for kind in ("kafka", "http"):
                system = f"{scaled(count)}-{kind}"
                try:
                    out[system] = await _burst(ctx, workers, kind, n, profile=count == 1)
                except Exception as exc:
                    out[system] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            workers.stop()
    return out


async def _burst(
    ctx: Context, worker: Workers, kind: str, n: int, *, profile: bool
) -> dict[str, Any]:
    run = f"burst{n}-{kind}-{uuid.uuid4().hex[:6]}"
    reader, where, kafka = await open_target(ctx, kind, run)
    try:
        t = task(kind, where, ctx.bootstrap)
        await warm_up(ctx, worker, reader, run, t)
        rate = ctx.rates.get("ours", DEFAULT_RATE)
        due = burst_due(n, rate, time.time())
        expected = {sid(run, i) for i in range(n)}
        base = await worker.applied()
        seen0 = await reader.count(run)
        commands = [command(run, i, "date", iso(due), t) for i in range(n)]
        # With a fixed lead (issue 30's burst) registering is part of what is
        # measured: CPU and profile cover it, from the first command. Otherwise
        # they cover the instant, from a second before it.
        whole = n in BURST_LEAD_S
        profiler: Profiler | None = None
        cpu: procs.CpuWatch | None = None

        def watch() -> tuple[Profiler | None, procs.CpuWatch]:
            started = ctx.profile_start(f"burst-{kind}", worker.pid) if profile else None
            return started, procs.CpuWatch({"worker": worker.pids, "broker": ctx.broker_pid})

        try:
            if whole:
                profiler, cpu = watch()
            sent_at = time.time()
            topic = worker.prefix + "schedule-commands"
            produced_s = await produce(ctx.bootstrap, topic, commands)
            stored_at = await worker.wait_applied(base + n, max(due - time.time() + 120, n / 500))
            if cpu is None:
                await sleep_until(due - 1)
                profiler, cpu = watch()
            timeout = max(30.0, n / 500)
            await reader.wait_count(run, seen0 + n, due + timeout - time.time())
            usage = cpu.stop()
            await asyncio.sleep(2)  # a late duplicate would show up here
        finally:
            if profiler is not None:
                ctx.profile_stop(
                    f"burst-{kind}", profiler, f"worker during the {n:,} burst, {kind} target"
                )
        records = await reader.dump(run)
        result = stats.burst(records, expected, due)
        result.update(await emitted(ctx, worker, expected))
        result.update(usage)
        result.update(
            {
                "n": n,
                "workers": len(worker.members),
                "registered_s": round(stored_at - sent_at, 3),
                "lead_s": round(due - sent_at, 3),
                "produced_s": round(produced_s, 3),
                "stored_before_due_s": round(due - stored_at, 3),
            }
        )
        if stored_at > due:
            result["note"] = f"registration ended {stored_at - due:.1f} s after the due instant"
        return result
    finally:
        if kafka is not None:
            kafka.stop()


# --------------------------------------------------------------------------- steady


async def steady(ctx: Context) -> dict[str, dict[str, Any]]:
    """One worker, then ``SCALED`` workers of a new app; each to Kafka, then to HTTP."""
    out: dict[str, dict[str, Any]] = {}
    for count in (1, SCALED):
        workers = await new_apps(ctx, "steady", count).start()
        try:
            for kind in ("kafka", "http"):
                system = f"{scaled(count)}-{kind}"
                try:
                    out[system] = await _steady(ctx, workers, kind, profile=count == 1)
                except Exception as exc:
                    out[system] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            workers.stop()
    return out


async def _steady(ctx: Context, worker: Workers, kind: str, *, profile: bool) -> dict[str, Any]:
    rate, seconds = ctx.sizes.steady_rate, ctx.sizes.steady_seconds
    run = f"steady-{kind}-{uuid.uuid4().hex[:6]}"
    reader, where, kafka = await open_target(ctx, kind, run)
    topic = worker.prefix + "schedule-commands"
    try:
        t = task(kind, where, ctx.bootstrap)
        await warm_up(ctx, worker, reader, run, t)
        base = await worker.applied()
        # Acceptance is the record's timestamp: spread them over one second, so that
        # `rate` schedules of 1 s each fire `rate` times a second, evenly.
        start_ms = int(time.time() * 1000)
        stamps = [start_ms + i * 1000 // rate for i in range(rate)]
        commands = [command(run, i, "delay-recur", 1, t) for i in range(rate)]
        await produce(ctx.bootstrap, topic, commands, stamps)
        await worker.wait_applied(base + rate, 60)
        low = math.ceil(time.time()) + 3.0
        high = low + seconds
        await sleep_until(low)
        missed_before = (await worker.metrics()).get("scheduler_missed_instants_total", 0)
        profiler = ctx.profile_start(f"steady-{kind}", worker.pid) if profile else None
        try:
            cpu = procs.CpuWatch({"worker": worker.pids, "broker": ctx.broker_pid})
            await sleep_until(high)
            usage = cpu.stop()
            await sleep_until(high + 5)
            missed = (await worker.metrics()).get("scheduler_missed_instants_total", 0)
        finally:
            if profiler is not None:
                ctx.profile_stop(
                    f"steady-{kind}", profiler, f"worker at {rate:,} firings/s, {kind} target"
                )
        await produce(ctx.bootstrap, topic, [delete(run, i) for i in range(rate)])
        await worker.wait_applied(base + 2 * rate, 60)
        ours = {sid(run, i) for i in range(rate)}
        records = [r for r in await reader.dump(run) if r[3] in ours]
        expected = stats.expected_instants([s / 1000 for s in stamps], 1.0, low, high)
        result = stats.steady(records, expected, (low, high))
        result.update(await emitted(ctx, worker, ours, (low, high)))
        result.update(
            {
                "schedules": rate,
                "seconds": seconds,
                "workers": len(worker.members),
                "worker_missed": missed - missed_before,
            }
        )
        result.update(usage)
        return result
    finally:
        if kafka is not None:
            kafka.stop()


# ------------------------------------------------------------------ registration, scale, restart


async def registration(ctx: Context) -> dict[str, dict[str, Any]]:
    """Registration into one worker, then its memory (scale), then kill -9 and restarts."""
    n = ctx.sizes.registration
    worker = new_app(ctx, "registration")
    out: dict[str, dict[str, Any]] = {}
    await ensure_topics(ctx, worker)
    produced_s = await produce(
        ctx.bootstrap, worker.prefix + "schedule-commands", _far_future_commands(n)
    )
    try:
        out["registration"] = await _drain(ctx, worker, n)
        out["registration"]["produce_rate"] = round(n / produced_s)
        ctx.rates["ours"] = float(out["registration"]["rate"])
    except Exception as exc:
        out["registration"] = {"error": f"{type(exc).__name__}: {exc}", "n": n}
        worker.stop()
        return out
    try:
        await asyncio.sleep(10)
        m = await worker.metrics()
        out["scale"] = {
            "schedules": n,
            "rss_mib": round(procs.rss_bytes(worker.pid) / 2**20, 1),
            "timer_pending": m.get("scheduler_timer_pending"),
            "data_dir_mib": round(_du(worker.data_dir) / 2**20, 1),
        }
    except Exception as exc:
        out["scale"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        out.update(await _restarts(ctx, worker))
    except Exception as exc:
        out["restart"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        worker.stop()
    try:
        out["registration"].update(await _floor(ctx, min(n, FLOOR_MAX)))
    except Exception as exc:
        out["registration"]["floor_error"] = f"{type(exc).__name__}: {exc}"
    try:
        out["registration"]["pieces_us"] = await _pieces(ctx)
    except Exception as exc:
        out["registration"]["pieces_error"] = f"{type(exc).__name__}: {exc}"
    out["registration-scaled"] = await _registration_scaled(ctx, n)
    return out


#: Seconds the group keeps a stopped static member's partitions in the scaled registration.
STATIC_SESSION_TIMEOUT = 90


async def _registration_scaled(ctx: Context, n: int) -> dict[str, Any]:
    """The same backlog into ``SCALED`` workers of a new app: what one machine stores.

    The workers join and settle first, then stop: each is a static member
    (its instance id is kept across a restart), and the group keeps its
    partitions for the session timeout, so they start again on the backlog
    without a rebalance, as a running pair takes one. Started together on a
    backlog instead, their first rebalance re-applies what one of them had
    applied and took most of a 100,000-command run.
    """
    workers = new_apps(ctx, "registration-scaled", SCALED)
    for member in workers.members:
        member.session_timeout = STATIC_SESSION_TIMEOUT
    try:
        await ensure_topics(ctx, workers.members[0])
        await workers.start()
        workers.stop()
        produced_s = await produce(
            ctx.bootstrap,
            workers.prefix + "schedule-commands",
            _far_future_commands(n, "reg-scaled"),
        )
        found = await _drain(ctx, workers, n, profile=False)
        found["produce_rate"] = round(n / produced_s)
        return found
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "n": n}
    finally:
        workers.stop()


def _far_future_commands(n: int, run: str = "reg") -> Iterable[dict[str, Any]]:
    """One-shots a second apart from tomorrow on: active, never due during the bench."""
    first = math.ceil(time.time()) + 86_400
    never = task("http", NEVER_URL, "")
    return (command(run, i, "date", iso(first + i), never) for i in range(n))


async def _pieces(ctx: Context) -> dict[str, Any]:
    """A command's own steps timed alone (``bench.pieces``), µs of CPU each."""
    log = ctx.log("pieces")
    proc = procs.spawn([str(procs.BIN / "python"), "-m", "bench.pieces"], log=log)
    deadline = time.monotonic() + 300
    while proc.poll() is None:
        if time.monotonic() > deadline:
            procs.kill(proc)
            raise RuntimeError("bench.pieces took more than 300 s")
        await asyncio.sleep(0.2)
    text = log.read_text(errors="replace").splitlines()
    lines = [line for line in text if line.startswith("{")]  # its one line of JSON
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"bench.pieces exited with {proc.returncode}: {text[-1:]}")
    found: dict[str, Any] = json.loads(lines[-1])
    return found


#: The most commands the floor (``bench/floor.py``) drains.
FLOOR_MAX = 200_000


async def _floor(ctx: Context, n: int) -> dict[str, Any]:
    """Faust's consumer alone (``bench.floor``) draining ``n`` of the same commands."""
    floor = new_app(ctx, "floor")
    await ensure_topics(ctx, floor)
    topic = floor.prefix + "schedule-commands"
    await produce(ctx.bootstrap, topic, _far_future_commands(n))
    log = ctx.log(floor.name)
    env = dict(os.environ)
    env.update(
        {
            "FLOOR_BROKER": f"kafka://{ctx.bootstrap}",
            "FLOOR_APP_ID": floor.app_id,
            "FLOOR_TOPIC": topic,
            "FLOOR_PARTITIONS": str(PARTITIONS),
            "FLOOR_COUNT": str(n),
            "FLOOR_WEB_PORT": str(floor.port),
            "FLOOR_DATA_DIR": str(floor.data_dir),
        }
    )
    proc = procs.spawn(
        [str(procs.BIN / "python"), "-m", "bench.floor", "worker", "-l", "warn"], env=env, log=log
    )
    allowed = max(120.0, n / 1000)
    deadline = time.monotonic() + allowed

    def reported() -> dict[str, Any] | None:
        for line in log.read_text(errors="replace").splitlines() if log.exists() else ():
            # Faust logs what its worker prints: after a timestamp and a level.
            at = line.find("FLOOR {")
            if at >= 0:
                found = json.loads(line[at + len("FLOOR ") :])
                return {
                    "floor_rate": found["rate"],
                    "floor_cpu_us": found["cpu_us_per_record"],
                    "floor_records": found["records"],
                }
        return None

    try:
        while time.monotonic() < deadline:
            exited = proc.poll() is not None  # before reading: it prints, then exits
            found = reported()
            if found is not None:
                return found
            if exited:
                raise RuntimeError(f"floor exited with {proc.returncode} and no result")
            await asyncio.sleep(0.5)
        raise RuntimeError(f"floor took more than {allowed:g} s")
    finally:
        procs.kill(proc)


async def _drain(
    ctx: Context, worker: Worker | Workers, n: int, *, profile: bool = True
) -> dict[str, Any]:
    """Start the worker(s) on a backlog of ``n`` commands; applied per second while they drain.

    Several workers are measured together: their applied commands and CPU added up.
    """
    members = worker.members if isinstance(worker, Workers) else [worker]
    for member in members:
        member.spawn()
    spawned = time.time()
    samples: list[tuple[float, int]] = []
    cpu_first: tuple[int, float] | None = None
    profiler = None
    deadline = time.monotonic() + max(300.0, n / 1000)
    try:
        while time.monotonic() < deadline:
            for member in members:
                if member.proc.poll() is not None:
                    raise RuntimeError(f"worker exited: {member.tail()}")
            try:
                applied = await worker.applied()
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.2)
                continue
            samples.append((time.time(), applied))
            cpu_now = (applied, sum(procs.cpu_seconds(member.pid) for member in members))
            if applied > 0 and cpu_first is None:
                cpu_first = cpu_now
            if applied > 0 and profiler is None and profile:
                profiler = ctx.profile_start("registration", worker.pid)
            if applied >= n:
                break
            await asyncio.sleep(0.25)
    finally:
        if profiler is not None:
            ctx.profile_stop(
                "registration", profiler, f"worker draining a backlog of {n:,} commands"
            )
    started = [s for s in samples if s[1] > 0]
    if not started:
        raise RuntimeError(
            f"no command applied in {time.time() - spawned:.0f} s: {members[0].tail()}"
        )
    (t0, a0), (t1, a1) = started[0], samples[-1]
    rate = (a1 - a0) / (t1 - t0) if t1 > t0 else float("nan")
    result = {
        "n": n,
        "applied": a1,
        "rate": round(rate),
        "seconds": round(t1 - t0, 1),
        "first_applied_after_start_s": round(t0 - spawned, 1),
    }
    if cpu_first is not None and cpu_now[0] > cpu_first[0]:
        used = (cpu_now[1] - cpu_first[1]) / (cpu_now[0] - cpu_first[0])
        result["cpu_us_per_command"] = round(used * 1e6, 1)
    if a1 < n:
        result["error"] = f"timed out: {a1:,} of {n:,} applied"
    return result


def _du(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


async def _restarts(ctx: Context, worker: Worker) -> dict[str, dict[str, Any]]:
    count = ctx.sizes.recurring
    run = f"restart-{uuid.uuid4().hex[:6]}"
    target = await KafkaTarget.start(ctx.bootstrap, run, ctx.log(f"kafka-target-{run}"))
    out: dict[str, dict[str, Any]] = {}
    try:
        t = task("kafka", run, ctx.bootstrap)
        await warm_up(ctx, worker, target, run, t)
        base = await worker.applied()
        commands = [command(run, i, "delay-recur", 1, t) for i in range(count)]
        await produce(ctx.bootstrap, worker.prefix + "schedule-commands", commands)
        await worker.wait_applied(base + count, 60)
        await asyncio.sleep(8)
        schedules = {sid(run, i) for i in range(count)}
        for phase in ("data", "empty"):
            watch = ctx.sizes.outage_watch_seconds
            if phase == "empty":
                watch = ctx.sizes.empty_restart_watch_seconds

            async def ready(watch: float = watch) -> Any:
                return await worker.wait_ready(watch)

            killed = time.time()
            worker.kill9()
            if phase == "empty":
                shutil.rmtree(worker.data_dir, ignore_errors=True)
            worker.spawn()
            launched = time.time()
            out[f"ours-{phase}"] = await watch_recovery(
                target, run, schedules, killed, watch, ready
            )
            out[f"ours-{phase}"].update(
                {"schedules_held": ctx.sizes.registration + count, "relaunch_s": launched - killed}
            )
            await asyncio.sleep(3)
    finally:
        target.stop()
    return {"restart": out}


async def watch_recovery(
    reader: Control,
    run: str,
    schedules: set[str],
    since: float,
    watch: float,
    ready: Any = None,
) -> dict[str, Any]:
    """Poll the deliveries of ``run`` until ``schedules`` are all back and on time."""
    ready_at: list[float] = []

    async def note_ready() -> None:
        try:
            await ready()
            ready_at.append(time.time())
        except Exception:
            pass

    waiter = asyncio.ensure_future(note_ready()) if ready is not None else None
    result: dict[str, Any] = {}
    try:
        while True:
            await asyncio.sleep(1)
            records = await reader.dump(run)
            threshold = stats.baseline(records, schedules, since)
            result = stats.recovery(records, schedules, since, threshold=threshold)
            if result["recovered_s"] is not None:
                break
            if time.time() - since > watch:
                result["error"] = (
                    f"not recovered {watch:g} s after the kill: "
                    f"{result['came_back']} of {len(schedules)} schedules delivered again"
                )
                break
    finally:
        if waiter is not None:
            waiter.cancel()
    if ready_at:
        result["ready_s"] = ready_at[0] - since
    return result


# --------------------------------------------------------------------------- failover


async def failover(ctx: Context) -> dict[str, dict[str, Any]]:
    count = ctx.sizes.recurring
    first, second = new_apps(ctx, "failover", 2).members
    run = f"failover-{uuid.uuid4().hex[:6]}"
    target = await KafkaTarget.start(ctx.bootstrap, run, ctx.log(f"kafka-target-{run}"))
    try:
        await first.start()
        await second.start()
        split = await settled([first, second], 120)
        t = task("kafka", run, ctx.bootstrap)
        await warm_up(ctx, first, target, run, t)
        commands = [command(run, i, "delay-recur", 1, t) for i in range(count)]
        await produce(ctx.bootstrap, first.prefix + "schedule-commands", commands)
        await asyncio.sleep(10)
        split = await settled([first, second], 60)
        lost_partitions = set(split[second.url])
        schedules = {sid(run, i) for i in range(count)}
        lost = {s for s in schedules if partition_of(s) in lost_partitions}
        kept = schedules - lost
        killed = time.time()
        second.kill9()
        result = await watch_recovery(
            target, run, lost, killed, ctx.sizes.outage_watch_seconds, lambda: settled([first], 60)
        )
        records = await target.dump(run)
        threshold = result["on_time_threshold_s"]
        result["first_on_time_s"] = stats.first_on_time(records, lost, killed, threshold)
        kept_view = stats.recovery(records, kept, killed)
        result.update(
            {
                "lost_partitions": sorted(lost_partitions),
                "lost_schedules": len(lost),
                "kept_max_lateness": kept_view["max_lateness"],
                # Sanity check of the partition mapping: the lost ones cannot fire on time
                # right after the kill (nobody owns them yet).
                "lost_on_time_within_1s": sum(
                    1
                    for a, s, _, k in records
                    if k in lost and killed < s and a - s <= 1 and a < killed + 1
                ),
            }
        )
        return {"ours": result}
    finally:
        first.stop()
        second.stop()
        target.stop()


async def settled(workers: list[Worker], timeout: float) -> dict[str, list[int]]:
    """Wait until the workers own every partition between them, each ready with some."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            states = {w.url: await w.health() for w in workers}
            owned = sorted(p for s in states.values() for p in s["active_partitions"])
            if owned == list(range(PARTITIONS)) and all(
                s["ready"] and s["active_partitions"] for s in states.values()
            ):
                return {url: s["active_partitions"] for url, s in states.items()}
            last = states
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            last = exc
        await asyncio.sleep(0.3)
    raise RuntimeError(f"workers did not settle in {timeout:g} s: {last!r}")


# --------------------------------------------------------------------------- idle


async def idle_start(ctx: Context) -> Worker:
    return await new_app(ctx, "idle").start()
