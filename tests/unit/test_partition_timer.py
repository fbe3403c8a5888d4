"""The partition timer on a fake index, a fake clock and a recording sender.

Importing ``scheduler.streams.timers`` declares the Faust app, topics and
tables, but connects to nothing and writes no file: only the timer's own
logic runs here.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.streams import timers as timers_module
from scheduler.streams.timers import WINDOW_US, PartitionTimer, index_key, parse_index_key

MS = 1_000
SECOND = 1_000_000
BASE_US = 1_900_000_000 * SECOND
"""Where the fake clock starts: any instant far from the real one will do."""


class FakeClock:
    """Microseconds that run with real time from ``BASE_US``, so the timer's
    real ``wait_for`` timeouts match the instants it computes."""

    def __init__(self) -> None:
        self._started = time.monotonic()

    def __call__(self) -> int:
        return BASE_US + int((time.monotonic() - self._started) * SECOND)


@dataclass
class FakeIndex:
    """A partition's due-index: sorted (instant, schedule id), read like the RocksDB one."""

    entries: list[tuple[int, str]] = field(default_factory=list)
    reads: list[tuple[int, int]] = field(default_factory=list)

    def add(self, due_us: int, schedule_id: str) -> None:
        bisect.insort(self.entries, (due_us, schedule_id))

    def read(self, low_us: int, high_us: int) -> list[tuple[int, str]]:
        """Entries in [low, high], at most REFILL_LIMIT, never splitting one instant."""
        self.reads.append((low_us, high_us))
        found: list[tuple[int, str]] = []
        for due_us, schedule_id in self.entries:
            if due_us < low_us:
                continue
            if due_us > high_us:
                break
            if len(found) >= timers_module.REFILL_LIMIT and due_us != found[-1][0]:
                break
            found.append((due_us, schedule_id))
        return found


@dataclass
class Sent:
    """The recording ``send``: (schedule id, due) in order, and the clock when each went."""

    clock: Callable[[], int]
    wakeups: list[tuple[str, int]] = field(default_factory=list)
    sent_at: list[int] = field(default_factory=list)

    async def __call__(self, partition: int, due: list[tuple[int, str]]) -> None:
        assert partition == 3
        for due_us, schedule_id in due:
            self.wakeups.append((schedule_id, due_us))
            self.sent_at.append(self.clock())

    def ids(self) -> list[str]:
        return [schedule_id for schedule_id, _ in self.wakeups]


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> float:
    """Wait for ``predicate``; return the real seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s")
        await asyncio.sleep(0.002)
    return time.monotonic() - started


@dataclass
class Rig:
    clock: FakeClock
    index: FakeIndex
    sent: Sent
    timer: PartitionTimer


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = FakeClock()
    index = FakeIndex()
    sent = Sent(clock)
    timer = PartitionTimer(3, index.read, sent, clock)
    yield Rig(clock, index, sent, timer)
    timer.stop()
    await asyncio.sleep(0)


@pytest.fixture
def small_window(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A 200 ms window, so that refills happen within a test's real time."""
    monkeypatch.setattr(timers_module, "WINDOW_US", 200 * MS)
    yield 200 * MS


# --- index keys ----------------------------------------------------------------------------


def test_an_index_key_is_the_instant_in_17_digits_then_the_id() -> None:
    assert index_key(1_700_000_000_123_456, "sch_ab") == b"01700000000123456|sch_ab"
    assert parse_index_key(b"01700000000123456|sch_ab") == (1_700_000_000_123_456, "sch_ab")


@given(
    st.integers(0, 10**17 - 1),
    st.integers(0, 10**17 - 1),
    st.text(min_size=1, max_size=40),
    st.text(min_size=1, max_size=40),
)
def test_index_keys_round_trip_and_sort_by_instant(
    due_a: int, due_b: int, id_a: str, id_b: str
) -> None:
    key_a, key_b = index_key(due_a, id_a), index_key(due_b, id_b)
    assert parse_index_key(key_a) == (due_a, id_a)
    assert key_a[:1].isdigit()
    if (due_a, id_a.encode()) < (due_b, id_b.encode()):
        assert key_a < key_b


# --- refill --------------------------------------------------------------------------------


async def test_refill_loads_only_up_to_the_horizon(rig: Rig) -> None:
    now = rig.clock()
    rig.index.add(now + SECOND, "near")
    rig.index.add(now + WINDOW_US + SECOND, "next-window")
    rig.index.add(now + 3 * WINDOW_US, "far")
    rig.timer.refill(now)
    assert len(rig.timer) == 1
    assert rig.timer.horizon_us == now + WINDOW_US
    rig.timer.refill(now + WINDOW_US)
    assert len(rig.timer) == 2
    rig.timer.refill(now + 3 * WINDOW_US)
    assert len(rig.timer) == 3
    # Each read starts right after the previous one ended: nothing skipped, nothing twice.
    assert rig.index.reads == [
        (0, now + WINDOW_US),
        (now + WINDOW_US + 1, now + 2 * WINDOW_US),
        (now + 2 * WINDOW_US + 1, now + 4 * WINDOW_US),
    ]


async def test_offer_beyond_the_horizon_is_left_to_the_refill(rig: Rig) -> None:
    now = rig.clock()
    rig.timer.refill(now)
    horizon = rig.timer.horizon_us
    rig.timer.offer(horizon + 1, "beyond")
    assert len(rig.timer) == 0
    rig.timer.offer(horizon, "inside")
    assert len(rig.timer) == 1
    rig.index.add(horizon + 1, "beyond")  # the agent wrote it to the table
    rig.timer.refill(now + WINDOW_US)
    assert len(rig.timer) == 2


async def test_a_crowded_refill_is_sliced_without_splitting_an_instant(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timers_module, "REFILL_LIMIT", 3)
    now = rig.clock()
    t1, t2, t3, t4 = (now + k * SECOND for k in (1, 2, 3, 4))
    rig.index.add(t1, "a")
    for name in "bcde":
        rig.index.add(t2, name)
    rig.index.add(t3, "f")
    rig.index.add(t4, "g")

    rig.timer.refill(now)
    # Three reached at "c", but "d" and "e" share its instant: all of t2 is loaded.
    assert len(rig.timer) == 5
    assert rig.timer.horizon_us == t2
    rig.timer.refill(now)
    assert rig.index.reads[-1][0] == t2 + 1
    assert len(rig.timer) == 7
    assert rig.timer.horizon_us == now + WINDOW_US


def test_the_table_reader_keeps_one_instant_together_and_stops_at_faust_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timers_module, "REFILL_LIMIT", 2)
    keys = sorted(
        [
            index_key(100, "a"),
            index_key(200, "b"),
            index_key(200, "c"),
            index_key(200, "d"),
            index_key(300, "e"),
            b"__faust\x00offset__",
        ]
    )
    db = _FakeRocksDB(keys)
    fake_table = SimpleNamespace(data=SimpleNamespace(_db_for_partition=lambda partition: db))
    monkeypatch.setattr(timers_module, "due_index", fake_table)
    read = timers_module._index_reader(5)
    assert read(0, 10**16) == [(100, "a"), (200, "b"), (200, "c"), (200, "d")]
    assert read(201, 10**16) == [(300, "e")]
    assert read(150, 250) == [(200, "b"), (200, "c"), (200, "d")]
    assert read(301, 10**16) == []
    assert read(-1, 100) == [(100, "a")]


class _FakeRocksDB:
    """The slice of the rocksdict API the reader uses: a sorted key iterator."""

    def __init__(self, keys: list[bytes]) -> None:
        self._keys = keys

    def iter(self) -> Any:
        return _FakeIterator(self._keys)


class _FakeIterator:
    def __init__(self, keys: list[bytes]) -> None:
        self._keys = keys
        self._at = len(keys)

    def seek(self, target: bytes) -> None:
        self._at = bisect.bisect_left(self._keys, target)

    def valid(self) -> bool:
        return self._at < len(self._keys)

    def key(self) -> bytes:
        return self._keys[self._at]

    def next(self) -> None:
        self._at += 1


# --- the running timer ---------------------------------------------------------------------


async def test_due_entries_are_sent_once_in_order(rig: Rig) -> None:
    now = rig.clock()
    expected = [
        ("a", now - 3 * SECOND),
        ("b", now - 2 * SECOND),
        ("c", now - 2 * SECOND),
        ("d", now - SECOND),
        ("e", now + 50 * MS),
        ("f", now + 100 * MS),
    ]
    for schedule_id, due_us in expected:
        rig.index.add(due_us, schedule_id)
    rig.timer.start()
    await until(lambda: len(rig.sent.wakeups) >= len(expected))
    await asyncio.sleep(0.15)
    assert rig.sent.wakeups == expected
    # None went before its instant.
    assert all(at >= due for at, (_, due) in zip(rig.sent.sent_at, expected, strict=True))
    assert len(rig.timer) == 0


async def test_a_running_timer_holds_only_its_window(rig: Rig, small_window: int) -> None:
    now = rig.clock()
    rig.index.add(now + 50 * MS, "near")
    rig.index.add(now + 600 * MS, "far")
    rig.timer.start()
    await asyncio.sleep(0.02)
    assert len(rig.timer) == 1  # "far" is still only in the table
    await until(lambda: rig.sent.ids() == ["near"])
    assert len(rig.timer) == 0
    await until(lambda: rig.sent.ids() == ["near", "far"])
    assert rig.sent.sent_at[1] >= now + 600 * MS
    await asyncio.sleep(0.05)
    assert rig.sent.ids() == ["near", "far"]


async def test_an_offer_for_now_wakes_the_timer_at_once(rig: Rig) -> None:
    now = rig.clock()
    rig.index.add(now + 8 * SECOND, "later")  # the timer sleeps about 5 s on this
    rig.timer.start()
    await asyncio.sleep(0.05)
    assert len(rig.timer) == 1
    rig.timer.offer(rig.clock(), "urgent")
    took = await until(lambda: "urgent" in rig.sent.ids(), timeout=0.2)
    assert took < 0.2
    assert rig.sent.ids() == ["urgent"]


async def test_an_offer_earlier_than_the_next_entry_is_sent_at_its_instant(rig: Rig) -> None:
    now = rig.clock()
    rig.index.add(now + 8 * SECOND, "later")
    rig.timer.start()
    await asyncio.sleep(0.02)
    due = rig.clock() + 100 * MS
    rig.timer.offer(due, "soon")
    took = await until(lambda: "soon" in rig.sent.ids(), timeout=0.5)
    assert 0.08 <= took < 0.35
    assert rig.sent.sent_at[0] >= due
    assert rig.sent.ids() == ["soon"]


async def test_an_offer_beyond_the_horizon_is_sent_once_after_a_refill(
    rig: Rig, small_window: int
) -> None:
    rig.timer.start()
    await asyncio.sleep(0.02)
    due = rig.timer.horizon_us + 150 * MS
    rig.timer.offer(due, "beyond")
    assert len(rig.timer) == 0
    rig.index.add(due, "beyond")  # where the agent wrote it
    await until(lambda: rig.sent.ids() == ["beyond"])
    assert rig.sent.wakeups == [("beyond", due)]
    await asyncio.sleep(0.25)  # more refills pass over it: still once
    assert rig.sent.ids() == ["beyond"]


async def test_a_crowded_backlog_is_sent_in_slices_each_entry_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timers_module, "REFILL_LIMIT", 2)
    now = rig.clock()
    expected = [(f"s{k}", now - (10 - k // 3) * SECOND) for k in range(9)]
    expected.append(("next", now + 30 * MS))
    for schedule_id, due_us in expected:
        rig.index.add(due_us, schedule_id)
    rig.timer.start()
    await until(lambda: len(rig.sent.wakeups) >= len(expected))
    await asyncio.sleep(0.05)
    assert rig.sent.wakeups == sorted(expected, key=lambda e: (e[1], e[0]))
    assert len(rig.index.reads) > 3


async def test_stop_cancels_the_task_and_forgets_the_window(rig: Rig) -> None:
    now = rig.clock()
    rig.index.add(now + 100 * MS, "soon")
    rig.index.add(now + 5 * SECOND, "later")
    before = asyncio.all_tasks()
    rig.timer.start()
    (task,) = asyncio.all_tasks() - before
    await asyncio.sleep(0.02)
    assert len(rig.timer) == 2
    rig.timer.stop()
    assert len(rig.timer) == 0
    await asyncio.wait({task}, timeout=0.5)
    assert task.cancelled()
    await asyncio.sleep(0.2)
    assert rig.sent.wakeups == []
    rig.timer.stop()  # a second stop is harmless


async def test_a_failing_send_restarts_the_timer_from_the_table(rig: Rig) -> None:
    now = rig.clock()
    rig.index.add(now - SECOND, "flaky")
    failures: list[str] = []

    async def send(partition: int, due: list[tuple[int, str]]) -> None:
        if not failures:
            failures.append(due[0][1])
            raise RuntimeError("broker unavailable")
        await rig.sent(partition, due)

    timer = PartitionTimer(3, rig.index.read, send, rig.clock)
    timer.start()
    try:
        await until(lambda: rig.sent.ids() == ["flaky"], timeout=2.5)
    finally:
        timer.stop()
    assert failures == ["flaky"]


async def test_an_entry_offered_again_or_also_read_from_the_index_wakes_once(rig: Rig) -> None:
    """The agent re-puts index entries to repair lost writes; that must not double a wake-up."""
    now = rig.clock()
    due = now + 300 * MS
    rig.index.add(due, "twice")
    rig.timer.refill(now)
    rig.timer.offer(due, "twice")
    rig.timer.offer(due, "twice")
    rig.timer.refill(now + 1)  # a second read of the same stretch adds nothing either
    assert len(rig.timer) == 1
    rig.timer.start()
    await until(lambda: "twice" in rig.sent.ids(), timeout=2)
    await asyncio.sleep(0.2)
    assert rig.sent.ids() == ["twice"]


async def test_a_crowd_in_the_window_is_woken_early_and_a_small_one_at_its_lead(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timers_module, "CROWD", 3)
    monkeypatch.setattr(timers_module, "WAKE_RATE", 1)  # a second of lead per surplus instant
    now = rig.clock()
    few = now + 3 * SECOND
    for k in range(3):
        rig.index.add(few, f"few{k}")
    rig.timer.start()
    await asyncio.sleep(0.2)
    assert rig.sent.wakeups == []  # three are no crowd: they wait for their instant
    many = now + 20 * SECOND
    for k in range(5):
        rig.timer.offer(many, f"many{k}")
    # Eight in the window, five over the crowd: 5 s of lead covers the first three.
    await until(lambda: len(rig.sent.wakeups) >= 3, timeout=0.5)
    assert rig.sent.ids()[:3] == ["few0", "few1", "few2"]
    assert all(at < few - 2 * SECOND for at in rig.sent.sent_at)
    await asyncio.sleep(0.1)
    # The three woken early still count until their instant: the lead stays 5 s.
    assert len(rig.timer) == 5 and rig.timer.lead_us() == 5 * SECOND


async def test_a_crowd_woken_early_keeps_its_lead_for_those_stored_after_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timers_module, "CROWD", 3)
    monkeypatch.setattr(timers_module, "WAKE_RATE", 1)
    rig.timer.start()
    await until(lambda: rig.timer.horizon_us > 0)
    due = rig.clock() + 2 * SECOND
    for k in range(40):
        rig.timer.offer(due, f"crowd{k}")
    await until(lambda: len(rig.sent.wakeups) == 40, timeout=0.5)
    # 37 over the crowd, at one a second: a lead longer than the window.
    assert len(rig.timer) == 0 and rig.timer.lead_us() == 37 * SECOND
    # The agent storing one more of the crowd is told to wake it itself, now...
    assert rig.timer.takes(due)
    assert rig.timer.lead_us() == 38 * SECOND
    # ...but not one due after the lead.
    assert not rig.timer.takes(due + 60 * SECOND)
    # With nothing left in its heap, the timer sleeps until its next refill (it
    # used to spin on a lead reaching past it, holding the event loop).
    started = time.monotonic()
    await asyncio.sleep(timers_module.CROWD_GAP_S + 0.1)  # past its gap after sending
    assert time.monotonic() - started < timers_module.CROWD_GAP_S + 0.5
    assert len(rig.sent.wakeups) == 40


async def test_an_instant_within_the_lead_of_fire_ahead_is_taken_but_not_counted(
    rig: Rig,
) -> None:
    timer = PartitionTimer(3, rig.index.read, rig.sent, rig.clock, ahead_us=5 * SECOND)
    now = rig.clock()
    assert timer.takes(now + 4 * SECOND) and timer.takes(now - SECOND)
    assert not timer.takes(now + 6 * SECOND)
    assert timer.lead_us() == 5 * SECOND and timer._early == []


def test_while_the_window_holds_a_crowd_any_instant_in_it_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timers_module, "CROWD", 3)
    clock = FakeClock()
    timer = PartitionTimer(3, lambda low, high: [], Sent(clock), clock, ahead_us=5 * SECOND)
    timer.horizon_us = clock() + WINDOW_US
    now = clock()
    later = now + 25 * SECOND  # past the lead of fire_ahead, inside the window
    for k in range(3):
        timer.offer(now + 28 * SECOND, f"few{k}")
    # Three are no crowd: an instant past the lead is left to the index.
    assert timer.lead_us() == 5 * SECOND
    assert not timer.takes(later)
    timer.offer(now + 28 * SECOND, "fourth")
    # Four are: the lead is 5 s and a quarter (one over, at WAKE_RATE), and
    # one instant more of the window is taken, whatever the lead.
    assert timer.lead_us() < 6 * SECOND
    assert timer.takes(later)
    # Taken instants count towards the crowd until they come...
    assert timer._early == [later]
    # ...and nothing past the window is taken.
    assert not timer.takes(now + WINDOW_US + SECOND)


def test_due_soon_is_fire_ahead_whatever_the_crowd(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the compiled lane leaves to the Python path: a crowd does not widen it."""
    monkeypatch.setattr(timers_module, "CROWD", 3)
    clock = FakeClock()
    timer = PartitionTimer(3, lambda low, high: [], Sent(clock), clock, ahead_us=5 * SECOND)
    timer.horizon_us = clock() + WINDOW_US
    now = clock()
    for k in range(10):
        timer.offer(now + 28 * SECOND, f"crowd{k}")
    assert timer.lead_us() > 5 * SECOND
    assert timer.due_soon(now + 4 * SECOND) and timer.due_soon(now - SECOND)
    assert not timer.due_soon(now + 6 * SECOND)
    assert timer.takes(now + 6 * SECOND)  # the crowd's window, for the Python path


def test_the_lead_grows_with_the_surplus_over_the_crowd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timers_module, "CROWD", 2)
    timer = PartitionTimer(0, lambda low, high: [], Sent(FakeClock()), ahead_us=5 * SECOND)
    assert timer.lead_us() == 5 * SECOND
    timer._heap.extend((BASE_US + k, f"s{k}") for k in range(2 + 500))
    # 500 over the crowd at WAKE_RATE (250/s): 2 s more than fire_ahead.
    assert timer.lead_us() == 5 * SECOND + 500 * SECOND // timers_module.WAKE_RATE


@pytest.fixture
async def crowd_of_three(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> Rig:
    """The rig's timer running, with a crowd of more than three."""
    monkeypatch.setattr(timers_module, "CROWD", 3)
    rig.timer.start()
    await until(lambda: rig.timer.horizon_us > 0)
    return rig


def stored(rig: Rig, due_us: int, *schedule_ids: str) -> None:
    """What the agent does: write the index entry, then offer it to the timer."""
    for schedule_id in schedule_ids:
        rig.index.add(due_us, schedule_id)
        rig.timer.offer(due_us, schedule_id)


async def test_a_crowd_stored_past_the_horizon_is_read_at_once(crowd_of_three: Rig) -> None:
    rig = crowd_of_three
    due = rig.timer.horizon_us + 20 * MS  # past the horizon...
    await asyncio.sleep(0.05)  # ...and, a moment later, inside the window
    stored(rig, due, "crowd0", "crowd1", "crowd2")
    await asyncio.sleep(0.05)
    assert len(rig.timer) == 0  # three are no crowd: left to the refill in 15 s
    stored(rig, due, "crowd3")
    await until(lambda: len(rig.timer) == 4, timeout=0.5)
    assert len(rig.index.reads) == 2
    rig.timer.offer(due, "crowd4")  # inside the new horizon: offered as usual
    assert len(rig.timer) == 5


async def test_entries_past_the_window_do_not_count_towards_an_early_refill(
    crowd_of_three: Rig,
) -> None:
    rig = crowd_of_three
    stored(rig, rig.clock() + 2 * WINDOW_US, *(f"far{k}" for k in range(10)))
    await asyncio.sleep(0.1)
    assert len(rig.timer) == 0
    assert len(rig.index.reads) == 1
