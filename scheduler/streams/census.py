"""Schedules by status on this worker's partitions, for ``scheduler_schedules{status}``.

Counting them at each scrape would read every record, a million at scale,
every 15 seconds. Instead each partition is counted once, when its timer
starts (it is then this worker's, and its table has recovered), and from
then on kept up to date by ``scheduler.streams.records.store``, the one
writer of records, which reports every change of a status (:func:`changed`).

The first count reads the partition's RocksDB in slices of ``SLICE`` records
(about half a millisecond each, when a record's status is near its start, as
:func:`status_of` expects), and after each slice it sleeps four times as
long as the slice took: it takes a fifth of the event loop while it reads
(``SHARE``), whatever else waits. The partitions are read one after another.
So a million records take at least 12.5 s (2.5 s of reading), and a firing
waits half a millisecond at most for a slice.

Why not faster: after a restart a timer starts with every instant that fell
due while the worker was down, and counts reading at full speed alongside
held those firings back (the commits that set ``SHARE`` have the figures).

A count reads a snapshot, taken at its turn: the staged writes are flushed
and the iterator opened (which pins what it reads) in one step with no
await, and every store from that step on is counted as a change; a count
waiting for its turn counts none. So the count and the changes add up
however the agents write meanwhile. A partition is served once its first
count is done; a rebalance drops every count, and they start again with the
timers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from scheduler import metrics, tables
from scheduler.app import app
from scheduler.domain import state
from scheduler.tables import partition_db, schedules

log = logging.getLogger(__name__)

STATUSES = tuple(status.value for status in state.Status)
#: Records read between two sleeps, sized to about half a millisecond's work
#: (the cost of a record is in the message of b05685e).
SLICE = 200
#: The share of the time a count reads while it runs: after each slice it
#: sleeps (1 - SHARE) / SHARE times as long as the slice took.
SHARE = 0.2
#: Schedule ids start so (``scheduler.domain.ids``); Faust keeps its offset under another key.
_PREFIX = b"sch_"
#: A record's status member, near its start (``ScheduleRecord.to_bytes`` writes it second).
_STATUS = b'"status":"'
_LOOK = 128


class _Count:
    """One partition's count: per status, and the snapshot still being read.

    A count waiting for its turn has no snapshot yet and counts no change:
    the snapshot it takes at its turn holds every change made until then.
    """

    def __init__(self, iterator: Any, *, waiting: bool = False) -> None:
        self.by_status = dict.fromkeys(STATUSES, 0)
        self.iterator: Any = iterator
        self.waiting = waiting
        self.task: asyncio.Future[None] | None = None

    @property
    def done(self) -> bool:
        return self.iterator is None and not self.waiting


_counts: dict[int, _Count] = {}


def changed(partition: int, before: str | None, after: str | None) -> None:
    """A record of ``partition`` went from status ``before`` to ``after`` (None: no record)."""
    count = _counts.get(partition)
    if count is None or count.waiting:
        return  # not counted here (yet): its first count will read the change
    by_status = count.by_status
    if before is not None:
        by_status[before] -= 1
    if after is not None:
        by_status[after] += 1


def reconcile(wanted: set[int]) -> None:
    """Count the partitions of ``wanted`` not counted yet; drop the others."""
    for partition in set(_counts) - wanted:
        _drop(partition)
    for partition in sorted(wanted - set(_counts)):
        try:
            _start(partition)
        except Exception:  # tried again at the next reconcile
            log.exception("cannot count the schedules of partition %d", partition)


def _start(partition: int) -> None:
    # The counts still reading go first: one partition is read at a time, and
    # its snapshot is taken at its turn, not held (with the files it pins) while
    # it waits.
    earlier = [c.task for c in _counts.values() if c.task is not None and not c.task.done()]
    if earlier:
        count = _counts[partition] = _Count(None, waiting=True)
    else:
        count = _counts[partition] = _Count(_snapshot(partition))
    count.task = asyncio.ensure_future(_read(partition, count, earlier))


def _snapshot(partition: int) -> Any:
    """The partition's records as of now, from its first schedule id on."""
    # No await from the flush to the iterator, nor from the iterator to counting
    # the changes: see the module's docstring.
    tables.flush()
    iterator = partition_db(schedules, partition).iter()
    iterator.seek(_PREFIX)
    return iterator


async def _read(partition: int, count: _Count, earlier: list[asyncio.Future[None]]) -> None:
    try:
        if earlier:
            # wait() neither raises a cancelled count's error here nor cancels it.
            await asyncio.wait(earlier)
            count.iterator = _snapshot(partition)
            count.waiting = False  # from now on its changes count
        rest = (1 - SHARE) / SHARE
        while count.iterator is not None:
            started = time.perf_counter()
            if tally(count.iterator, count.by_status, SLICE):
                count.iterator = None  # done; and the snapshot is let go
                return
            await asyncio.sleep((time.perf_counter() - started) * rest)
    except Exception:
        log.exception("cannot count the schedules of partition %d", partition)
        count.iterator = None
        if _counts.get(partition) is count:
            del _counts[partition]  # the next reconcile starts it again


def tally(iterator: Any, by_status: dict[str, int], limit: int) -> bool:
    """Add up to ``limit`` records' statuses from ``iterator``; whether it reached the end."""
    for _ in range(limit):
        if not iterator.valid():
            return True
        key = iterator.key()
        if not key.startswith(_PREFIX):
            return True
        status = status_of(iterator.value())
        if status in by_status:
            by_status[status] += 1
        iterator.next()
    return False


def status_of(record: bytes) -> str:
    """A stored record's status, read from its bytes (decoding it costs far more)."""
    at = record.find(_STATUS, 0, _LOOK)
    if at < 0:
        return state.ScheduleRecord.from_bytes(record).status.value
    start = at + len(_STATUS)
    return record[start : record.index(b'"', start)].decode()


def _drop(partition: int) -> None:
    count = _counts.pop(partition)
    # Let go of the iterator now: it keeps the partition's RocksDB open, and
    # Faust opens it anew if the partition comes back.
    count.iterator = None
    if count.task is not None:
        count.task.cancel()


def totals() -> dict[tuple[str, ...], float]:
    """Schedules by status over the partitions counted so far."""
    out = dict.fromkeys(STATUSES, 0)
    for count in _counts.values():
        if count.done:
            for status, number in count.by_status.items():
                out[status] += number
    return {(status,): number for status, number in out.items()}


metrics.Reading(
    "scheduler_schedules",
    "schedules on the partitions this worker owns, by status (each partition counted once it "
    "is owned, then kept up to date)",
    ("status",),
).bind(totals)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    """Partitions move: every count starts again once the timers do."""
    for partition in list(_counts):
        _drop(partition)
