"""Table writes staged in memory and written to RocksDB in one batch per DB.

A real RocksDB (rocksdict, as Faust opens it) behind a stand-in for the
Faust table, which the staging code only asks for its partition's DB and
its changelog's name.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rocksdict import Options, Rdict

from scheduler import tables


class _Table:
    def __init__(self, root: Path, name: str) -> None:
        self.dbs: dict[int, Rdict] = {}
        self.root = root
        self.name = name
        self.data = SimpleNamespace(_db_for_partition=self.db)
        self.changelog_topic = SimpleNamespace(get_topic_name=lambda: f"{name}-changelog")

    def db(self, partition: int) -> Rdict:
        if partition not in self.dbs:
            path = self.root / f"{self.name}-{partition}"
            self.dbs[partition] = Rdict(str(path), options=Options(raw_mode=True))
        return self.dbs[partition]


class _Outbox:
    def __init__(self) -> None:
        self.records: list[tuple[str, int, bytes, bytes | None]] = []

    def add(self, topic: str, partition: int, key: bytes, value: bytes | None, *_: Any) -> None:
        self.records.append((topic, partition, key, value))


@pytest.fixture
def table(tmp_path: Path) -> Any:
    made = _Table(tmp_path, "schedules")
    yield made
    tables._staged.clear()
    tables.forget_prefetched()
    for db in made.dbs.values():
        db.close()


def test_a_staged_write_is_read_back_before_it_reaches_rocksdb(table: Any) -> None:
    outbox = _Outbox()
    tables.write(table, 3, b"k1", b"v1", outbox)  # type: ignore[arg-type]
    assert tables.read(table, 3, b"k1") == b"v1"
    assert table.db(3).get(b"k1") is None
    assert tables.read(table, 4, b"k1") is None  # another partition's DB
    assert outbox.records == [("schedules-changelog", 3, b"k1", b"v1")]


def test_flush_writes_puts_and_deletes_once_each(table: Any) -> None:
    outbox = _Outbox()
    table.db(2).put(b"old", b"x")
    tables.write(table, 2, b"k", b"first", outbox)  # type: ignore[arg-type]
    tables.write(table, 2, b"k", b"second", outbox)  # type: ignore[arg-type]
    tables.erase(table, 2, b"old", outbox)  # type: ignore[arg-type]
    assert tables.read(table, 2, b"old") is None  # erased, though still in RocksDB
    assert table.db(2).get(b"old") == b"x"
    tables.flush()
    assert table.db(2).get(b"k") == b"second"
    assert table.db(2).get(b"old") is None
    assert tables.read(table, 2, b"k") == b"second"
    # Both values of k went to the changelog, in order: it keeps every write.
    assert [r[3] for r in outbox.records] == [b"first", b"second", None]
    tables.flush()  # nothing staged: nothing written, nothing fails
    assert table.db(2).get(b"k") == b"second"


def test_prefetched_values_serve_reads_until_the_next_flush(table: Any) -> None:
    outbox = _Outbox()
    table.db(1).put(b"there", b"old")
    tables.prefetch(table, 1, [b"there", b"new"])
    # Read ahead: a change made behind the prefetch is not seen yet...
    table.db(1).put(b"new", b"sneaked in")
    assert tables.read(table, 1, b"new") is None
    assert tables.read(table, 1, b"there") == b"old"
    # ...a staged write is, before what was read ahead...
    tables.write(table, 1, b"there", b"staged", outbox)  # type: ignore[arg-type]
    assert tables.read(table, 1, b"there") == b"staged"
    # ...and after a flush, RocksDB is read again.
    tables.flush()
    assert tables.read(table, 1, b"new") == b"sneaked in"
    assert tables.read(table, 1, b"there") == b"staged"


def test_prefetching_is_per_partition_and_can_be_forgotten(table: Any) -> None:
    table.db(5).put(b"k", b"five")
    table.db(6).put(b"k", b"six")
    tables.prefetch(table, 5, [b"k"])
    tables.prefetch(table, 6, [])  # nothing asked, nothing read
    assert tables.read(table, 5, b"k") == b"five"
    assert tables.read(table, 6, b"k") == b"six"
    table.db(5).put(b"k", b"moved")
    tables.forget_prefetched()  # as when partitions move
    assert tables.read(table, 5, b"k") == b"moved"


def test_the_persisted_offset_never_moves_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """Callbacks of a partition's batches may come out of order (a joined batch's
    first, ``scheduler.outbox``): the offset recorded only moves forward."""
    recorded: list[int] = []
    monkeypatch.setattr(
        tables.private, "persist_offset", lambda table, tp, offset: recorded.append(offset)
    )
    monkeypatch.setattr(tables, "_persisters", {})
    table = SimpleNamespace(changelog_topic=SimpleNamespace(get_topic_name=lambda: "t-changelog"))
    persist = tables._persister(table, 3)
    for offset in (200, 300, 100, 300, 301):
        persist(offset)
    assert recorded == [200, 300, 301]
    assert tables._persister(table, 3) is persist  # one per partition, kept
