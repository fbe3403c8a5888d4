"""One unreachable target must not hold up deliveries to the others (real Kafka, real sockets)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from scheduler.devtools.broker import LocalBroker
from scheduler.domain.retry import Outcome
from scheduler.targets.executors import PRODUCER_START_S, Executors

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
