"""How a batch of Kafka deliveries waits for its sends (``executors._settle_chain``).

Futures stand in for the producer's: only the waiting is under test; the
same sends on a real broker are in ``tests/integration/test_queue_batches.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from scheduler.domain.retry import Outcome
from scheduler.targets import executors


async def test_a_partitions_sends_each_have_the_limit_from_the_one_before_it() -> None:
    """A batch queued behind others is not on its way until they are answered: its
    ``limit`` starts then, not when all were queued. One late, the rest are given up."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in range(4)]
    loop.call_later(0.15, futures[0].set_result, None)
    loop.call_later(0.30, futures[1].set_result, None)  # 0.15 s after the first
    loop.call_later(0.60, futures[2].set_result, None)  # 0.30 s after: late
    results: list[Any] = [None] * 4
    sent = [(future, [index]) for index, future in enumerate(futures)]
    await executors._settle_chain(sent, results, limit=0.2)
    assert [r.outcome for r in results[:2]] == [Outcome.SUCCESS] * 2
    assert [r.outcome for r in results[2:]] == [Outcome.RETRYABLE] * 2
    assert all("timed out" in (r.error or "") for r in results[2:])
    assert futures[3].cancelled()
