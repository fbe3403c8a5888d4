"""The batched changelog reader's bookkeeping, on a stand-in for Faust's Recovery."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from types import SimpleNamespace
from typing import Any

from faust.types import TP

import scheduler.app  # noqa: F401  (installs the adjustments)
from scheduler.patches import changelog_feed, recovery

ACTIVE = TP("schedules-changelog", 0)
STANDBY = TP("schedules-changelog", 1)
STRANGER = TP("other-changelog", 0)


class Table:
    recovery_buffer_size = 3
    standby_buffer_size = 2

    def __init__(self) -> None:
        self.applied: list[list[tuple[TP, int]]] = []
        self.seen: list[int] = []

    def apply_changelog_batch(self, events: list[Any]) -> None:
        self.applied.append([(e.message.tp, e.message.offset) for e in events])

    async def on_changelog_event(self, event: Any) -> None:
        self.seen.append(event.message.offset)


GENERATION = 7


def event(tp: TP, offset: int, generation: int = GENERATION) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset, generation_id=generation))


def stand_in(table: Table) -> Any:
    return SimpleNamespace(
        app=SimpleNamespace(consumer_generation_id=GENERATION),
        active_tps={ACTIVE},
        standby_tps={STANDBY},
        tp_to_table={ACTIVE: table, STANDBY: table},
        buffers={table: []},
        buffer_sizes={},
        active_offsets=Counter({ACTIVE: -1}),
        standby_offsets=Counter({STANDBY: -1}),
        _active_events_received_at={},
        _standby_events_received_at={},
        _last_flush_at=None,
        _last_active_event_processed_at=None,
        _processing_times=deque(),
        num_samples_required_for_estimate=4,
    )


def test_records_are_applied_in_order_at_the_buffer_size_and_old_ones_skipped() -> None:
    table = Table()
    rec = stand_in(table)
    batch = [event(ACTIVE, n) for n in range(4)] + [event(ACTIVE, 2), event(STRANGER, 9)]
    batch += [event(STANDBY, 0), event(ACTIVE, 4), event(ACTIVE, 5)]
    asyncio.run(recovery._apply(rec, batch))

    # A buffer is the table's; its size is the partition's (Faust's rule):
    # offsets 0-2 fill the active size 3; the standby record makes two, its size.
    assert table.applied == [
        [(ACTIVE, 0), (ACTIVE, 1), (ACTIVE, 2)],
        [(ACTIVE, 3), (STANDBY, 0)],
    ]
    assert [(e.message.tp, e.message.offset) for e in rec.buffers[table]] == [
        (ACTIVE, 4),
        (ACTIVE, 5),
    ]
    assert table.seen == [0, 1, 2, 3, 0, 4, 5]
    assert rec.active_offsets[ACTIVE] == 5 and rec.standby_offsets[STANDBY] == 0
    assert STRANGER not in rec.active_offsets and STRANGER not in rec.standby_offsets
    assert rec.buffer_sizes == {ACTIVE: 3, STANDBY: 2}
    # One processing-time sample per active record, capped at the estimate's window.
    assert len(rec._processing_times) == 4
    assert rec._last_active_event_processed_at is not None


def test_take_stops_at_the_batch_size_and_leaves_the_rest() -> None:
    async def run() -> tuple[int, int]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in range(recovery.BATCH + 5):
            queue.put_nowait(n)
        first = await queue.get()
        taken = recovery._take(queue, first)
        assert taken[:3] == [0, 1, 2]
        return len(taken), queue.qsize()

    assert asyncio.run(run()) == (recovery.BATCH, 5)


def test_records_fetched_before_partitions_moved_are_dropped() -> None:
    table = Table()
    rec = stand_in(table)
    stale = [event(ACTIVE, n, GENERATION - 1) for n in range(5, 8)]
    asyncio.run(recovery._apply(rec, [*stale, event(ACTIVE, 0), event(ACTIVE, 1)]))

    # Offsets 5-7 came from the assignment before; had they counted, 0 and 1
    # (sought again after the rebalance) would have been skipped as old.
    assert table.seen == [0, 1]
    assert rec.active_offsets[ACTIVE] == 1


def test_a_feed_puts_raw_records_in_order_and_pauses_its_partition_under_pressure() -> None:
    from mode.utils.queues import FlowControlEvent, FlowControlQueue

    async def run() -> tuple[list[Any], list[str]]:
        calls: list[str] = []
        flow = FlowControlEvent()
        flow.resume()
        app = SimpleNamespace(
            flow_control=flow,
            consumer=SimpleNamespace(
                on_buffer_full=lambda tp: calls.append(f"full {tp.partition}"),
                on_buffer_drop=lambda tp: calls.append(f"drop {tp.partition}"),
            ),
            sensors=SimpleNamespace(on_topic_buffer_full=lambda tp: None),
        )
        queue: FlowControlQueue = FlowControlQueue(maxsize=8, flow_control=flow)
        feed = changelog_feed.ChangelogFeed(app, ACTIVE, queue)
        fetched = [
            SimpleNamespace(offset=n, key=b"k%d" % n, value=None if n == 2 else b"v")
            for n in range(8)
        ]
        await feed.put_records(fetched, GENERATION)
        taken = [queue.get_nowait() for _ in range(queue.qsize())]
        return taken, calls

    taken, calls = asyncio.run(run())
    assert [(r.message.tp, r.partition, r.offset, r.key, r.value) for r in taken] == [
        (ACTIVE, 0, n, b"k%d" % n, None if n == 2 else b"v") for n in range(8)
    ]
    assert {r.generation_id for r in taken} == {GENERATION}
    # Past the queue's pressure mark (6 of 8) the partition's fetching is
    # paused, once; it resumes when the queue is drained below its low mark.
    assert calls == ["full 0", "drop 0"]
