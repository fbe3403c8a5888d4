"""A partition put back into Faust's fetches wakes the fetch call waiting in the consumer thread.

Two real event loops, as in a worker: the consumer thread's, where a waiter
stands for aiokafka's fetch call waiting for records, and this test's, which
plays Faust's main loop. The consumer, its thread and its fetcher are stand-ins
with the attributes ``scheduler.app`` touches.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer

import scheduler.app  # noqa: F401  (installs the adjustments)
from scheduler.patches.wake_fetch import wake_fetch


class _Fetcher:
    """The two members of aiokafka's ``Fetcher`` that the wake-up uses."""

    def __init__(self) -> None:
        self._fetch_waiters: set[asyncio.Future[None]] = set()

    def _notify(self, future: asyncio.Future[None]) -> None:
        if not future.done():
            future.set_result(None)


@pytest.fixture
def thread_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    runner.join(2)
    loop.close()


def _consumer(loop: asyncio.AbstractEventLoop, fetcher: _Fetcher) -> Any:
    thread = SimpleNamespace(thread_loop=loop, _consumer=SimpleNamespace(_fetcher=fetcher))
    return SimpleNamespace(_thread=thread)


def _waiting(loop: asyncio.AbstractEventLoop, fetcher: _Fetcher, timeout: float) -> Any:
    """A fetch call in the thread: waits on a waiter up to ``timeout``; its seconds taken."""

    async def wait() -> float:
        started = time.monotonic()
        waiter = loop.create_future()
        fetcher._fetch_waiters.add(waiter)
        await asyncio.wait([waiter], timeout=timeout)
        return time.monotonic() - started

    return asyncio.run_coroutine_threadsafe(wait(), loop)


def test_a_waiting_fetch_call_is_woken_at_once(thread_loop: asyncio.AbstractEventLoop) -> None:
    fetcher = _Fetcher()
    call = _waiting(thread_loop, fetcher, timeout=1.0)
    deadline = time.monotonic() + 1
    while not fetcher._fetch_waiters and time.monotonic() < deadline:
        time.sleep(0.005)
    assert wake_fetch(_consumer(thread_loop, fetcher)) is True
    assert call.result(timeout=2) < 0.3


def test_without_a_wake_up_the_call_sits_out_its_timeout(
    thread_loop: asyncio.AbstractEventLoop,
) -> None:
    fetcher = _Fetcher()
    call = _waiting(thread_loop, fetcher, timeout=0.5)
    assert call.result(timeout=2) >= 0.45


def test_no_thread_yet_is_no_wake_up() -> None:
    assert wake_fetch(SimpleNamespace()) is False
    stopped = SimpleNamespace(_thread=SimpleNamespace(thread_loop=None, _consumer=None))
    assert wake_fetch(stopped) is False


def test_putting_back_a_buffered_partition_wakes_the_fetch_only_then(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    woken: list[Any] = []
    monkeypatch.setattr("scheduler.patches.wake_fetch.wake_fetch", woken.append)
    active: set[str] = set()
    consumer = SimpleNamespace(
        _buffered_partitions={"tp-full", "tp-paused"},
        _paused_partitions={"tp-paused"},
        _get_active_partitions=lambda: active,
        app=SimpleNamespace(in_recovery=False),
    )
    FaustConsumer.on_buffer_drop(consumer, "tp-other")  # never taken out: nothing to wake
    assert woken == []
    FaustConsumer.on_buffer_drop(consumer, "tp-full")
    assert woken == [consumer]
    assert "tp-full" in active
    # Paused on purpose: its buffer draining leaves it out, and wakes nothing.
    FaustConsumer.on_buffer_drop(consumer, "tp-paused")
    assert woken == [consumer]
    assert "tp-paused" not in active
    assert consumer._buffered_partitions == set()
