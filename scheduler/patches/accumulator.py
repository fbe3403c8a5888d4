"""aiokafka's ``send_batch`` waits for room until one deadline, not a shrinking one.

Upstream: ``MessageAccumulator.add_batch`` waits for the partition's queued
batch to leave, again and again while others queue, and after each wait
takes the time since the *first* wait off what is left: the budget shrinks
by 1 + 2 + 3 ... waits, so a request timeout ran out after a fraction of
it.

Ours: the time left is counted from one deadline.

Why: in a large burst to Kafka a few percent of the deliveries failed with
``KafkaTimeoutError`` that way (and, with no retry policy, went to
``firings-dead``); the outbox's writes take the same path.
"""

from __future__ import annotations

import asyncio
import copy
from time import monotonic
from typing import Any

from aiokafka.errors import KafkaTimeoutError, ProducerClosed
from aiokafka.producer.message_accumulator import MessageAccumulator

REPLACES = ("aiokafka.producer.message_accumulator:MessageAccumulator.add_batch",)
USES = (
    "aiokafka.producer.message_accumulator:MessageAccumulator._closed",
    "aiokafka.producer.message_accumulator:MessageAccumulator._exception",
    "aiokafka.producer.message_accumulator:MessageAccumulator._batches",
    "aiokafka.producer.message_accumulator:MessageAccumulator._append_batch",
)


async def add_batch(self: Any, builder: Any, tp: Any, timeout: float) -> Any:
    if self._closed:
        raise ProducerClosed()
    if self._exception is not None:
        raise copy.copy(self._exception)
    deadline = monotonic() + timeout
    while (left := deadline - monotonic()) > 0:
        pending = self._batches.get(tp)
        if not pending:
            return asyncio.shield(self._append_batch(builder, tp).future)
        await pending[-1].wait_drain(timeout=left)
    raise KafkaTimeoutError()


def install() -> None:
    MessageAccumulator.add_batch = add_batch
