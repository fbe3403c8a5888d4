"""``send_batch``'s wait for room in aiokafka's accumulator (``scheduler.patches.accumulator``).

aiokafka's ``add_batch`` took the time since its first wait off the budget
after every wait, so a batch that had to let several others go first timed
out long before its timeout. These run the real ``MessageAccumulator`` with a
drain that lets one batch go every 50 ms, as a busy sender would.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.message_accumulator import MessageAccumulator
from aiokafka.structs import TopicPartition

import scheduler.app  # noqa: F401  (applies the patch)

TP = TopicPartition("deliveries", 0)


async def _drain_every(accumulator: MessageAccumulator, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        queued = accumulator._batches.get(TP)
        if queued:
            queued.popleft().drain_ready()


async def test_a_batch_behind_many_others_waits_its_whole_timeout() -> None:
    accumulator = MessageAccumulator(None, 16_384, 0, 40)
    await accumulator.add_batch(accumulator.create_builder(), TP, timeout=1.0)
    drain = asyncio.ensure_future(_drain_every(accumulator, 0.05))
    try:
        # Eight more, each let in only when the one queued before it has left:
        # the last waits ~0.4 s over eight rounds. The unpatched budget lost
        # 0.05 + 0.10 + ... + 0.40 = 1.8 s of its 1 s on the way and raised.
        added = await asyncio.gather(
            *(accumulator.add_batch(accumulator.create_builder(), TP, 1.0) for _ in range(8))
        )
    finally:
        drain.cancel()
    assert len(added) == 8


async def test_a_batch_with_no_room_for_its_whole_timeout_still_times_out() -> None:
    accumulator = MessageAccumulator(None, 16_384, 0, 40)
    await accumulator.add_batch(accumulator.create_builder(), TP, timeout=1.0)
    started = asyncio.get_running_loop().time()
    with pytest.raises(KafkaTimeoutError):
        await accumulator.add_batch(accumulator.create_builder(), TP, timeout=0.2)
    assert 0.19 <= asyncio.get_running_loop().time() - started < 0.5
