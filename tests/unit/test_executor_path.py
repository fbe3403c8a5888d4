"""The executor's own path for ``firings`` (``scheduler.streams.executor``), without a broker.

What a commit may pass is the guarantee here: never a record taken and not
settled, whatever order deliveries settle in, and nothing once the partition
was revoked. The same path on a real broker, with kills and rebalances, is
in ``tests/integration`` (every test that delivers a firing goes through it).
"""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.patches import bulk_fetch
from scheduler.streams import delivery, executor

TP = TopicPartition("firings", 3)


@pytest.fixture
def done(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, int]]:
    """The watermarks the path hands to ``bulk_fetch.done``, in order."""
    calls: list[tuple[Any, int]] = []
    monkeypatch.setattr(bulk_fetch, "done", lambda consumer, tp, offset: calls.append((tp, offset)))
    return calls


@settings(max_examples=300, deadline=None)
@given(
    first=st.integers(min_value=0, max_value=10_000),
    gaps=st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=60),
    seed=st.randoms(use_true_random=False),
)
def test_a_commit_never_passes_a_record_taken_and_not_settled(
    first: int, gaps: list[int], seed: random.Random
) -> None:
    calls: list[int] = []
    original = bulk_fetch.done
    bulk_fetch.done = lambda consumer, tp, offset: calls.append(offset)  # type: ignore[assignment]
    try:
        unsettled = executor.Unsettled(TP, 1)
        offsets = []
        offset = first
        for gap in gaps:  # control records and compaction leave gaps between offsets
            offsets.append(offset)
            offset += gap
        pending: list[int] = []
        settled: set[int] = set()
        for offset in offsets:
            unsettled.take(offset)
            pending.append(offset)
            # Settle any of those taken so far, any number of times, in any order.
            for _ in range(seed.randint(0, 3)):
                if pending:
                    chosen = seed.choice(pending)
                    unsettled.settle(chosen)
                    settled.add(chosen)
                    if seed.random() < 0.5:
                        pending.remove(chosen)
            lowest = min((o for o in offsets[: offsets.index(offset) + 1] if o not in settled),
                         default=offset + 1)  # fmt: skip
            assert unsettled.floor() == lowest
            assert all(mark <= lowest for mark in calls)
        assert calls == sorted(calls)  # never back
        for offset in offsets:
            unsettled.settle(offset)
        assert unsettled.floor() == offsets[-1] + 1 and len(unsettled) == 0
        assert calls[-1] == offsets[-1] + 1
        assert not unsettled._settled  # nothing kept once settled
    finally:
        bulk_fetch.done = original  # type: ignore[assignment]


def test_what_was_never_taken_or_is_settled_again_moves_nothing(done: list[Any]) -> None:
    unsettled = executor.Unsettled(TP, 1)
    for offset in (10, 11, 12):
        unsettled.take(offset)
    unsettled.settle(13)  # never taken
    unsettled.settle(9)
    assert unsettled.floor() == 10 and not unsettled._settled and done == []
    unsettled.settle(10)
    unsettled.settle(10)  # again
    assert done == [(TP, 11)] and not unsettled._settled


def test_a_revoked_partition_settles_nothing(done: list[Any]) -> None:
    unsettled = executor.Unsettled(TP, 1)
    unsettled.take(5)
    fetched = executor.Fetched(b"{}", 5, TP, unsettled)
    unsettled.live = False
    assert fetched.ack(None) is False
    assert done == [] and unsettled.floor() == 5


def _record(offset: int) -> Any:
    return SimpleNamespace(offset=offset, value=b'{"n": %d}' % offset)


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch, done: list[Any]) -> list[tuple[int, Any]]:
    """What the path hands to ``delivery.take``, with a stand-in app of generation 7."""
    got: list[tuple[int, Any]] = []

    async def take(value: bytes, message: Any) -> None:
        got.append((message.offset, message))

    monkeypatch.setattr(delivery, "take", take)
    monkeypatch.setattr(executor, "app", SimpleNamespace(consumer_generation_id=7, consumer=None))
    monkeypatch.setattr(executor, "_unsettled", {})
    monkeypatch.setattr(executor, "_taking", lambda: True)
    return got


async def test_records_of_an_earlier_generation_are_not_taken(taken: list[Any]) -> None:
    other = TopicPartition("firings", 4)
    await executor.hand_over([(TP, [_record(0), _record(1)], 6), (other, [_record(8)], 7)])
    assert [offset for offset, _ in taken] == [8]
    assert set(executor._unsettled) == {other}


async def test_each_record_is_settled_through_its_message_and_moves_the_commit(
    taken: list[Any], done: list[Any]
) -> None:
    await executor.hand_over([(TP, [_record(offset) for offset in range(20, 25)], 7)])
    assert [offset for offset, _ in taken] == [20, 21, 22, 23, 24]
    messages = {offset: message for offset, message in taken}
    delivery._ack(messages[22])  # held ones settle later, in any order
    delivery._ack(messages[20])
    assert done == [(TP, 21)]
    delivery._ack(messages[21])
    assert done[-1] == (TP, 23)
    for offset in (24, 23):
        delivery._ack(messages[offset])
    assert done[-1] == (TP, 25)


async def test_a_partition_taken_in_a_new_generation_starts_afresh(
    taken: list[Any], monkeypatch: pytest.MonkeyPatch, done: list[Any]
) -> None:
    await executor.hand_over([(TP, [_record(0), _record(1)], 7)])
    old = executor._unsettled[TP]
    monkeypatch.setattr(executor, "app", SimpleNamespace(consumer_generation_id=8, consumer=None))
    await executor.hand_over([(TP, [_record(0), _record(1)], 8)])  # read again from the commit
    assert old.live is False and executor._unsettled[TP] is not old
    delivery._ack(taken[0][1])  # the first generation's delivery ends: nothing moves
    assert done == []
    delivery._ack(taken[2][1])
    assert done == [(TP, 1)]


async def test_a_revocation_ends_the_batch_and_its_partitions(
    taken: list[Any], monkeypatch: pytest.MonkeyPatch, done: list[Any]
) -> None:
    """Nothing after it is taken, of that partition or any other, in the old generation."""
    other = TopicPartition("firings", 4)
    revoke_at = 3

    async def take(value: bytes, message: Any) -> None:
        taken.append((message.offset, message))
        if message.offset == revoke_at:
            await executor._on_revoked(None, {TP, other})
            await asyncio.sleep(0)

    monkeypatch.setattr(delivery, "take", take)
    monkeypatch.setattr(bulk_fetch, "forget", lambda tps: None)
    executor.backlog.add(TP, [_record(9)], 7)  # waiting: dropped by the revocation
    parts = [(TP, [_record(offset) for offset in range(0, 8)], 7), (other, [_record(20)], 7)]
    await executor.hand_over(parts)
    assert [offset for offset, _ in taken] == [0, 1, 2, 3]
    assert executor._unsettled == {} and executor.backlog.count == 0
    for _, message in taken:
        delivery._ack(message)
    assert done == []


async def test_an_offset_handed_over_again_in_the_same_generation_is_skipped(
    taken: list[Any], done: list[Any]
) -> None:
    """The end of a recovery seeks back to the commit: what was fetched comes again."""
    await executor.hand_over([(TP, [_record(10), _record(11), _record(12)], 7)])
    await executor.hand_over([(TP, [_record(10), _record(11), _record(12), _record(13)], 7)])
    assert [offset for offset, _ in taken] == [10, 11, 12, 13]
    for offset, message in taken:
        if offset != 11:
            delivery._ack(message)
    assert done == [(TP, 11)]  # 11 is held still: no commit past it
    delivery._ack(taken[1][1])
    assert done[-1] == (TP, 14) and len(executor._unsettled[TP]) == 0


async def test_the_path_gives_the_loop_a_turn_within_a_long_batch(
    taken: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    clock = iter(range(0, 10**9))  # every look at the clock is a second later
    monkeypatch.setattr(executor.time, "monotonic", lambda: float(next(clock)))
    counter = asyncio.ensure_future(count_turns())
    await asyncio.sleep(0)
    try:
        records = [_record(offset) for offset in range(0, 10 * executor.LOOK_EVERY)]
        await executor.hand_over([(TP, records, 7)])
    finally:
        counter.cancel()
    assert len(taken) == len(records)
    assert turns >= 9


async def test_a_stopped_flow_puts_the_rest_back_at_its_next_turn(
    taken: list[Any], monkeypatch: pytest.MonkeyPatch, paused: None
) -> None:
    """A rebalance's recovery stops the flow in the same generation: the rest waits."""
    monkeypatch.setattr(executor, "TURN_AFTER_S", 0.0)
    monkeypatch.setattr(executor, "_taking", lambda: False)
    monkeypatch.setattr(executor, "backlog", executor.bulk.Backlog())
    other = TopicPartition("firings", 4)
    records = [_record(offset) for offset in range(0, 3 * executor.LOOK_EVERY)]
    await executor.hand_over([(TP, records, 7), (other, [_record(5)], 7)])
    assert len(taken) == executor.LOOK_EVERY
    waiting = executor.backlog.take(10_000)
    assert [(tp, [r.offset for r in got], gen) for tp, got, gen in waiting] == [
        (TP, list(range(executor.LOOK_EVERY, 3 * executor.LOOK_EVERY)), 7),
        (other, [5], 7),
    ]


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor.bulk, "pause_fetching", lambda consumer, tp: None)
    monkeypatch.setattr(executor.bulk, "resume_fetching", lambda consumer, tp: None)


def test_the_firings_topic_is_diverted_and_counted_as_the_executors_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scheduler.topics import firings_topic, name_of

    assert bulk_fetch.diverted(name_of(firings_topic))
    monkeypatch.setattr(executor.backlog, "count", 12)
    assert delivery.backlog() >= 12
