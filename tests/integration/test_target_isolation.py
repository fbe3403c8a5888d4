"""One unreachable target must not hold up deliveries to the others (real Kafka, real sockets)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from scheduler.devtools.broker import LocalBroker
from scheduler.domain.retry import Outcome
from scheduler.targets.executors import PRODUCER_START_S, Executors, kafka_record
from tests.support import HttpTarget, Worker, read_topic, send_commands

pytestmark = pytest.mark.integration


def kafka_firing(host: str, topic: str, key: str) -> dict[str, Any]:
    return {
        "firing_id": f"fir_{key}",
        "schedule_id": f"sch_{key}",
        "scheduled_for": "2030-01-01T00:00:00.000000Z",
        "attempt": 1,
        "task": {
            "type": "kafka",
            "connection": {"host": host, "topic": topic},
            "data": {"key": key},
            "timeout": 60.0,
        },
    }


async def test_a_silent_kafka_cluster_holds_up_neither_another_nor_itself_for_long(
    kafka: LocalBroker,
) -> None:
    """A host that accepts connections and never answers: starting its producer
    gives up after PRODUCER_START_S (a retryable failure), and a healthy cluster's
    delivery meanwhile goes out at once."""
    peers: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)

    silent = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    executors = Executors()
    try:
        started = time.monotonic()
        stuck = asyncio.ensure_future(
            executors.deliver(kafka_firing(f"127.0.0.1:{port}", "nowhere", "silent"))
        )
        await asyncio.sleep(0.5)
        assert peers, "the producer never connected to the silent host"
        healthy = await executors.deliver(kafka_firing(kafka.bootstrap, "isolation-ok", "ok"))
        assert healthy.ok, healthy
        assert time.monotonic() - started < PRODUCER_START_S / 2
        result = await stuck
        took = time.monotonic() - started
        assert result.outcome is Outcome.RETRYABLE
        assert result.error is not None and "no answer from Kafka cluster" in result.error
        assert PRODUCER_START_S - 1 <= took <= PRODUCER_START_S + 5, took
    finally:
        await executors.close()
        silent.close()
        for writer in peers:
            writer.close()


async def test_in_one_batch_a_silent_cluster_holds_up_neither_the_healthy_one_nor_appending(
    kafka: LocalBroker,
) -> None:
    """Firings for a silent cluster and a healthy one, due together: appending them
    ahead waits for no producer start, and the healthy cluster's records arrive
    while the silent one's producer is still starting."""
    peers: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)

    silent = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    silent_host = f"127.0.0.1:{silent.sockets[0].getsockname()[1]}"
    topic = f"isolation-batch-{int(time.time())}"
    executors = Executors()
    try:
        records = [kafka_record(kafka_firing(silent_host, "nowhere", f"s{i}")) for i in range(3)]
        records += [kafka_record(kafka_firing(kafka.bootstrap, topic, f"ok{i}")) for i in range(3)]
        started = time.monotonic()
        built = await executors.prebuild_kafka(records, int(time.time() * 1000))
        assert time.monotonic() - started < 1.0, "appending ahead waited for a producer start"
        assert built == []  # neither producer was started yet: both now start on their own
        started = time.monotonic()
        sending = asyncio.ensure_future(executors.deliver_kafka(records, built))
        arrived = await read_topic(
            kafka.bootstrap, topic, lambda found: len(found) >= 3, timeout=PRODUCER_START_S / 2
        )
        assert len(arrived) == 3
        assert not sending.done(), "the batch did not wait for the silent cluster at all"
        results = await sending
        assert [r.ok for r in results] == [False, False, False, True, True, True], results
        assert time.monotonic() - started <= PRODUCER_START_S + 5
        # The healthy producer is started now: a crowd for it is appended ahead, at once.
        started = time.monotonic()
        built = await executors.prebuild_kafka(records, int(time.time() * 1000))
        assert time.monotonic() - started < 1.0
        assert sorted(i for b in built for _, batch in b.batches for i in batch) == [3, 4, 5]
    finally:
        await executors.close()
        silent.close()
        for writer in peers:
            writer.close()


async def test_a_black_hole_rest_target_holds_only_its_share_of_the_slots(
    worker: Worker, http_target: HttpTarget
) -> None:
    """300 firings to a host that accepts and never answers, then 30 to a healthy
    one: the healthy ones go out at once; the black hole holds only its share."""
    peers: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)

    silent = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    try:
        hole = [
            now_rest(f"hole-{i}", f"http://127.0.0.1:{port}/hook", timeout=60) for i in range(300)
        ]
        await send_commands(worker, *hole)
        deadline = time.monotonic() + 30
        while len(peers) < 128:
            assert time.monotonic() < deadline, len(peers)
            await asyncio.sleep(0.1)
        started = time.time()
        await send_commands(
            worker, *[now_rest(f"fine-{i}", f"{http_target.url}/ok/fine") for i in range(30)]
        )
        while len(http_target.of("fine")) < 30:
            assert time.time() - started < 15, len(http_target.of("fine"))
            await asyncio.sleep(0.1)
        # Its share: the per-target limit in flight (connections), never all 256 slots;
        # the rest wait at its gate without holding a slot.
        assert len(peers) <= 128 + 5
    finally:
        silent.close()
        for writer in peers:
            writer.close()


def now_rest(key: str, url: str, **task: Any) -> dict[str, Any]:
    return {
        "client": {
            "operation": "isolation",
            "application": "exec",
            "group": "itest",
            "key": key,
            "type": "scheduler",
        },
        "type": "now",
        "task": {"type": "rest", "connection": {"host": url}, **task},
    }


async def test_idle_target_clients_are_closed_and_capped(
    kafka: LocalBroker, http_target: HttpTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kafka producers beyond the cap and idle ones are closed (never one in use);
    idle HTTP connections past their time are closed."""
    from scheduler.targets import executors as module
    from scheduler.targets import http1

    executors = Executors()
    try:
        port = kafka.bootstrap.rsplit(":", 1)[1]
        hosts = [kafka.bootstrap, f"localhost:{port}"]  # one broker, two "clusters"
        for index, host in enumerate(hosts):
            result = await executors.deliver(kafka_firing(host, "isolation-reap", f"r{index}"))
            assert result.ok, result
        rest = {
            "firing_id": "fir_reap_rest",
            "schedule_id": "sch_reap_rest",
            "scheduled_for": "2030-01-01T00:00:00.000000Z",
            "attempt": 1,
            "task": {
                "type": "rest",
                "connection": {"host": f"{http_target.url}/ok/reap"},
                "timeout": 5.0,
            },
        }
        assert (await executors.deliver(rest)).ok
        assert executors._http.idle_connections == 1
        assert len(executors._producers) == 2

        monkeypatch.setattr(module, "CLIENT_CAP", 1)
        await executors.reap()
        assert len(executors._producers) == 1  # the least recently used went
        assert hosts[1] in executors._producers

        monkeypatch.setattr(module, "CLIENT_IDLE_S", 0.0)
        monkeypatch.setattr(http1, "IDLE_S", 0.0)
        await asyncio.sleep(0.01)
        await executors.reap()
        assert executors._producers == {}
        assert executors._http.idle_connections == 0
        # A closed client is made again when it is needed.
        assert (await executors.deliver(kafka_firing(hosts[0], "isolation-reap", "again"))).ok
    finally:
        await executors.close()
