"""A stored schedule and how each command changes it.

``apply`` is pure: given the stored record (or none), a validated command
and the instant the command was accepted (its Kafka timestamp), it returns
the new record, or ``None`` when the schedule is gone. Replaying the same
commands therefore rebuilds the same table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from scheduler.domain import misfire, secrets
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.jitter import delivery_time
from scheduler.domain.models import Action, Command, same_command
from scheduler.domain.timefmt import format_utc, parse_utc
from scheduler.domain.timezones import resolve_zone, to_local

_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
_COMMAND_MEMBER = b',"command":'
#: ``_state_text``'s tail for a record that never fired nor missed an instant.
_UNTOUCHED = (
    '"fire_count":0,"last_fired_at":null,"missed_count":0,"last_missed_at":null,'
    '"last_wake":null,"last_batch":[],"ahead":[],"before_ahead":null'
)
#: The most instants one wake-up fires ahead: the fire-ahead window of a
#: short interval would otherwise hold many at once.
MAX_PER_WAKE = 10

_TICK = timedelta(microseconds=1)


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
    missed_count: int = 0
    last_missed_at: datetime | None = None
    last_wake: datetime | None = None
    """The due instant whose wake-up produced ``last_batch``."""
    last_batch: tuple[datetime, ...] = ()
    """What that wake-up fired: re-sent if the same wake-up is replayed after a crash."""
    ahead: tuple[datetime, ...] = ()
    """Instants fired ahead of time whose firings may still be held by an executor
    (they were later than the wake-up that fired them): a command that revokes
    them takes them back out of ``fire_count`` (see :func:`revoke`)."""
    before_ahead: datetime | None = None
    """``last_fired_at`` as it was before the instants in ``ahead`` were fired."""

    @property
    def paused(self) -> bool:
        return self.status is Status.PAUSED

    @property
    def timed(self) -> datetime | None:
        """When the timer must wake this schedule, if ever: its next instant's delivery."""
        if self.status is not Status.ACTIVE or self.next_fire_at is None:
            return None
        return self.delivered_at(self.next_fire_at)

    def delivered_at(self, instant: datetime) -> datetime:
        """When ``instant`` is delivered: at it, or after it by its jitter offset."""
        jitter = self.command.jitter
        return delivery_time(self.schedule_id, instant, jitter) if jitter else instant

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command.to_json(), **self._state_json()}

    def _state_json(self) -> dict[str, Any]:
        return {
            "schedule_id": self.schedule_id,
            "status": self.status.value,
            "accepted_at": format_utc(self.accepted_at, micros=True),
            "created_at": format_utc(self.created_at, micros=True),
            "updated_at": format_utc(self.updated_at, micros=True),
            "next_fire_at": _opt_format(self.next_fire_at),
            "fire_count": self.fire_count,
            "last_fired_at": _opt_format(self.last_fired_at),
            "missed_count": self.missed_count,
            "last_missed_at": _opt_format(self.last_missed_at),
            "last_wake": _opt_format(self.last_wake),
            "last_batch": [format_utc(t, micros=True) for t in self.last_batch],
            "ahead": [format_utc(t, micros=True) for t in self.ahead],
            "before_ahead": _opt_format(self.before_ahead),
        }

    def to_bytes(self) -> bytes:
        """The record as JSON: the state first, then the command as ``stored_json`` holds it.

        The command is most of a record and rarely changes between two writes
        of it, so it is not encoded again each time the state moves; and with
        it last, :meth:`from_bytes` can hand its bytes to pydantic as they are.
        A command read from a record of the topic keeps the text it was sent
        as (``Command.stored_json``): the same command when read back, but
        not always the text of ``to_json()``'s ``"command"`` (which has every
        default, and pydantic's forms of the values).
        """
        return self._state_text().encode() + _COMMAND_MEMBER + self.command.stored_json + b"}"

    def _state_text(self) -> str:
        """``_state_json()`` as compact JSON, without its closing brace.

        Written out here rather than by ``json``: every member is an id of
        ours, an enum value, an instant or a count, none of which JSON
        escapes, and a record is encoded at every change of it: this is
        markedly cheaper than ``json`` (measured in bench/ ``pieces``).
        A test holds it equal to ``compact_json(_state_json())``.
        """
        accepted = format_utc(self.accepted_at, micros=True)
        # An upsert sets updated_at (and a new record created_at too) to the very
        # object it accepts at (``apply``): that text is formatted once.
        if self.created_at is self.accepted_at:
            created = accepted
        else:
            created = format_utc(self.created_at, micros=True)
        if self.updated_at is self.accepted_at:
            updated = accepted
        else:
            updated = format_utc(self.updated_at, micros=True)
        head = (
            f'{{"schedule_id":"{self.schedule_id}","status":"{self.status!s}",'
            f'"accepted_at":"{accepted}","created_at":"{created}","updated_at":"{updated}",'
            f'"next_fire_at":{_json_instant(self.next_fire_at)},'
        )
        if (
            self.fire_count == 0
            and self.missed_count == 0
            and self.last_wake is None
            and self.last_fired_at is None
            and self.last_missed_at is None
            and self.before_ahead is None
            and not self.last_batch
            and not self.ahead
        ):
            # Never fired nor missed: every new schedule, written once as it is
            # accepted. Its tail is always the same text.
            return head + _UNTOUCHED
        return head + (
            f'"fire_count":{self.fire_count},'
            f'"last_fired_at":{_json_instant(self.last_fired_at)},'
            f'"missed_count":{self.missed_count},'
            f'"last_missed_at":{_json_instant(self.last_missed_at)},'
            f'"last_wake":{_json_instant(self.last_wake)},'
            f'"last_batch":[{_json_instants(self.last_batch)}],'
            f'"ahead":[{_json_instants(self.ahead)}],'
            f'"before_ahead":{_json_instant(self.before_ahead)}'
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> ScheduleRecord:
        # The state's members are ids, enums, instants and counts: the first
        # ',"command":' in the record is where the command starts (to_bytes
        # writes the command last).
        cut = raw.find(_COMMAND_MEMBER)
        if cut < 0:
            raise ValueError("a schedule record without its command")
        command = Command.from_json_bytes(raw[cut + len(_COMMAND_MEMBER) : -1])
        return cls._with_state(json.loads(raw[:cut] + b"}"), command)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleRecord:
        return cls._with_state(data, Command.model_validate(data["command"]))

    @classmethod
    def _with_state(cls, data: dict[str, Any], command: Command) -> ScheduleRecord:
        return cls(
            schedule_id=data["schedule_id"],
            command=command,
            status=Status(data["status"]),
            accepted_at=parse_utc(data["accepted_at"]),
            created_at=parse_utc(data["created_at"]),
            updated_at=parse_utc(data["updated_at"]),
            next_fire_at=_opt_parse(data.get("next_fire_at")),
            fire_count=int(data.get("fire_count", 0)),
            last_fired_at=_opt_parse(data.get("last_fired_at")),
            missed_count=int(data.get("missed_count", 0)),
            last_missed_at=_opt_parse(data.get("last_missed_at")),
            last_wake=_opt_parse(data.get("last_wake")),
            last_batch=tuple(parse_utc(t) for t in data.get("last_batch", ())),
            ahead=tuple(parse_utc(t) for t in data.get("ahead", ())),
            before_ahead=_opt_parse(data.get("before_ahead")),
        )


def next_instant(command: Command, accepted_at: datetime, after: datetime) -> datetime | None:
    """The schedule's first instant after ``after``, within its start/end bounds."""
    start = command.start_at()
    if start is not None and after < start:
        after = start - _TICK
    instant = command.fire_after(accepted_at, after)
    end = command.end_at()
    if instant is not None and end is not None and instant > end:
        return None
    return instant


def first_fire(command: Command, accepted_at: datetime) -> datetime | None:
    """The first instant of a freshly accepted schedule.

    A one-shot keeps its instant even when it is already past at acceptance
    (a ``date`` a minute ago): whether a late instant still fires is the
    misfire policy's call when the timer wakes, not a silent drop here.
    """
    assert command.type is not None
    after = _BEGINNING if command.type.one_shot else accepted_at
    return next_instant(command, accepted_at, after)


def apply(
    current: ScheduleRecord | None, command: Command, accepted_at: datetime
) -> ScheduleRecord | None:
    """The record after ``command``; raises ``InvalidCommand`` if it cannot apply.

    An upsert of a paused schedule keeps it paused (the pause was an explicit
    decision); the fire count carries over, so ``max_fires`` is a budget of
    the schedule, not of one version of it.
    """
    sid = command.schedule_id
    if command.action is Action.UPSERT:
        upcoming = first_fire(command, accepted_at)
        if (
            current is not None
            and current.timed is not None
            and current.next_fire_at is not None
            and current.next_fire_at <= accepted_at < current.timed
            and same_command(command, current.command)
        ):
            # The same schedule again while an instant waits for its jittered
            # delivery: that instant is still to be delivered, not skipped.
            upcoming = current.next_fire_at
        done = _last_handled(current)
        if upcoming is not None and done is not None and upcoming <= done:
            # Never go back to an instant already handled (an upsert accepted just
            # before a wake-up it raced with, or a replayed command): move past it.
            assert command.type is not None
            upcoming = None if command.type.one_shot else next_instant(command, accepted_at, done)
        fired = current.fire_count if current else 0
        if current is not None and current.paused:
            status = Status.PAUSED
        elif upcoming is None or (command.max_fires is not None and fired >= command.max_fires):
            status, upcoming = Status.COMPLETED, None
        else:
            status = Status.ACTIVE
        if current is None:
            return ScheduleRecord(
                sid, command, status, accepted_at, accepted_at, accepted_at, upcoming
            )
        return replace(
            current,
            command=command,
            status=status,
            accepted_at=accepted_at,
            updated_at=accepted_at,
            next_fire_at=upcoming,
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
        return replace(current, status=Status.PAUSED, updated_at=accepted_at)
    if command.action is Action.RESUME:
        if current.status is not Status.PAUSED:
            return current
        spec = current.command
        assert spec.type is not None
        if spec.type.one_shot:
            # Its one instant stands; if it passed while paused, the misfire policy decides.
            upcoming = current.next_fire_at
        else:
            # Continue from the next instant after the resume: no burst of missed ones.
            upcoming = next_instant(spec, current.accepted_at, accepted_at)
        status = Status.ACTIVE if upcoming is not None else Status.COMPLETED
        return replace(current, status=status, updated_at=accepted_at, next_fire_at=upcoming)
    # TRIGGER leaves the stored schedule as it is; the agent fires it once.
    return current


def _last_handled(record: ScheduleRecord | None) -> datetime | None:
    if record is None:
        return None
    handled = [t for t in (record.last_wake, record.last_fired_at) if t is not None]
    return max(handled) if handled else None


@dataclass(frozen=True, slots=True)
class Wake:
    """What a timer wake-up for one due instant does to a schedule."""

    record: ScheduleRecord
    fire: tuple[datetime, ...]
    changed: bool


def wake(
    record: ScheduleRecord,
    due: datetime,
    now: datetime,
    *,
    threshold: timedelta = timedelta(seconds=1),
    ahead: timedelta = timedelta(0),
) -> Wake:
    """Fire ``record`` for its due instant ``due``, as of ``now``.

    With ``ahead`` (the fire-ahead), the instants that follow ``due`` within
    ``ahead`` of it fire too, up to ``MAX_PER_WAKE``: a schedule that fires
    every second is then woken, stored and re-indexed once for several
    firings instead of once for each.

    A wake-up for an instant the record no longer waits for is stale (the
    schedule was updated, paused or already advanced) and does nothing,
    except when it is the very wake-up that produced the last batch: that is
    a replay after a crash, and the batch is sent again with the same ids,
    because the crash may have lost it.
    """
    if record.status is not Status.ACTIVE or record.timed != due:
        if record.last_wake == due and record.last_batch:
            return Wake(record, record.last_batch, changed=False)
        return Wake(record, (), changed=False)
    cmd = record.command
    instant = record.next_fire_at
    assert instant is not None  # an active record that is timed has one
    # With jitter the wake-up comes after the instant; misfire rules measure
    # lateness from that delivery time, so ``now`` is moved back by as much.
    on_time = now - (due - instant)
    missed, last_missed = 0, record.last_missed_at
    late_by = now - due
    if _one_shot(cmd) and late_by <= threshold and late_by <= timedelta(seconds=cmd.misfire_grace):
        # A one-shot woken on time (or ahead): its one instant fires and that
        # is all, as misfire.plan would decide, without stepping its trigger
        # to find there is no next instant: that step is a large part of a
        # wake-up's cost, and a burst is a wake-up of each schedule (measured
        # in bench/).
        fired: tuple[datetime, ...] = (instant,)
        next_fire = None
    else:
        budget = None if cmd.max_fires is None else max(cmd.max_fires - record.fire_count, 0)
        decided = misfire.plan(
            instant,
            lambda t: next_instant(cmd, record.accepted_at, t),
            max(on_time, instant),  # woken ahead (fire-ahead): the instant is on time
            policy=cmd.misfire_policy,
            grace=timedelta(seconds=cmd.misfire_grace),
            threshold=threshold,
            remaining=budget,
        )
        fire, next_fire = list(decided.fire), decided.next_fire
        left = None if budget is None else budget - len(fire)
        until = max(now, due) + ahead * _spread(record.schedule_id)
        while (
            next_fire is not None
            and record.delivered_at(next_fire) <= until
            and len(fire) < MAX_PER_WAKE
            and (left is None or left > 0)
        ):
            fire.append(next_fire)
            left = None if left is None else left - 1
            next_fire = next_instant(cmd, record.accepted_at, next_fire)
        if left == 0:
            next_fire = None  # max_fires reached
        fired = tuple(fire)
        missed = decided.missed
        if decided.last_missed is not None:
            last_missed = decided.last_missed
    # Instants fired ahead of ``now`` wait at an executor until they are due;
    # they are remembered until a later wake-up finds them past.
    pending = tuple(t for t in record.ahead if record.delivered_at(t) > now)
    early = tuple(t for t in fired if record.delivered_at(t) > now)
    settled = [t for t in fired if record.delivered_at(t) <= now]
    base = settled[-1] if settled else record.last_fired_at
    before_ahead = (record.before_ahead if pending else base) if pending or early else None
    # Every field named: dataclasses.replace looks the fields up on each call.
    updated = ScheduleRecord(
        schedule_id=record.schedule_id,
        command=cmd,
        status=Status.ACTIVE if next_fire is not None else Status.COMPLETED,
        accepted_at=record.accepted_at,
        created_at=record.created_at,
        updated_at=record.updated_at,
        next_fire_at=next_fire,
        fire_count=record.fire_count + len(fired),
        last_fired_at=fired[-1] if fired else record.last_fired_at,
        missed_count=record.missed_count + missed,
        last_missed_at=last_missed,
        last_wake=due,
        last_batch=fired,
        ahead=pending + early,
        before_ahead=before_ahead,
    )
    return Wake(updated, fired, changed=True)


def _one_shot(command: Command) -> bool:
    return command.type is not None and command.type.one_shot


def _spread(schedule_id: str) -> float:
    """A fraction from 0.5 to 1 of the fire-ahead span, fixed per schedule.

    Schedules registered together with the same period would otherwise all
    wake in the same second every few seconds (a burst of wake-ups and of
    firings written, which shows as lateness spikes under a steady load);
    spans of different lengths spread their wake-ups apart.
    """
    try:
        return 0.5 + int(schedule_id[4:8], 16) / 0x1FFFE
    except ValueError:
        return 1.0


def revokes(record: ScheduleRecord, command: Command) -> bool:
    """Whether ``command`` takes back the firings ``record`` has waiting ahead of time.

    Delete and pause do; so does an upsert that changes the schedule (its
    waiting firings carry the old definition). An unchanged upsert, a resume
    and a trigger leave them be.
    """
    if not record.ahead:
        return False
    if command.action in (Action.DELETE, Action.PAUSE):
        return True
    if command.action is Action.UPSERT:
        return not same_command(command, record.command)
    return False


def revoke(record: ScheduleRecord, after: datetime) -> tuple[ScheduleRecord, tuple[datetime, ...]]:
    """Take back the instants fired ahead that are later than ``after``.

    Returns the record as if they had never been fired (the first of them is
    its next instant again, and they leave ``fire_count``), and the instants:
    the caller revokes their firings on the ``firings`` topic.
    """
    revoked = tuple(t for t in record.ahead if record.delivered_at(t) > after)
    if not revoked:
        return record, ()
    kept = tuple(t for t in record.ahead if record.delivered_at(t) <= after)
    status = Status.ACTIVE if record.status is Status.COMPLETED else record.status
    rolled_back = replace(
        record,
        status=status,
        next_fire_at=revoked[0],
        fire_count=max(record.fire_count - len(revoked), 0),
        last_fired_at=kept[-1] if kept else record.before_ahead,
        last_wake=record.last_wake if record.last_wake and record.last_wake <= after else None,
        last_batch=tuple(t for t in record.last_batch if record.delivered_at(t) <= after),
        ahead=kept,
        before_ahead=record.before_ahead if kept else None,
    )
    return rolled_back, revoked


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
        "task": secrets.masked_task(cmd.task.model_dump(mode="json")) if cmd.task else None,
        "status": record.status.value,
        "paused": record.paused,
        "next_fire_at": _opt_format(record.next_fire_at, micros=False),
        "next_fire_at_local": next_local,
        "fire_count": record.fire_count,
        "last_fired_at": _opt_format(record.last_fired_at, micros=False),
        "missed_count": record.missed_count,
        "last_missed_at": _opt_format(record.last_missed_at, micros=False),
        "misfire_policy": cmd.misfire_policy.value,
        "start": cmd.start,
        "end": cmd.end,
        "max_fires": cmd.max_fires,
        "jitter": cmd.jitter,
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


def firing(
    record: ScheduleRecord, scheduled_for: datetime, firing_id: str, fired_at: datetime
) -> dict[str, Any]:
    """A ``firings`` record: what the executors need to deliver, and nothing to look up."""
    cmd = record.command
    return {
        "firing_id": firing_id,
        "schedule_id": record.schedule_id,
        "scheduled_for": format_utc(scheduled_for, micros=True),
        "fired_at": format_utc(fired_at, micros=True),
        **_deliver_at(record, scheduled_for),
        "attempt": 1,
        "name": cmd.name,
        "client": cmd.client.model_dump(mode="json"),
        "task": cmd.task.model_dump(mode="json") if cmd.task else None,
    }


def firing_bytes(
    record: ScheduleRecord, scheduled_for: datetime, firing_id: str, fired_at: datetime
) -> bytes:
    """:func:`firing` as JSON, its command's part encoded once per command."""
    head = (
        f'{{"firing_id":"{firing_id}","schedule_id":"{record.schedule_id}",'
        f'"scheduled_for":"{format_utc(scheduled_for, micros=True)}",'
        f'"fired_at":"{format_utc(fired_at, micros=True)}","attempt":1,'
    )
    if record.command.jitter:
        head += f'"deliver_at":"{_deliver_at(record, scheduled_for)["deliver_at"]}",'
    return head.encode() + record.command.firing_fields + b"}"


def _deliver_at(record: ScheduleRecord, instant: datetime) -> dict[str, str]:
    """A jittered firing's delivery time (``deliver_at``); nothing without jitter."""
    if not record.command.jitter:
        return {}
    return {"deliver_at": format_utc(record.delivered_at(instant), micros=True)}


def _json_instant(value: datetime | None) -> str:
    return "null" if value is None else f'"{format_utc(value, micros=True)}"'


def _json_instants(values: tuple[datetime, ...]) -> str:
    return ",".join(f'"{format_utc(t, micros=True)}"' for t in values)


def _opt_format(value: datetime | None, *, micros: bool = True) -> str | None:
    return None if value is None else format_utc(value, micros=micros)


def _opt_parse(value: str | None) -> datetime | None:
    return None if value is None else parse_utc(value)
