"""From ``schedule-commands`` to the ``schedules`` table, and from due instants to ``firings``.

Two hops, because a table may only be written from an agent handling a key
of the table's own partition, and applications may send commands with no
key or with a key we did not choose:

1. ``accept_commands`` validates each record and re-sends it, keyed by its
   schedule id, to ``schedule-commands-keyed``; bad records go to
   ``schedule-commands-rejected`` with the reason and the original text.
2. ``apply_commands`` (one per partition, never concurrent) applies it to
   the table. The partition timers send their wake-ups to the same topic, so
   this one agent is the only writer of a schedule: it fires due instants,
   advances the schedule and moves its entry in the due-index.

The acceptance instant is the Kafka timestamp of the original record, so a
replay of the topic rebuilds the same schedules.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from scheduler import clock, ids, metrics, state
from scheduler.app import app, settings
from scheduler.errors import InvalidCommand
from scheduler.models import Action, Command, parse_command
from scheduler.streams import history
from scheduler.streams.timers import index_key, registry
from scheduler.tables import schedules, timers
from scheduler.timefmt import format_utc, parse_utc
from scheduler.topics import commands_topic, firings_topic, keyed_commands_topic, rejected_topic

log = logging.getLogger(__name__)

_accepted = metrics.counter("scheduler_commands_accepted_total", "valid commands accepted")
_rejected = metrics.counter("scheduler_commands_rejected_total", "commands rejected")
_applied = metrics.counter("scheduler_commands_applied_total", "commands applied to the table")
_fired = metrics.counter("scheduler_firings_total", "firings emitted")
_missed = metrics.counter("scheduler_missed_instants_total", "due instants not fired (misfire)")
_stale = metrics.counter("scheduler_wakeups_stale_total", "wake-ups for outdated instants")


def rejection(exc: InvalidCommand, original: bytes | str | None) -> bytes:
    if isinstance(original, bytes):
        text = original.decode("utf-8", errors="replace")
    else:
        text = original or ""
    body = {
        "error": exc.error,
        "detail": exc.detail,
        "field": exc.field,
        "command": text,
        "received_at": format_utc(clock.now()),
    }
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


async def reject(exc: InvalidCommand, key: bytes | None, original: bytes | str | None) -> None:
    _rejected.inc()
    log.info("rejected command: %s", exc.detail)
    await rejected_topic.send(key=key, value=rejection(exc, original))


@app.agent(commands_topic, name="accept-commands")
async def accept_commands(stream: Any) -> Any:
    async for event in stream.events():
        raw: bytes = event.value if event.value is not None else b""
        try:
            command = parse_command(raw, max_bytes=settings.max_command_bytes)
        except InvalidCommand as exc:
            await reject(exc, event.key, raw)
            continue
        accepted_at = datetime.fromtimestamp(event.message.timestamp, tz=UTC)
        envelope = {
            "kind": "command",
            "command": command.to_json(),
            "accepted_at": format_utc(accepted_at, micros=True),
            "original": raw.decode("utf-8", errors="replace"),
        }
        await keyed_commands_topic.send(key=command.schedule_id.encode(), value=envelope)
        _accepted.inc()


@app.agent(keyed_commands_topic, name="apply-commands")
async def apply_commands(stream: Any) -> Any:
    async for event in stream.events():
        envelope = event.value
        if envelope.get("kind") == "wake":
            await _wake(event.key, int(envelope["due_us"]), event.message.partition)
        else:
            await _apply(event.key, envelope, event.message.partition)


def _load(key: bytes) -> state.ScheduleRecord | None:
    stored = schedules.get(key)
    return state.ScheduleRecord.from_json(stored) if stored else None


def _store(
    key: bytes,
    partition: int,
    before: state.ScheduleRecord | None,
    after: state.ScheduleRecord | None,
) -> None:
    """Write the record and move its due-index entry if its instant changed."""
    if after is None:
        schedules.pop(key, None)
    else:
        schedules[key] = after.to_json()
    old = before.timed if before else None
    new = after.timed if after else None
    if old is not None and old != new:
        timers.pop(index_key(clock.to_us(old), key.decode()), None)
    if after is not None:
        _index(key, partition, after)


def _index(key: bytes, partition: int, record: state.ScheduleRecord) -> None:
    """Put the record's due-index entry, even if it should already be there.

    The two tables' changelogs are flushed separately, so a kill -9 can keep
    one write and lose the other; the event is then processed again, and this
    rewrite is what repairs a lost index entry (without it, the schedule would
    wait forever for an instant no timer knows about).
    """
    due = record.timed
    if due is None:
        return
    due_us = clock.to_us(due)
    sid = key.decode()
    timers[index_key(due_us, sid)] = b"1"
    registry.offer(partition, due_us, sid)


async def _apply(key: bytes, envelope: dict[str, Any], partition: int) -> None:
    command = Command.model_validate(envelope["command"])
    accepted_at = parse_utc(envelope["accepted_at"])
    current = _load(key)
    try:
        updated = state.apply(current, command, accepted_at)
    except InvalidCommand as exc:
        await reject(exc, key, envelope.get("original"))
        return
    _store(key, partition, current, updated)
    _applied.inc()
    await _command_history(command, current, updated)
    if command.action is Action.TRIGGER and updated is not None:
        # Its own id: a trigger is not one of the schedule's nominal instants.
        await _emit(updated, accepted_at, ids.trigger_firing_id(updated.schedule_id, accepted_at))
    log.debug("applied %s to %s", command.action.value, command.schedule_id)


_EVENT_OF_ACTION = {
    Action.DELETE: "deleted",
    Action.PAUSE: "paused",
    Action.RESUME: "resumed",
    Action.TRIGGER: "triggered",
}


async def _command_history(
    command: Command, before: state.ScheduleRecord | None, after: state.ScheduleRecord | None
) -> None:
    shown = after or before
    if shown is None or not _keeps_history(shown):
        return
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


def _keeps_history(record: state.ScheduleRecord) -> bool:
    task = record.command.task
    return task is not None and task.history_check


async def _wake(key: bytes, due_us: int, partition: int) -> None:
    current = _load(key)
    stale_entry = index_key(due_us, key.decode())
    if current is None:
        timers.pop(stale_entry, None)  # left behind by a lost tombstone, if at all
        _stale.inc()
        return
    due = clock.from_us(due_us)
    outcome = state.wake(current, due, clock.now())
    if outcome.changed:
        _store(key, partition, current, outcome.record)
        missed = outcome.record.missed_count - current.missed_count
        _missed.inc(missed)
        if missed and _keeps_history(current):
            await history.record(
                current.schedule_id,
                "missed",
                count=missed,
                last_missed_at=format_utc(outcome.record.last_missed_at)
                if outcome.record.last_missed_at
                else None,
            )
    else:
        # A replay after a crash, or a wake-up the schedule no longer waits for:
        # its entry is stale (drop it), the record's own entry must exist (put it).
        if current.timed != due:
            timers.pop(stale_entry, None)
        _index(key, partition, current)
        if not outcome.fire:
            _stale.inc()
    for instant in outcome.fire:
        await _emit(outcome.record, instant, ids.firing_id(current.schedule_id, instant))


async def _emit(record: state.ScheduleRecord, scheduled_for: datetime, firing_id: str) -> None:
    firing = state.firing(record, scheduled_for, firing_id, clock.now())
    await firings_topic.send(
        key=record.schedule_id.encode(), value=json.dumps(firing, ensure_ascii=False).encode()
    )
    _fired.inc()
    if _keeps_history(record):
        await history.record(
            record.schedule_id,
            "fired",
            firing_id=firing_id,
            scheduled_for=firing["scheduled_for"],
        )
    log.debug("fired %s for %s", firing_id, scheduled_for)
