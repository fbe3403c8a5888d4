"""Applying commands: ``schedule-commands-keyed`` to the ``schedules`` table.

The apply agent reads the partition of ``schedule-commands-keyed`` that
owns its schedules, so it may write their tables. Its records are of two
kinds: a command re-keyed by the accept agent (``scheduler.streams.accept``),
which :func:`apply` stores, and a batch of due instants from the
partition's timer, which ``scheduler.streams.firing.wake_all`` fires.

A command whose first instant is already within its partition timer's lead
(or its window, while that holds a crowd: ``PartitionTimer.takes``) is woken
by :func:`apply` itself, in the command's batch, rather than indexed for the
timer to send back a moment later; that batch then writes its firings before
its tables (``Batch.send``).

The acceptance instant is the Kafka timestamp of the original record, so a
replay of the topic rebuilds the same schedules.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from scheduler import clock, metrics
from scheduler.app import app
from scheduler.domain import ids, state
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Action, Command
from scheduler.domain.timefmt import format_utc, parse_utc
from scheduler.outbox import Outbox
from scheduler.streams import firing, history, records
from scheduler.streams.batch import Batch, in_batches
from scheduler.streams.rejects import reject
from scheduler.streams.timers import registry
from scheduler.topics import keyed_commands_topic

log = logging.getLogger(__name__)

APPLIED = metrics.counter("scheduler_commands_applied_total", "commands applied to the table")


@app.agent(keyed_commands_topic, name="apply-commands")
async def apply_commands(stream: Any) -> Any:
    await in_batches(stream, _apply_or_wake)


async def _apply_or_wake(event: Any, batch: Batch) -> None:
    envelope = event.value
    partition = event.message.partition
    if envelope.get("kind") == "wakes":
        await firing.wake_all(envelope["due"], partition, batch)
        return
    await apply(
        event.key,
        Command.model_validate(envelope["command"]),
        parse_utc(envelope["accepted_at"]),
        envelope.get("original"),
        partition,
        batch,
    )


async def apply(
    key: bytes,
    command: Command,
    accepted_at: datetime,
    original: bytes | str | None,
    partition: int,
    outbox: Outbox,
) -> None:
    """Apply one valid command to its schedule, on the partition that owns it."""
    current = records.load(key, partition)
    base: state.ScheduleRecord | None = current
    revoked: tuple[datetime, ...] = ()
    if current is not None and state.revokes(current, command):
        base, revoked = state.revoke(current, accepted_at)
    try:
        updated = state.apply(base, command, accepted_at)
    except InvalidCommand as exc:
        await reject(exc, key, original)
        return
    woken = None
    if updated is not None and updated.timed is not None:
        due = updated.timed
        if registry.takes(partition, clock.to_us(due)):
            woken = state.wake(updated, due, clock.now(), ahead=firing.AHEAD)
    after = woken.record if woken else updated
    records.store(key, partition, current, after, outbox, keep=woken is not None)
    if revoked:
        assert current is not None
        firing.revoke(current.schedule_id, revoked, command.action, partition, outbox)
        if firing.keeps_history(current):
            await history.record(
                current.schedule_id,
                "revoked",
                by=command.action.value,
                scheduled_for=[format_utc(t, micros=True) for t in revoked],
            )
    APPLIED.inc()
    shown = updated or current
    if shown is not None and firing.keeps_history(shown):  # most keep none: no coroutine then
        await _command_history(command, shown, current, updated)
    if woken is not None:
        assert updated is not None
        outbox.firings_first = True
        await firing.fire(updated, woken, partition, outbox)
    if command.action is Action.TRIGGER and updated is not None:
        # Its own id: a trigger is not one of the schedule's nominal instants.
        firing_id = ids.trigger_firing_id(updated.schedule_id, accepted_at)
        await firing.emit(updated, accepted_at, firing_id, partition, outbox)
    log.debug("applied %s to %s", command.action, command.schedule_id)


_EVENT_OF_ACTION = {
    Action.DELETE: "deleted",
    Action.PAUSE: "paused",
    Action.RESUME: "resumed",
    Action.TRIGGER: "triggered",
}


async def _command_history(
    command: Command,
    shown: state.ScheduleRecord,
    before: state.ScheduleRecord | None,
    after: state.ScheduleRecord | None,
) -> None:
    """The history event of the command for ``shown`` (``after``, else ``before``)."""
    if command.action is Action.UPSERT:
        event = "registered" if before is None else "updated"
    else:
        event = _EVENT_OF_ACTION[command.action]
    await history.record(
        shown.schedule_id,
        event,
        status=after.status.value if after else None,
        next_fire_at=format_utc(after.next_fire_at) if after and after.next_fire_at else None,
    )
