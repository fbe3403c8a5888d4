"""``commit_floor.Floors``: the floors a commit reads off per-partition heaps are
the floors of walking the unacknowledged records (``commit_floor.floors``).

Random runs of Faust's bookkeeping: records taken (in offset order, or again
from lower offsets after a seek back), acknowledged in any order, dropped by
whoever held them, and rebalances (a new generation), with the floors asked
for between any two steps.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import pytest
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.patches import commit_floor

TPS = [TP("firings", 0), TP("firings", 1), TP("firings-retry", 0)]


@dataclass(eq=False)
class Message:
    tp: TP
    offset: int
    generation_id: int
    acked: bool = False


steps = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.integers(0, 2), st.integers(1, 30)),
        st.tuples(st.just("again"), st.integers(0, 2), st.integers(0, 40)),
        st.tuples(st.just("stale"), st.integers(0, 2), st.sampled_from([None, -1, 0])),
        st.tuples(st.just("ack"), st.integers(0, 1000)),
        st.tuples(st.just("ack_kept"), st.integers(0, 1000)),
        st.tuples(st.just("drop"), st.integers(0, 1000)),
        st.tuples(st.just("rebalance")),
        st.tuples(st.just("floors")),
    ),
    max_size=120,
)


@settings(max_examples=400, deadline=None)
@given(steps, st.sampled_from([2, 8, commit_floor.COMPACT_MIN]))
def test_the_heaps_give_the_floors_of_the_walk(run: list[tuple[Any, ...]], compact: int) -> None:
    """With the heaps rebuilt early too (a small ``COMPACT_MIN``)."""
    kept = commit_floor.COMPACT_MIN
    commit_floor.COMPACT_MIN = compact
    try:
        walk_and_heaps(run)
    finally:
        commit_floor.COMPACT_MIN = kept


def walk_and_heaps(run: list[tuple[Any, ...]]) -> None:
    tracked = commit_floor.Floors()
    unacked: weakref.WeakSet[Message] = weakref.WeakSet()  # as Faust keeps them
    held: list[Message] = []  # whoever still holds a record
    ends = [0, 0, 0]
    generation = 1

    def take(tp_index: int, offset: int, of: Any = None) -> None:
        message = Message(TPS[tp_index], offset, generation if of is None else of)
        held.append(message)
        unacked.add(message)
        tracked.track(message)

    def check() -> None:
        assert tracked.lowest(generation) == commit_floor.floors(unacked, generation)

    for step in run:
        if step[0] == "take":
            for _ in range(step[2]):
                take(step[1], ends[step[1]])
                ends[step[1]] += 1
        elif step[0] == "again":  # read again from a lower offset (a seek back)
            take(step[1], min(step[2], ends[step[1]]))
        elif step[0] == "stale":  # of an earlier generation (None: unknown)
            take(step[1], ends[step[1]], generation - 1 if step[2] == -1 else step[2])
            ends[step[1]] += 1
        elif step[0] == "ack" and held:
            message = held[step[1] % len(held)]
            message.acked = True
            unacked.discard(message)
        elif step[0] == "ack_kept" and held:  # Faust's ack below the commit: left in the set
            held[step[1] % len(held)].acked = True
        elif step[0] == "drop" and held:
            held.pop(step[1] % len(held))
        elif step[0] == "rebalance":
            generation += 1
        elif step[0] == "floors":
            check()
    check()


def test_a_heap_is_rebuilt_from_its_live_records_and_stays_bounded() -> None:
    """Records acknowledged above a floor held for long are not kept without end."""
    tracked = commit_floor.Floors()
    tp = TPS[0]
    oldest = Message(tp, 0, 1)  # a firing held for a far instant
    tracked.track(oldest)
    kept = []
    for offset in range(1, 20 * commit_floor.COMPACT_MIN):
        message = Message(tp, offset, 1)
        tracked.track(message)
        if offset % 100 == 0:
            kept.append(message)  # a few stay unacknowledged
        else:
            message.acked = True
    assert len(tracked) <= 2 * commit_floor.COMPACT_MIN + 1
    assert tracked.lowest(1) == {tp: 0}
    oldest.acked = True
    assert tracked.lowest(1) == {tp: 100}
    for message in kept:
        message.acked = True
    assert tracked.lowest(1) == {}
    assert len(tracked) == 0


def test_a_record_of_an_earlier_generation_no_longer_holds_the_commit() -> None:
    tracked = commit_floor.Floors()
    before = Message(TPS[1], 5, 1)
    after = Message(TPS[1], 9, 2)
    tracked.track(before)
    tracked.track(after)
    assert tracked.lowest(1) == {TPS[1]: 5}
    assert tracked.lowest(2) == {TPS[1]: 9}
    assert tracked.lowest(2) == {TPS[1]: 9}  # popped for good; nothing else moved


def test_a_worker_s_consumer_keeps_its_records_in_a_tracked_set() -> None:
    """Faust's streams add to the set itself (``streams.py`` inlines
    ``track_message``): the set is what feeds the heaps."""
    from faust.transport.consumer import Consumer

    from scheduler import patches

    patches.install()
    assert Consumer.__init__ is commit_floor.__init__
    unacked = commit_floor.Tracked()
    message = Message(TPS[0], 3, 1)
    unacked.add(message)
    assert unacked.floors.lowest(1) == {TPS[0]: 3}


def test_a_commit_stops_at_the_floor_the_heaps_give() -> None:
    """``test_commit_floor``'s books, with the tracked set a worker has."""
    from tests.unit.test_commit_floor import TP0, Books

    books = Books(committed=31)
    books._unacked_messages = commit_floor.Tracked()
    books.take(31, 32, 33)
    books.ack(32, 33)
    assert books.commit() is None  # the floor holds it at 31 (upstream commits 34)
    books.ack(31)
    assert books.commit() == 34
    assert TP0 not in books._unacked_messages.floors.lowest(7)


def test_a_record_of_a_later_generation_counts_which_only_holds_a_commit_back() -> None:
    tracked = commit_floor.Floors()
    unacked: weakref.WeakSet[Message] = weakref.WeakSet()
    records = [Message(TPS[0], 4, 3), Message(TPS[0], 6, 2)]
    for message in records:
        tracked.track(message)
        unacked.add(message)
    assert commit_floor.floors(unacked, 2) == {TPS[0]: 6}
    assert tracked.lowest(2) == {TPS[0]: 4}  # lower: safe


def test_a_tracked_set_takes_records_only_through_add() -> None:
    records = [Message(TPS[0], n, 1) for n in (5, 3)]
    copied = commit_floor.Tracked(records)
    assert copied.floors.lowest(1) == {TPS[0]: 3}
    assert (copied | commit_floor.Tracked()).floors.lowest(1) == {TPS[0]: 3}
    with pytest.raises(TypeError):
        copied ^= {Message(TPS[0], 1, 1)}
    with pytest.raises(TypeError):
        copied.symmetric_difference_update({Message(TPS[0], 1, 1)})
    assert commit_floor.floors(copied, 1) == copied.floors.lowest(1)
