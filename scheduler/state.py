"""A stored schedule and how each command changes it.

``apply`` is pure: given the stored record (or none), a validated command
and the instant the command was accepted (its Kafka timestamp), it returns
the new record, or ``None`` when the schedule is gone. Replaying the same
commands therefore rebuilds the same table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from scheduler.errors import InvalidCommand
from scheduler.models import Action, Command
from scheduler.timefmt import format_utc, parse_utc
from scheduler.timezones import resolve_zone, to_local
from scheduler.triggers import next_fire

_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


class Status(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """What the ``schedules`` table holds per schedule id."""

    schedule_id: str
    command: Command
    status: Status
    accepted_at: datetime
    """Acceptance of the command that last set the schedule: the anchor of delays."""
    created_at: datetime
    updated_at: datetime
    next_fire_at: datetime | None
    fire_count: int = 0
    last_fired_at: datetime | None = None

    @property
    def paused(self) -> bool:
        return self.status is Status.PAUSED

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule_id": self.schedule_id,
            "command": self.command.to_json(),
            "status": self.status.value,
            "accepted_at": format_utc(self.accepted_at, micros=True),
            "created_at": format_utc(self.created_at, micros=True),
            "updated_at": format_utc(self.updated_at, micros=True),
            "next_fire_at": _opt_format(self.next_fire_at),
            "fire_count": self.fire_count,
            "last_fired_at": _opt_format(self.last_fired_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleRecord:
        return cls(
            schedule_id=data["schedule_id"],
            command=Command.model_validate(data["command"]),
            status=Status(data["status"]),
            accepted_at=parse_utc(data["accepted_at"]),
            created_at=parse_utc(data["created_at"]),
            updated_at=parse_utc(data["updated_at"]),
            next_fire_at=_opt_parse(data.get("next_fire_at")),
            fire_count=int(data.get("fire_count", 0)),
            last_fired_at=_opt_parse(data.get("last_fired_at")),
        )


def first_fire(command: Command, accepted_at: datetime) -> datetime | None:
    """The first instant of a freshly accepted schedule.

    A one-shot keeps its instant even when it is already past at acceptance
    (a ``date`` a minute ago): whether a late instant still fires is the
    timer's misfire policy, not a silent drop here.
    """
    spec = command.trigger(accepted_at)
    assert command.type is not None
    after = _BEGINNING if command.type.one_shot else accepted_at
    return next_fire(spec, after)


def apply(
    current: ScheduleRecord | None, command: Command, accepted_at: datetime
) -> ScheduleRecord | None:
    """The record after ``command``; raises ``InvalidCommand`` if it cannot apply."""
    sid = command.schedule_id
    if command.action is Action.UPSERT:
        upcoming = first_fire(command, accepted_at)
        paused = current is not None and current.paused
        if paused:
            status = Status.PAUSED
        else:
            status = Status.ACTIVE if upcoming is not None else Status.COMPLETED
        return ScheduleRecord(
            schedule_id=sid,
            command=command,
            status=status,
            accepted_at=accepted_at,
            created_at=current.created_at if current else accepted_at,
            updated_at=accepted_at,
            next_fire_at=upcoming,
            fire_count=current.fire_count if current else 0,
            last_fired_at=current.last_fired_at if current else None,
        )
    if current is None:
        raise InvalidCommand(
            "unknown_schedule",
            f"client: no schedule {sid} to {command.action.value}",
            field="client",
            value=command.client.model_dump(),
        )
    if command.action is Action.DELETE:
        return None
    if command.action is Action.PAUSE:
        if current.status is not Status.ACTIVE:
            return current
        return _replace(current, status=Status.PAUSED, updated_at=accepted_at)
    if command.action is Action.RESUME:
        if current.status is not Status.PAUSED:
            return current
        # Continue from the next instant after the resume: no burst of missed ones.
        upcoming = next_fire(current.command.trigger(current.accepted_at), accepted_at)
        if current.command.type is not None and current.command.type.one_shot:
            upcoming = current.next_fire_at
        status = Status.ACTIVE if upcoming is not None else Status.COMPLETED
        return _replace(current, status=status, updated_at=accepted_at, next_fire_at=upcoming)
    # TRIGGER leaves the stored schedule as it is; the timer fires it.
    return current


def _replace(record: ScheduleRecord, **changes: Any) -> ScheduleRecord:
    values = {name: getattr(record, name) for name in record.__dataclass_fields__}
    values.update(changes)
    return ScheduleRecord(**values)


def _opt_format(value: datetime | None, *, micros: bool = True) -> str | None:
    return None if value is None else format_utc(value, micros=micros)


def _opt_parse(value: str | None) -> datetime | None:
    return None if value is None else parse_utc(value)


def describe(record: ScheduleRecord) -> dict[str, Any]:
    """The lookup view of a schedule: its spec, its state, its next instant.

    The next instant is shown in UTC and in the schedule's own zone, because
    the one an operator checks against ``09:00 Asia/Seoul`` is the local one.
    """
    cmd = record.command
    next_local = None
    if record.next_fire_at is not None:
        next_local = to_local(record.next_fire_at, resolve_zone(cmd.timezone)).isoformat()
    return {
        "schedule_id": record.schedule_id,
        "name": cmd.name,
        "client": cmd.client.model_dump(mode="json"),
        "type": cmd.type.value if cmd.type else None,
        "schedule": cmd.schedule,
        "timezone": cmd.timezone,
        "task": cmd.task.model_dump(mode="json") if cmd.task else None,
        "status": record.status.value,
        "paused": record.paused,
        "next_fire_at": _opt_format(record.next_fire_at, micros=False),
        "next_fire_at_local": next_local,
        "fire_count": record.fire_count,
        "last_fired_at": _opt_format(record.last_fired_at, micros=False),
        "accepted_at": format_utc(record.accepted_at),
        "created_at": format_utc(record.created_at),
        "updated_at": format_utc(record.updated_at),
    }


def matches(record: ScheduleRecord, filters: dict[str, str]) -> bool:
    """Whether a record passes ``GET /schedules`` filters (client fields, status)."""
    client = record.command.client
    for name, wanted in filters.items():
        if name == "status":
            if record.status.value != wanted:
                return False
        elif name == "name":
            if record.command.name != wanted:
                return False
        elif getattr(client, name) != wanted:
            return False
    return True


FILTERS = ("operation", "application", "group", "key", "type", "status", "name")
