"""Changelog recovery reads its queue a batch at a time.

Upstream: Faust's ``Recovery._slurp_changelogs`` takes the changelog records
from its queue one by one, each through ``asyncio.wait_for(queue.get(), 5)``:
a task, a future, a timer handle and at least two turns of the event loop per
record. After each record it also asks whether recovery is done, which builds
a ``Counter`` over every active partition.

Ours: whatever the queue holds is taken at once (up to ``BATCH`` records),
and the end checks run once per batch; only an empty queue is awaited, with
Faust's 5 s timeout. Faust's bookkeeping stays: offsets per partition, table
buffers flushed at their size, the end-of-recovery and standby-ready signals,
the estimate of the time left. One deliberate difference: Faust logs a record
of a partition that is neither active nor standby and then applies it with
the previous record's table; here it is logged and skipped.

Why: a worker starting from an empty data dir spent most of its recovery CPU
in that per-record machinery (``bench/`` restart workload).
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import Any

from faust.tables.recovery import Recovery
from faust.utils.tracing import finish_span
from mode import Service

logger = logging.getLogger(__name__)

REPLACES = ("faust.tables.recovery:Recovery._slurp_changelogs",)
USES = (
    "faust.tables.recovery:Recovery.active_offsets",
    "faust.tables.recovery:Recovery.standby_offsets",
    "faust.tables.recovery:Recovery.active_highwaters",
    "faust.tables.recovery:Recovery.active_tps",
    "faust.tables.recovery:Recovery.standby_tps",
    "faust.tables.recovery:Recovery.tp_to_table",
    "faust.tables.recovery:Recovery.buffers",
    "faust.tables.recovery:Recovery.buffer_sizes",
    "faust.tables.recovery:Recovery.need_recovery",
    "faust.tables.recovery:Recovery.flush_buffers",
    "faust.tables.recovery:Recovery.standby_remaining_total",
    "faust.tables.recovery:Recovery.signal_recovery_end",
    "faust.tables.recovery:Recovery._set_recovery_ended",
    "faust.tables.recovery:Recovery._actives_span",
    "faust.tables.recovery:Recovery._standbys_span",
    "faust.tables.recovery:Recovery._active_events_received_at",
    "faust.tables.recovery:Recovery._standby_events_received_at",
    "faust.tables.recovery:Recovery._last_flush_at",
    "faust.tables.recovery:Recovery._last_active_event_processed_at",
    "faust.tables.recovery:Recovery._processing_times",
    "faust.tables.recovery:Recovery.num_samples_required_for_estimate",
    "faust.tables.manager:TableManager.on_standbys_ready",
    "faust.tables.manager:TableManager.standbys_ready",
)

BATCH = 2_000
"""Records taken from the queue before the end checks run and the loop yields."""

QUEUE_WAIT_S = 5.0
"""How long an empty queue is awaited before the checks run anyway (Faust's value)."""


async def _skip_aborted_transactions(recovery: Any) -> None:
    """Move an active partition stuck below its highwater at an aborted transaction's marker."""
    offsets = recovery.active_offsets
    for tp, highwater in recovery.active_highwaters.items():
        offset = offsets[tp]
        if highwater is None or offset is None or offset >= highwater:
            continue
        if await recovery.app.consumer.position(tp) >= highwater:
            logger.info("changelog %s: aborted transaction up to the highwater %s", tp, highwater)
            offsets[tp] = highwater


def _end_if_done(recovery: Any) -> None:
    if recovery.in_recovery and not recovery.need_recovery():
        recovery.flush_buffers()
        recovery._set_recovery_ended()
        if recovery._actives_span is not None:
            recovery._actives_span.set_tag("Actives-Ready", True)
        recovery.signal_recovery_end.set()
    standbys_ready = recovery._standbys_span is None and recovery.tables.standbys_ready
    if not standbys_ready and not recovery.standby_remaining_total():
        if recovery._standbys_span:
            finish_span(recovery._standbys_span)
            recovery._standbys_span = None
        recovery.tables.on_standbys_ready()


def _take(queue: Any, first: Any | None) -> list[Any]:
    events = [] if first is None else [first]
    while len(events) < BATCH and not queue.empty():
        events.append(queue.get_nowait())
    return events


async def _apply(recovery: Any, events: list[Any]) -> None:
    active_tps, standby_tps = recovery.active_tps, recovery.standby_tps
    tp_to_table = recovery.tp_to_table
    buffers, buffer_sizes = recovery.buffers, recovery.buffer_sizes
    started = monotonic()
    active = 0
    generation = recovery.app.consumer_generation_id
    for event in events:
        message = event.message
        if message.generation_id != generation:
            # Fetched before partitions moved: recovery has sought every
            # changelog partition again, and this record's turn comes again.
            continue
        tp = message.tp
        offset = message.offset
        if tp in active_tps:
            offsets = recovery.active_offsets
            recovery._active_events_received_at[tp] = started
            active += 1
        elif tp in standby_tps:
            offsets = recovery.standby_offsets
            recovery._standby_events_received_at.setdefault(tp, started)
        else:
            logger.warning("changelog record of an unassigned partition skipped: %s@%s", tp, offset)
            continue
        seen = offsets.get(tp)
        if seen is not None and offset <= seen:
            continue
        offsets[tp] = offset
        table = tp_to_table[tp]
        buffer = buffers[table]
        buffer.append(event)
        await table.on_changelog_event(event)
        size = buffer_sizes.get(tp)
        if size is None:
            active_tp = offsets is recovery.active_offsets
            size = table.recovery_buffer_size if active_tp else table.standby_buffer_size
            buffer_sizes[tp] = size
        if len(buffer) >= size:
            table.apply_changelog_batch(buffer)
            buffer.clear()
            recovery._last_flush_at = monotonic()
    if active:
        _note_processing_time(recovery, started, active)


def _note_processing_time(recovery: Any, started: float, count: int) -> None:
    """Feed Faust's estimate of the time left: one sample per active record."""
    now = monotonic()
    last = recovery._last_active_event_processed_at
    per_record = (now - (started if last is None else last)) / count
    samples = recovery._processing_times
    limit = recovery.num_samples_required_for_estimate
    samples.extend([per_record] * min(count, limit))
    while len(samples) > limit:
        samples.popleft()
    recovery._last_active_event_processed_at = now


async def _slurp_changelogs(self: Any) -> None:
    queue = self.tables.changelog_queue
    idle_rounds = 0
    while not self.should_stop:
        try:
            self.signal_recovery_end.clear()
            first = None
            if queue.empty():
                try:
                    first = await asyncio.wait_for(queue.get(), timeout=QUEUE_WAIT_S)
                except TimeoutError:
                    idle_rounds += 1
                    if self.should_stop:
                        return
                    if self.app.in_transaction and idle_rounds > 1:
                        await _skip_aborted_transactions(self)
                    _end_if_done(self)
                    continue
            idle_rounds = 0
            await _apply(self, _take(queue, first))
            _end_if_done(self)
            await asyncio.sleep(0)
        except Exception as exc:
            logger.warning("error in changelog recovery: %r", exc)


def install() -> None:
    # Faust's is a Service.task (started with the service); so is this one.
    Recovery._slurp_changelogs = Service.task(_slurp_changelogs)  # type: ignore[method-assign]
