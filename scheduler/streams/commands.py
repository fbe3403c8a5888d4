"""From ``schedule-commands`` to the ``schedules`` table.

Two hops, because a table may only be written from an agent handling a key
of the table's own partition, and applications may send commands with no
key or with a key we did not choose:

1. ``accept_commands`` validates each record and re-sends it, keyed by its
   schedule id, to ``schedule-commands-keyed``; bad records go to
   ``schedule-commands-rejected`` with the reason and the original text.
2. ``apply_commands`` (one per partition, never concurrent) applies it to
   the table.

The acceptance instant is the Kafka timestamp of the original record, so a
replay of the topic rebuilds the same schedules.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from scheduler import metrics, state
from scheduler.app import app, settings
from scheduler.errors import InvalidCommand
from scheduler.models import Command, parse_command
from scheduler.tables import schedules
from scheduler.timefmt import format_utc, parse_utc
from scheduler.topics import commands_topic, keyed_commands_topic, rejected_topic

log = logging.getLogger(__name__)


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
        "received_at": format_utc(datetime.now(UTC)),
    }
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


async def reject(exc: InvalidCommand, key: bytes | None, original: bytes | str | None) -> None:
    metrics.counter("scheduler_commands_rejected_total").inc()
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
            "command": command.to_json(),
            "accepted_at": format_utc(accepted_at, micros=True),
            "original": raw.decode("utf-8", errors="replace"),
        }
        await keyed_commands_topic.send(key=command.schedule_id.encode(), value=envelope)
        metrics.counter("scheduler_commands_accepted_total").inc()


@app.agent(keyed_commands_topic, name="apply-commands")
async def apply_commands(stream: Any) -> Any:
    async for event in stream.events():
        envelope = event.value
        key: bytes = event.key
        command = Command.model_validate(envelope["command"])
        accepted_at = parse_utc(envelope["accepted_at"])
        stored = schedules.get(key)
        current = state.ScheduleRecord.from_json(stored) if stored else None
        try:
            updated = state.apply(current, command, accepted_at)
        except InvalidCommand as exc:
            await reject(exc, key, envelope.get("original"))
            continue
        if updated is None:
            schedules.pop(key, None)
        else:
            schedules[key] = updated.to_json()
        metrics.counter("scheduler_commands_applied_total").inc()
        log.debug("applied %s to %s", command.action.value, command.schedule_id)
