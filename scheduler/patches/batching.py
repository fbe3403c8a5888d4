"""Events in batches, with no timer: what is waiting is taken at once.

Upstream: Faust's ``Stream.take_events(max, within)`` waits ``within`` for a
batch to fill even when one event is all there is, and its loop wakes up
every ``within`` while the topic is idle. Its stream iterator gives the
event loop a turn before every event, so an agent gets one event per turn
however many wait.

Ours: :func:`take_batches` waits for the first event, then hands over
everything buffered so far; events that arrive while a batch is being
processed make up the next one. An idle stream costs nothing, a single
command is processed at once, and under load batches grow by themselves.
:func:`take_queued` takes what is already queued without a turn each. Both
are called, not installed: they drive a Faust stream through its private
parts (listed in ``USES``).

Why: a short ``within`` kept an idle worker busy waking up; a turn of
the loop per event cost about as much as holding a firing.

Events are acknowledged after the body of the ``async for`` has finished
with their batch, never before, and never when it raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from faust.types import EventT

REPLACES: tuple[str, ...] = ()
USES = (
    "faust.streams:Stream.enable_acks",
    "faust.streams:Stream.add_processor",
    "faust.streams:Stream._processors",
    "faust.streams:Stream._enable_passive",
    "faust.streams:Stream._on_message_in",
    "faust.streams:Stream._on_stream_event_in",
    "faust.streams:Stream.wait_for_stopped",
    "faust.streams:Stream.current_event",
    "mode.utils.queues:ThrowableQueue._errors",
    "faust.transport.consumer:Consumer.unacked",
    "faust.transport.conductor:Conductor.acking_topics",
)


async def take_batches(stream: Any, max_: int) -> AsyncIterator[list[Any]]:
    """Yield lists of at most ``max_`` events of ``stream``, acking each list after use."""
    events: list[Any] = []
    ready = asyncio.Event()  # set while ``events`` holds anything
    room = asyncio.Event()  # set while ``events`` is below ``max_``
    room.set()

    async def add(value: Any) -> Any:
        # A stream processor: runs in the stream's passive iteration, once per event.
        if len(events) >= max_:
            room.clear()
            await stream.wait(room)
        event = stream.current_event
        if event is None:
            raise RuntimeError("a batched stream found no current event")
        events.append(event)
        ready.set()
        return value

    saved_acks = stream.enable_acks
    stream.enable_acks = False  # acked below, after the batch was processed
    stream.add_processor(add)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            if not events and await stream.wait_for_stopped(ready):
                break
            # Faust's stream iteration gives the loop a turn before every
            # event, so the processor above adds one event per turn: what is
            # queued behind it joins this batch at once. (The iteration turns
            # before it takes an event from the queue and calls the processor
            # right after, so these come after every event it has taken.)
            if len(events) < max_:
                events.extend(take_queued(stream, max_ - len(events)))
            batch = events[:max_]
            try:
                yield batch
            finally:
                del events[: len(batch)]
                if not events:
                    ready.clear()
                room.set()
            # Reached only once the body finished with the batch: if it raised
            # (its records could not be written), the batch stays unacknowledged
            # and no offset is committed past it.
            for event in batch:
                await stream.ack(event)
    finally:
        stream.enable_acks = saved_acks
        stream._processors.remove(add)


def take_queued(stream: Any, limit: int) -> list[Any]:
    """Up to ``limit`` events already fetched for ``stream``, taken without a turn each.

    Faust's stream iterator gives the event loop a turn before every event,
    so an agent gets one event per turn however many wait; on this machine a
    turn (an ``epoll_wait`` and the loop's own work) costs about as much as
    holding a firing. This takes what is queued now,
    and for each event does what that iterator does before it hands one
    over: an event of an earlier assignment (or while flow control is off)
    is skipped and acknowledged, as Faust skips it; any other is tracked as
    unacknowledged (so no offset is committed past it until it is acked)
    and reported to the sensors. The caller acknowledges each event
    returned, with ``stream.ack``, as it would one from the iterator.
    An error put on the queue is left for the iterator to raise.
    """
    queue = getattr(stream.channel, "queue", None)
    if queue is None:
        return []
    app = stream.app
    consumer = app.consumer
    acking = app.topics.acking_topics
    taken: list[Any] = []
    while len(taken) < limit and not queue.empty() and not queue._errors:
        event = queue.get_nowait()
        if not isinstance(event, EventT):
            raise TypeError(f"a topic's queue held {type(event).__name__}, not an event")
        message = event.message
        if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
            event.ack()
            continue
        if message.topic in acking and not message.tracked:
            message.tracked = True
            consumer.unacked.add(message)
            stream._on_message_in(message.tp, message.offset, message)
        stream._on_stream_event_in(message.tp, message.offset, stream, event)
        taken.append(event)
    return taken


def install() -> None:
    """Nothing to install: the agents call these."""
