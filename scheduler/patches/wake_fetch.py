"""A partition put back after buffer pressure wakes the waiting fetch call.

Upstream: Faust takes a partition out of its fetches while its stream's
buffer is under pressure and puts it back once the buffer has drained
(``on_buffer_full`` / ``on_buffer_drop``). Its fetch call (``getmany``, in
the consumer thread) waits up to 1 s for a fetch that brings records of the
partitions active when it was made. The records of a partition put back are
already fetched and waiting, so no fetch brings them, and the call sits out
its second.

Ours: putting a partition back wakes the waiting call (:func:`wake_fetch`),
which then takes the partition's records at once.

Why: a worker draining a backlog of commands stood still for about a second
after every few tens of thousands of them.

Upstream also puts back a partition paused with ``pause_partitions`` if its
buffer had been under pressure, and records flow again. Ours leaves a paused
partition out.

A retry tier (``scheduler.streams.retries``) stops reading a partition once
it holds enough records. Faust's ``pause_partitions`` is not the way: it
only filters what Faust hands on, so the rest of a fetch call's records of
that partition are skipped while the client's position has moved past
them; resumed, Faust takes the skipped offsets for a gap, counts them as
acknowledged, and a commit passes them: retries lost. So
:func:`pause_fetching` and :func:`resume_fetching` pause the partition in
aiokafka itself (in the consumer's thread), which keeps its position and
drops only what it had fetched and not yet returned, to fetch it again on
resume. What Faust already took is handed on as usual.
"""

from __future__ import annotations

import contextlib
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import IllegalStateError
from faust.transport.consumer import Consumer

REPLACES = ("faust.transport.consumer:Consumer.on_buffer_drop",)
USES = (
    "aiokafka:AIOKafkaConsumer.pause",
    "aiokafka:AIOKafkaConsumer.resume",
    "faust.transport.consumer:Consumer._buffered_partitions",
    "faust.transport.consumer:Consumer._paused_partitions",
    "faust.transport.consumer:Consumer._get_active_partitions",
    "faust.transport.drivers.aiokafka:Consumer._thread",
    "faust.transport.drivers.aiokafka:AIOKafkaConsumerThread._consumer",
    "mode.threads:ServiceThread.thread_loop",
    "aiokafka:AIOKafkaConsumer._fetcher",
    "aiokafka.consumer.fetcher:Fetcher._fetch_waiters",
    "aiokafka.consumer.fetcher:Fetcher._notify",
)

_on_buffer_drop = Consumer.on_buffer_drop


def on_buffer_drop(self: Any, tp: Any) -> None:
    put_back = tp in self._buffered_partitions
    _on_buffer_drop(self, tp)
    if tp in self._paused_partitions:
        # Paused on purpose (``pause_partitions``): the buffer draining must
        # not undo that, as upstream's put-back does.
        self._get_active_partitions().discard(tp)
        return
    if put_back:
        wake_fetch(self)


def wake_fetch(consumer: Any) -> bool:
    """Wake a fetch call of ``consumer`` waiting in its thread; False if there is no thread."""
    thread = getattr(consumer, "_thread", None)
    fetcher = getattr(getattr(thread, "_consumer", None), "_fetcher", None)
    loop = getattr(thread, "thread_loop", None)
    if fetcher is None or loop is None or loop.is_closed():
        return False
    loop.call_soon_threadsafe(_wake_waiters, fetcher)
    return True


def pause_fetching(consumer: Any, tp: Any) -> bool:
    """Stop fetching partition ``tp`` (kept assigned, position kept); False without a thread."""
    return _in_thread(consumer, "pause", tp)


def resume_fetching(consumer: Any, tp: Any) -> bool:
    """Fetch partition ``tp`` again, from where it was paused, and wake the fetch call."""
    resumed = _in_thread(consumer, "resume", tp)
    wake_fetch(consumer)
    return resumed


def _in_thread(consumer: Any, method: str, tp: Any) -> bool:
    thread = getattr(consumer, "_thread", None)
    client = getattr(thread, "_consumer", None)
    loop = getattr(thread, "thread_loop", None)
    if client is None or loop is None or loop.is_closed():
        return False
    # aiokafka wants its own tuple; a message's may be Faust's.
    partition = TopicPartition(tp.topic, tp.partition)

    def call() -> None:
        # No longer assigned: a rebalance has reset its state anyway.
        with contextlib.suppress(IllegalStateError):
            getattr(client, method)(partition)

    loop.call_soon_threadsafe(call)
    return True


def _wake_waiters(fetcher: Any) -> None:
    for waiter in list(fetcher._fetch_waiters):
        fetcher._notify(waiter)


def install() -> None:
    Consumer.on_buffer_drop = on_buffer_drop  # type: ignore[method-assign]
