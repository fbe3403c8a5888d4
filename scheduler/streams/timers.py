"""One timer per owned partition: wakes each schedule at its due instant.

A timer holds only the near future in memory: a heap of (instant, schedule
id) pairs up to its *horizon*, refilled from the partition's slice of the
``due_index`` table (a RocksDB whose keys sort by instant) as time moves on.
The agent that writes a schedule offers its new instant to the timer, which
keeps it only if it falls inside the horizon; anything later is read from
the table when the horizon gets there. So a million schedules due next week
cost disk, not memory.

A timer wakes each instant ``fire_ahead`` seconds early (5 by default):
the firing is then written ahead of time and an executor holds it until its
instant (``scheduler.streams.delivery``), so the instant itself costs only
the delivery.

A crowd is woken earlier still. Waking an instant costs about as much CPU as
registering it, so a big crowd of one-shots due in the same second takes far
longer to wake than the lead of ``fire_ahead``, and with only that lead most
of it fired late although it had been stored well before (measured in
bench/, see bench/RESULTS.md). So when
more than ``CROWD`` instants wait in a partition's window, the lead grows by
the time it takes to wake the surplus at ``WAKE_RATE`` a second: the crowd is
woken as soon as it enters the window (at most ``WINDOW_US`` ahead), and its
firings wait at the executor. A window of ordinary size keeps the lead of
``fire_ahead``. A crowd still being stored when it enters the window is
past the horizon of the last refill: more than ``CROWD`` such entries bring
the next refill forward, else its wake-ups waited for the refill every half
window, up to 15 s, with the timer idle meanwhile, and a crowd stored shortly
before its instant had its last firings written late. While a crowd is woken early
the timer sends every ``CROWD_GAP_S`` rather than every ``MIN_GAP_S``: fewer,
fuller wake-up records, each of which costs the agent a batch. Instants
woken early keep counting towards the crowd until they come: otherwise the
lead fell back to ``fire_ahead`` each time a part of a crowd still being
stored had been woken, and the rest waited until the heap had grown again.

An instant the Python path stores when it is already within the lead, or
within the window while the window holds a crowd, is not offered at all:
:meth:`PartitionTimer.takes` tells the agent storing it to wake it itself,
in the same batch (``scheduler.streams.apply``). The compiled lane
(``scheduler.streams.fastlane``) asks only :meth:`PartitionTimer.due_soon`,
and offers a crowd's members further off.

A timer does not fire anything itself. It sends the (instant, schedule)
pairs that are due to ``schedule-commands-keyed``, to its own partition, as
one record per batch, where the one agent allowed to write that partition's
tables decides what fires (``scheduler.domain.state.wake``) and records it. One
record per batch rather than per schedule: a burst of 10,000 instants due in
the same second is then a handful of records, not 10,000 round trips. The
timer therefore never needs to be right about a schedule's state: a wake-up
for an instant the schedule no longer waits for is dropped by the agent.

Timers run only for partitions this worker actively owns, once its tables
have recovered; they stop the moment a rebalance revokes anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from scheduler import clock, metrics, tables
from scheduler.app import app, settings
from scheduler.patches import private
from scheduler.streams import census
from scheduler.tables import due_index, partition_db
from scheduler.topics import keyed_commands_topic

log = logging.getLogger(__name__)

#: How far ahead a timer loads due instants into memory.
WINDOW_US = 30_000_000
#: How long :meth:`PartitionTimer.quiet_after` holds.
QUIET_MARGIN_US = 1_000_000
#: The most entries one refill loads; a crowded window is loaded in slices.
REFILL_LIMIT = 50_000
#: After sending wake-ups, the timer waits this long before it sends more: an
#: instant may go out up to this late, and a wake-up record carries every
#: instant that fell due meanwhile.
MIN_GAP_S = 0.020
#: The gap while a crowd is woken early (its lead stretched past ``fire_ahead``).
CROWD_GAP_S = 0.200
#: The most due entries in one wake-up record (~50 bytes each).
WAKE_BATCH = 2_000
KEY_DIGITS = 17
#: The key of wake-up records; their partition is set explicitly.
WAKE_KEY = b"wake-ups"
#: Instants in a partition's window beyond which it wakes them earlier than ``fire_ahead``.
CROWD = 1_000
#: Wake-ups a second one partition is counted on to handle when its lead is
#: stretched for a crowd: a safe share of what a worker does for all its partitions
#: (measured in bench/, see bench/RESULTS.md).
WAKE_RATE = 250


_wakeups_sent = metrics.counter("scheduler_wakeups_sent_total", "wake-ups sent by timers")


def index_key(due_us: int, schedule_id: str) -> bytes:
    return b"%017d|%s" % (due_us, schedule_id.encode())


def parse_index_key(key: bytes) -> tuple[int, str]:
    return int(key[:KEY_DIGITS]), key[KEY_DIGITS + 1 :].decode()


class PartitionTimer:
    """The timer of one partition: a heap of the near future and a task that waits on it."""

    def __init__(
        self,
        partition: int,
        read_index: Callable[[int, int], list[tuple[int, str]]],
        send: Callable[[int, list[tuple[int, str]]], Awaitable[None]],
        now_us: Callable[[], int] = clock.now_us,
        ahead_us: int = 0,
    ) -> None:
        self.partition = partition
        self.ahead_us = ahead_us
        self._read_index = read_index
        self._send = send
        self._now_us = now_us
        self._heap: list[tuple[int, str]] = []
        self._queued: set[tuple[int, str]] = set()
        self.horizon_us = -1
        #: Entries offered past the horizon but inside the window since the last refill.
        self._beyond = 0
        #: Instants (µs) woken early for a crowd and not yet come: still the crowd's.
        self._early: list[int] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def offer(self, due_us: int, schedule_id: str) -> None:
        """A schedule's new instant, from the agent that just stored it."""
        if due_us > self.horizon_us:
            # The refill that reaches it will read it from the table. Refills
            # come every half window, so a crowd stored past the horizon but
            # inside the window would wait up to that long before its early
            # wake-ups could start: one is counted, and past ``CROWD`` of them
            # the timer refills at once.
            if self.horizon_us >= 0 and due_us <= self._now_us() + WINDOW_US:
                self._beyond += 1
                if self._beyond == CROWD + 1:
                    self._wakeup.set()
            return
        entry = (due_us, schedule_id)
        if entry in self._queued:
            return  # already waiting: a second copy would wake the schedule twice
        earliest = self._heap[0][0] if self._heap else None
        self._queued.add(entry)
        heapq.heappush(self._heap, entry)
        if earliest is None or due_us < earliest or len(self._heap) > CROWD:
            self._wakeup.set()  # earlier than the timer sleeps for, or a crowd to wake early

    def refill(self, now_us: int) -> None:
        """Load the index entries after the horizon up to ``now + WINDOW``.

        No await in here: the agent cannot write in between the read and the
        move of the horizon, so an entry is either read or offered, never
        both and never neither.
        """
        target = now_us + WINDOW_US
        entries = self._read_index(self.horizon_us + 1, target)
        for entry in entries:
            if entry not in self._queued:
                self._queued.add(entry)
                heapq.heappush(self._heap, entry)
        if len(entries) >= REFILL_LIMIT:
            target = entries[-1][0]
        self.horizon_us = target
        self._beyond = 0

    def lead_us(self) -> int:
        """How long before its instant an entry is woken: ``fire_ahead``, more for a crowd.

        The crowd is what waits in the window, woken or not: the instants
        woken early that have not come yet still count, so a crowd that goes
        on growing after its first part was woken keeps its lead.
        """
        early = self._early
        if early:
            now = self._now_us()
            while early and early[0] <= now:
                heapq.heappop(early)
        surplus = len(self._heap) + len(early) - CROWD
        if surplus <= 0:
            return self.ahead_us
        return self.ahead_us + surplus * 1_000_000 // WAKE_RATE

    def takes(self, due_us: int) -> bool:
        """Whether an instant just stored is due to be woken now; if so it counts as woken.

        The agent storing it then wakes it itself (``scheduler.streams.apply``)
        instead of indexing it for this timer to send back a moment later.
        That is any instant within the lead, and while the window holds a
        crowd, any instant within the window: a crowd still being stored
        keeps stretching the lead, so an instant indexed now would be sent
        back within seconds, after an index entry, a wake-up, a second read
        and a second write of its record: in a burst, a large part of the
        crowd went that way, each costing much more CPU than one woken as it
        is stored (measured in bench/, see bench/RESULTS.md). That holds for
        the Python path; the compiled lane stores a command for much less
        than firing it costs, and offers a crowd's members instead
        (``scheduler.streams.fastlane.Writer.store``).
        """
        now = self._now_us()
        lead = self.lead_us()
        if not self._due_now(due_us, lead, now):
            return False
        self._woken(due_us, lead, now)
        return True

    def due_soon(self, due_us: int) -> bool:
        """Whether an instant is within ``fire_ahead``, the lead without a crowd:
        what :meth:`takes` answers while the window holds no crowd."""
        return due_us <= self._now_us() + self.ahead_us

    def quiet_after(self) -> int:
        """An instant later than this, for the next second, is neither taken
        (:meth:`takes`) nor offered (:meth:`offer`): the timer reads it from
        the table when its refill reaches it. For a caller storing many with
        no await between (only a refill moves the horizon)."""
        return max(
            self.horizon_us, self._now_us() + max(self.lead_us(), WINDOW_US) + QUIET_MARGIN_US
        )

    def _due_now(self, due_us: int, lead: int, now: int) -> bool:
        # A lead past ``fire_ahead`` is what a crowd in the window looks like.
        return not (due_us > now + lead and (lead == self.ahead_us or due_us > now + WINDOW_US))

    def _woken(self, due_us: int, lead: int, now: int) -> None:
        """An instant woken now: one woken early for a crowd counts until it comes."""
        if lead > self.ahead_us and due_us > now:
            heapq.heappush(self._early, due_us)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self._heap.clear()
        self._queued.clear()
        self._early.clear()
        self.horizon_us = -1
        self._beyond = 0

    async def _run(self) -> None:
        while True:
            try:
                await self._loop()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A timer must not die quietly: log, pause, rebuild from the table.
                log.exception("timer of partition %d failed; restarting it", self.partition)
                self._heap.clear()
                self._queued.clear()
                self.horizon_us = -1
                await asyncio.sleep(1.0)

    async def _loop(self) -> None:
        fired = _wakeups_sent
        while True:
            now = self._now_us()
            if now >= self.horizon_us - WINDOW_US // 2 or self._beyond > CROWD:
                self.refill(now)
            due: list[tuple[int, str]] = []
            lead = self.lead_us()
            while self._heap and self._heap[0][0] <= now + lead:
                entry = heapq.heappop(self._heap)
                self._queued.discard(entry)
                due.append(entry)
            for due_us, _ in due:
                self._woken(due_us, lead, now)
            for start in range(0, len(due), WAKE_BATCH):
                await self._send(self.partition, due[start : start + WAKE_BATCH])
            fired.inc(len(due))
            if due:
                # Let the next instants gather for a moment: in a steady stream
                # of firings spread over the second, one record per instant costs
                # more than the firings themselves (measured in bench/).
                await asyncio.sleep(CROWD_GAP_S if lead > self.ahead_us else MIN_GAP_S)
                continue
            wake_at = self.horizon_us - WINDOW_US // 2  # the next refill
            if self._heap:
                wake_at = min(self._heap[0][0] - lead, wake_at)
            wait_us = wake_at - self._now_us()
            if wait_us <= 0:
                continue
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait_us / 1_000_000)


class TimerRegistry:
    """The running timers of this worker, one per actively owned partition."""

    def __init__(self) -> None:
        self.timers: dict[int, PartitionTimer] = {}

    def offer(self, partition: int, due_us: int, schedule_id: str) -> None:
        timer = self.timers.get(partition)
        if timer is not None:
            timer.offer(due_us, schedule_id)

    def takes(self, partition: int, due_us: int) -> bool:
        """Whether the partition's timer counts ``due_us`` as woken now (no timer: no)."""
        timer = self.timers.get(partition)
        return timer is not None and timer.takes(due_us)

    def quiet_after(self, partition: int) -> float:
        """:meth:`PartitionTimer.quiet_after` of the partition's timer. Without a
        timer, no instant (one may start at the next turn of the loop)."""
        timer = self.timers.get(partition)
        return math.inf if timer is None else timer.quiet_after()

    def due_soon(self, partition: int, due_us: int) -> bool:
        """:meth:`PartitionTimer.due_soon` of the partition's timer (no timer: no)."""
        timer = self.timers.get(partition)
        return timer is not None and timer.due_soon(due_us)

    def reconcile(self, wanted: set[int]) -> None:
        for partition in set(self.timers) - wanted:
            self.timers.pop(partition).stop()
        for partition in sorted(wanted - set(self.timers)):
            timer = PartitionTimer(
                partition,
                _index_reader(partition),
                send_wakeups,
                ahead_us=int(settings.fire_ahead * 1_000_000),
            )
            self.timers[partition] = timer
            timer.start()
            log.info("timer started for partition %d", partition)

    def stop_all(self) -> None:
        for timer in self.timers.values():
            timer.stop()
        if self.timers:
            log.info("timers stopped for partitions %s", sorted(self.timers))
        self.timers.clear()

    def pending(self) -> int:
        return sum(len(timer) for timer in self.timers.values())


registry = TimerRegistry()
metrics.gauge("scheduler_timer_pending", registry.pending, "instants held in timer memory")
metrics.gauge("scheduler_timer_partitions", lambda: len(registry.timers), "partitions timed here")


def _index_reader(partition: int) -> Callable[[int, int], list[tuple[int, str]]]:
    def read(low_us: int, high_us: int) -> list[tuple[int, str]]:
        # Staged entries too: one offered before the horizon moved past it
        # would otherwise be neither offered nor read (see ``refill``).
        tables.flush()
        db = partition_db(due_index, partition)
        it = db.iter()
        it.seek(b"%017d" % max(low_us, 0))
        found: list[tuple[int, str]] = []
        last_due = -1
        while it.valid():
            key = it.key()
            if not key[:1].isdigit():
                break  # past our entries: Faust keeps its own offset key in this DB
            due_us, schedule_id = parse_index_key(key)
            if due_us > high_us:
                break
            if len(found) >= REFILL_LIMIT and due_us != last_due:
                break
            found.append((due_us, schedule_id))
            last_due = due_us
            it.next()
        return found

    return read


async def send_wakeups(partition: int, due: list[tuple[int, str]]) -> None:
    """One record for many due entries, to the partition that owns them all."""
    await keyed_commands_topic.send(
        key=WAKE_KEY,
        partition=partition,
        value={"kind": "wakes", "due": [[due_us, sid] for due_us, sid in due]},
    )


#: While a rebalance or a recovery is under way: how often the supervisor looks.
UNSETTLED_POLL_S = 0.1
#: Once settled, it sleeps until a rebalance signal, or this long at most.
SETTLED_POLL_S = 5.0


def _settled() -> bool:
    """No rebalance running and the tables of every assigned partition recovered."""
    if _Signal.stopping or private.settling(app):
        return False
    return private.tables_recovered(app)


def _owned_partitions() -> set[int]:
    """Partitions whose timers should run here now: active, recovered, settled."""
    if not _settled():
        return set()
    source = keyed_commands_topic.get_topic_name()
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == source}


class _Signal:
    """Set by the rebalance signals; the supervisor waits on it once settled."""

    event: asyncio.Event | None = None
    stopping = False

    @classmethod
    def get(cls) -> asyncio.Event:
        if cls.event is None:
            cls.event = asyncio.Event()
        return cls.event


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    registry.stop_all()
    _Signal.get().set()


@app.on_before_shutdown.connect  # type: ignore[arg-type]
async def _on_shutdown(sender: Any, **kwargs: Any) -> None:
    """Stop firing before Faust stops its producer (a timer would fail to send)."""
    _Signal.stopping = True
    registry.stop_all()


@app.on_partitions_assigned.connect  # type: ignore[arg-type]
async def _on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
    _Signal.get().set()


@app.task  # type: ignore[untyped-decorator]
async def supervise_timers() -> None:
    """Keep one timer per owned partition.

    While partitions move it looks ten times a second, so timers start within
    0.1 s of recovery; once settled it sleeps until the next rebalance signal
    (polling at 10 Hz for good is a noticeable share of an idle worker's CPU,
    measured in bench/).
    """
    changed = _Signal.get()
    while True:
        changed.clear()
        settled = _settled()
        registry.reconcile(_owned_partitions())
        census.reconcile(set(registry.timers))
        if not settled:
            await asyncio.sleep(UNSETTLED_POLL_S)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), SETTLED_POLL_S)
