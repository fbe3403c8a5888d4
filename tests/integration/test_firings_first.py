"""A batch that fired a command as it was applied: its firings reach the broker first.

The command agent wakes a schedule due within its timer's lead as it applies
the command, and writes the record and the firing in the same batch. The
batch must have the firing on the broker before its tables move (RocksDB,
then the changelog): a worker killed in between then reads the command again
and fires it again, instead of finding it fired with its firing lost.

A real producer and broker; the firings topic appends with the broker's
clock (``LogAppendTime``), so a record's timestamp says when the broker had it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rocksdict import Options, Rdict

from scheduler import tables
from scheduler.app import app
from scheduler.devtools.broker import LocalBroker
from scheduler.streams import batch as batches

pytestmark = pytest.mark.integration


class _Table:
    """A stand-in for a Faust table: one real RocksDB, a changelog topic name."""

    def __init__(self, root: Path, changelog: str) -> None:
        self.db = Rdict(str(root / "db"), options=Options(raw_mode=True))
        self.data = SimpleNamespace(
            _db_for_partition=lambda partition: self.db,
            set_persisted_offset=lambda tp, offset: None,
        )
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: changelog)


@pytest.fixture
async def topics(kafka: LocalBroker) -> AsyncIterator[tuple[str, str]]:
    run = uuid.uuid4().hex[:8]
    firings, changelog = f"ff-firings-{run}", f"ff-changelog-{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(firings, 1, 1, topic_configs={"message.timestamp.type": "LogAppendTime"}),
                NewTopic(changelog, 1, 1),
            ]
        )
    finally:
        await admin.close()
    yield firings, changelog


@pytest.fixture
async def producer(kafka: LocalBroker, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    started = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, linger_ms=5)
    await started.start()
    monkeypatch.setattr(app.producer, "_ensure_producer", lambda: started)
    yield started
    await started.stop()


@pytest.fixture
def table(tmp_path: Path, topics: tuple[str, str]) -> Iterator[_Table]:
    made = _Table(tmp_path, topics[1])
    yield made
    tables._staged.clear()
    made.db.close()


async def _appended_ms(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await consumer.getone()
        stamp: int = record.timestamp
        return stamp
    finally:
        await consumer.stop()


async def _flush_ms_of_a_batch(
    kafka: LocalBroker, topics: tuple[str, str], table: _Table, *, firings_first: bool
) -> tuple[int, int]:
    """(when the broker appended the firing, when the tables were flushed), in ms."""
    firings, _ = topics
    flushed: list[int] = []
    real_flush = tables.flush

    def flush() -> None:
        flushed.append(int(time.time() * 1000))
        real_flush()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(batches, "firings_topic_name", lambda: firings)
        patch.setattr(tables, "flush", flush)
        batch = batches.Batch()
        tables.write(table, 0, b"schedule", b"fired", batch)  # type: ignore[arg-type]
        batch.add(firings, 0, b"schedule", b"the firing")
        batch.firings_first = firings_first
        await batch.send()
    await app.producer._ensure_producer().flush()  # type: ignore[attr-defined]
    assert table.db.get(b"schedule") == b"fired"
    return await _appended_ms(kafka.bootstrap, firings), flushed[0]


async def test_the_firings_are_on_the_broker_before_the_tables_move(
    kafka: LocalBroker, topics: tuple[str, str], producer: Any, table: _Table
) -> None:
    appended, flushed = await _flush_ms_of_a_batch(kafka, topics, table, firings_first=True)
    assert appended <= flushed


async def test_without_a_firing_on_arrival_the_tables_move_first(
    kafka: LocalBroker, topics: tuple[str, str], producer: Any, table: _Table
) -> None:
    # The usual order, which the test above must be able to tell apart from:
    # the flush happens before anything is produced (linger 5 ms).
    appended, flushed = await _flush_ms_of_a_batch(kafka, topics, table, firings_first=False)
    assert flushed < appended
