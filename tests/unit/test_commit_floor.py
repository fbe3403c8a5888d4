"""A commit never passes a record the streams took and have not acknowledged.

Faust's bookkeeping is driven directly here (a pure unit): the acknowledged
offsets, the committed offset and the unacknowledged records of one partition.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from scheduler.patches import commit_floor

TP0 = TP("firings", 0)


GENERATION = 7


@dataclass(eq=False)
class Message:
    tp: TP
    offset: int
    acked: bool = False
    generation_id: int = GENERATION


class Books:
    """The attributes of a Faust consumer that a commit reads and changes."""

    _should_commit = Consumer._should_commit
    _new_offset = Consumer._new_offset

    app = SimpleNamespace(consumer_generation_id=GENERATION)

    def __init__(self, committed: int | None) -> None:
        self._acked: dict[TP, list[int]] = defaultdict(list)
        self._acked_index: dict[TP, set[int]] = defaultdict(set)
        self._gap: dict[TP, IntervalTree] = defaultdict(IntervalTree)
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset[TP0] = committed
        self._unacked_messages: set[Any] = set()
        self.messages: dict[int, Any] = {}

    def take(self, *offsets: int, generation: int = GENERATION) -> None:
        for offset in offsets:
            message = Message(TP0, offset, generation_id=generation)
            self.messages[offset] = message
            self._unacked_messages.add(message)

    def ack(self, *offsets: int) -> None:
        for offset in offsets:
            message = self.messages[offset]
            message.acked = True
            self._unacked_messages.discard(message)
            self._acked[TP0].append(offset)
            self._acked_index[TP0].add(offset)

    def commit(self, how: Any = commit_floor._filter_committable_offsets) -> int | None:
        offsets = how(self, [TP0])
        if TP0 in offsets:
            self._committed_offset[TP0] = offsets[TP0]
        return offsets.get(TP0)


def test_upstream_commits_past_one_unacknowledged_record_at_the_committed_offset() -> None:
    books = Books(committed=31)
    books.take(31, 32, 33)
    books.ack(32, 33)
    # What this patch is for: 31 is still held, and upstream commits past it.
    assert books.commit(commit_floor.upstream) == 34


def test_the_commit_stops_at_the_unacknowledged_record_and_goes_on_once_it_is_acked() -> None:
    books = Books(committed=31)
    books.take(31, 32, 33)
    books.ack(32, 33)
    assert books.commit() is None
    books.ack(31)
    assert books.commit() == 34


def test_without_a_committed_offset_upstream_passes_the_first_record_and_ours_does_not() -> None:
    theirs, ours = Books(committed=None), Books(committed=None)
    for books in (theirs, ours):
        books.take(0, 1, 2, 3)
        books.ack(1, 2, 3)
    assert theirs.commit(commit_floor.upstream) == 4
    assert ours.commit() is None
    ours.ack(0)
    assert ours.commit() == 4


def test_a_record_taken_before_the_last_rebalance_does_not_hold_back_commits() -> None:
    books = Books(committed=5)
    books.take(5, generation=GENERATION - 1)  # still being delivered, from before
    stale = books.messages[5]
    books.take(5, 6, 7)  # read again in this generation
    books.ack(5, 6, 7)
    assert not stale.acked
    assert books.commit() == 8


def test_an_acknowledged_copy_at_the_floor_is_kept_for_the_next_commit() -> None:
    books = Books(committed=3)
    books.take(3, 4)
    older = books.messages[3]
    books.take(3)  # the same offset taken again: this copy is acknowledged, the older is not
    books.ack(3, 4)
    books._unacked_messages.add(older)
    assert books.commit() is None
    assert 3 in books._acked[TP0]  # still listed: ``ack`` would not add it again
    older.acked = True
    books._unacked_messages.discard(older)
    assert books.commit() == 5


def test_without_a_committed_offset_the_floor_still_holds() -> None:
    books = Books(committed=None)
    books.take(*range(10))
    books.ack(0, 1, 2, 3, 4, 6, 7)
    assert books.commit() == 5
    books.ack(5)
    assert books.commit() == 8
    assert books._acked[TP0] == []


def test_acknowledged_offsets_above_the_floor_wait_for_a_later_commit() -> None:
    books = Books(committed=10)
    books.take(*range(10, 20))
    books.ack(10, 11, 12, 14, 15, 16, 17, 18, 19)
    assert books.commit() == 13
    assert sorted(books._acked[TP0]) == [14, 15, 16, 17, 18, 19]
    books.ack(13)
    assert books.commit() == 20


def test_with_nothing_unacknowledged_it_commits_what_upstream_does() -> None:
    ours, theirs = Books(committed=0), Books(committed=0)
    for books in (ours, theirs):
        books.take(*range(8))
        books.ack(*range(8))
    assert ours.commit() == theirs.commit(commit_floor.upstream) == 8
