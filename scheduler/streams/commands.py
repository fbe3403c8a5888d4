"""From ``schedule-commands`` to the ``schedules`` table, and from due instants to ``firings``.

A table may only be written from an agent handling a record of the table's
own partition, and applications may send commands with no key or with a key
we did not choose, so:

1. ``accept_commands`` validates each record; bad records go to
   ``schedule-commands-rejected`` with the reason and the original text. A
   command keyed by its schedule id on the partition the default (murmur2)
   partitioner gives that id, as DESIGN asks producers to send it, is
   applied right there. Any other is re-sent, keyed by its schedule id, to
   ``schedule-commands-keyed``.
2. ``apply_commands`` applies the re-keyed commands. The partition timers
   send their wake-ups (a batch of due entries per record, to their own
   partition) to the same topic: this agent fires due instants, advances
   the schedule and moves its entry in the due-index.
3. A command whose first instant is already within its partition timer's
   lead (or its window, while that holds a crowd: ``PartitionTimer.takes``)
   is woken by ``_apply`` itself, in the command's batch: an index entry, a
   wake-up record, a second read and a second write of the record saved
   (bench/, 100k burst on one worker: 311 -> 223 µs of CPU a schedule, 183
   with the window). That batch writes its firings before its tables
   (``Batch.send``).

Each batch first reads the records its events name, one multi-get per
partition (:func:`_prefetch`, ``tables.prefetch``).

Both agents write a partition's tables only for records of that partition,
which Faust assigns to one worker together (all our topics have the same
partition count). Each read-modify-write of a schedule (load, decide, store)
runs without an await in between, so the two agents never lose each other's
update; and one batch at a time writes and queues its changelog records
(``_writing``), so two agents' records for one key reach the changelog in
the order they were written.

A batch gives the event loop a turn every ``YIELD_EVERY`` events or due
entries: a batch of a thousand takes a few hundred milliseconds, and the
deliveries in flight (their acks, the next sends) should not wait for all
of it. And while fetched firings wait for the executor, it goes on giving
turns until they are taken (:func:`give_way`): a firing is due sooner than
anything a command or a wake-up writes. Faust hands a stream one event per
turn of the loop, so without that the executor took one firing per 16
wake-ups, ~170 a second, while a crowd was being woken (bench/, 100k burst:
firings written 10 s ahead reached the target 15-28 s late); the executor
now also takes what is queued in bulk (``delivery.TAKE_QUEUED``).

The acceptance instant is the Kafka timestamp of the original record, so a
replay of the topic rebuilds the same schedules.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler import clock, ids, metrics, state, tables
from scheduler.app import app, settings
from scheduler.errors import InvalidCommand
from scheduler.models import Action, Command, parse_command
from scheduler.outbox import Outbox
from scheduler.streams import delivery, history
from scheduler.streams.batching import take_batches
from scheduler.streams.timers import WAKE_KEY, index_key, registry
from scheduler.tables import schedules, timers
from scheduler.timefmt import format_utc, parse_utc
from scheduler.topics import commands_topic, firings_topic, keyed_commands_topic, rejected_topic

log = logging.getLogger(__name__)

_accepted = metrics.counter("scheduler_commands_accepted_total", "valid commands accepted")
_rejected = metrics.counter("scheduler_commands_rejected_total", "commands rejected")
_rekeyed = metrics.counter(
    "scheduler_commands_rekeyed_total",
    "commands re-sent to schedule-commands-keyed (not keyed by schedule id, or another partition)",
)
_applied = metrics.counter("scheduler_commands_applied_total", "commands applied to the table")
_fired = metrics.counter("scheduler_firings_total", "firings emitted")
_missed = metrics.counter("scheduler_missed_instants_total", "due instants not fired (misfire)")
_revoked = metrics.counter(
    "scheduler_firings_revoked_total",
    "firings written ahead and taken back by a delete, pause or change before their instant",
)
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


#: How far past a woken instant its schedule's next instants fire with it.
_AHEAD = timedelta(seconds=settings.fire_ahead)

#: The most events an agent takes at once (see ``scheduler.streams.batching``).
BATCH_MAX = 1_000

#: Events or due entries handled between two turns given to the event loop.
YIELD_EVERY = 16

#: The most turns :func:`give_way` gives the executor at once.
GIVE_WAY_TURNS = 4_096

#: Records a batch collects before it queues them and lets other writers in.
FLUSH_RECORDS = 5_000

#: Held by the batch that writes the tables, until its records are queued.
_writing = asyncio.Lock()


class Batch(Outbox):
    """The records of one batch of events, written while it holds ``_writing``.

    A batch of wake-up records can hold a hundred thousand due entries, tens
    of seconds of work: so every ``FLUSH_RECORDS`` records it queues what it
    has and lets go of the lock for a moment (:meth:`pause`). The firings so
    far go out then, not at the end, and a batch of commands waiting for the
    lock gets its turn (bench/, 100k burst: with one outbox per batch the
    firings of a crowd reached ``firings`` ~20 s after the first was woken,
    and commands waited that long). The order of two agents' records for one
    key still follows the order they were written: a batch queues everything
    it wrote before it lets go.
    """

    def __init__(self) -> None:
        super().__init__()
        self.holding = False

    async def send(self) -> None:
        """The staged table writes to RocksDB, then the records to the producer.

        If a command was woken as it was applied, the batch's firings are
        written first, and only once the broker has them do the tables move:
        a kill -9 in between then leaves the command unapplied, and it fires
        again (same ids) when read again, rather than finding its schedule
        already fired and its firing lost. A replay of the topic by an
        operator finds the schedule fired and fires nothing.
        """
        if self.firings_first:
            self.firings_first = False
            await self.deliver(_firings_topic())
        tables.flush()
        await super().send()

    async def begin(self) -> None:
        await _writing.acquire()
        self.holding = True

    async def end(self) -> None:
        try:
            await self.send()
        finally:
            self._let_go()

    async def pause(self) -> None:
        """Give way (:func:`give_way`); queue the records first if there are many."""
        if len(self) < FLUSH_RECORDS:
            await give_way()
            return
        await self.send()
        self._let_go()
        await give_way()
        await self.begin()

    def _let_go(self) -> None:
        if self.holding:
            self.holding = False
            _writing.release()


async def _in_batches(stream: Any, handle: Callable[[Any, Batch], Awaitable[None]]) -> None:
    """Handle each event of each batch, then produce what the batch wrote."""
    async for events in take_batches(stream, BATCH_MAX):
        batch = Batch()
        await batch.begin()
        try:
            _prefetch(events)
            for index, event in enumerate(events, start=1):
                try:
                    await handle(event, batch)
                except Exception:
                    # A record we fail on must not stop the ones after it.
                    log.exception("record at %s failed", event.message.tp)
                if index % YIELD_EVERY == 0:
                    await batch.pause()
        finally:
            await batch.end()


def _prefetch(events: list[Any]) -> None:
    """Read the records the batch's events name, one multi-get per partition."""
    wanted: dict[int, list[bytes]] = {}
    for event in events:
        key = event.key
        partition = event.message.partition
        if key == WAKE_KEY:
            envelope = event.value
            if isinstance(envelope, dict) and envelope.get("kind") == "wakes":
                keys = wanted.setdefault(partition, [])
                keys.extend(sid.encode() for _, sid in envelope["due"])
        elif isinstance(key, bytes):
            wanted.setdefault(partition, []).append(key)
    for partition, keys in wanted.items():
        tables.prefetch(schedules, partition, [key for key in keys if key not in _woken])


async def give_way() -> None:
    """A turn of the event loop, and more while fetched firings wait for the executor.

    Each turn lets the executor take one (bounded: a stalled executor must
    not stop the writers for good).
    """
    await asyncio.sleep(0)
    turns = 1
    while turns < GIVE_WAY_TURNS and delivery.backlog():
        await asyncio.sleep(0)
        turns += 1


@app.agent(commands_topic, name="accept-commands")
async def accept_commands(stream: Any) -> Any:
    await _in_batches(stream, _accept)


async def _accept(event: Any, outbox: Outbox) -> None:
    raw: bytes = event.value if event.value is not None else b""
    try:
        command = parse_command(raw, max_bytes=settings.max_command_bytes)
    except InvalidCommand as exc:
        await reject(exc, event.key, raw)
        return
    accepted_at = datetime.fromtimestamp(event.message.timestamp, tz=UTC)
    _accepted.inc()
    sid = command.schedule_id.encode()
    partition = event.message.partition
    owner = owner_partition(sid)
    if event.key == sid and partition == owner:
        # Already where the keyed topic would put it: apply it here and skip
        # a produce and a consume.
        await _apply(sid, command, accepted_at, raw, partition, outbox)
        return
    envelope = {
        "kind": "command",
        "command": command.to_json(),
        "accepted_at": format_utc(accepted_at, micros=True),
        "original": raw.decode("utf-8", errors="replace"),
    }
    outbox.add(_keyed_topic(), owner, sid, json.dumps(envelope, ensure_ascii=False).encode())
    _rekeyed.inc()


def owner_partition(key: bytes) -> int:
    """The partition the default (murmur2, as Java's) partitioner gives ``key``."""
    hashed = ids.murmur2(key) & 0x7FFFFFFF
    return hashed % settings.partitions


def _keyed_topic() -> str:
    name: str = keyed_commands_topic.get_topic_name()
    return name


def _firings_topic() -> str:
    name: str = firings_topic.get_topic_name()
    return name


@app.agent(keyed_commands_topic, name="apply-commands")
async def apply_commands(stream: Any) -> Any:
    await _in_batches(stream, _applied_or_woken)


async def _applied_or_woken(event: Any, batch: Batch) -> None:
    envelope = event.value
    partition = event.message.partition
    kind = envelope.get("kind")
    if kind == "wakes":
        await _wake_all(envelope["due"], partition, batch)
    elif kind == "wake":  # one entry per record, as sent before wake-ups were batched
        await _wake(event.key, int(envelope["due_us"]), partition, batch)
    else:
        await _apply(
            event.key,
            Command.model_validate(envelope["command"]),
            parse_utc(envelope["accepted_at"]),
            envelope.get("original"),
            partition,
            batch,
        )


#: Records as this worker last woke them, by schedule id: a recurring
#: schedule's next wake-up takes its record from here instead of decoding it
#: from RocksDB (records are immutable). Only wake-ups fill it, commands drop
#: their schedule from it, and it is emptied whenever partitions move (their
#: next owner may change them meanwhile). Oldest written out first.
_woken: OrderedDict[bytes, state.ScheduleRecord] = OrderedDict()

#: Records kept in ``_woken`` (a few KiB each).
WOKEN_MAX = 10_000


def _load(key: bytes, partition: int) -> state.ScheduleRecord | None:
    found = _woken.get(key)
    if found is not None:
        return found
    stored = tables.read(schedules, partition, key)
    return state.ScheduleRecord.from_bytes(stored) if stored else None


def _store(
    key: bytes,
    partition: int,
    before: state.ScheduleRecord | None,
    after: state.ScheduleRecord | None,
    outbox: Outbox,
    *,
    keep: bool = False,
) -> None:
    """Write the record and move its due-index entry if its instant changed.

    ``keep``: remember the record in ``_woken`` (a wake-up's, if it will be
    woken again), else forget it.
    """
    _woken.pop(key, None)
    if after is None:
        tables.erase(schedules, partition, key, outbox)
    else:
        tables.write(schedules, partition, key, after.to_bytes(), outbox)
        if keep and after.timed is not None:
            if len(_woken) >= WOKEN_MAX:
                # An OrderedDict: a plain dict's first key, after many deletions
                # from its front, is found by scanning past their empty slots
                # (2.3% of a worker's CPU while it woke a 50,000 one-shot crowd).
                _woken.popitem(last=False)
            _woken[key] = after
    old = before.timed if before else None
    new = after.timed if after else None
    if old is not None and old != new:
        tables.erase(timers, partition, index_key(clock.to_us(old), key.decode()), outbox)
    if after is not None:
        _index(key, partition, after, outbox)


def _index(key: bytes, partition: int, record: state.ScheduleRecord, outbox: Outbox) -> None:
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
    tables.write(timers, partition, index_key(due_us, sid), b"1", outbox)
    registry.offer(partition, due_us, sid)


async def _apply(
    key: bytes,
    command: Command,
    accepted_at: datetime,
    original: bytes | str | None,
    partition: int,
    outbox: Outbox,
) -> None:
    current = _load(key, partition)
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
            woken = state.wake(updated, due, clock.now(), ahead=_AHEAD)
    after = woken.record if woken else updated
    _store(key, partition, current, after, outbox, keep=woken is not None)
    if revoked:
        assert current is not None
        _revoke(current.schedule_id, revoked, command.action, partition, outbox)
        if _keeps_history(current):
            await history.record(
                current.schedule_id,
                "revoked",
                by=command.action.value,
                scheduled_for=[format_utc(t, micros=True) for t in revoked],
            )
    _applied.inc()
    await _command_history(command, current, updated)
    if woken is not None:
        assert updated is not None
        outbox.firings_first = True
        await _fire(updated, woken, partition, outbox)
    if command.action is Action.TRIGGER and updated is not None:
        # Its own id: a trigger is not one of the schedule's nominal instants.
        firing_id = ids.trigger_firing_id(updated.schedule_id, accepted_at)
        await _emit(updated, accepted_at, firing_id, partition, outbox)
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


async def _wake_all(due: list[list[Any]], partition: int, batch: Batch) -> None:
    """The entries of one wake-up record, all owned by ``partition``."""
    for index, (due_us, schedule_id) in enumerate(due, start=1):
        try:
            await _wake(schedule_id.encode(), int(due_us), partition, batch)
        except Exception:
            # One schedule that cannot be woken must not hold up the others.
            log.exception("wake-up of %s at %s failed", schedule_id, due_us)
        if index % YIELD_EVERY == 0:
            await batch.pause()


async def _wake(key: bytes, due_us: int, partition: int, outbox: Outbox) -> None:
    current = _load(key, partition)
    stale_entry = index_key(due_us, key.decode())
    if current is None:
        _drop_stale(partition, stale_entry, outbox)  # left behind by a lost tombstone, if at all
        _stale.inc()
        return
    due = clock.from_us(due_us)
    outcome = state.wake(current, due, clock.now(), ahead=_AHEAD)
    if outcome.changed:
        _store(key, partition, current, outcome.record, outbox, keep=True)
    else:
        # A replay after a crash, or a wake-up the schedule no longer waits for:
        # its entry is stale (drop it), the record's own entry must exist (put it).
        if current.timed != due:
            _drop_stale(partition, stale_entry, outbox)
        _index(key, partition, current, outbox)
        if not outcome.fire:
            _stale.inc()
    await _fire(current, outcome, partition, outbox)


async def _fire(
    before: state.ScheduleRecord, outcome: state.Wake, partition: int, outbox: Outbox
) -> None:
    """The firings of a wake-up, and the instants it counted as missed."""
    missed = outcome.record.missed_count - before.missed_count
    if missed:
        _missed.inc(missed)
        if _keeps_history(before):
            last = outcome.record.last_missed_at
            await history.record(
                before.schedule_id,
                "missed",
                count=missed,
                last_missed_at=format_utc(last) if last else None,
            )
    for instant in outcome.fire:
        firing_id = ids.firing_id(before.schedule_id, instant)
        await _emit(outcome.record, instant, firing_id, partition, outbox)


def _revoke(
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
    outbox.add(_firings_topic(), partition, schedule_id.encode(), json.dumps(body).encode())
    _revoked.inc(len(instants))
    log.debug("revoked %d firings of %s (%s)", len(instants), schedule_id, action.value)


def _drop_stale(partition: int, entry: bytes, outbox: Outbox) -> None:
    if tables.read(timers, partition, entry) is not None:
        tables.erase(timers, partition, entry, outbox)


async def _emit(
    record: state.ScheduleRecord,
    scheduled_for: datetime,
    firing_id: str,
    partition: int,
    outbox: Outbox,
) -> None:
    """One firing to ``firings``, keyed by schedule id, on the schedule's own partition."""
    body = state.firing_bytes(record, scheduled_for, firing_id, clock.now())
    outbox.add(_firings_topic(), partition, record.schedule_id.encode(), body)
    _fired.inc()
    if _keeps_history(record):
        await history.record(
            record.schedule_id,
            "fired",
            firing_id=firing_id,
            scheduled_for=format_utc(scheduled_for, micros=True),
        )
    log.debug("fired %s for %s", firing_id, scheduled_for)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _forget_on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    _woken.clear()
    tables.forget_prefetched()


@app.on_partitions_assigned.connect  # type: ignore[arg-type]
async def _forget_on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
    _woken.clear()
    tables.forget_prefetched()
