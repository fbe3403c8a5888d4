"""Session fixtures: one real Kafka broker for the whole run.

A missing Java or Maven is an error here, never a skip: CI must not pass
without having talked to a broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from scheduler.broker import LocalBroker
from tests.support import Worker, free_port


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(port=free_port(), data_dir=tmp_path_factory.mktemp("kafka"))
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def make_worker(kafka: LocalBroker, tmp_path: Path) -> Iterator[type[Worker] | object]:
    """Start workers on the session broker; every one is stopped after the test."""
    started: list[Worker] = []

    def make(**kwargs: object) -> Worker:
        index = len(started)
        worker = Worker(kafka.bootstrap, tmp_path / f"worker{index}", **kwargs)  # type: ignore[arg-type]
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()
