"""The command path's compiled lane: new schedules of a common shape, stored without Python's steps.

Most commands a worker reads register a schedule it does not have yet. For
those, the steps of the Python path (decode and validate, schedule id,
partition, first instant, record) cost more than the 30,000 commands/s goal
leaves for all of a command (bench/RESULTS.md, the registration budget). The
extension built from ``native/`` (``scheduler_fastlane``, installed by
``make``) does them in one call for a fetched list of records: for each
record it either declines or returns the schedule id, the record and the
due-index key that the Python path would have written, byte for byte.

It declines whatever it is not sure the command format takes as it is:
anything but an upsert of a ``date``, ``delay`` or ``delay-recur`` schedule
in UTC, without bounds or jitter, to a rest or kafka target (the list is in
``docs/architecture.md``). It never refuses: a declined command goes the
Python path, which accepts or refuses it with its own words. So the
pydantic model stays the one definition of the format;
``tests/unit/test_fastlane.py`` checks over generated commands, valid and
invalid, that whatever the lane takes, the model accepts, into the same
bytes.

What the lane cannot know is left to :meth:`Writer.store`, which falls back to
the Python path as well: the worker's egress policy (asked once per target),
a schedule that already exists, and an instant within ``fire_ahead``, which
the Python path fires as it stores it.

The same extension reads the records of ``firings`` for the executor
(:func:`held`): what it holds a firing by, and a Kafka task's record, as
``delivery.take`` and ``executors.kafka_record`` read them, or it declines.

Without the extension (a platform it was not built for), every command goes
the Python path, as before: slower, not different.
"""

from __future__ import annotations

import logging
from typing import Any

from scheduler import metrics, tables
from scheduler.admission import WORKER_RULES, admits_target
from scheduler.app import settings
from scheduler.domain.state import Status
from scheduler.outbox import Outbox
from scheduler.streams import census, records
from scheduler.streams.timers import registry
from scheduler.tables import due_index, schedules

log = logging.getLogger(__name__)

try:
    import scheduler_fastlane as _native
except ImportError:  # pragma: no cover - every install step builds it
    _native = None
    log.warning("scheduler_fastlane is not installed: every command takes the Python path")

#: ``(schedule id, target, record, due-index key, due µs)``; ``target`` is an
#: index into the targets of the same :func:`take`.
Taken = tuple[str, int, bytes, bytes, int]

#: Whether the lane is there (``scheduler_command_fastlane`` says so too).
AVAILABLE = _native is not None
metrics.gauge(
    "scheduler_command_fastlane",
    lambda: int(AVAILABLE),
    "1 if the command path's compiled lane is installed, else 0",
)
STORED = metrics.counter(
    "scheduler_commands_fastlane_total",
    "new schedules the compiled lane stored (the rest took the Python path)",
)
FIRED = metrics.counter(
    "scheduler_firings_fastlane_total",
    "one-shots the compiled lane fired when woken (counted in scheduler_firings_total too)",
)

#: Targets judged, by (task type, host): a worker's commands name few.
_targets: dict[tuple[str, str], bool] = {}
TARGETS_MAX = 4_096


def take(records_: list[Any], partition: int) -> list[tuple[Taken, bool] | None]:
    """What the lane makes of each of ``records_`` (read from ``partition``), with
    whether this worker admits its target; None where it declined."""
    if _native is None:
        return [None] * len(records_)
    taken, targets = _native.take_batch(
        records_, partition, settings.partitions, WORKER_RULES.max_bytes
    )
    allowed = [_admits(kind, host) for kind, host in targets]
    return [(lane, allowed[lane[1]]) if lane else None for lane in taken]


def fire(record: bytes, due_us: int, now_us: int) -> tuple[bytes, bytes] | None:
    """A one-shot's stored ``record`` woken for ``due_us`` at ``now_us``, if the
    lane can fire it: ``(new record, firing)``, what ``state.wake`` and
    ``state.firing_bytes`` make of it (``tests/unit/test_fastlane_fire.py``
    holds it to that); else None, and the Python path decides."""
    if _native is None:
        return None
    fired: tuple[bytes, bytes] | None = _native.fire(record, due_us, now_us)
    return fired


#: What ``held`` reads off a firing: ``(firing id, due µs, task type, keeps history,
#: the Kafka record's fields or None)``.
FiringRead = tuple[str, int, str, bool, tuple[Any, ...] | None]


def held(raw: bytes) -> FiringRead | None:
    """What ``delivery.take`` holds a record of ``firings`` by, read by the lane:
    the firing's id, the instant it is delivered at, its task type, whether it
    keeps history, and for a Kafka task the fields of its ``KafkaRecord``, as
    ``kafka_record`` builds them (``tests/unit/test_fastlane_held.py`` holds it
    to that); None where the Python path must read it (a revocation, anything
    unusual), and always without the extension."""
    if _native is None:
        return None
    read: FiringRead | None = _native.held(raw)
    return read


def _admits(kind: str, host: str) -> bool:
    found = _targets.get((kind, host))
    if found is None:
        if len(_targets) >= TARGETS_MAX:
            _targets.clear()
        found = _targets[(kind, host)] = admits_target(kind, host)
    return found


class Writer:
    """Stores what the lane took of one partition's commands, within one batch.

    What every command would look up again (the staged writes, what the batch
    read ahead, the records cached, the outbox's lists, the instants the
    timer ignores) is looked up once: a writer is good until the next
    ``await`` of its caller (``Batch.pause`` sends what the batch holds, a
    flush drops what was read ahead, a timer may refill), and the caller
    then makes another. Between two awaits only time moves, and
    ``PartitionTimer.quiet_after`` leaves a second for that.
    """

    def __init__(self, partition: int, outbox: Outbox) -> None:
        self.partition = partition
        self.staged, self.log = tables.writer(schedules, partition, outbox)
        self.staged_index, self.log_index = tables.writer(due_index, partition, outbox)
        self.read_ahead = tables.read_ahead(schedules, partition)
        self.cached = records.cached()
        # Instants after this are nothing to the partition's timer; with no
        # timer yet, none is (one may start at the next turn of the loop).
        self.quiet_after = registry.quiet_after(partition)

    def store(self, key: bytes, taken: Taken) -> bool:
        """Store a command the lane took and whose target is admitted, as
        ``scheduler.streams.apply.apply`` would; False, storing nothing, if it
        must take the Python path after all: its schedule exists (or was
        written or erased earlier in this batch), or its instant is within
        ``fire_ahead``.

        A member of a crowd further off is stored and offered to the timer,
        although the Python path would fire it at once (``PartitionTimer.takes``):
        firing it here cost the command path far more than the lane saves, and
        a crowd produced shortly before its instant was still being stored after
        it (the figures are in the commit that made this so, a8d1989).
        """
        if key in self.staged or key in self.cached:
            return False
        found = self.read_ahead.get(key, _UNREAD)
        if found is _UNREAD:
            found = tables.read(schedules, self.partition, key)
        if found is not None:
            return False
        sid, _, value, entry, due_us = taken
        quiet = due_us > self.quiet_after
        if not quiet and registry.due_soon(self.partition, due_us):
            return False
        census.changed(self.partition, None, Status.ACTIVE)
        self.staged[key] = value
        self.log.append((key, value))
        self.staged_index[entry] = b"1"
        self.log_index.append((entry, b"1"))
        if not quiet:
            registry.offer(self.partition, due_us, sid)
        return True


#: Not read ahead (``None`` is "read, and not there").
_UNREAD: Any = object()
