"""A fetched record reaches its stream inline, not through a race of four tasks.

Upstream: Faust's consumer hands each fetched record to the streams through
``wait_first(on_message(record), suspend_flow.wait())``: four tasks, an
``asyncio.wait`` and three cancellations per record, and at least one turn
of the event loop, so a record at a time reached the agents.

Ours: the delivery (``on_message``) runs inline first. It nearly always
completes at once (the stream's queue has room); only if it really has to
wait does Faust's race take over, from where the coroutine suspended, so a
rebalance that suspends the flow still abandons it as before. The call is
recognised by the qualified name of Faust's per-record callback
(``ON_MESSAGE``); the guard test checks that Faust still compiles a callback
of that name.

Why: while draining a backlog, command batches held one or two records and
the worker's core was busy with the race.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from faust.transport.consumer import Consumer
from mode.services import WaitResults

REPLACES = ("faust.transport.consumer:Consumer.wait_first",)
USES = (
    "faust.transport.conductor:Conductor._compile_message_handler",
    "faust.transport.consumer:Consumer.suspend_flow",
    "mode.services:WaitResults",
)

#: The end of the qualified name of Faust's per-record callback.
ON_MESSAGE = "_compile_message_handler.<locals>.on_message"

_race = Consumer.wait_first


async def _finish(coro: Coroutine[Any, Any, Any], waiting: Any) -> Any:
    """Drive ``coro`` on from where it suspended on ``waiting``, as a Task would."""
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait([waiting])
            try:
                waiting = coro.send(None)
            except StopIteration as stop:
                return stop.value
    except asyncio.CancelledError:
        # Cancelled as a Task is: inside the coroutine, so that what it waits
        # for lets go of it (a lock's queue of waiters, say).
        if waiting is not None:
            waiting.cancel()
        try:
            coro.throw(asyncio.CancelledError())
        except BaseException:
            pass
        else:
            coro.close()
        raise


async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> Any:
    first: Any = coros[0] if coros else None
    if (
        len(coros) != 2
        or timeout is not None
        or not getattr(first, "__qualname__", "").endswith(ON_MESSAGE)
        or self.suspend_flow.is_set()
    ):
        return await _race(self, *coros, timeout=timeout)
    try:
        waiting = first.send(None)
    except StopIteration as stop:
        coros[1].close()
        return WaitResults([first], [stop.value], False)
    except BaseException:
        coros[1].close()
        raise
    return await _race(self, _finish(first, waiting), coros[1])


def install() -> None:
    Consumer.wait_first = wait_first  # type: ignore[method-assign]
