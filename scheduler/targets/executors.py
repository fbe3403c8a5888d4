"""Deliver one firing to its target: REST over our HTTP/1.1 client, Kafka over aiokafka, Redis.

Connections are pooled and reused: kept-alive HTTP connections per origin
(``scheduler.targets.http1``), one producer per Kafka cluster, one client per Redis
URL. For REST, ``scheduler.targets.http1`` rather than httpx or aiohttp's
client (the earlier choice): a delivery is one small POST, and those general
clients spend far more CPU per POST on their own machinery than the rest of
the delivery does (compared in ``bench/http_clients.py``, results in
``bench/results/http_clients.md``).
Every attempt is bounded by the task's ``timeout``; a hang past it is a
retryable failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from aiokafka import AIOKafkaProducer
from aiokafka import errors as kafka_errors

from scheduler import kafka_auth
from scheduler.domain import secrets
from scheduler.domain.ids import murmur2
from scheduler.domain.models import RedisMode, redis_url
from scheduler.domain.retry import Outcome, Result, classify_http, delivery_headers, redis_envelope
from scheduler.kafka_auth import Access
from scheduler.patches import private
from scheduler.patches.broker_guard import BrokerGuard
from scheduler.targets import clusters
from scheduler.targets.egress import EgressDenied, Policy, resolve, targets_of
from scheduler.targets.guard import Gate, Gates, Limits, Refused
from scheduler.targets.http1 import HttpClient

if TYPE_CHECKING:
    from redis import asyncio as aioredis

log = logging.getLogger(__name__)

#: ``json.dumps(value, ensure_ascii=False)``, the body a task's ``data`` is sent as,
#: without the new encoder ``json.dumps`` builds for that option on every call,
#: which in a burst is a noticeable share of the executor's time (measured in bench/).
payload_json = json.JSONEncoder(ensure_ascii=False).encode

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


#: Kafka errors that say the cluster cannot be reached at all (for the breaker).
_KAFKA_UNREACHABLE = (
    kafka_errors.ProducerClosed,
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.RequestTimedOutError,
)


#: How long the Kafka delivery producer waits to fill a batch. Every produce
#: request is a socket write, which costs more than a firing's own work, so
#: without a linger a steady stream would spend its CPU on writes of one record
#: each (measured in bench/); 5 ms adds at most that much to a delivery's lateness.
DELIVERY_LINGER_MS = 5

#: Deliveries that may wait at a target's gate, per delivery it lets run.
WAITING_PER_LIMIT = 8

#: Kafka producers and Redis clients kept at most, over every target.
CLIENT_CAP = 32
#: Seconds a target's client is kept after its last use.
CLIENT_IDLE_S = 300.0
#: Seconds between two looks for clients to close.
REAP_EVERY_S = 30.0


async def _stop_producer(producer: Any) -> None:
    await producer.stop()


async def _close_redis(client: Any) -> None:
    await client.aclose()


#: How long starting a Kafka target's producer (connecting, first metadata)
#: may take before the deliveries waiting for it fail as retryable.
PRODUCER_START_S = 10.0


class Executors:
    """The pooled clients of one worker, and ``deliver`` for any task type."""

    def __init__(
        self,
        *,
        max_connections: int = 256,
        per_target: int = 128,
        policy: Policy | None = None,
        secrets_dir: Path | None = None,
        clusters: dict[str, Access] | None = None,
    ) -> None:
        self._max_connections = max_connections
        #: Where ``{{secret:NAME}}`` references are read from at delivery.
        self.secrets_dir = secrets_dir
        #: The Kafka target clusters the operator named (``connection.cluster``).
        self.clusters = clusters or {}
        #: Where deliveries may connect (``scheduler.targets.egress``).
        self.policy = policy or Policy()
        self.gates = Gates(Limits(limit=per_target, queue=WAITING_PER_LIMIT * per_target))
        self._next_reap = time.monotonic() + REAP_EVERY_S
        self._last_used: dict[tuple[int, str], float] = {}
        self._reaping: asyncio.Future[None] | None = None
        self._http = HttpClient(self.policy)
        self._producers: dict[str, AIOKafkaProducer] = {}
        self._starting: dict[str, asyncio.Future[AIOKafkaProducer]] = {}
        self._redis: dict[str, aioredis.Redis] = {}  # redis: imported on first use (heavy)

    async def deliver(self, firing: dict[str, Any], slot: Slot | None = None) -> Result:
        """One delivery, through its target's gate (``scheduler.targets.guard``).

        ``slot``: the worker-wide delivery slot the caller holds, if any. It is
        given back while the delivery waits at its target's gate and taken
        again once through, so deliveries queued for one busy target never
        hold the slots other targets need.
        """
        self._maybe_reap()
        task = firing["task"]
        try:
            gate = self.gates.of(target_of(task))
        except (ValueError, KeyError, TypeError) as exc:
            return Result(Outcome.PERMANENT, f"invalid target: {exc}")
        try:
            probe = await gate.enter(before_wait=slot.give_back if slot is not None else None)
        except Refused as exc:
            return _refused(exc)
        if slot is not None and not slot.held:
            try:
                await slot.take()
            except BaseException:
                await gate.leave(probe=probe, down=None)
                raise
        result: Result | None = None
        try:
            result = await self._deliver(firing, task)
            return result
        finally:
            # No result: cancelled (a rebalance), which says nothing of the target.
            await gate.leave(probe=probe, down=None if result is None else result.unreachable)

    async def _deliver(self, firing: dict[str, Any], task: dict[str, Any]) -> Result:
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
            return _timed_out(task["timeout"])
        return Result(Outcome.PERMANENT, f"unknown task type {kind!r}")

    # -- client caches ---------------------------------------------------------

    def _maybe_reap(self) -> None:
        now = time.monotonic()
        if now < self._next_reap or (self._reaping is not None and not self._reaping.done()):
            return
        self._next_reap = now + REAP_EVERY_S
        self._reaping = asyncio.ensure_future(self._reap_logged())

    async def _reap_logged(self) -> None:
        try:
            await self.reap()
        except Exception:
            log.exception("closing idle target clients failed")

    def _used(self, cache: dict[str, Any], key: str) -> None:
        self._last_used[(id(cache), key)] = time.monotonic()

    async def reap(self) -> None:
        """Close clients of targets idle for ``CLIENT_IDLE_S``, and the least used past the cap.

        Only a client whose target has nothing in flight or waiting is closed,
        so no delivery loses its client mid-way.
        """
        self._http.reap()
        for cache, closer in ((self._producers, _stop_producer), (self._redis, _close_redis)):
            now = time.monotonic()
            # Last use as the clients themselves saw it (a prebuild uses a
            # producer without a gate), least recent first.
            ranked = sorted(
                (self._last_used.get((id(cache), key), now), key) for key in list(cache)
            )
            over = max(len(cache) - CLIENT_CAP, 0)
            for rank, (_, key) in enumerate(ranked):
                # Looked at again now: an earlier close may have let a delivery in.
                used = self._last_used.get((id(cache), key), now)
                if not (rank < over or now - used > CLIENT_IDLE_S) or key not in cache:
                    continue
                gate = self.gates.peek(self._gate_key(cache, key))
                if gate is not None and not gate.idle:
                    continue
                client = cache.pop(key)
                self._last_used.pop((id(cache), key), None)
                await closer(client)

    def _gate_key(self, cache: dict[str, Any], key: str) -> str:
        return f"kafka:{key}" if cache is self._producers else f"redis:{key}"

    # -- REST ----------------------------------------------------------------

    async def _rest(self, firing: dict[str, Any], task: dict[str, Any]) -> Result:
        conn = task["connection"]
        try:
            url = secrets.expand_url(conn["host"], self.secrets_dir)
            given = {
                str(name): secrets.expand(str(value), self.secrets_dir)
                for name, value in (conn.get("headers") or {}).items()
            }
        except secrets.SecretMissing as exc:
            return Result(Outcome.PERMANENT, f"secret_missing: {exc}")
        headers = dict(given)
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
        body = payload_json(task.get("data")).encode("utf-8")
        try:
            status, reason = await self._http.post(
                url, body, headers, task["timeout"], own=delivery_headers(firing)
            )
        except TimeoutError:
            return _timed_out(task["timeout"])
        except EgressDenied as exc:
            return _denied(exc)
        except ValueError as exc:
            return Result(Outcome.PERMANENT, f"invalid request: {exc}")
        except OSError as exc:  # refused, reset, DNS, TLS: ConnectionError and ssl.SSLError too
            return Result(Outcome.RETRYABLE, f"{type(exc).__name__}: {exc}", unreachable=True)
        outcome = classify_http(status)
        if outcome is Outcome.SUCCESS:
            return Result(outcome)
        return Result(outcome, f"HTTP {status} {reason}".strip())

    # -- Kafka ---------------------------------------------------------------

    async def _producer(self, bootstrap: str) -> AIOKafkaProducer:
        """The cluster's producer, started once; concurrent callers share the start.

        One cluster's start never waits for another's, and it gives up after
        ``PRODUCER_START_S``: a silent host would otherwise hold every Kafka
        delivery of the worker behind it.
        """
        self._used(self._producers, bootstrap)
        producer = self._producers.get(bootstrap)
        if producer is not None:
            return producer
        starting = self._starting.get(bootstrap)
        if starting is None:
            starting = asyncio.ensure_future(self._start_producer(bootstrap))
            self._starting[bootstrap] = starting
            starting.add_done_callback(lambda _: self._starting.pop(bootstrap, None))
        # Shielded: one caller's own timeout must not cancel the others' start.
        return await asyncio.shield(starting)

    def _warm(self, bootstrap: str) -> None:
        """Start the cluster's producer in the background (its failure is met again later)."""
        if bootstrap in self._starting:
            return
        warming = asyncio.ensure_future(self._producer(bootstrap))
        warming.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _start_producer(self, bootstrap: str) -> AIOKafkaProducer:
        if bootstrap.startswith(clusters.PREFIX):
            name = bootstrap[len(clusters.PREFIX) :]
            access = self.clusters.get(name)
            if access is None:
                raise UnknownCluster(f"no Kafka target cluster {name!r} is configured")
            options = kafka_auth.client_options(access)
            servers = access.bootstrap_servers
        else:
            servers = await self._pinned_servers(bootstrap)
            options = {"bootstrap_servers": servers}
        # Batches as big as the worker's own (aiokafka's default is 16 KiB):
        # a burst to a one-partition topic otherwise waits on a round
        # trip for every few dozen records.
        producer = AIOKafkaProducer(
            **options,
            acks="all",
            enable_idempotence=True,
            linger_ms=DELIVERY_LINGER_MS,
            max_batch_size=1_000_000,
        )
        # A cluster the operator named is trusted to advertise its own brokers;
        # one a command named has each of its brokers checked as well.
        guard = (
            None
            if bootstrap.startswith(clusters.PREFIX)
            else BrokerGuard(producer.client, self.policy)
        )
        try:
            async with asyncio.timeout(PRODUCER_START_S):
                await _start_guarded(producer, guard)
        except BaseException as exc:
            await producer.stop()
            if isinstance(exc, TimeoutError):
                raise kafka_errors.KafkaConnectionError(
                    f"no answer from Kafka cluster {servers} within {PRODUCER_START_S:g}s"
                ) from None
            raise
        self._producers[bootstrap] = producer
        return producer

    async def _pinned_servers(self, bootstrap: str) -> str:
        """The bootstrap list with each host replaced by an address the policy allows.

        The brokers the cluster then advertises are checked as they are
        connected to (:class:`BrokerGuard`).
        """
        pinned = []
        for host, port in targets_of({"type": "kafka", "connection": {"host": bootstrap}}):
            addresses = await resolve(host, port or 9092, self.policy)
            chosen = addresses[0] if addresses else host
            shown = f"[{chosen}]" if ":" in chosen else chosen
            pinned.append(f"{shown}:{port or 9092}")
        return ",".join(pinned)

    async def _kafka(self, firing: dict[str, Any], task: dict[str, Any]) -> Result:
        conn = task["connection"]
        key = (conn.get("key") or firing["schedule_id"]).encode("utf-8")
        value = payload_json(task.get("data")).encode("utf-8")
        headers = [(name, text.encode("utf-8")) for name, text in delivery_headers(firing).items()]
        try:
            producer = await self._producer(clusters.target_key(conn))
            await producer.send_and_wait(conn["topic"], value=value, key=key, headers=headers)
        except (kafka_errors.KafkaError, EgressDenied, UnknownCluster) as exc:
            return _kafka_failure(exc)
        return Result(Outcome.SUCCESS)

    async def deliver_kafka(
        self, records: list[KafkaRecord], prebuilt: list[Prebuilt] | None = None
    ) -> list[Result]:
        """Deliver many Kafka firings at once, as one prebuilt batch per topic partition.

        The same records, keys, partitions (the default partitioner's murmur2
        of the key) and headers as one ``deliver`` each, without a task, a
        timeout and a send per firing. ``records``: the firings' records,
        built ahead (:func:`kafka_record`) while the firings were held.
        ``prebuilt``: batches of some of them already appended
        (:meth:`prebuild_kafka`, its indexes are into ``records``); only
        the rest are appended here. Each producer batch is given the longest
        ``timeout`` among the tasks, from when the one before it on its
        partition was answered (:func:`_settle_chain`). One result per
        record, in order.
        """
        results: list[Result | None] = [None] * len(records)
        limit = max(record.timeout for record in records)
        # Every partition at once: aiokafka sends one batch per partition per
        # request, and a partition's next batch waits until its previous one
        # has left, so partitions queued one after another would wait on
        # each other's round trips.
        jobs: list[tuple[Awaitable[list[Sent]], list[int]]] = []
        for built in prebuilt or ():
            members = [index for _, batch in built.batches for index in batch]
            jobs.append((_send_prebuilt(built), members))
        # A prebuilt batch's indexes are its own: if they add up, none is left.
        covered = sum(len(members) for _, members in jobs)
        rest = (
            []
            if covered == len(records)
            else sorted(set(range(len(records))).difference(*(m for _, m in jobs)))
        )
        groups = _by_topic(records, rest)
        self._maybe_reap()
        # Each cluster's gate once for the batch: its circuit may be open. No
        # waiting here (a batch waiting on one cluster would hold up the others).
        gates: dict[str, tuple[Gate, bool]] = {}
        try:
            for host in sorted({host for host, _ in groups}):
                gate = self.gates.of(f"kafka:{host}")
                try:
                    gates[host] = (gate, await gate.enter(wait=False))
                except Refused as exc:
                    for (other, _), indexes in groups.items():
                        if other == host:
                            for index in indexes:
                                results[index] = _refused(exc)
            groups = {key: indexes for key, indexes in groups.items() if key[0] in gates}
            await self._send_kafka(records, results, jobs, groups, limit)
        finally:
            for host, (gate, probe) in gates.items():
                mine = [i for (other, _), ind in groups.items() if other == host for i in ind]
                answers = [results[i] for i in mine]
                down = (
                    None
                    if any(r is None for r in answers)
                    else any(r is not None and r.unreachable for r in answers)
                )
                await gate.leave(probe=probe, down=down)
        return [result or Result(Outcome.PERMANENT, "not attempted") for result in results]

    async def _send_kafka(
        self,
        records: list[KafkaRecord],
        results: list[Result | None],
        jobs: list[tuple[Awaitable[list[Sent]], list[int]]],
        groups: dict[tuple[str, str], list[int]],
        limit: float,
    ) -> None:
        by_host: dict[str, list[tuple[str, list[int]]]] = {}
        for (host, topic), indexes in groups.items():
            by_host.setdefault(host, []).append((topic, indexes))
        # Each cluster on its own: one slow to start or to answer holds up none
        # of the others (nor the batches appended ahead, which go at once).
        await asyncio.gather(
            _settle_sends(jobs, results, limit),
            *(
                self._send_to_cluster(host, topics, records, results, limit)
                for host, topics in by_host.items()
            ),
        )

    async def _send_to_cluster(
        self,
        host: str,
        topics: list[tuple[str, list[int]]],
        records: list[KafkaRecord],
        results: list[Result | None],
        limit: float,
    ) -> None:
        try:
            producer = await self._producer(host)
        except Exception as exc:
            for _, indexes in topics:
                for index in indexes:
                    results[index] = _kafka_failure(exc)
            return
        jobs: list[tuple[Awaitable[list[Sent]], list[int]]] = []
        for topic, indexes in topics:
            try:
                for partition, members in (
                    await _by_partition(producer, topic, records, indexes)
                ).items():
                    jobs.append(
                        (_send_batches(producer, topic, partition, members, records), members)
                    )
            except Exception as exc:
                for index in indexes:
                    results[index] = _kafka_failure(exc)
        await _settle_sends(jobs, results, limit)

    async def prebuild_kafka(self, records: list[KafkaRecord], timestamp_ms: int) -> list[Prebuilt]:
        """Append ``records`` into producer batches now, to be sent later by ``deliver_kafka``.

        For a crowd due at one instant: appending is most of what its send
        costs, and done at the instant it would hold back the first record
        until the whole crowd was appended; it can be done before the
        instant. The records carry ``timestamp_ms`` (their instant) rather
        than the time they were appended. The loop gets a turn every
        ``PREBUILD_YIELD`` records.

        Only clusters whose producer is already started are appended to: the
        caller waits for this, and so do the firings held behind it. Another
        cluster's producer is started meanwhile, in the background, and its
        records are left to ``deliver_kafka``.
        """
        out: list[Prebuilt] = []
        appended = 0
        for (host, topic), indexes in _by_topic(records, range(len(records))).items():
            producer = self._producers.get(host)
            if producer is None:
                self._warm(host)
                continue
            self._used(self._producers, host)
            for partition, members in (
                await _by_partition(producer, topic, records, indexes)
            ).items():
                built = Prebuilt(producer, topic, partition, [])
                builder = producer.create_batch()
                batch: list[int] = []
                for index in members:
                    record = records[index]
                    if not _append(builder, record, timestamp_ms):
                        built.batches.append((builder, batch))
                        builder, batch = producer.create_batch(), []
                        if not _append(builder, record, timestamp_ms):
                            raise ValueError(
                                f"a record of {len(record.value)} bytes exceeds a batch"
                            )
                    batch.append(index)
                    appended += 1
                    if appended % PREBUILD_YIELD == 0:
                        await asyncio.sleep(0)
                if batch:
                    built.batches.append((builder, batch))
                out.append(built)
        return out

    # -- Redis ---------------------------------------------------------------

    async def _redis_client(self, host: str, url: str) -> aioredis.Redis:
        """The server's client, made once: to an address the egress policy allows.

        Kept under ``host`` as the command wrote it (as its gate is), and made
        from ``url``, the URL it stands for (``redis_url``: ``host:port`` is
        ``redis://host:port``) with its password read from the secrets dir.
        """
        self._used(self._redis, host)
        client = self._redis.get(host)
        if client is None:
            from redis import asyncio as aioredis

            client = aioredis.Redis.from_url(
                await self._pinned_url(url), max_connections=self._max_connections
            )
            self._redis[host] = client
        return client

    async def _pinned_url(self, url: str) -> str:
        """``url`` with its host replaced by an allowed address (kept for TLS: ``rediss``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise EgressDenied(f"{parts.scheme or url}: only redis:// and rediss:// targets")
        port = parts.port or 6379
        addresses = await resolve(parts.hostname, port, self.policy)
        if parts.scheme == "rediss" or not addresses:
            return url  # the certificate names the host, so the name is connected to
        chosen = addresses[0]
        host = f"[{chosen}]" if ":" in chosen else chosen
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    async def _redis_send(self, firing: dict[str, Any], task: dict[str, Any]) -> Result:
        conn = task["connection"]
        envelope = redis_envelope(firing)
        text = json.dumps(envelope, ensure_ascii=False)
        mode = RedisMode(conn.get("mode") or RedisMode.PUBLISH)
        try:
            url = redis_url(conn["host"])
        except ValueError as exc:  # only a command stored before this was checked
            return Result(Outcome.PERMANENT, f"invalid target: {exc}")
        try:
            client = await self._redis_client(
                conn["host"], secrets.expand_url(url, self.secrets_dir)
            )
        except secrets.SecretMissing as exc:
            return Result(Outcome.PERMANENT, f"secret_missing: {exc}")
        except EgressDenied as exc:
            return _denied(exc)
        except OSError as exc:  # the name did not resolve
            return Result(Outcome.RETRYABLE, f"{type(exc).__name__}: {exc}", unreachable=True)
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
            return Result(Outcome.RETRYABLE, f"{type(exc).__name__}: {exc}", unreachable=True)
        except redis_errors.RedisError as exc:
            return Result(Outcome.PERMANENT, f"{type(exc).__name__}: {exc}")
        return Result(Outcome.SUCCESS)

    async def close(self) -> None:
        await self._http.close()
        for starting in list(self._starting.values()):
            starting.cancel()  # _start_producer stops what it began
        for producer in self._producers.values():
            await producer.stop()
        for client in self._redis.values():
            await client.aclose()


class Slot:
    """A worker-wide delivery slot (one permit of ``semaphore``), which can be given back."""

    __slots__ = ("held", "semaphore")

    def __init__(self, semaphore: asyncio.Semaphore) -> None:
        self.semaphore = semaphore
        self.held = True  # the caller acquired it

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.semaphore.release()

    async def take(self) -> None:
        await self.semaphore.acquire()
        self.held = True

    def release(self) -> None:
        """Done with it (if it is still held)."""
        self.give_back()


async def _start_guarded(producer: AIOKafkaProducer, guard: BrokerGuard | None) -> None:
    """Start ``producer``; if ``guard`` refuses one of its brokers meanwhile, fail with why."""
    if guard is None:
        await producer.start()
        return
    starting = asyncio.ensure_future(producer.start())
    denied = asyncio.ensure_future(guard.wait_denied())
    try:
        await asyncio.wait((starting, denied), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (starting, denied):
            task.cancel()
        await asyncio.gather(starting, denied, return_exceptions=True)
    if guard.denied is not None:
        raise EgressDenied(guard.denied)
    starting.result()


def _refused(exc: Refused) -> Result:
    """A gate's refusal: put off (busy) or failed (circuit open)."""
    if exc.busy:
        return Result(Outcome.RETRYABLE, str(exc), deferred=True)
    return Result(Outcome.RETRYABLE, str(exc), unreachable=True)


def _timed_out(seconds: float) -> Result:
    return Result(Outcome.RETRYABLE, f"timed out after {seconds:g}s", unreachable=True)


def target_of(task: dict[str, Any]) -> str:
    """What one connection pool serves: a REST origin, a Kafka bootstrap list, a Redis URL."""
    if task["type"] == "kafka":
        return f"kafka:{clusters.target_key(task['connection'])}"
    host = str(task["connection"]["host"])
    if task["type"] == "rest":
        parts = urlsplit(host)
        return f"{parts.scheme}://{parts.netloc}"
    return f"{task['type']}:{host}"


class UnknownCluster(Exception):
    """A ``connection.cluster`` this worker has no configuration for."""


def _denied(exc: EgressDenied) -> Result:
    """A target the egress policy denies: a permanent failure, said as such."""
    return Result(Outcome.PERMANENT, f"egress_denied: {exc}")


def _kafka_failure(exc: BaseException) -> Result:
    """A Kafka error as a result: the cluster's "not now" errors may be retried."""
    if isinstance(exc, EgressDenied):
        return _denied(exc)
    if isinstance(exc, UnknownCluster):
        return Result(Outcome.PERMANENT, f"unknown_cluster: {exc}")
    if isinstance(exc, _KAFKA_UNREACHABLE):
        return Result(Outcome.RETRYABLE, f"{type(exc).__name__}: {exc}", unreachable=True)
    if isinstance(exc, _KAFKA_RETRYABLE):
        return Result(Outcome.RETRYABLE, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, kafka_errors.KafkaError):
        retryable = getattr(exc, "retriable", False)
        outcome = Outcome.RETRYABLE if retryable else Outcome.PERMANENT
        return Result(outcome, f"{type(exc).__name__}: {exc}")
    return Result(Outcome.RETRYABLE, f"{type(exc).__name__}: {exc}", unreachable=True)


#: From this many records for one partition on, they are sent as prebuilt batches.
MIN_BATCH = 64


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What a Kafka firing produces, built before its instant."""

    host: str
    topic: str
    key: bytes
    key_hash: int
    """murmur2 of the key, as Kafka's default partitioner computes it."""
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    """A tuple, which garbage collection stops tracking (aiokafka's builder wants a list: one
    is made at the append)."""
    timeout: float
    """The task's timeout: a batch is bounded by its longest."""


def kafka_record(firing: dict[str, Any]) -> KafkaRecord:
    conn = firing["task"]["connection"]
    key = (conn.get("key") or firing["schedule_id"]).encode("utf-8")
    return KafkaRecord(
        host=clusters.target_key(conn),
        topic=conn["topic"],
        key=key,
        key_hash=murmur2(key) & 0x7FFFFFFF,
        value=payload_json(firing["task"].get("data")).encode("utf-8"),
        headers=tuple((name, text.encode()) for name, text in delivery_headers(firing).items()),
        timeout=float(firing["task"]["timeout"]),
    )


#: Records appended between two turns of the loop while prebuilding.
PREBUILD_YIELD = 5_000

#: A queued batch's future and the indexes of its records.
Sent = tuple["asyncio.Future[Any]", list[int]]


@dataclass(slots=True)
class Prebuilt:
    """Batches of one topic partition, appended ahead of their instant, sent in order."""

    producer: AIOKafkaProducer
    topic: str
    partition: int
    batches: list[tuple[Any, list[int]]]
    """Each a ``BatchBuilder`` and the indexes of its records."""
    queued: list[Sent] | None = None
    """Once queued on the producer (:func:`queue_prebuilt`): each batch's future and indexes."""


def _by_topic(
    records: list[KafkaRecord], indexes: Iterable[int]
) -> dict[tuple[str, str], list[int]]:
    groups: dict[tuple[str, str], list[int]] = {}
    for index in indexes:
        record = records[index]
        groups.setdefault((record.host, record.topic), []).append(index)
    return groups


async def _by_partition(
    producer: AIOKafkaProducer, topic: str, records: list[KafkaRecord], indexes: list[int]
) -> dict[int, list[int]]:
    """``indexes`` by the partition Kafka's default partitioner gives their keys."""
    partitions = sorted(await producer.partitions_for(topic))
    by_partition: dict[int, list[int]] = {}
    for index in indexes:
        chosen = partitions[records[index].key_hash % len(partitions)]
        by_partition.setdefault(chosen, []).append(index)
    return by_partition


def _append(builder: Any, record: KafkaRecord, timestamp_ms: int | None) -> bool:
    appended = builder.append(
        timestamp=timestamp_ms, key=record.key, value=record.value, headers=list(record.headers)
    )
    return appended is not None


async def _settle_sends(
    jobs: list[tuple[Awaitable[list[Sent]], list[int]]],
    results: list[Result | None],
    limit: float,
) -> None:
    """Run the sends of ``jobs`` and fill in each record's result, waiting at most ``limit``."""
    chains: list[list[Sent]] = []
    sends = await asyncio.gather(*(job for job, _ in jobs), return_exceptions=True)
    for (_, members), sent in zip(jobs, sends, strict=True):
        if isinstance(sent, BaseException):
            for index in members:
                results[index] = _kafka_failure(sent)
        elif sent:
            chains.append(sent)
    await asyncio.gather(*(_settle_chain(sent, results, limit) for sent in chains))


async def _settle_chain(sent: list[Sent], results: list[Result | None], limit: float) -> None:
    """Fill in the results of one partition's sends, in the order queued.

    Each has ``limit`` from when the one before it was answered: the
    producer sends a partition one batch per request, so a batch queued
    behind others is not on its way until they are answered. Once one is
    late, those behind it are given up too.
    """
    late = False
    for future, batch in sent:
        if not future.done() and not late:
            await asyncio.wait([future], timeout=limit)
            late = not future.done()
        if future.done():
            error = future.exception()
            outcome = _kafka_failure(error) if error else Result(Outcome.SUCCESS)
        else:
            future.cancel()
            outcome = _timed_out(limit)
        for index in batch:
            results[index] = outcome


def queue_prebuilt(built: Prebuilt) -> list[Sent]:
    """Queue ``built``'s batches on its producer now, all of them (once); their futures.

    At a crowd's instant this is all that stands between its batches and
    the producer's sender, so its caller queues them before any other work
    of the instant. (A partition's last batch stays open, as ``send_batch``
    leaves it: the producer's own sends may still join it.)
    """
    if built.queued is None:
        futures = private.queue_batches(
            built.producer, built.topic, built.partition, [b for b, _ in built.batches]
        )
        built.queued = [
            (future, batch) for future, (_, batch) in zip(futures, built.batches, strict=True)
        ]
    return built.queued


async def _send_prebuilt(built: Prebuilt) -> list[Sent]:
    return queue_prebuilt(built)


async def _send_batches(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    members: list[int],
    records: list[KafkaRecord],
) -> list[Sent]:
    """Queue ``members`` on one partition in as few batches as fit; each batch's future.

    A few records go one by one (``producer.send``, which appends them to
    the partition's queued batch): with ``send_batch``, which first waits
    for that batch to leave, a steady stream of small groups stalled and
    its deliveries went out seconds late.
    """
    sent: list[Sent] = []
    if len(members) < MIN_BATCH:
        for index in members:
            record = records[index]
            future = await producer.send(
                topic,
                record.value,
                key=record.key,
                partition=partition,
                headers=list(record.headers),
            )
            sent.append((future, [index]))
        return sent
    # Queued as each fills, not with ``send_batch``: that waits for the
    # partition's previous batch to leave before it queues the next, and the
    # appending of the rest waited with it.
    builder = producer.create_batch()
    batch: list[int] = []
    for index in members:
        record = records[index]
        if not _append(builder, record, None):  # full: queue it and go on with a new one
            sent.append((private.queue_batches(producer, topic, partition, [builder])[0], batch))
            builder, batch = producer.create_batch(), []
            await asyncio.sleep(0)  # so the sender takes it while the rest are appended
            if not _append(builder, record, None):
                raise ValueError(f"a record of {len(record.value)} bytes exceeds a batch")
        batch.append(index)
    if batch:
        sent.append((private.queue_batches(producer, topic, partition, [builder])[0], batch))
    return sent
