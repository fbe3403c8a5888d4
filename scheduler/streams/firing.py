"""Firing: a due instant becomes records on ``firings``.

A partition's timer sends the instants that are due (``scheduler.streams.timers``)
as wake-up records to its own partition of ``schedule-commands-keyed``; the
apply agent hands each to :func:`wake_all`. For each entry :func:`wake` loads
the schedule, asks the domain what to fire (``scheduler.domain.state.wake``),
stores the record's next instant and calls :func:`fire`, which writes one
firing per instant with :func:`emit`. A one-shot the compiled lane can fire
(:func:`fired_by_lane`) skips those steps: the same bytes, written by
``native/``. A command whose first instant is already due is woken the same
way by the agent that applies it (``scheduler.streams.apply``).

A delete, pause or change that comes after firings were written ahead of
their instant takes them back with :func:`revoke`: a record on the same
``firings`` partition, after them, that the executor reads before their
instant and drops them unsent (``scheduler.streams.delivery``).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from scheduler import clock, metrics, tables
from scheduler.app import settings
from scheduler.domain import ids, state
from scheduler.domain.models import Action
from scheduler.domain.timefmt import format_utc
from scheduler.outbox import Outbox
from scheduler.streams import census, fastlane, history, records
from scheduler.streams.batch import YIELD_EVERY, Batch, firings_topic_name
from scheduler.streams.timers import index_key
from scheduler.tables import due_index, schedules

log = logging.getLogger(__name__)

FIRED = metrics.counter("scheduler_firings_total", "firings emitted")
_missed = metrics.counter("scheduler_missed_instants_total", "due instants not fired (misfire)")
_revoked = metrics.counter(
    "scheduler_firings_revoked_total",
    "firings written ahead and taken back by a delete, pause or change before their instant",
)
_stale = metrics.counter("scheduler_wakeups_stale_total", "wake-ups for outdated instants")

#: How far past a woken instant its schedule's next instants fire with it.
AHEAD = timedelta(seconds=settings.fire_ahead)


async def wake_all(due: list[list[Any]], partition: int, batch: Batch) -> None:
    """The entries of one wake-up record, all owned by ``partition``."""
    by_lane = 0
    try:
        for index, (due_us, schedule_id) in enumerate(due, start=1):
            try:
                key = schedule_id.encode()
                ahead = tables.read_ahead(schedules, partition)
                if key not in ahead and not records.is_cached(key):
                    # What the batch read ahead is dropped whenever a batch is written
                    # (``tables.flush``), and a wake-up record holds up to 2,000 entries.
                    _read_ahead(due[index - 1 : index - 1 + READ_AHEAD], partition)
                if fired_by_lane(key, int(due_us), partition, batch):
                    by_lane += 1
                else:
                    await wake(key, int(due_us), partition, batch)
            except Exception:
                # One schedule that cannot be woken must not hold up the others.
                log.exception("wake-up of %s at %s failed", schedule_id, due_us)
            if index % YIELD_EVERY == 0:
                await batch.pause()
    finally:
        # Counted once a record: an increment costs as much as some of a firing's steps.
        FIRED.inc(by_lane)
        fastlane.FIRED.inc(by_lane)


async def wake(key: bytes, due_us: int, partition: int, outbox: Outbox) -> None:
    """Fire what one due-index entry calls for, and move the schedule on."""
    current = records.load(key, partition)
    stale_entry = index_key(due_us, key.decode())
    if current is None:
        records.drop_index_entry(partition, stale_entry, outbox)  # a lost tombstone's, if any
        _stale.inc()
        return
    due = clock.from_us(due_us)
    outcome = state.wake(current, due, clock.now(), ahead=AHEAD)
    if outcome.changed:
        records.store(key, partition, current, outcome.record, outbox, keep=True)
    else:
        # A replay after a crash, or a wake-up the schedule no longer waits for:
        # its entry is stale (drop it), the record's own entry must exist (put it).
        if current.timed != due:
            records.drop_index_entry(partition, stale_entry, outbox)
        records.index(key, partition, current, outbox)
        if not outcome.fire:
            _stale.inc()
    await fire(current, outcome, partition, outbox)


#: Entries of a wake-up record whose records are read in one multi-get.
READ_AHEAD = 256


def _read_ahead(entries: list[list[Any]], partition: int) -> None:
    keys = [sid.encode() for _, sid in entries]
    tables.prefetch(schedules, partition, [key for key in keys if not records.is_cached(key)])


def fired_by_lane(key: bytes, due_us: int, partition: int, outbox: Outbox) -> bool:
    """Wake a one-shot the compiled lane can fire, as :func:`wake` would (but
    for the counters, which the caller moves); False if it cannot
    (``scheduler.streams.fastlane.fire`` says which).

    Most of a burst's schedules are such one-shots, stored by the lane, and
    :func:`wake` costs several times what storing one did: decoding the
    record and its command with pydantic, the domain's steps and encoding the
    record and firing again (the figures are in the commit that made this so,
    b5c7f1c). The lane writes the same bytes from the stored ones.
    """
    if records.is_cached(key):  # cached records are recurring ones: none of the lane's
        return False
    stored = tables.read(schedules, partition, key)
    if stored is None:
        return False
    fired = fastlane.fire(stored, due_us, clock.now_us())
    if fired is None:
        return False
    record, body = fired
    census.changed(partition, state.Status.ACTIVE, state.Status.COMPLETED)
    tables.write(schedules, partition, key, record, outbox)
    tables.erase(due_index, partition, index_key(due_us, key.decode()), outbox)
    outbox.add(firings_topic_name(), partition, key, body)
    return True


async def fire(
    before: state.ScheduleRecord, outcome: state.Wake, partition: int, outbox: Outbox
) -> None:
    """The firings of a wake-up, and the instants it counted as missed."""
    missed = outcome.record.missed_count - before.missed_count
    if missed:
        _missed.inc(missed)
        if keeps_history(before):
            last = outcome.record.last_missed_at
            await history.record(
                before.schedule_id,
                "missed",
                count=missed,
                last_missed_at=format_utc(last) if last else None,
            )
    for instant in outcome.fire:
        firing_id = ids.firing_id(before.schedule_id, instant)
        await emit(outcome.record, instant, firing_id, partition, outbox)


def revoke(
    schedule_id: str,
    instants: tuple[datetime, ...],
    action: Action,
    partition: int,
    outbox: Outbox,
) -> None:
    """Take back firings written ahead of their instant: executors drop them unsent.

    The record goes to the same ``firings`` partition as the firings, after
    them, so whichever worker holds them reads it before their instant.
    """
    body = {
        "revoked": [ids.firing_id(schedule_id, t) for t in instants],
        "schedule_id": schedule_id,
        "scheduled_for": [format_utc(t, micros=True) for t in instants],
        "by": action.value,
        "revoked_at": format_utc(clock.now(), micros=True),
    }
    outbox.add(firings_topic_name(), partition, schedule_id.encode(), json.dumps(body).encode())
    _revoked.inc(len(instants))
    log.debug("revoked %d firings of %s (%s)", len(instants), schedule_id, action.value)


async def emit(
    record: state.ScheduleRecord,
    scheduled_for: datetime,
    firing_id: str,
    partition: int,
    outbox: Outbox,
) -> None:
    """One firing to ``firings``, keyed by schedule id, on the schedule's own partition."""
    body = state.firing_bytes(record, scheduled_for, firing_id, clock.now())
    outbox.add(firings_topic_name(), partition, record.schedule_id.encode(), body)
    FIRED.inc()
    if keeps_history(record):
        await history.record(
            record.schedule_id,
            "fired",
            firing_id=firing_id,
            scheduled_for=format_utc(scheduled_for, micros=True),
        )
    log.debug("fired %s for %s", firing_id, scheduled_for)


def keeps_history(record: state.ScheduleRecord) -> bool:
    task = record.command.task
    return task is not None and task.history_check
