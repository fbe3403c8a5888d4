"""Session fixtures: one real Kafka broker for the whole run.

A missing Java or Maven is an error here, never a skip: CI must not pass
without having talked to a broker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler import patches
from scheduler.devtools.broker import LocalBroker
from scheduler.devtools.redis import RedisServer
from tests.support import Worker, free_port


def pytest_configure(config: pytest.Config) -> None:
    """On library versions the adjustments were not written for, stop with one clear reason.

    Else every test module that builds the app would fail to import, each with
    the same message.
    """
    try:
        patches.check_versions()
    except patches.UntestedVersion as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    broker = LocalBroker(port=free_port(), data_dir=tmp_path_factory.mktemp("kafka"))
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def worker(
    kafka: LocalBroker, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Worker]:
    """One started worker for the whole test module, with its own group and topics.

    Its data dir and log go under a temp dir named after the module.
    """
    module = request.module.__name__.rpartition(".")[2]
    started = Worker(kafka.bootstrap, tmp_path_factory.mktemp(module) / "data")
    started.start()
    yield started
    started.stop()


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


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port (installed by scripts/system-deps)."""
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
async def http_target() -> Any:
    """A real HTTP server that records every request and answers as told."""
    from tests.support import HttpTarget

    target = HttpTarget()
    await target.start()
    try:
        yield target
    finally:
        await target.stop()
