"""A stream partition with no committed offset is read again from its start.

Upstream: Faust seeks every assigned partition to its committed offset at
the end of each recovery, and when a fetch returns while its flow is
stopped, after dropping what it brought (``Consumer.perform_seek``).
aiokafka's seek does nothing for a partition with no committed offset (none
yet, or ``0``), so there the position stays where the fetches left it. A
recovery pauses the stream partitions, and a fetch that was under way when
it did comes back with records of a partition no longer active: Faust's
``getmany`` skips them, the position has passed them, and on a partition
with no commit they were never read.

Ours: after upstream's seek and bookkeeping, each stream partition with no
committed offset is sought to its start, where the consumer's
``auto_offset_reset="earliest"`` put it when it was assigned; nothing of it
was processed since, as its streams were paused until now. Left as upstream
leaves them: the tables' changelogs (never committed; recovery positions
them itself) and the topics ``bulk_fetch`` diverts (their sink keeps every
record fetched). The seek goes through the consumer's own thread, as
upstream's does.

Why: the same race lost commands on the command path (``bulk_fetch``,
``tests/integration/test_list_paging.py``). Faust's own streams
(``schedule-commands-keyed``, ``firings``, the retry tiers) take the same
path through ``getmany``; a skipped record there was not seen in 20 runs of
that test and 2 of the broker-outage fault test (a log line at the skip),
so this guards a race shown on one path and read in the code of the other.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.transport.consumer import Consumer, ensure_TP

from scheduler.patches import bulk_fetch

logger = logging.getLogger(__name__)

REPLACES = ("faust.transport.consumer:Consumer.perform_seek",)
USES = (
    "faust.transport.consumer:Consumer._read_offset",
    "faust.transport.consumer:Consumer._committed_offset",
    "faust.transport.consumer:ThreadDelegateConsumer._thread",
)


def uncommitted(app: Any, committed: dict[Any, int | None]) -> list[Any]:
    """The stream partitions of ``committed`` that have no commit, to read from their start."""
    leave = set(app.tables.changelog_topics) | bulk_fetch.diverted()
    return [tp for tp, offset in committed.items() if not offset and tp.topic not in leave]


async def perform_seek(self: Any) -> None:
    committed = await self.seek_to_committed()
    # Upstream's bookkeeping first, so a seek that fails leaves it right.
    self._read_offset.update(
        {
            tp: offset if offset is not None and offset >= 0 else None
            for tp, offset in committed.items()
        }
    )
    self._committed_offset.update(
        {ensure_TP(tp): offset or None for tp, offset in committed.items() if offset is not None}
    )
    to_start = uncommitted(self.app, committed)
    if to_start:
        try:
            await self._thread.seek_to_beginning(*to_start)
        except Exception as exc:
            # A partition moved meanwhile (another rebalance): the next
            # assignment puts its position back anyway. Upstream's seek is done.
            logger.warning(
                "could not seek %d partitions with no commit to their start: %r", len(to_start), exc
            )


def install() -> None:
    Consumer.perform_seek = perform_seek  # type: ignore[method-assign]
