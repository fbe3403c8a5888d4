"""The service's tables, declared once. A table is written only from an agent
processing a key of the same partition (see ``scheduler.streams``).

Values are raw bytes (JSON we encode ourselves), and the hot path reads and
writes a partition's RocksDB directly with :func:`read`, :func:`write` and
:func:`erase`: Faust's ``table[key] = value`` serialises a value twice (once
for the store, once for the changelog), looks for the partition in the
current event and produces the changelog record on its own, all of which is
a visible share of a burst's CPU (measured in bench/, see bench/RESULTS.md).
Here the changelog record goes into the caller's
:class:`~scheduler.outbox.Outbox`, and once its batch is written the table's
persisted offset moves on, as Faust's own callback does: recovery and
standbys read the same changelog as before.

Writes are staged in memory and reach RocksDB as one ``WriteBatch`` per
partition's DB when the batch's records are queued (:func:`flush`, called by
``scheduler.streams.batch.Batch.send``), not one ``put`` per
key: each ``put`` appends to RocksDB's write-ahead log and lets go of the
GIL, and the consumer's thread then held it before the agent could go on, so
a ``put`` per key made every command cost noticeably more CPU (measured in
bench/, see bench/RESULTS.md). :func:`read` sees staged writes first, and
anything that reads a partition's DB another way (a timer's refill, a web
lookup) calls :func:`flush` before it does; it takes no await, so it is safe
at any time.
Staging changes nothing after a crash: a batch's staged writes are lost
then, as is what it had not yet produced, and its events are not yet
acknowledged, so they are processed again.
"""

from __future__ import annotations

from typing import Any

import rocksdict
from faust.types import TP

from scheduler.app import app, settings
from scheduler.outbox import OnWritten, Outbox
from scheduler.patches import private
from scheduler.topics import name_of

MiB = 1024 * 1024


def _table(name: str, *, write_buffer_mib: int, block_cache_mib: int) -> Any:
    # Faust's RocksDB defaults are sized for a few big tables: 64 MiB memtables
    # (up to 3) and a 2 GiB block cache per partition's DB. We keep 3 tables x
    # 8 partitions, so those would let resident memory grow with every
    # schedule stored. These bound it; the data lives on disk.
    # Their bloom filters keep 3 bits a key, so about a quarter of the lookups
    # of a key that is not there (every new schedule's) still read a block of
    # each file; 10 bits make that ~1%, which makes registering a new schedule
    # cheaper (measured in bench/, see bench/RESULTS.md).
    return app.Table(
        name,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        options={
            "write_buffer_size": write_buffer_mib * MiB,
            "max_write_buffer_number": 2,
            "block_cache_size": block_cache_mib * MiB,
            "bloom_filter_size": 10,
        },
    )


#: The schedules, keyed by schedule id (bytes), value a ScheduleRecord as JSON.
schedules = _table("schedules", write_buffer_mib=4, block_cache_mib=8)

#: The due-index: key ``<instant in µs since the epoch, 17 digits>|<schedule id>``,
#: value ``b"1"``. Keys sort by time within each partition's RocksDB, so a
#: partition's timer reads only the near future instead of every schedule.
#: It is written beside ``schedules`` by the same agent, on the same partition.
due_index = _table("due-index", write_buffer_mib=2, block_cache_mib=2)

#: Recent history events per schedule id (JSON list, newest last), kept by the
#: agent that reads ``schedule-history``.
history = _table("history", write_buffer_mib=2, block_cache_mib=2)

#: Every table, for whoever creates their changelogs (``scheduler.worker.ensure_topics``).
ALL = (schedules, due_index, history)


partition_db = private.partition_db


#: Writes not yet in RocksDB, per (table's id, partition): key to value, None to delete.
#: Keyed by ``id``: a Faust table's hash is a Python method, and these are
#: looked up several times a command.
_staged: dict[tuple[int, int], dict[bytes, bytes | None]] = {}
#: Every table ever staged, by id: for :func:`flush`, and kept alive so
#: that its id is never another's.
_by_id: dict[int, Any] = {}


def _stage(table: Any, partition: int) -> dict[bytes, bytes | None]:
    found = _staged.get((id(table), partition))
    if found is None:
        _by_id[id(table)] = table
        found = _staged[(id(table), partition)] = {}
    return found


#: Values read ahead for a batch (:func:`prefetch`), dropped at the next :func:`flush`.
_prefetched: dict[tuple[int, int], dict[bytes, bytes | None]] = {}


def prefetch(table: Any, partition: int, keys: list[bytes]) -> None:
    """Read ``keys`` now, in one call, for the :func:`read` of each that follows.

    A batch of commands reads each schedule once, mostly to find it is new,
    and one ``get`` a key made those reads a real share of the command
    agent's time in a burst. A multi-get costs less a key than a ``get``,
    and saves more of the worker's CPU than that difference alone explains;
    not pinned down (rocksdict's ``get`` keeps the GIL; its multi-get lets go
    of it once a call, and the consumer's thread may then take it: see
    ``scheduler.domain.ids.murmur2`` for what that costs a call made per
    command). Measured in bench/, see bench/RESULTS.md.
    What is read here is dropped at the next :func:`flush`, the first
    moment anything else could have changed these keys in RocksDB; a key
    written in between is found among the staged writes first.
    """
    if not keys:
        return
    values = partition_db(table, partition).get(keys)
    _prefetched.setdefault((id(table), partition), {}).update(zip(keys, values, strict=True))


def forget_prefetched() -> None:
    """Drop what :func:`prefetch` read (partitions moved: their DBs may change)."""
    _prefetched.clear()


def read(table: Any, partition: int, key: bytes) -> bytes | None:
    ident = id(table)
    staged = _staged.get((ident, partition))
    if staged is not None and key in staged:
        return staged[key]
    fetched = _prefetched.get((ident, partition))
    if fetched is not None and key in fetched:
        return fetched[key]
    value: bytes | None = partition_db(table, partition).get(key)
    return value


def write(table: Any, partition: int, key: bytes, value: bytes, outbox: Outbox) -> None:
    _stage(table, partition)[key] = value
    outbox.add(_changelog(table), partition, key, value, _persister(table, partition))


def writer(
    table: Any, partition: int, outbox: Outbox
) -> tuple[dict[bytes, bytes | None], list[tuple[bytes, bytes | None]]]:
    """Where :func:`write` puts a key and value, for a caller writing many in a row.

    The staged writes and the outbox's changelog records of the partition:
    setting ``key`` in the one and appending ``(key, value)`` to the other is
    a :func:`write`. Good until the outbox is sent (``Outbox.records_of``).
    """
    return _stage(table, partition), outbox.records_of(
        _changelog(table), partition, _persister(table, partition)
    )


def read_ahead(table: Any, partition: int) -> dict[bytes, bytes | None]:
    """What :func:`prefetch` read of the partition: good until the next :func:`flush`
    (which drops it), for a caller that reads many keys with no await between."""
    return _prefetched.get((id(table), partition)) or {}


def erase(table: Any, partition: int, key: bytes, outbox: Outbox) -> None:
    _stage(table, partition)[key] = None
    outbox.add(_changelog(table), partition, key, None, _persister(table, partition))


def flush() -> None:
    """Write every staged write to its partition's RocksDB, one batch per DB."""
    _prefetched.clear()
    for (ident, partition), staged in _staged.items():
        if not staged:
            continue
        table = _by_id[ident]
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in staged.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        # Looked up now, not when staged: a rebalance may have reopened it.
        partition_db(table, partition).write(batch)
        staged.clear()


#: Changelog topic names, by table id (the table is kept alive by ``_by_id``).
_changelogs: dict[int, str] = {}


def _changelog(table: Any) -> str:
    found = _changelogs.get(id(table))
    if found is None:
        _by_id[id(table)] = table
        found = _changelogs[id(table)] = name_of(table.changelog_topic)
    return found


_persisters: dict[tuple[str, int], OnWritten] = {}


def _persister(table: Any, partition: int) -> OnWritten:
    """Records in the partition's RocksDB how far its changelog is applied there;
    never backwards.

    A partition's batches are written in order, but their callbacks may run
    out of order: a batch the outbox joined calls its own before the
    ``send_batch`` that queued it (``scheduler.outbox``). A lower offset would
    only make a recovery read more of the changelog, but it is not the truth.
    The changelog's offsets only grow, so the highest seen here stays right
    when the partition moves away and back.
    """
    topic = _changelog(table)
    found = _persisters.get((topic, partition))
    if found is None:
        tp = TP(topic, partition)
        highest = -1

        def persist(offset: int) -> None:
            nonlocal highest
            if offset > highest:
                highest = offset
                private.persist_offset(table, tp, offset)

        found = _persisters[(topic, partition)] = persist
    return found
