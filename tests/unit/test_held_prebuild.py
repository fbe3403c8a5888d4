"""When the executor appends a crowd's Kafka batches (``delivery._Held``): ahead of its lead.

The lead grows with the crowd (``PREBUILD_EACH_US`` a firing), and is kept
whatever is due before the crowd: another instant's firing, held for
earlier, used to hold back the crowd's appending until it had come. The
clock and the sending are stand-ins; the same on a real broker is in
``tests/integration/test_fire_ahead.py``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from scheduler import clock
from scheduler.domain.retry import Outcome, Result
from scheduler.streams import delivery


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> tuple[delivery._Held, list[tuple[str, Any, int]]]:
    """A fresh holder; what it does, as (what, instant or count, µs before the instant)."""
    events: list[tuple[str, Any, int]] = []

    async def prebuild_kafka(records: list[Any], timestamp_ms: int) -> list[Any]:
        events.append(("prebuild", len(records), timestamp_ms * 1000 - clock.now_us()))
        return [object()]

    async def start_many(due: list[Any], prebuilt: Any = None, queued: Any = None) -> None:
        # A crowd's firings whose batches were queued at the instant come first.
        members = [held for slice_members, _ in queued or () for held in slice_members]
        for held in [*members, *due]:
            events.append(("start", held[0], held[4] - clock.now_us()))

    monkeypatch.setattr(delivery, "executors", SimpleNamespace(prebuild_kafka=prebuild_kafka))
    monkeypatch.setattr(delivery, "_start_many", start_many)
    monkeypatch.setattr(delivery, "PREBUILD_AHEAD_US", 300_000)
    monkeypatch.setattr(delivery, "PREBUILD_EACH_US", 100)  # 1,200 firings: 0.12 s more
    monkeypatch.setattr(delivery, "PREBUILD_LOOK_US", 50_000)
    return delivery._Held(), events


def _hold(holder: delivery._Held, due_us: int, name: str, kafka: bool = True) -> None:
    message = SimpleNamespace(tp=None, offset=0, ack=lambda consumer: False)
    holder.keep(due_us, name, False, object() if kafka else None, message)


async def test_a_crowd_is_appended_ahead_by_its_lead_even_behind_an_earlier_instant(
    held: tuple[delivery._Held, list[tuple[str, Any, int]]],
) -> None:
    holder, events = held
    now = clock.now_us()
    crowd_at = now - now % 1000 + 1_000_000  # a whole millisecond, as the stamps are
    _hold(holder, crowd_at - 200_000, "early", kafka=False)  # due within the crowd's lead
    for n in range(1_200):
        _hold(holder, crowd_at, f"fir_{n}")
    while not any(what == "start" and name == "fir_0" for what, name, _ in events):
        await asyncio.sleep(0.01)
    order = [(what, name) for what, name, _ in events[:3]]
    assert order == [("prebuild", 1_200), ("start", "early"), ("start", "fir_0")]
    (_, count, ahead_us) = events[0]
    assert count == 1_200
    # Its lead, 0.3 s + 1,200 x 100 µs, not the 0.2 s the early instant left it.
    assert 420_000 - 60_000 <= ahead_us <= 420_000
    assert all(left <= 0 for what, _, left in events if what == "start")  # never early


async def test_a_crowd_that_grows_is_appended_by_its_lead_when_it_is_a_crowd(
    held: tuple[delivery._Held, list[tuple[str, Any, int]]],
) -> None:
    holder, events = held
    now = clock.now_us()
    crowd_at = now - now % 1000 + 600_000
    for n in range(delivery.PREBUILD_MIN - 1):  # not a crowd yet
        _hold(holder, crowd_at, f"fir_{n}")
    await asyncio.sleep(0.35)  # past the lead a crowd of this size would have
    assert events == []
    _hold(holder, crowd_at, "fir_last")
    await asyncio.sleep(0.05)
    assert [what for what, _, _ in events] == ["prebuild"]
    while len(events) < 2:
        await asyncio.sleep(0.01)
    assert events[1][0] == "start"


async def test_nothing_is_appended_for_a_few_firings_and_no_look_is_taken_early(
    held: tuple[delivery._Held, list[tuple[str, Any, int]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    holder, events = held
    rings: list[int] = []
    ring = delivery._ring
    monkeypatch.setattr(delivery, "_ring", lambda alarm: (rings.append(1), ring(alarm)))
    now = clock.now_us()
    for n in range(5):
        _hold(holder, now + 400_000, f"fir_{n}")
    await asyncio.sleep(0.6)
    assert [what for what, _, _ in events] == ["start"] * 5
    assert len(rings) <= 2  # slept until the instant, no look every PREBUILD_LOOK_US


async def test_settling_a_big_batch_gives_the_loop_turns_and_acknowledges_all_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The results of a crowd's slice are settled a ``SETTLE_YIELD`` at a time: the
    loop meanwhile writes the next slice's requests."""
    size = 5 * delivery.SETTLE_YIELD + 7
    now_us = clock.now_us()
    batch = [(f"fir_{i}", SimpleNamespace(offset=i), False, object(), now_us) for i in range(size)]
    acked: list[int] = []
    turns: list[int] = []  # how many were acknowledged at each turn another task got

    async def deliver_kafka(records: list[Any], prebuilt: Any) -> list[Result]:
        return [Result(Outcome.SUCCESS)] * len(records)

    async def other_task() -> None:
        while len(acked) < size:
            turns.append(len(acked))
            await asyncio.sleep(0)

    monkeypatch.setattr(delivery, "executors", SimpleNamespace(deliver_kafka=deliver_kafka))
    monkeypatch.setattr(delivery, "_ack", lambda message: acked.append(message.offset))
    await delivery.slots().acquire()  # as _start_many does before it
    watching = asyncio.ensure_future(other_task())
    await delivery._settle_kafka(batch)  # type: ignore[arg-type]
    await watching
    assert acked == list(range(size))
    during = sorted({n for n in turns if 0 < n < size})
    assert len(during) >= 5  # a turn at least every SETTLE_YIELD
    gaps = zip([0, *during], [*during, size], strict=True)
    assert all(b - a <= delivery.SETTLE_YIELD for a, b in gaps)


@pytest.fixture
def instant_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[delivery._Held, list[tuple[Any, ...]]]:
    """A fresh holder whose crowd's batches are stand-ins; what happens at the instant.

    ("queue", firings held then) for each slice queued on its producer, and
    ("start", due, unsure slices, queued slices) for the hand-over.
    """
    calls: list[tuple[Any, ...]] = []
    holder = delivery._Held()

    async def prebuild_kafka(records: list[Any], timestamp_ms: int) -> list[Any]:
        calls.append(("prebuild", len(records)))
        return [object()]

    async def start_many(due: list[Any], prebuilt: Any = None, queued: Any = None) -> None:
        calls.append(("start", list(due), list(prebuilt or ()), list(queued or ())))

    monkeypatch.setattr(delivery, "executors", SimpleNamespace(prebuild_kafka=prebuild_kafka))
    monkeypatch.setattr(
        delivery, "queue_prebuilt", lambda built: calls.append(("queue", len(holder)))
    )
    monkeypatch.setattr(delivery, "_start_many", start_many)
    monkeypatch.setattr(delivery, "PREBUILD_AHEAD_US", 200_000)
    monkeypatch.setattr(delivery, "PREBUILD_EACH_US", 10)
    return holder, calls


async def _until(calls: list[tuple[Any, ...]], what: str, within: float = 5.0) -> None:
    async with asyncio.timeout(within):  # a release that failed never gets there
        while not any(call[0] == what for call in calls):
            await asyncio.sleep(0.01)


async def test_a_crowds_batches_are_queued_at_its_instant_before_any_firing_is_taken_out(
    instant_calls: tuple[delivery._Held, list[tuple[Any, ...]]],
) -> None:
    """The per-firing work of the instant comes after the queueing: before it, the
    sender could not take the first batch until all of it was done. A firing
    held after the crowd's appending is appended before the instant too."""
    holder, calls = instant_calls
    crowd_at = clock.now_us() + 600_000
    for n in range(1_200):
        _hold(holder, crowd_at, f"fir_{n}")
    await _until(calls, "prebuild")
    _hold(holder, crowd_at, "later")  # held after the batches were appended: a top-up
    await _until(calls, "start")
    assert [call[0] for call in calls] == ["prebuild", "prebuild", "queue", "queue", "start"]
    assert calls[0:2] == [("prebuild", 1_200), ("prebuild", 1)]
    assert calls[2] == ("queue", 1_201)  # all still held when queued
    _, due, unsure, queued = calls[4]
    assert due == [] and unsure == []
    assert [[held[0] for held in members] for members, _ in queued] == [
        [f"fir_{n}" for n in range(1_200)],
        ["later"],
    ]
    assert len(holder) == 0


async def test_a_crowd_that_lost_a_firing_is_not_queued_ahead_but_matched_as_before(
    instant_calls: tuple[delivery._Held, list[tuple[Any, ...]]],
) -> None:
    holder, calls = instant_calls
    crowd_at = clock.now_us() + 600_000
    for n in range(1_200):
        _hold(holder, crowd_at, f"fir_{n}")
    await _until(calls, "prebuild")
    assert holder.revoke(["fir_7"]) == 1
    await _until(calls, "start")
    assert [call[0] for call in calls] == ["prebuild", "start"]
    _, due, unsure, queued = calls[1]
    assert queued == []
    assert sorted(held[0] for held in due) == sorted(f"fir_{n}" for n in range(1_200) if n != 7)
    assert [len(members) for members, _ in unsure] == [1_200]  # _start_many finds it broken


async def test_a_firing_held_again_for_another_instant_goes_at_that_one_only(
    instant_calls: tuple[delivery._Held, list[tuple[Any, ...]]],
) -> None:
    """Revoked and held again with another delivery time, a firing is still
    listed under its first instant: neither that instant's crowd nor its
    release may take it."""
    holder, calls = instant_calls
    crowd_at = clock.now_us() + 600_000
    for n in range(1_200):
        _hold(holder, crowd_at, f"fir_{n}")
    assert holder.revoke(["fir_5"]) == 1
    _hold(holder, crowd_at - 100_000, "fir_5")
    await _until(calls, "queue")
    await asyncio.sleep(0.05)
    assert [call[0] for call in calls] == ["prebuild", "start", "queue", "start"]
    assert calls[0] == ("prebuild", 1_199)
    assert [held[0] for held in calls[1][1]] == ["fir_5"]
    _, due, unsure, queued = calls[3]
    assert due == [] and unsure == []
    assert "fir_5" not in {held[0] for members, _ in queued for held in members}
    assert len(holder) == 0


async def test_a_slice_whose_firing_was_held_again_is_not_sent_as_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Revoked and held again (a new record, the same instant) after its crowd was
    appended: the slice's batch carries the old record, so its firings go
    the usual way, each with the record it has now."""
    settled: list[tuple[list[Any], Any]] = []

    async def settle_kafka(batch: list[Any], prebuilt: Any = None) -> None:
        settled.append((batch, prebuilt))
        delivery.slots().release()

    monkeypatch.setattr(delivery, "_settle_kafka", settle_kafka)

    def held(name: str, offset: int) -> Any:
        return (name, SimpleNamespace(offset=offset), False, object(), 0)

    members = [held(f"fir_{n}", n) for n in range(3)]
    again = held("fir_1", 99)
    await delivery._start_many([members[0], again, members[2]], [(members, [object()])])
    await asyncio.sleep(0)
    assert settled == [([members[0], again, members[2]], None)]


async def test_a_revocation_while_the_sender_takes_the_crowd_leaves_nothing_behind(
    instant_calls: tuple[delivery._Held, list[tuple[Any, ...]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The release gives the sender turns of the loop once the batches are queued;
    a revocation taken meanwhile is too late for the firing, which goes with
    its batch, and the release still takes every firing out."""
    holder, calls = instant_calls
    loop = asyncio.get_running_loop()

    def queue_prebuilt(built: Any) -> None:
        calls.append(("queue", len(holder)))
        loop.call_soon(lambda: calls.append(("revoked", holder.revoke(["fir_3"]))))

    monkeypatch.setattr(delivery, "queue_prebuilt", queue_prebuilt)
    crowd_at = clock.now_us() + 600_000
    for n in range(1_200):
        _hold(holder, crowd_at, f"fir_{n}")
    await _until(calls, "start")
    assert [call[0] for call in calls] == ["prebuild", "queue", "revoked", "start"]
    assert calls[2] == ("revoked", 1)
    _, due, unsure, queued = calls[3]
    assert due == [] and unsure == []
    assert [len(members) for members, _ in queued] == [1_200]
    assert len(holder) == 0
    await asyncio.sleep(0.01)
    assert holder._task is not None and holder._task.done()
    assert holder._task.exception() is None  # ended, not failed


async def test_a_firing_held_again_while_the_sender_takes_the_crowd_goes_on_its_own(
    instant_calls: tuple[delivery._Held, list[tuple[Any, ...]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Revoked and held again (a new record) during the sender's turns: the crowd's
    batch went with the old record; the new one is not taken out with the
    crowd's firings but released on its own."""
    holder, calls = instant_calls
    loop = asyncio.get_running_loop()
    crowd_at = clock.now_us() + 600_000
    again = SimpleNamespace(tp=None, offset=99, ack=lambda consumer: False)

    def revoke_and_hold_again() -> None:
        holder.revoke(["fir_3"])
        holder.keep(crowd_at, "fir_3", False, object(), again)

    def queue_prebuilt(built: Any) -> None:
        calls.append(("queue", len(holder)))
        loop.call_soon(revoke_and_hold_again)

    monkeypatch.setattr(delivery, "queue_prebuilt", queue_prebuilt)
    for n in range(1_200):
        _hold(holder, crowd_at, f"fir_{n}")
    async with asyncio.timeout(5):
        while [call[0] for call in calls].count("start") < 2:
            await asyncio.sleep(0.01)
    starts = [call for call in calls if call[0] == "start"]
    assert [len(members) for members, _ in starts[0][3]] == [1_200]
    assert [(held[0], held[1]) for held in starts[1][1]] == [("fir_3", again)]
    assert len(holder) == 0


async def test_after_the_small_top_up_later_firings_go_the_usual_way(
    instant_calls: tuple[delivery._Held, list[tuple[Any, ...]]],
) -> None:
    """One small top-up per crowd: made again for every firing held in its last
    moments, each would be a slice (and a batch a partition) of its own."""
    holder, calls = instant_calls
    crowd_at = clock.now_us() + 600_000
    for n in range(1_200):
        _hold(holder, crowd_at, f"fir_{n}")
    await _until(calls, "prebuild")
    _hold(holder, crowd_at, "a")
    async with asyncio.timeout(5):
        while [call[0] for call in calls].count("prebuild") < 2:
            await asyncio.sleep(0.005)
    _hold(holder, crowd_at, "b")
    _hold(holder, crowd_at, "c")
    await _until(calls, "start")
    assert [call for call in calls if call[0] == "prebuild"] == [
        ("prebuild", 1_200),
        ("prebuild", 1),
    ]
    _, due, _, queued = next(call for call in calls if call[0] == "start")
    assert [held[0] for held in due] == ["b", "c"]
    assert [len(members) for members, _ in queued] == [1_200, 1]
