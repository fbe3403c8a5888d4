"""The schedule records of the partitions this worker owns: load, store, index.

A record lives in the ``schedules`` table under its schedule id; its next
instant has an entry in the ``due_index`` table, which the partition's timer
reads (``scheduler.streams.timers``). This module is the only writer of
either, so the two never disagree for long (see :func:`index`).

Records as this worker last woke them are kept in a small cache: a recurring
schedule's next wake-up takes its record from here instead of decoding it
from RocksDB (records are immutable values). Only wake-ups fill it, commands
drop their schedule from it, and it is emptied whenever partitions move
(their next owner may change them meanwhile). Oldest written out first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from scheduler import clock, tables
from scheduler.app import app
from scheduler.domain import state
from scheduler.outbox import Outbox
from scheduler.streams import census
from scheduler.streams.timers import index_key, registry
from scheduler.tables import due_index, schedules

#: Records kept in the cache (a few KiB each).
CACHE_MAX = 10_000

_cache: OrderedDict[bytes, state.ScheduleRecord] = OrderedDict()


def is_cached(key: bytes) -> bool:
    return key in _cache


def cached() -> OrderedDict[bytes, state.ScheduleRecord]:
    """The cache itself, for a caller that asks :func:`is_cached` of many keys; read only."""
    return _cache


def load(key: bytes, partition: int) -> state.ScheduleRecord | None:
    found = _cache.get(key)
    if found is not None:
        return found
    stored = tables.read(schedules, partition, key)
    return state.ScheduleRecord.from_bytes(stored) if stored else None


def store(
    key: bytes,
    partition: int,
    before: state.ScheduleRecord | None,
    after: state.ScheduleRecord | None,
    outbox: Outbox,
    *,
    keep: bool = False,
) -> None:
    """Write the record and move its due-index entry if its instant changed.

    ``keep``: cache the record (a wake-up's, if it will be woken again), else
    forget it.
    """
    was = before.status if before else None
    becomes = after.status if after else None
    if was is not becomes:
        census.changed(partition, was, becomes)
    _cache.pop(key, None)
    if after is None:
        tables.erase(schedules, partition, key, outbox)
    else:
        tables.write(schedules, partition, key, after.to_bytes(), outbox)
        if keep and after.timed is not None:
            if len(_cache) >= CACHE_MAX:
                # An OrderedDict: a plain dict's first key, after many deletions
                # from its front, is found by scanning past their empty slots.
                _cache.popitem(last=False)
            _cache[key] = after
    old = before.timed if before else None
    new = after.timed if after else None
    if old is not None and old != new:
        tables.erase(due_index, partition, index_key(clock.to_us(old), key.decode()), outbox)
    if after is not None:
        index(key, partition, after, outbox)


def index(key: bytes, partition: int, record: state.ScheduleRecord, outbox: Outbox) -> None:
    """Put the record's due-index entry, even if it should already be there.

    The two tables' changelogs are flushed separately, so a kill -9 can keep
    one write and lose the other; the event is then processed again, and this
    rewrite is what repairs a lost index entry (without it, the schedule would
    wait forever for an instant no timer knows about).
    """
    due = record.timed
    if due is None:
        return
    due_us = clock.to_us(due)
    sid = key.decode()
    tables.write(due_index, partition, index_key(due_us, sid), b"1", outbox)
    registry.offer(partition, due_us, sid)


def drop_index_entry(partition: int, entry: bytes, outbox: Outbox) -> None:
    """Erase a due-index entry no record points at any more, if it is there."""
    if tables.read(due_index, partition, entry) is not None:
        tables.erase(due_index, partition, entry, outbox)


def forget() -> None:
    """Drop what is cached or read ahead: partitions moved, their tables may change."""
    _cache.clear()
    tables.forget_prefetched()


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    forget()


@app.on_partitions_assigned.connect  # type: ignore[arg-type]
async def _forget_on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
    forget()
