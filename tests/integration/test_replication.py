"""On a three-broker cluster: topics replicated as configured, and a broker lost under load.

Real Kafka 4.1.1: three combined broker+controller nodes with static voters
(``scheduler.devtools.broker.cluster``). The worker creates every topic and
changelog with ``SCHEDULER_REPLICATION_FACTOR=3`` and
``SCHEDULER_MIN_INSYNC_REPLICAS=2``; then, while schedules fire every second,
one broker is killed with -9, and no instant goes missing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from scheduler.devtools.broker.cluster import LocalCluster
from tests.support import Clients, HttpTarget, Worker, instant, send_commands

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="replication", application="rf3", group="itest")
SCHEDULES = 30


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    started = LocalCluster(tmp_path / "cluster", size=3)
    started.start()
    try:
        yield started
    finally:
        started.stop()


async def topic_replication(bootstrap: str, prefix: str) -> dict[str, tuple[int, str | None]]:
    """Per topic of ``prefix``: its replication factor and ``min.insync.replicas``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        found: dict[str, tuple[int, str | None]] = {}
        for described in await admin.describe_topics(names):
            replicas = {len(p["replicas"]) for p in described["partitions"]}
            assert len(replicas) == 1, described
            found[described["topic"]] = (replicas.pop(), None)
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in found]
        for response in await admin.describe_configs(resources):
            for _code, _message, _type, name, entries in response.resources:
                for entry in entries:
                    if entry[0] == "min.insync.replicas":
                        found[name] = (found[name][0], entry[1])
        return found
    finally:
        await admin.close()


async def test_replicated_topics_and_a_broker_killed_under_load_lose_nothing(
    cluster: LocalCluster, tmp_path: Path, http_target: HttpTarget
) -> None:
    worker = Worker(
        cluster.bootstrap,
        tmp_path / "worker",
        extra_env={"SCHEDULER_REPLICATION_FACTOR": "3", "SCHEDULER_MIN_INSYNC_REPLICAS": "2"},
    )
    try:
        await asyncio.to_thread(worker.start, 120)
        topics = await topic_replication(cluster.bootstrap, worker.prefix)
        assert len(topics) >= 10, topics
        assert all(rf == 3 and isr == "2" for rf, isr in topics.values()), topics

        commands: list[dict[str, Any]] = [
            {
                "client": CLIENTS.client(f"s{index}"),
                "type": "delay-recur",
                "schedule": "1",
                "misfire_policy": "fire_all",
                "task": {
                    "type": "rest",
                    "connection": {"host": f"{http_target.url}/ok/rf-{index}"},
                    "failed_policy": "retry",
                    "retry_wait": 1,
                    "max_retries": 100,
                },
            }
            for index in range(SCHEDULES)
        ]
        await send_commands(worker, *commands)
        await asyncio.sleep(10)
        killed_at = time.time()
        await asyncio.to_thread(cluster.kill9, 1)
        await asyncio.sleep(25)
        end = time.time()
        await asyncio.sleep(15)  # the window's last instants, retries included
        assert worker.alive(), worker.tail()

        # Every schedule fires each second: between its first delivered instant
        # and the window's end, no second may be missing.
        for index in range(SCHEDULES):
            hits = http_target.of(f"rf-{index}")
            # To the millisecond: instants are whole microseconds, a float is not.
            instants = sorted({round(instant(h["headers"]["X-Scheduled-For"]), 3) for h in hits})
            assert instants, index
            first = instants[0]
            due = {round(first + step, 3) for step in range(int(end - first) + 1)}
            due = {at for at in due if at < end}
            missing = sorted(due - set(instants))
            assert not missing, (index, missing[:5], killed_at)
            assert first < killed_at - 3, (index, first)
    finally:
        worker.stop()
