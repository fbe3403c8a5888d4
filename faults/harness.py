"""The fault suite's parts: a broker, workers, three real targets, a load, and a verifier.

Everything is real: Kafka 4.1.1 (``scheduler.devtools.broker``), ``scheduler
worker`` processes, an HTTP server, ``redis-server`` and a Kafka target
topic. The load is ``delay-recur`` schedules with ``fire_all``, each
command produced with a chosen Kafka timestamp, so every nominal instant is
known in advance: ``accepted + k * interval``. The verifier compares what
the targets received in a window with those instants.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from scheduler.devtools.broker import LocalBroker
from scheduler.devtools.redis import RedisServer
from scheduler.domain import ids

SCHEDULER = str(Path(sys.executable).parent / "scheduler")
KINDS = ("rest", "kafka", "redis")
#: Partitions of the Kafka target topic.
TARGET_PARTITIONS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_instant(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def micros(instant: datetime) -> int:
    return int((instant - EPOCH) / timedelta(microseconds=1))


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# ----------------------------------------------------------------------- processes


class Broker:
    """The local broker, which a scenario may kill -9 and start again on the same data."""

    def __init__(self, work: Path, name: str = "kafka") -> None:
        self.broker = LocalBroker(port=free_port(), data_dir=work / name)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def start(self) -> None:
        self.broker.start(timeout=180)

    def kill9(self) -> None:
        pid = self.broker.pid
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            while self.broker.is_running:
                time.sleep(0.05)

    def stop(self) -> None:
        if self.broker.is_running:
            self.broker.stop()


class WorkerProcess:
    """One ``scheduler worker`` of the suite's app."""

    def __init__(self, cluster: Cluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.peak_rss = 0

    @property
    def data_dir(self) -> Path:
        return self.cluster.work / f"worker{self.index}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            {
                "SCHEDULER_BROKER": f"kafka://{self.cluster.broker.bootstrap}",
                "SCHEDULER_APP_ID": self.cluster.app_id,
                "SCHEDULER_TOPIC_PREFIX": self.cluster.prefix,
                "SCHEDULER_PARTITIONS": str(self.cluster.partitions),
                "SCHEDULER_WEB_PORT": str(self.port),
                "SCHEDULER_DATA_DIR": str(self.data_dir),
                "SCHEDULER_SESSION_TIMEOUT": "6",
                "SCHEDULER_HEARTBEAT_INTERVAL": "0.5",
                "SCHEDULER_LOG_LEVEL": "warning",
            }
        )
        log = (self.cluster.work / f"worker{self.index}.log").open("ab")
        self.proc = subprocess.Popen(
            [SCHEDULER, "worker"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker {self.index} exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).json().get("ready"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"worker {self.index} not ready in {timeout:g}s")

    def sample_rss(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            with open(f"/proc/{self.proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
        except OSError:
            pass

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def wipe(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


class Redis(RedisServer):
    """Every write on disk before it is answered: killed with -9, it comes back with them."""

    def __init__(self, work: Path) -> None:
        super().__init__(free_port(), work / "redis", persist=True)


class HttpTarget:
    """A real HTTP server that records what it receives (and may be told to fail)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[tuple[str, str, str, float]] = []
        #: While set, every request is answered 503 and not recorded.
        self.down = False
        self.refused = 0
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        async def hook(request: web.Request) -> web.Response:
            await request.read()
            if self.down:
                self.refused += 1
                return web.Response(status=503)
            h = request.headers
            self.received.append(
                (h["Idempotency-Key"], h["X-Schedule-Id"], h["X-Scheduled-For"], time.time())
            )
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class BlackHole:
    """A TCP server that accepts every connection, reads what comes, and never answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.connections = 0
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._held: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hole"

    async def start(self) -> None:
        async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self._held.add(writer)
            try:
                while chunk := await reader.read(65536):
                    self.requests += chunk.count(b"POST ")
            finally:
                self._held.discard(writer)
                writer.close()

        self._server = await asyncio.start_server(swallow, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._held):
                writer.close()


# ----------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    work: Path
    workers: int = 3
    partitions: int = 6
    broker: Broker = field(init=False)
    redis: Redis = field(init=False)
    http: HttpTarget = field(init=False)
    #: Kafka targets on a cluster of their own (which a scenario may take down).
    target_cluster: bool = False
    target_broker: Broker | None = field(init=False, default=None)
    members: list[WorkerProcess] = field(default_factory=list)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    def __post_init__(self) -> None:
        self.broker = Broker(self.work)
        if self.target_cluster:
            self.target_broker = Broker(self.work, "kafka-target")
        self.redis = Redis(self.work)
        self.http = HttpTarget()

    @property
    def target_bootstrap(self) -> str:
        return (self.target_broker or self.broker).bootstrap

    @property
    def app_id(self) -> str:
        return f"faults-{self.tag}"

    @property
    def prefix(self) -> str:
        return f"f{self.tag}-"

    @property
    def target_topic(self) -> str:
        return f"{self.prefix}target"

    @property
    def redis_list(self) -> str:
        return f"{self.prefix}target"

    async def start(self) -> None:
        await asyncio.to_thread(self.broker.start)
        if self.target_broker is not None:
            await asyncio.to_thread(self.target_broker.start)
        admin = AIOKafkaAdminClient(bootstrap_servers=self.target_bootstrap)
        await admin.start()
        try:
            # Stamped by the broker on arrival: the record's time is when it was delivered.
            topic = NewTopic(
                self.target_topic,
                TARGET_PARTITIONS,
                1,
                topic_configs={"message.timestamp.type": "LogAppendTime"},
            )
            await admin.create_topics([topic])
        finally:
            await admin.close()
        self.redis.start()
        await self.http.start()
        self.members = [WorkerProcess(self, index) for index in range(self.workers)]
        for member in self.members:
            member.start()
        for member in self.members:
            await asyncio.to_thread(member.wait_ready)

    async def stop(self) -> None:
        for member in self.members:
            member.stop()
        await self.http.stop()
        self.redis.stop()
        if self.target_broker is not None:
            await asyncio.to_thread(self.target_broker.stop)
        await asyncio.to_thread(self.broker.stop)

    def sample(self) -> None:
        for member in self.members:
            member.sample_rss()


# ----------------------------------------------------------------------- load and verifier


@dataclass
class Load:
    """``count`` schedules spread over the target kinds: each fires every ``interval`` s,
    or, when ``one_shot``, once (a ``delay`` of ``interval`` s).

    Acceptance is spread evenly over ``spread`` s (one interval by default),
    so the load is even. ``timely`` loads count towards lateness; a load that
    is meant to wait (for a target that is down) does not.
    """

    count: int
    interval: int = 1
    #: The schedules' key prefix: distinct per load of one cluster.
    name: str = "s"
    kinds: tuple[str, ...] = KINDS
    one_shot: bool = False
    spread: float | None = None
    #: A REST target other than the cluster's own HTTP server.
    rest_url: str | None = None
    #: Task fields that replace the defaults below.
    task: dict[str, Any] = field(default_factory=dict)
    timely: bool = True
    #: Per schedule id, its acceptance (its command's Kafka timestamp) in µs.
    accepted: dict[str, int] = field(default_factory=dict)

    def command(self, cluster: Cluster, index: int) -> tuple[str, dict[str, Any]]:
        kind = self.kinds[index % len(self.kinds)]
        client = {
            "operation": "faults",
            "application": cluster.tag,
            "group": kind,
            "key": f"{self.name}{index}",
            "type": "scheduler",
        }
        sid = ids.schedule_id(*client.values())
        connection: dict[str, Any]
        if kind == "rest":
            connection = {"host": self.rest_url or cluster.http.url}
        elif kind == "kafka":
            connection = {"host": cluster.target_bootstrap, "topic": cluster.target_topic}
        else:
            connection = {"host": cluster.redis.url, "topic": cluster.redis_list, "mode": "list"}
        task = {
            "type": kind,
            "connection": connection,
            "data": {"i": index},
            "failed_policy": "retry",
            "retry_wait": 2,
            "max_retries": 1000,
            "timeout": 5,
        }
        task.update(self.task)
        return sid, {
            "client": client,
            "type": "delay" if self.one_shot else "delay-recur",
            "schedule": str(self.interval),
            "misfire_policy": "fire_all",
            "task": task,
        }

    async def register(self, cluster: Cluster) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=cluster.broker.bootstrap, acks="all")
        await producer.start()
        try:
            start_ms = int(time.time() * 1000)
            spread_ms = int((self.interval if self.spread is None else self.spread) * 1000)
            for index in range(self.count):
                sid, body = self.command(cluster, index)
                stamp = start_ms + index * spread_ms // self.count
                self.accepted[sid] = stamp * 1000
                await producer.send(
                    f"{cluster.prefix}schedule-commands",
                    json.dumps(body).encode(),
                    key=sid.encode(),
                    timestamp_ms=stamp,
                )
            await producer.flush()
        finally:
            await producer.stop()

    def expected(self, low: float, high: float) -> set[tuple[str, int]]:
        """Every (schedule id, instant in µs) due in [low, high) (seconds since the epoch)."""
        step = self.interval * 1_000_000
        low_us, high_us = int(low * 1_000_000), int(high * 1_000_000)
        out = set()
        for sid, accepted in self.accepted.items():
            if self.one_shot:
                if low_us <= accepted + step < high_us:
                    out.add((sid, accepted + step))
                continue
            k = max(1, -(-(low_us - accepted) // step))
            while (at := accepted + k * step) < high_us:
                out.add((sid, at))
                k += 1
        return out


async def received(cluster: Cluster) -> list[tuple[str, str, str, float]]:
    """Every delivery the three targets got: (firing id, schedule id, scheduled for, arrival)."""
    out = list(cluster.http.received)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=cluster.target_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        # Up to the end as of now: the schedules go on firing meanwhile.
        parts = [TopicPartition(cluster.target_topic, p) for p in range(TARGET_PARTITIONS)]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        await consumer.seek_to_beginning(*parts)
        while await _behind(consumer, ends):
            batch = await consumer.getmany(*parts, timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    h = {k: v.decode() for k, v in record.headers}
                    out.append(
                        (
                            h["Idempotency-Key"],
                            h["X-Schedule-Id"],
                            h["X-Scheduled-For"],
                            record.timestamp / 1000,
                        )
                    )
    finally:
        await consumer.stop()
    from redis import asyncio as aioredis

    redis = aioredis.Redis.from_url(cluster.redis.url)
    try:
        for raw in await redis.lrange(cluster.redis_list, 0, -1):
            body = json.loads(raw)
            # The list keeps no arrival time: lateness is taken from REST and Kafka.
            out.append((body["firing_id"], body["schedule_id"], body["scheduled_for"], -1.0))
    finally:
        await redis.aclose()
    return out


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


@dataclass
class Verdict:
    expected: int
    delivered: int
    missing: int
    duplicated: int
    wrong: int
    worst_late_s: float
    p99_late_s: float
    missing_examples: list[Any]
    wrong_examples: list[Any]

    def ok(self) -> bool:
        return self.missing == 0 and self.wrong == 0


def verify(
    loads: Load | list[Load], got: list[tuple[str, str, str, float]], low: float, high: float
) -> Verdict:
    """Compare what the targets got for instants in [low, high) with what the loads were due.

    Lateness is taken over the ``timely`` loads only.
    """
    loads = loads if isinstance(loads, list) else [loads]
    expected: set[tuple[str, int]] = set()
    known: set[str] = set()
    timely: set[str] = set()
    for load in loads:
        expected |= load.expected(low, high)
        known.update(load.accepted)
        if load.timely:
            timely.update(load.accepted)
    low_us, high_us = int(low * 1_000_000), int(high * 1_000_000)
    by_key: dict[tuple[str, int], list[tuple[str, float]]] = {}
    wrong = []
    for firing_id, sid, scheduled_for, arrived in got:
        instant = parse_instant(scheduled_for)
        at = micros(instant)
        if sid not in known or not low_us <= at < high_us:
            continue
        if (sid, at) not in expected or firing_id != ids.firing_id(sid, instant):
            wrong.append((firing_id, sid, scheduled_for))
            continue
        by_key.setdefault((sid, at), []).append((firing_id, arrived))
    missing = sorted(expected - set(by_key))
    duplicated = sum(len(v) - 1 for v in by_key.values())
    late = sorted(
        min(a for _, a in v if a >= 0) - at / 1_000_000
        for (sid, at), v in by_key.items()
        if sid in timely and any(a >= 0 for _, a in v)
    )
    return Verdict(
        expected=len(expected),
        delivered=len(by_key),
        missing=len(missing),
        duplicated=duplicated,
        wrong=len(wrong),
        worst_late_s=round(late[-1], 3) if late else 0.0,
        p99_late_s=round(late[max(int(len(late) * 0.99) - 1, 0)], 3) if late else 0.0,
        missing_examples=missing[:5],
        wrong_examples=wrong[:5],
    )
