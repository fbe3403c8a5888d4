"""The batched changelog reader's bookkeeping, on a stand-in for Faust's Recovery."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from scheduler import recovery

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


def event(tp: TP, offset: int) -> Any:
    return SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset))


def stand_in(table: Table) -> Any:
    return SimpleNamespace(
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
