"""No offset is committed once a record this worker produced was refused.

Upstream: Faust's at-least-once commit flushes its producer and then commits
the acknowledged offsets, whether or not every record sent before them was
written. A record the broker refused (after aiokafka's own retries) is then
lost, and the events that produced it are never read again. Faust guards only
the messages it attaches to events (``stream_publish_on_commit``), which we
do not use.

Ours: :func:`refused` is called for every refused record the worker produced
itself (the agents' batches in ``scheduler.outbox``, retry and dead-letter
records in ``scheduler.streams.delivery``). From then on the consumer commits
nothing and crashes, which stops the worker. Its events are read again by
whoever owns their partitions next, from the last offset committed before
the refusal.

Why: an acknowledgement must mean the effect is on the broker. The
callbacks that report a refusal run before the flush that precedes a commit
returns: they were added to the record's future when it was sent, and the
flush's wake-up was added after them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.transport.consumer import ThreadDelegateConsumer

REPLACES = ("faust.transport.consumer:ThreadDelegateConsumer._commit",)
USES: tuple[str, ...] = ()

log = logging.getLogger(__name__)

_commit = ThreadDelegateConsumer._commit
#: The first refusal seen, if any: from then on nothing is committed.
_refusal: BaseException | None = None
#: The crash under way, kept so that it is not collected before it ran.
_crashing: list[Any] = []


def refused(exc: BaseException, what: str, consumer: Any) -> None:
    """A record this worker produced was refused: commit nothing more, and stop."""
    global _refusal
    if _refusal is None:
        _refusal = exc
        log.critical(
            "the broker refused %s (%s: %s); this worker commits no more offsets and stops, "
            "so that the records after its last commit are read again",
            what,
            type(exc).__name__,
            exc,
        )
        _crashing.append(asyncio.ensure_future(consumer.crash(exc)))


def watch(sent: Any, what: str, consumer: Any) -> None:
    """Call :func:`refused` if the send behind ``sent`` (a future) fails."""

    def check(future: Any) -> None:
        if not future.cancelled() and future.exception() is not None:
            refused(future.exception(), what, consumer)

    sent.add_done_callback(check)


def refusal() -> BaseException | None:
    """The refusal that stopped commits, if there was one."""
    return _refusal


async def _commit_unless_refused(self: Any, offsets: Any) -> bool:
    if _refusal is not None:
        await self.crash(_refusal)
        return False
    return bool(await _commit(self, offsets))


def reset() -> None:
    """Forget a refusal (for tests that run several apps in one process)."""
    global _refusal
    _refusal = None


def install() -> None:
    ThreadDelegateConsumer._commit = _commit_unless_refused  # type: ignore[method-assign]
