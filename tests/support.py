"""Test plumbing shared by the integration and e2e tiers: real processes, real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from scheduler.domain.ids import schedule_id

SCHEDULER = str(Path(sys.executable).parent / "scheduler")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Worker:
    """One ``scheduler worker`` process with its own consumer group and topics."""

    def __init__(
        self,
        bootstrap: str,
        data_dir: Path,
        *,
        app_id: str | None = None,
        prefix: str | None = None,
        partitions: int = 4,
        web_port: int | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.app_id = app_id or f"sched-{tag}"
        self.prefix = prefix if prefix is not None else f"t{tag}-"
        self.partitions = partitions
        self.web_port = web_port or free_port()
        self.data_dir = data_dir
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"{data_dir.name}-{self.web_port}.log"

    def sibling(self, data_dir: Path, *, same_port: bool = False, **overrides: Any) -> Worker:
        """A new worker in this one's group, on its topics and partition count.

        ``same_port`` gives it this worker's web port too (for one that takes
        over after this one stopped); ``overrides`` go to the constructor.
        """
        settings: dict[str, Any] = {
            "app_id": self.app_id,
            "prefix": self.prefix,
            "partitions": self.partitions,
        }
        if same_port:
            settings["web_port"] = self.web_port
        settings.update(overrides)
        return Worker(self.bootstrap, data_dir, **settings)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "SCHEDULER_BROKER": f"kafka://{self.bootstrap}",
                "SCHEDULER_APP_ID": self.app_id,
                "SCHEDULER_TOPIC_PREFIX": self.prefix,
                "SCHEDULER_PARTITIONS": str(self.partitions),
                "SCHEDULER_WEB_PORT": str(self.web_port),
                "SCHEDULER_DATA_DIR": str(self.data_dir),
                "SCHEDULER_SESSION_TIMEOUT": "6",
                "SCHEDULER_HEARTBEAT_INTERVAL": "0.5",
            }
        )
        env.update(self.extra_env)
        return env

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def start(self, timeout: float = 90.0) -> Worker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [SCHEDULER, "worker"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                last = httpx.get(f"{self.url}/health", timeout=2).json()
                if last["ready"] and last["active_partitions"]:
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"worker not ready in {timeout}s (last health {last}):\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def metric(worker: Worker, name: str) -> float:
    """A value from the worker's ``/metrics`` (the first series of ``name``; 0 when absent)."""
    text = httpx.get(f"{worker.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def create_topics(bootstrap: str, *names: str, partitions: int = 1) -> None:
    """Create ``names`` on the broker, each with ``partitions`` partitions."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1) for name in names])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


@dataclass(frozen=True)
class Clients:
    """The client fields a test module's schedules share; only the key tells them apart."""

    operation: str
    application: str
    group: str
    type: str = "scheduler"

    def client(self, key: str) -> dict[str, str]:
        """The five client fields of a command, as a fresh dict."""
        return {
            "operation": self.operation,
            "application": self.application,
            "group": self.group,
            "key": key,
            "type": self.type,
        }

    def sid(self, key: str) -> str:
        """The schedule id the scheduler derives from ``client(key)``."""
        return schedule_id(self.operation, self.application, self.group, key, self.type)


async def send_commands(
    worker: Worker, *bodies: dict[str, Any] | bytes, key: bytes | None = None
) -> None:
    """Produce ``bodies`` to the worker's command topic: dicts as JSON, bytes as they are."""
    records = [
        (key, body if isinstance(body, bytes) else json.dumps(body).encode()) for body in bodies
    ]
    await produce(worker.bootstrap, worker.topic("schedule-commands"), records)


async def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[Any]], bool],
    timeout: float = 30.0,
    *,
    quiet: bool = False,
) -> list[dict[str, Any]]:
    """Records of ``topic`` from the beginning, decoded as JSON, until ``until`` holds.

    On timeout it fails, or with ``quiet`` returns what it found, for the
    caller to say what is missing.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        metadata_max_age_ms=1000,
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while not until(found):
            left = deadline - time.monotonic()
            if left <= 0:
                if quiet:
                    break
                raise AssertionError(f"timed out reading {topic}; got {found}")
            batch = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for records in batch.values():
                for record in records:
                    found.append(
                        {
                            "key": record.key,
                            "value": json.loads(record.value) if record.value else None,
                            "timestamp": record.timestamp,
                            "headers": dict(record.headers or ()),
                        }
                    )
    finally:
        await consumer.stop()
    return found


async def eventually(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with the last error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
            last = value
        except Exception as exc:
            last = exc
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met in {timeout}s; last: {last!r}")


class Collector:
    """Reads a topic from its beginning in the background, noting when each record arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.records: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Collector:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            group_id=None,
            metadata_max_age_ms=500,
            fetch_max_wait_ms=20,
        )
        await self._consumer.start()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            arrived = time.time()
            for records in batch.values():
                for record in records:
                    self.records.append(
                        {
                            "key": record.key,
                            "value": json.loads(record.value) if record.value else None,
                            "headers": dict(record.headers or ()),
                            "arrived": arrived,
                        }
                    )

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()

    def values(self, **match: Any) -> list[dict[str, Any]]:
        return [
            r["value"]
            for r in self.records
            if all(r["value"].get(k) == v for k, v in match.items())
        ]

    async def wait(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out on {self.topic}; have {len(self.records)} records")
            await asyncio.sleep(0.05)


def instant(text: str) -> float:
    """Seconds since the epoch of a UTC ISO-8601 string."""
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class HttpTarget:
    """A local aiohttp server standing in for a REST target.

    ``/ok/<name>`` answers 200; ``/fail/<name>?times=N&status=S`` answers S
    (default 503) to the first N requests of that name, then 200;
    ``/status/<name>?status=S`` always answers S; ``/hang/<name>?seconds=T``
    sleeps T seconds first. Every request is recorded with its arrival time.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            kind, name = request.match_info["kind"], request.match_info["name"]
            body = await request.read()
            seen = sum(1 for r in self.requests if r["name"] == name)
            self.requests.append(
                {
                    "name": name,
                    "arrived": time.time(),
                    "headers": dict(request.headers),
                    "body": json.loads(body) if body else None,
                }
            )
            status = 200
            if kind == "fail" and seen < int(request.query.get("times", "1")):
                status = int(request.query.get("status", "503"))
            elif kind == "status":
                status = int(request.query["status"])
            elif kind == "hang":
                await asyncio.sleep(float(request.query.get("seconds", "30")))
            return web.json_response({"seen": seen + 1}, status=status)

        app = web.Application()
        app.router.add_post("/{kind}/{name}", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def of(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["name"] == name]
