"""Deliver one firing to its target: REST over our HTTP/1.1 client, Kafka over aiokafka, Redis.

Connections are pooled and reused: kept-alive HTTP connections per origin
(``scheduler.http1``), one producer per Kafka cluster, one client per Redis
URL. For REST, three clients were measured on this machine
(``bench/http_clients.py``, results in ``bench/results/http_clients.md``):
httpx, aiohttp's client (the earlier choice, ~30 times faster than httpx)
and ``scheduler.http1``, which spends a fraction of aiohttp's CPU per POST.
Every attempt is bounded by the task's ``timeout``; a hang past it is a
retryable failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from scheduler.delivery import Outcome, Result, classify_http, delivery_headers, redis_envelope
from scheduler.http1 import HttpClient
from scheduler.models import RedisMode

if TYPE_CHECKING:
    from redis import asyncio as aioredis

log = logging.getLogger(__name__)

#: Kafka errors that say "not now" (the cluster is moving or busy).
_KAFKA_RETRYABLE = (
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.NotLeaderForPartitionError,
    kafka_errors.LeaderNotAvailableError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.NotEnoughReplicasError,
    kafka_errors.UnknownTopicOrPartitionError,
)


#: How long the Kafka delivery producer waits to fill a batch. Every produce
#: request is a socket write, and on this machine a write costs more than
#: a firing's own work (bench/ steady profile); 5 ms adds at most that much
#: to a delivery's lateness.
DELIVERY_LINGER_MS = 5


class Executors:
    """The pooled clients of one worker, and ``deliver`` for any task type."""

    def __init__(self, *, max_connections: int = 256) -> None:
        self._max_connections = max_connections
        self._http = HttpClient()
        self._producers: dict[str, AIOKafkaProducer] = {}
        self._producer_lock = asyncio.Lock()
        self._redis: dict[str, aioredis.Redis] = {}  # redis is imported on first use (~6 MiB)

    async def deliver(self, firing: dict[str, Any]) -> Result:
        task = firing["task"]
        kind = task["type"]
        try:
            if kind == "rest":
                return await self._rest(firing, task)
            # asyncio.timeout rather than wait_for: no extra task per delivery.
            if kind == "kafka":
                async with asyncio.timeout(task["timeout"]):
                    return await self._kafka(firing, task)
            if kind == "redis":
                async with asyncio.timeout(task["timeout"]):
                    return await self._redis_send(firing, task)
        except TimeoutError:
            return Result(Outcome.RETRYABLE, f"timed out after {task['timeout']:g}s")
        return Result(Outcome.PERMANENT, f"unknown task type {kind!r}")

    # -- REST ----------------------------------------------------------------

    async def _rest(self, firing: dict[str, Any], task: dict[str, Any]) -> Result:
        conn = task["connection"]
        headers = {"Content-Type": "application/json", **(conn.get("headers") or {})}
        headers.update(delivery_headers(firing))
        body = json.dumps(task.get("data"), ensure_ascii=False).encode("utf-8")
        try:
            status, reason = await self._http.post(conn["host"], body, headers, task["timeout"])
        except TimeoutError:
            return Result(Outcome.RETRYABLE, f"timed out after {task['timeout']:g}s")
        except ValueError as exc:
            return Result(Outcome.PERMANENT, f"invalid request: {exc}")
        except OSError as exc:  # refused, reset, DNS, TLS: ConnectionError and ssl.SSLError too
            return Result(Outcome.RETRYABLE, f"{type(exc).__name__}: {exc}")
        outcome = classify_http(status)
        if outcome is Outcome.SUCCESS:
            return Result(outcome)
        return Result(outcome, f"HTTP {status} {reason}".strip())

    # -- Kafka ---------------------------------------------------------------

    async def _producer(self, bootstrap: str) -> AIOKafkaProducer:
        producer = self._producers.get(bootstrap)
        if producer is not None:
            return producer
        async with self._producer_lock:
            producer = self._producers.get(bootstrap)
            if producer is None:
                servers = bootstrap.split("://", 1)[-1].replace(";", ",")
                # Batches as big as the worker's own (aiokafka's default is 16 KiB):
                # a burst to a one-partition topic otherwise waits on a round
                # trip per ~60 records (bench/).
                producer = AIOKafkaProducer(
                    bootstrap_servers=servers,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=DELIVERY_LINGER_MS,
                    max_batch_size=1_000_000,
                )
                await producer.start()
                self._producers[bootstrap] = producer
        return producer

    async def _kafka(self, firing: dict[str, Any], task: dict[str, Any]) -> Result:
        conn = task["connection"]
        key = (conn.get("key") or firing["schedule_id"]).encode("utf-8")
        value = json.dumps(task.get("data"), ensure_ascii=False).encode("utf-8")
        headers = [(name, text.encode("utf-8")) for name, text in delivery_headers(firing).items()]
        try:
            producer = await self._producer(conn["host"])
            await producer.send_and_wait(conn["topic"], value=value, key=key, headers=headers)
        except kafka_errors.KafkaError as exc:
            return _kafka_failure(exc)
        return Result(Outcome.SUCCESS)

    async def deliver_kafka(self, firings: list[dict[str, Any]]) -> list[Result]:
        """Deliver many Kafka firings at once: all queued first, then their acks awaited.

        The same records, headers and outcomes as one ``deliver`` each, without
        a task, a timeout and a round trip wait per firing. The batch is
        bounded by the longest ``timeout`` among its tasks.
        """
        results: list[Result | None] = [None] * len(firings)
        pending: dict[asyncio.Future[Any], int] = {}
        limit = 0.0
        for index, firing in enumerate(firings):
            task = firing["task"]
            conn = task["connection"]
            limit = max(limit, float(task["timeout"]))
            key = (conn.get("key") or firing["schedule_id"]).encode("utf-8")
            value = json.dumps(task.get("data"), ensure_ascii=False).encode("utf-8")
            headers = [(name, text.encode()) for name, text in delivery_headers(firing).items()]
            try:
                producer = await self._producer(conn["host"])
                future = await producer.send(conn["topic"], value=value, key=key, headers=headers)
            except Exception as exc:
                results[index] = _kafka_failure(exc)
                continue
            pending[future] = index
        if pending:
            done, late = await asyncio.wait(pending, timeout=limit)
            for future in late:
                future.cancel()
                results[pending[future]] = Result(Outcome.RETRYABLE, f"timed out after {limit:g}s")
            for future in done:
                error = future.exception()
                outcome = _kafka_failure(error) if error else Result(Outcome.SUCCESS)
                results[pending[future]] = outcome
        return [result or Result(Outcome.PERMANENT, "not attempted") for result in results]

    # -- Redis ---------------------------------------------------------------

    def _redis_client(self, url: str) -> aioredis.Redis:
        client = self._redis.get(url)
        if client is None:
            from redis import asyncio as aioredis

            client = aioredis.Redis.from_url(url, max_connections=self._max_connections)
            self._redis[url] = client
        return client

    async def _redis_send(self, firing: dict[str, Any], task: dict[str, Any]) -> Result:
        conn = task["connection"]
        envelope = redis_envelope(firing)
        text = json.dumps(envelope, ensure_ascii=False)
        mode = RedisMode(conn.get("mode") or RedisMode.PUBLISH)
        client = self._redis_client(conn["host"])
        from redis import exceptions as redis_errors

        try:
            if mode is RedisMode.PUBLISH:
                await client.publish(conn["topic"], text)
            elif mode is RedisMode.LIST:
                await client.rpush(conn["topic"], text)
            else:
                fields = {k: json.dumps(v) if k == "data" else str(v) for k, v in envelope.items()}
                await client.xadd(conn["topic"], fields)  # type: ignore[arg-type]
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            return Result(Outcome.RETRYABLE, f"{type(exc).__name__}: {exc}")
        except redis_errors.RedisError as exc:
            return Result(Outcome.PERMANENT, f"{type(exc).__name__}: {exc}")
        return Result(Outcome.SUCCESS)

    async def close(self) -> None:
        await self._http.close()
        for producer in self._producers.values():
            await producer.stop()
        for client in self._redis.values():
            await client.aclose()


def _kafka_failure(exc: BaseException) -> Result:
    """A Kafka error as a result: the cluster's "not now" errors may be retried."""
    if isinstance(exc, _KAFKA_RETRYABLE):
        return Result(Outcome.RETRYABLE, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, kafka_errors.KafkaError):
        retryable = getattr(exc, "retriable", False)
        outcome = Outcome.RETRYABLE if retryable else Outcome.PERMANENT
        return Result(outcome, f"{type(exc).__name__}: {exc}")
    return Result(Outcome.RETRYABLE, f"{type(exc).__name__}: {exc}")
