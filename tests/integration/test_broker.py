"""The real thing: fetch Kafka, start it, talk to it with aiokafka, stop and restart it.

Each test starts its own broker on free ports in its own temporary directory,
so these tests neither need nor disturb the session's shared broker. The jar
cache is the per-user default, as the CLI uses it; one test fetches into an
empty cache to prove a cold fetch works.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from scheduler.devtools.broker import (
    HOST,
    KAFKA_VERSION,
    LocalBroker,
    fetch_jars,
    free_port,
    is_port_open,
)
from scheduler.domain.errors import BrokerError

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    instance = LocalBroker(port=free_port(), data_dir=tmp_path / "kafka")
    try:
        yield instance
    finally:
        instance.stop()


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def produce(bootstrap: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"k")
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, group: str | None, count: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        values: list[bytes] = []
        while len(values) < count:
            record = await asyncio.wait_for(consumer.getone(), timeout=30)
            assert record.value is not None
            values.append(record.value)
        if group is not None:
            await consumer.commit()
        return values
    finally:
        await consumer.stop()


async def committed(bootstrap: str, topic: str, group: str, timeout: float = 15) -> int | None:
    """The group's committed offset, asked again while the coordinator may still be loading.

    For a moment after a broker starts, its group coordinator is still reading
    ``__consumer_offsets``. Kafka says so in OffsetFetch's top-level error code,
    which aiokafka 0.14 ignores: it reports "no committed offset" instead.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            offset: int | None = await consumer.committed(TopicPartition(topic, 0))
            if offset is not None or time.monotonic() >= deadline:
                return offset
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


def test_cold_fetch_into_an_empty_cache(tmp_path: Path) -> None:
    started = time.monotonic()
    libs = fetch_jars(tmp_path / "cache")
    elapsed = time.monotonic() - started

    jars = sorted(p.name for p in libs.glob("*.jar"))
    assert f"kafka_2.13-{KAFKA_VERSION}.jar" in jars
    assert f"kafka-clients-{KAFKA_VERSION}.jar" in jars
    assert any(name.startswith("log4j-slf4j-impl-") for name in jars)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock", "libs"]
    print(f"fetched {len(jars)} jars in {elapsed:.1f} s")


async def test_produce_consume_stop_and_restart_keeps_data(broker: LocalBroker) -> None:
    topic = f"broker-test-{uuid.uuid4().hex[:8]}"
    value = b'{"hello": "kafka"}'

    await asyncio.to_thread(broker.start)
    first_pid = broker.pid
    assert first_pid is not None
    assert (broker.data_dir / "logs" / "meta.properties").is_file()
    assert (broker.data_dir / "broker.pid").read_text().strip() == str(first_pid)

    await produce(broker.bootstrap, topic, value)
    assert await read_all(broker.bootstrap, topic, "broker-test", 1) == [value]

    await asyncio.to_thread(broker.stop)
    assert not process_exists(first_pid)
    assert not is_port_open(HOST, broker.port)
    assert broker.controller_port is not None
    assert not is_port_open(HOST, broker.controller_port)
    assert not (broker.data_dir / "broker.pid").exists()

    # Same data directory, same port: the topic, its record and the group's offset survive.
    await asyncio.to_thread(broker.start)
    assert broker.pid != first_pid
    assert await read_all(broker.bootstrap, topic, None, 1) == [value]
    assert await committed(broker.bootstrap, topic, "broker-test") == 1


def test_context_manager_stops_the_broker(tmp_path: Path) -> None:
    port = free_port()
    with LocalBroker(port=port, data_dir=tmp_path / "kafka") as broker:
        pid = broker.pid
        assert pid is not None
        assert is_port_open(HOST, port)

    assert not process_exists(pid)
    assert not is_port_open(HOST, port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_foreground_serves_until_signalled(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    data_dir = tmp_path / "kafka"
    script = (
        "import sys; from scheduler.devtools.broker import LocalBroker; "
        "LocalBroker(port=int(sys.argv[1]), data_dir=sys.argv[2]).run_foreground()"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    with subprocess.Popen(
        [sys.executable, "-c", script, str(port), str(data_dir)],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    ) as runner:
        try:
            assert runner.stdout is not None
            line = runner.stdout.readline().strip()
            assert (
                line == f"Kafka {KAFKA_VERSION} listening on 127.0.0.1:{port} (data in {data_dir})"
            )
            assert is_port_open(HOST, port)
            jvm = int((data_dir / "broker.pid").read_text())

            runner.send_signal(sig)
            assert runner.wait(timeout=30) == 0
        finally:
            if runner.poll() is None:
                runner.kill()

    assert not process_exists(jvm)
    assert not is_port_open(HOST, port)


def test_a_broker_that_dies_during_start_up_reports_its_output(tmp_path: Path) -> None:
    # A heap this small is refused by the JVM itself, after storage was formatted.
    broker = LocalBroker(port=free_port(), data_dir=tmp_path / "kafka", heap="1k")

    with pytest.raises(BrokerError) as caught:
        broker.start()

    message = str(caught.value)
    assert message.startswith(f"Kafka exited with code 1 before listening on {broker.bootstrap}")
    assert "heap" in message.lower()
    assert str(broker.output_file) in message
    assert not broker.is_running
    assert not (broker.data_dir / "broker.pid").exists()


def test_starting_twice_on_one_port_is_refused(broker: LocalBroker, tmp_path: Path) -> None:
    broker.start()
    rival = LocalBroker(port=broker.port, data_dir=tmp_path / "other")

    with pytest.raises(
        BrokerError, match=rf"^127\.0\.0\.1:{broker.port} \(port\) is already in use"
    ):
        rival.start()
    with pytest.raises(BrokerError, match="is already running"):
        broker.start()
