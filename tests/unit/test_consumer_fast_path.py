"""The inline delivery of fetched records to Faust's streams (``scheduler.app``).

Faust's consumer races each record's delivery against its flow being
suspended. Ours runs the delivery inline first; these check that it still
finishes a delivery that has to wait, and still gives up on one that waits
while the flow is suspended (a rebalance), as Faust's race does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from faust.transport.consumer import Consumer as _FaustConsumer
from mode import Service

import scheduler.app  # noqa: F401  (installs the adjustments)
from scheduler.patches.inline_delivery import wait_first as _wait_first


class FakeConsumer(Service):
    """Just what the patched ``wait_first`` reads: a service with ``suspend_flow``."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = asyncio.Event()


def _compile_message_handler(
    body: Callable[[], Coroutine[Any, Any, Any]],
) -> Callable[[], Coroutine[Any, Any, Any]]:
    # Named as Faust names its per-record callback, which the patch looks for.
    async def on_message() -> Any:
        return await body()

    return on_message


def test_the_patch_is_installed_on_fausts_consumer() -> None:
    assert _FaustConsumer.wait_first is _wait_first


async def test_a_delivery_with_room_completes_inline_without_a_task() -> None:
    consumer = FakeConsumer()
    tasks_before = len(asyncio.all_tasks())

    async def put() -> str:
        assert len(asyncio.all_tasks()) == tasks_before  # nothing was scheduled for it
        return "put"

    suspended = consumer.suspend_flow.wait()
    result = await _wait_first(consumer, _compile_message_handler(put)(), suspended)
    assert result.results == ["put"] and not result.stopped
    assert suspended.cr_frame is None  # closed, never left pending


async def test_a_delivery_that_must_wait_is_finished_when_it_can() -> None:
    consumer = FakeConsumer()
    room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done: list[str] = []

    async def put() -> None:
        await room  # a full queue
        await asyncio.sleep(0)
        done.append("put")

    waiting = asyncio.ensure_future(
        _wait_first(consumer, _compile_message_handler(put)(), consumer.suspend_flow.wait())
    )
    await asyncio.sleep(0.05)
    assert not waiting.done() and not done
    room.set_result(None)
    await asyncio.wait_for(waiting, 1)
    assert done == ["put"]


async def test_a_waiting_delivery_gives_up_when_the_flow_is_suspended() -> None:
    consumer = FakeConsumer()

    async def put() -> None:
        await asyncio.Event().wait()  # never any room

    waiting = asyncio.ensure_future(
        _wait_first(consumer, _compile_message_handler(put)(), consumer.suspend_flow.wait())
    )
    await asyncio.sleep(0.05)
    consumer.suspend_flow.set()
    await asyncio.wait_for(waiting, 1)


async def test_other_waits_take_fausts_own_path() -> None:
    consumer = FakeConsumer()

    async def other() -> str:
        return "other"

    result = await _wait_first(consumer, other(), timeout=1)
    assert result.results == ["other"]


@pytest.mark.filterwarnings("error::RuntimeWarning")
async def test_a_delivery_that_raises_raises_here() -> None:
    consumer = FakeConsumer()

    async def broken() -> None:
        raise KeyError("no callback for this partition")

    with pytest.raises(KeyError):
        await _wait_first(
            consumer, _compile_message_handler(broken)(), consumer.suspend_flow.wait()
        )


async def test_a_delivery_given_up_lets_go_of_the_lock_it_waited_for() -> None:
    consumer = FakeConsumer()
    lock = asyncio.Lock()
    await lock.acquire()  # held elsewhere, as during a subscription change

    async def put() -> None:
        async with lock:
            pass

    # Held here, so that no garbage collection closes it: the cancellation must.
    delivery = _compile_message_handler(put)()
    waiting = asyncio.ensure_future(_wait_first(consumer, delivery, consumer.suspend_flow.wait()))
    await asyncio.sleep(0.05)
    consumer.suspend_flow.set()
    await asyncio.wait_for(waiting, 1)
    lock.release()
    # The abandoned waiter left the queue: the lock is free for the next record.
    await asyncio.wait_for(lock.acquire(), 1)
