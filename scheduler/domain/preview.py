"""What a schedule will fire: ``scheduler preview``, ``POST /preview`` and
``GET /schedules/{id}/preview``.

A preview is the firing path's own arithmetic, not a second version of it:
a command is applied as the topic agent would (``state.apply``, so ``start``,
``end`` and ``max_fires`` count), and the instants are then stepped with the
same ``next_instant`` a timer wake-up uses. A stored schedule is previewed
from its record: its next instant, the fires it has left, and nothing while
it is paused. Each instant is shown in UTC, in the schedule's zone, and, with
jitter, with the moment it is delivered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.domain import state
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Action, Command
from scheduler.domain.timefmt import format_utc
from scheduler.domain.timezones import resolve_zone, to_local

__all__ = ["MAX_COUNT", "Instant", "check_count", "preview", "shown", "upcoming"]

#: The most instants one preview lists: a preview is computed in the request.
MAX_COUNT = 1000


@dataclass(frozen=True)
class Instant:
    at: datetime
    """The nominal instant (UTC): ``X-Scheduled-For`` and the firing id's."""
    local: datetime
    """The same instant in the schedule's zone."""
    delivered: datetime
    """When it is delivered: ``at``, or later by its jitter offset."""


def check_count(count: int) -> int:
    if not 0 <= count <= MAX_COUNT:
        raise InvalidCommand(
            "bad_request",
            f"count: must be from 0 to {MAX_COUNT}, got {count}",
            field="count",
            value=count,
        )
    return count


def preview(command: Command, after: datetime, count: int) -> list[Instant]:
    """The first ``count`` instants of ``command`` as if it were accepted at ``after``.

    Relative types (delay, delay-recur, now) count from ``after``; a ``now``
    command fires at its acceptance, ``after`` itself.
    """
    if command.action is not Action.UPSERT:
        raise InvalidCommand(
            "bad_request",
            f"action: a preview is of a schedule (an upsert), not of a {command.action.value}; "
            "preview a stored schedule by its id",
            field="action",
            value=command.action.value,
        )
    record = state.apply(None, command, after)
    return [] if record is None else upcoming(record, count)


def upcoming(record: state.ScheduleRecord, count: int) -> list[Instant]:
    """The next ``count`` instants a stored schedule will fire, in order.

    None while it is paused or completed; at most the fires ``max_fires``
    leaves it.
    """
    check_count(count)
    if record.status is not state.Status.ACTIVE:
        return []
    command = record.command
    assert command.type is not None
    zone = resolve_zone(command.timezone)
    left = count
    if command.max_fires is not None:
        left = min(left, max(command.max_fires - record.fire_count, 0))
    found: list[Instant] = []
    instant = record.next_fire_at
    while instant is not None and len(found) < left:
        found.append(Instant(instant, to_local(instant, zone), record.delivered_at(instant)))
        if command.type.one_shot:
            break
        instant = state.next_instant(command, record.accepted_at, instant)
    return found


def shown(record_or_command: Any, instants: list[Instant]) -> dict[str, Any]:
    """A preview as the web view and ``--json`` give it."""
    command = getattr(record_or_command, "command", record_or_command)
    status = getattr(record_or_command, "status", None)
    jittered = bool(command.jitter)
    return {
        "schedule_id": command.schedule_id,
        "timezone": command.timezone,
        **({"status": status.value} if status is not None else {}),
        "fire_times": [format_utc(i.at) for i in instants],
        "instants": [
            {
                "utc": format_utc(i.at),
                "local": i.local.isoformat(),
                **({"delivered_at": format_utc(i.delivered, micros=True)} if jittered else {}),
            }
            for i in instants
        ],
    }
