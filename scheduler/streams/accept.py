"""Accepting commands: ``schedule-commands`` validated and routed to their partition.

The command path (``scheduler.streams.bulk``) reads the topic a fetch at a
time and calls :func:`accept` for each record; the Faust agent here stays
subscribed, so that Faust assigns the topic's partitions with the tables',
and would handle a record that reached it the same way.

A table may only be written from an agent handling a record of the table's
own partition, and applications may send commands with no key or with a key
we did not choose. So each record is validated (a bad one goes
to ``schedule-commands-rejected`` with the reason and the original text,
``scheduler.streams.rejects``) and then:

- a command keyed by its schedule id, on the partition the default (murmur2)
  partitioner gives that id, is applied right there
  (``scheduler.streams.apply.apply``), saving a produce and a consume;
- any other is re-sent, keyed by its schedule id, to its partition of
  ``schedule-commands-keyed``, where the apply agent applies it.

Either way the acceptance instant is the original record's Kafka timestamp.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from scheduler import metrics
from scheduler.admission import admit_raw
from scheduler.app import app, settings
from scheduler.domain import ids
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Command
from scheduler.domain.timefmt import format_utc
from scheduler.outbox import Outbox
from scheduler.streams.apply import apply
from scheduler.streams.batch import in_batches
from scheduler.streams.rejects import ACCEPTED, reject
from scheduler.topics import commands_topic, keyed_commands_topic, name_of

_rekeyed = metrics.counter(
    "scheduler_commands_rekeyed_total",
    "commands re-sent to schedule-commands-keyed (not keyed by schedule id, or another partition)",
)


@app.agent(commands_topic, name="accept-commands")
async def accept_commands(stream: Any) -> Any:
    await in_batches(stream, _accept)


async def _accept(event: Any, outbox: Outbox) -> None:
    raw: bytes = event.value if event.value is not None else b""
    try:
        command: Command | InvalidCommand = admit_raw(raw)
        ACCEPTED.inc()
    except InvalidCommand as exc:
        command = exc
    message = event.message
    await accept(event.key, raw, message.timestamp, message.partition, command, outbox)


async def accept(
    key: bytes | None,
    raw: bytes,
    timestamp: float,
    partition: int,
    command: Command | InvalidCommand,
    outbox: Outbox,
) -> None:
    """Apply or re-key one command read from ``partition``, or reject it.

    ``command`` is what ``admit_raw`` made of ``raw`` (the judgement ``POST
    /commands`` makes of each command too), or why it refused it;
    ``timestamp`` is the record's Kafka timestamp, in seconds. The caller
    counts a valid command as accepted (``ACCEPTED``): the command path
    counts a batch's at once.
    """
    if isinstance(command, InvalidCommand):
        await reject(command, key, raw)
        return
    accepted_at = datetime.fromtimestamp(timestamp, tz=UTC)
    sid = command.schedule_id.encode()
    owner = owner_partition(sid)
    if key == sid and partition == owner:
        try:
            await apply(sid, command, accepted_at, raw, partition, outbox)
        except Exception as exc:  # a fault of ours: said on the rejected topic, not lost unsaid
            why = f"cannot apply the command: {type(exc).__name__}: {str(exc)[:200]}"
            await reject(InvalidCommand("unreadable", why), key, raw)
        return
    envelope = {
        "kind": "command",
        "command": command.to_json(),
        "accepted_at": format_utc(accepted_at, micros=True),
        "original": raw.decode("utf-8", errors="replace"),
    }
    outbox.add(
        name_of(keyed_commands_topic), owner, sid, json.dumps(envelope, ensure_ascii=False).encode()
    )
    _rekeyed.inc()


def owner_partition(key: bytes) -> int:
    """The partition the default (murmur2, as Java's) partitioner gives ``key``."""
    hashed = ids.murmur2(key) & 0x7FFFFFFF
    return hashed % settings.partitions
