"""The executor: deliver ``firings``, retry via ``firings-retry``, or ``firings-dead``.

Each record of ``firings`` comes to :func:`take`, from the executor's own
reading of the topic (``scheduler.streams.executor``).

Deliveries run concurrently, at most ``SCHEDULER_MAX_IN_FLIGHT`` per worker.
Each source record is acknowledged only when its delivery is settled
(succeeded, or handed on to the retry or dead topic), so a worker killed
mid-delivery leaves the record uncommitted and whoever owns the partition
next delivers it again (same ``Idempotency-Key``).

A firing written ahead of its instant (``fire_ahead``, see
``scheduler.streams.timers``) waits here, in memory, until its
``scheduled_for``, its record unacknowledged; a revocation on the same
partition (``{"revoked": [firing ids], ...}``, written when a delete, a pause
or a change of the schedule comes first) drops it unsent. Nothing is ever
delivered before its ``scheduled_for`` (nor, with jitter, before its
``deliver_at``). A Kafka firing taken when its
instant has already come goes through the same release at once, so that
the ones taken together go out in batches.

A failed attempt that may be retried goes to ``firings-retry``, where
``scheduler.streams.retries`` has it wait on the broker until its
``not_before`` and then hands it back to :func:`attempt`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from itertools import chain, islice
from typing import Any

from prometheus_client import Counter, Histogram

from scheduler import clock, gcpace, metrics
from scheduler.app import app, egress_policy, settings, target_clusters
from scheduler.domain import secrets
from scheduler.domain.models import Task, TaskType
from scheduler.domain.retry import (
    Outcome,
    Result,
    RetryPolicy,
    Verdict,
    attempt_error,
    kept_errors,
    shorten,
)
from scheduler.domain.timefmt import format_utc, parse_utc
from scheduler.patches import produce_guard
from scheduler.patches.batching import take_queued
from scheduler.streams import fastlane, history
from scheduler.targets.executors import (
    Executors,
    KafkaRecord,
    Prebuilt,
    Slot,
    kafka_record,
    queue_prebuilt,
)
from scheduler.topics import dead_topic, firings_topic, name_of, retry_topic

log = logging.getLogger(__name__)

executors = Executors(
    max_connections=settings.max_in_flight,
    per_target=settings.max_in_flight_per_target,
    policy=egress_policy,
    secrets_dir=settings.secrets_dir,
    clusters=target_clusters,
)
_slots: asyncio.Semaphore | None = None
_running: set[asyncio.Future[None]] = set()
#: The queue of fetched ``firings`` events waiting for ``deliver_firings``.
_fetched: Any = None

#: Task types as labels; ``other`` for a firing whose type this worker does not know.
TASK_TYPES = (*(kind.value for kind in TaskType), "other")
#: How a delivery attempt ended: a ``Result``'s outcome, or put off (never tried).
OUTCOMES = ("success", "retryable", "permanent", "deferred")

_deliveries = Counter(
    "scheduler_deliveries",
    "delivery attempts concluded, by task type and outcome (deferred: put off, not tried)",
    ["task_type", "outcome"],
    registry=metrics.REGISTRY,
)
#: Bound once: the hot path looks a pair up in a dict, not in the metric.
_concluded = {
    (kind, outcome): _deliveries.labels(kind, outcome)
    for kind in TASK_TYPES
    for outcome in OUTCOMES
}
_kafka_delivered = _concluded[("kafka", "success")]
metrics.Total(
    "scheduler_deliveries_succeeded_total",
    "deliveries that succeeded",
    _deliveries,
    {"outcome": {"success"}},
)
metrics.Total(
    "scheduler_deliveries_failed_total",
    "delivery attempts that failed",
    _deliveries,
    {"outcome": {"retryable", "permanent"}},
)

#: From a few milliseconds (on time: the firing was written ahead and held)
#: to an hour (a retry that waited, a backlog after an outage).
LATENESS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
_lateness = Histogram(
    "scheduler_delivery_lateness_seconds",
    "seconds from a firing's instant to the success of its delivery: from scheduled_for, or "
    "from deliver_at when the schedule has jitter; includes the target's answer and, for "
    'attempt="retry", the retry waits',
    ["task_type", "attempt"],
    buckets=LATENESS_BUCKETS,
    registry=metrics.REGISTRY,
)
_late = {
    (kind, first): _lateness.labels(kind, "first" if first else "retry")
    for kind in TASK_TYPES
    for first in (True, False)
}
_kafka_late = _late[("kafka", True)]

#: Why firings go to ``firings-dead``, in a few classes (the record's ``reason`` says more).
#: A permanent failure is classed by the code its error starts with, if it has one.
DEAD_REASONS = (
    "permanent",
    "egress_denied",
    "secret_missing",
    "unknown_cluster",
    "no_retries",
    "retries_exhausted",
    "max_age",
    "unreadable",
    "unconcludable",
)
_dead_letters = Counter(
    "scheduler_dead_letters",
    "firings sent to firings-dead, by reason class",
    ["reason"],
    registry=metrics.REGISTRY,
)
_buried = {reason: _dead_letters.labels(reason) for reason in DEAD_REASONS}
#: The codes a permanent failure's error may start with (``scheduler.targets.executors``).
_PERMANENT_CODES = frozenset({"egress_denied", "secret_missing", "unknown_cluster"})
metrics.Total("scheduler_deliveries_dead_total", "firings sent to firings-dead", _dead_letters, {})
#: Seconds a delivery its target had no room for is put off, the first time;
#: doubled each time it is put off again, up to ``DEFER_MAX_S``. A target
#: that hangs would otherwise have every delivery to it read, refused and
#: written again every second, and that churn took the CPU the healthy
#: targets' deliveries needed (fault suite, black-hole target).
DEFER_S = 1.0
DEFER_MAX_S = 30.0

metrics.Total(
    "scheduler_deliveries_deferred_total",
    "deliveries put off on firings-retry, not attempted: their target had too much in flight",
    _deliveries,
    {"outcome": {"deferred"}},
)
_retried = metrics.counter("scheduler_deliveries_retried_total", "failures sent to firings-retry")
_revocations = metrics.counter(
    "scheduler_held_firings_revoked_total", "held firings dropped unsent because they were revoked"
)
_in_flight = metrics.counter("scheduler_deliveries_started_total", "delivery attempts started")
_prebuilt_count = metrics.counter(
    "scheduler_kafka_prebuilt_total",
    "held Kafka firings appended to batches ahead of their instant",
)


def slots() -> asyncio.Semaphore:
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(settings.max_in_flight)
    return _slots


async def attempt(firing: dict[str, Any], slot: Slot | None = None) -> None:
    """One delivery attempt, then whatever its outcome calls for.

    Raises only :class:`ProduceFailed`, after which the firing must stay
    unacknowledged (the worker then stops: ``scheduler.patches.produce_guard``).
    """
    _in_flight.inc()
    try:
        result = await executors.deliver(firing, slot)
    except Exception as exc:  # a fault of ours, not the target's: a failed attempt
        log.exception("delivery of %s failed unexpectedly", firing.get("firing_id"))
        result = Result(Outcome.RETRYABLE, shorten(f"{type(exc).__name__}: {exc}"))
    await conclude(firing, result)


def stuck(firing_id: Any, exc: BaseException) -> None:
    """A firing that cannot be settled: left unacknowledged, and the worker stops."""
    log.error("delivery of %s left unsettled: %s", firing_id, exc)
    produce_guard.refused(exc, f"the conclusion of firing {firing_id}", app.consumer)


def task_type(task: Any) -> str:
    """The firing's task type as a label: one of ``TASK_TYPES``."""
    kind = task.get("type") if isinstance(task, dict) else None
    return kind if kind in _KNOWN_TYPES else "other"


_KNOWN_TYPES = frozenset(TASK_TYPES)


def _delivered(firing: dict[str, Any], attempt: int, kind: str) -> None:
    """Count a successful delivery, and how late it was."""
    due = firing.get("deliver_at") or firing["scheduled_for"]
    late_us = clock.now_us() - clock.to_us(parse_utc(due))
    _late[(kind, attempt <= 1)].observe(late_us / 1_000_000)
    _concluded[(kind, "success")].inc()
    log.debug("delivered %s attempt %d", firing["firing_id"], attempt)


def dead_reason(result: Result, policy: RetryPolicy, attempt: int) -> str:
    """The class of a dead letter, one of ``DEAD_REASONS``, for the dead-letter counter.

    In the order ``RetryPolicy.decide`` gives up in.
    """
    if result.outcome is Outcome.PERMANENT:
        code = (result.error or "").partition(":")[0]
        return code if code in _PERMANENT_CODES else "permanent"
    if not policy.enabled:
        return "no_retries"
    if attempt > policy.max_retries:
        return "retries_exhausted"
    return "max_age"


async def conclude(firing: dict[str, Any], result: Result) -> None:
    """What an attempt's ``result`` calls for: history, and a retry or the dead letter.

    Returns once the broker has what it wrote, so the caller may then
    acknowledge the firing. Any error on the way (a firing this worker cannot
    read back, a policy it cannot apply) sends the firing to ``firings-dead``
    with the error as its reason, rather than leave its record unacknowledged
    for good; only a dead letter the broker refuses is raised.
    """
    try:
        await _conclude(firing, result)
    except Exception as exc:
        if isinstance(exc, ProduceFailed):
            raise
        log.exception("cannot conclude the delivery of %s", firing.get("firing_id"))
        why = f"cannot conclude the delivery: {type(exc).__name__}: {exc}"
        await _bury(firing, result, why, "unconcludable")


class ProduceFailed(Exception):
    """The broker did not take a retry, dead-letter or history record."""


async def _produce(topic: Any, key: bytes, body: dict[str, Any]) -> None:
    """Send one record and wait until the broker has it."""
    await produce_raw(topic, key, json.dumps(body).encode())


async def produce_raw(topic: Any, key: bytes | None, value: bytes) -> None:
    """Send one record as it is and wait until the broker has it."""
    try:
        await (await topic.send(key=key, value=value))
    except Exception as exc:
        raise ProduceFailed(f"{name_of(topic)}: {type(exc).__name__}: {exc}") from exc


async def _conclude(firing: dict[str, Any], result: Result) -> None:
    task = firing["task"]
    sid = firing["schedule_id"]
    number = int(firing["attempt"])
    keep_history = bool(task.get("history_check"))
    common = {
        "firing_id": firing["firing_id"],
        "scheduled_for": firing["scheduled_for"],
        "attempt": number,
    }
    kind = task_type(task)
    if result.ok:
        _delivered(firing, number, kind)
        if keep_history:
            await history.record(sid, "succeeded", **common)
        return
    if result.deferred:
        # Never tried (its target had too much in flight): put off on the retry
        # topic whatever the policy, as the same attempt, never dead-lettered.
        deferrals = int(firing.get("deferrals") or 0)
        wait = min(DEFER_S * 2 ** min(deferrals, 16), DEFER_MAX_S)
        later = clock.now() + timedelta(seconds=wait)
        body = {
            **{k: v for k, v in firing.items() if k not in _CONCLUSION_FIELDS},
            "deferrals": deferrals + 1,
            "not_before": format_utc(later, micros=True),
            "last_error": shorten(result.error),
            "errors": firing.get("errors", []),
        }
        await _produce(retry_topic, sid.encode(), body)
        _concluded[(kind, "deferred")].inc()
        return
    _concluded[(kind, result.outcome.value)].inc()
    now = clock.now()
    errors = kept_errors([*firing.get("errors", []), attempt_error(number, now, result)])
    policy = RetryPolicy.of(Task.model_validate(task))
    decision = policy.decide(number, result, parse_utc(firing["scheduled_for"]), now)
    if keep_history:
        await history.record(
            sid, "failed", error=shorten(result.error), outcome=result.outcome.value, **common
        )
    base = {k: v for k, v in firing.items() if k not in _CONCLUSION_FIELDS}
    if decision.verdict is Verdict.RETRY:
        assert decision.not_before is not None
        body = {
            **base,
            "attempt": number + 1,
            "not_before": format_utc(decision.not_before, micros=True),
            "last_error": shorten(result.error),
            "errors": errors,
        }
        await _produce(retry_topic, sid.encode(), body)
        _retried.inc()
        if keep_history:
            await history.record(sid, "retried", not_before=body["not_before"], **common)
        return
    body = {**base, "errors": errors, "reason": decision.reason, "dead_at": format_utc(now)}
    # A dead letter is read by people and tools: no secret given literally in it.
    body["task"] = secrets.masked_task(body.get("task"))
    await _produce(dead_topic, sid.encode(), body)
    _buried[dead_reason(result, policy, number)].inc()
    if keep_history:
        await history.record(
            sid, "dead", reason=decision.reason, error=shorten(result.error), **common
        )


#: What a retry or dead-letter record sets itself, dropped from the firing it copies.
_CONCLUSION_FIELDS = ("not_before", "last_error", "errors", "reason", "dead_at", "deferrals")


async def _bury(firing: dict[str, Any], result: Result | None, reason: str, kind: str) -> None:
    """Send ``firing`` to ``firings-dead`` with ``reason``, as far as it can be read.

    ``kind``: the dead letter's class for the counter (``DEAD_REASONS``).
    """
    errors = firing.get("errors")
    if not isinstance(errors, list):
        errors = []
    if result is not None and not result.ok:
        attempt = firing.get("attempt")
        number = attempt if isinstance(attempt, int) else 0
        errors = [*errors, attempt_error(number, clock.now(), result)]
    body = {
        **{k: v for k, v in firing.items() if k not in _CONCLUSION_FIELDS},
        "errors": kept_errors(errors),
        "reason": shorten(reason),
        "dead_at": format_utc(clock.now()),
    }
    if isinstance(body.get("task"), dict):
        # As in every dead letter: no secret given literally in it.
        body["task"] = secrets.masked_task(body["task"])
    key = firing.get("schedule_id")
    await _produce(dead_topic, key.encode() if isinstance(key, str) else b"", body)
    _buried[kind].inc()


#: A held firing: its id, its record's message (its bytes, and what is
#: acknowledged), whether its task keeps history, its Kafka record if any, and
#: the instant (µs) it is delivered at, for its lateness.
#:
#: Not the parsed firing nor the event: at 2,000 firings a second, ~10,000 wait
#: at once, and every object each keeps alive is walked again by each garbage
#: collection that they survive. Holding the firing's dicts, its event and a
#: list of headers (~16 tracked objects a firing), collections grew long
#: enough that late deliveries clustered behind them (measured in bench/, see
#: bench/RESULTS.md). This keeps four: the tuple, the message,
#: Faust's weak reference to it, and the Kafka record (the instant is an int,
#: which the collector does not track); the rest is parsed again from the
#: message's bytes when it is needed.
Held = tuple[str, Any, bool, KafkaRecord | None, int]


def _ack(message: Any) -> None:
    """Acknowledge a firing's record by its message, as ``stream.ack(event)`` would.

    (That is: the message's last reference marks its offset safe to commit,
    and the sensors hear of it. The event adds nothing a held firing needs.)
    A record of the executor's own path (``scheduler.streams.executor.Fetched``)
    settles its offset the same way, and no sensor counts it.
    """
    if message.ack(app.consumer):
        app.sensors.on_message_out(message.tp, message.offset, message)


def _firing(message: Any) -> dict[str, Any]:
    """The firing a held message carries, parsed again."""
    return json.loads(message.value)  # type: ignore[no-any-return]


class _Held:
    """Firings written ahead of their instant, waiting here until it comes.

    One task sleeps until the earliest instant and then starts every firing
    due, so a burst of 10,000 firings for the same second wakes it once.
    Each held firing's record stays unacknowledged until it is delivered or
    revoked, so a worker that dies meanwhile loses none of them: the
    partition's next owner reads them again (and any revocation after them).
    """

    def __init__(self) -> None:
        #: The instants held firings wait for, each once, and the firings of each.
        #: A crowd due in the same second is then one entry here, not one each.
        self._instants: list[int] = []
        self._at: dict[int, list[str]] = {}
        self._by_id: dict[str, Held] = {}
        #: Per instant, its Kafka firings' batches appended ahead of it, for
        #: crowds of ``PREBUILD_MIN`` and more.
        self._prebuilt: dict[int, _Appended] = {}
        #: Instants with ``PREBUILD_MIN`` firings or more held for them, not yet due.
        self._crowds: set[int] = set()
        self._alarm: asyncio.Future[None] | None = None
        self._task: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    def hold(self, due_us: int, firing: dict[str, Any], message: Any) -> None:
        firing_id = firing["firing_id"]
        # A Kafka firing's record is built now, so that its instant costs only the send.
        task = firing["task"]
        record = None
        if task["type"] == "kafka":
            try:
                record = kafka_record(firing)
            except Exception:  # delivered one by one, where the error is reported
                log.exception("cannot build the Kafka record of %s", firing_id)
        self.keep(due_us, firing_id, bool(task.get("history_check")), record, message)

    def keep(
        self,
        due_us: int,
        firing_id: str,
        keeps_history: bool,
        record: KafkaRecord | None,
        message: Any,
    ) -> None:
        """Hold a firing by what :meth:`hold` reads off it (or the compiled lane does)."""
        if firing_id in self._by_id:
            # The same firing again (written twice after a crash): one is enough.
            _ack(message)
            return
        self._by_id[firing_id] = (firing_id, message, keeps_history, record, due_us)
        waiting = self._at.get(due_us)
        if waiting is not None:
            waiting.append(firing_id)
            if len(waiting) == PREBUILD_MIN:
                self._crowds.add(due_us)
                _ring(self._alarm)  # its batches may be due to be appended now
            elif (appended := self._prebuilt.get(due_us)) is not None:
                # The first held since the crowd's appending, or a crowd of
                # them: a top-up is due (``_lead``), and the release may be
                # sleeping until the instant.
                since = len(waiting) - appended.upto
                if since == PREBUILD_MIN or (since == 1 and not appended.topped):
                    _ring(self._alarm)
        else:
            self._at[due_us] = [firing_id]
            earliest = self._instants[0] if self._instants else None
            heapq.heappush(self._instants, due_us)
            if earliest is not None and due_us < earliest:
                _ring(self._alarm)  # sleeping past this one: look again
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._release())

    def revoke(self, firing_ids: list[str]) -> int:
        """Drop the held firings named; their records are settled (acknowledged)."""
        dropped = 0
        for firing_id in firing_ids:
            held = self._by_id.pop(firing_id, None)
            if held is not None:
                self._dropped(held)
                _ack(held[1])
                dropped += 1
        return dropped

    def forget(self, partitions: set[Any]) -> None:
        """Drop the held firings of revoked partitions, unacknowledged.

        Their partitions' next owner reads them again.
        """
        for firing_id, held in list(self._by_id.items()):
            if held[1].tp in partitions:
                del self._by_id[firing_id]
                self._dropped(held)

    def _dropped(self, held: Held) -> None:
        """A held firing is gone before its instant: its crowd's slices no longer hold."""
        appended = self._prebuilt.get(held[4])
        if appended is not None:
            appended.intact = False

    async def _release(self) -> None:
        loop = asyncio.get_running_loop()
        while self._by_id and self._instants:
            now_us = clock.now_us()
            first = self._instants[0]
            wait_us = first - now_us
            if wait_us > 0:
                # Any crowd, not only the next instant's: an instant before it
                # (any other firing, under a steady load) would else have
                # held back its appending until that instant had come.
                pending = {
                    instant: instant - now_us - lead
                    for instant in self._crowds
                    if (lead := self._lead(instant)) is not None
                }
                ready = [instant for instant, left in pending.items() if left <= 0]
                if ready:
                    await self._prebuild(min(ready))
                    continue
                if pending:
                    # A crowd may grow meanwhile, and its lead with it.
                    wait_us = min(wait_us, PREBUILD_LOOK_US, *pending.values())
                # Never early: sleep until the wall clock reaches the instant
                # (and look again: a sleep may end a little before it).
                self._alarm = loop.create_future()
                alarm = loop.call_later(wait_us / 1_000_000, _ring, self._alarm)
                try:
                    await self._alarm
                finally:
                    alarm.cancel()
                    self._alarm = None
                continue
            # Everything due by now goes together: at thousands of firings a
            # second, instants a fraction of a millisecond apart share a turn.
            instants: list[tuple[int, list[str], _Appended | None]] = []
            queued: list[Slice] = []
            while self._instants and self._instants[0] <= now_us:
                instant = heapq.heappop(self._instants)
                self._crowds.discard(instant)
                appended = self._prebuilt.pop(instant, None)
                if appended is not None and appended.intact:
                    # Queued before any other work of the instant: what
                    # follows costs per firing, and the sender cannot take
                    # the first batch until this task gives up the loop.
                    for members, built in appended.slices:
                        _queue_ahead(built)
                        queued.append((members, built))
                instants.append((instant, self._at.pop(instant), appended))
            if queued:
                # The sender's wake-up, its drain and its request are a turn
                # of the loop each: taken now, the first request goes out
                # before the per-firing work below holds the loop. Whatever
                # is revoked or forgotten meanwhile is sent all the same.
                for _ in range(SENDER_TURNS):
                    await asyncio.sleep(0)
            due: list[Held] = []
            unsure: list[Slice] = []
            for instant, firing_ids, appended in instants:
                rest: Iterable[str] = firing_ids
                if appended is not None and appended.intact:
                    for members, _ in appended.slices:
                        for member in members:
                            # Not it if revoked (and held again) during the
                            # sender's turns: that one goes on its own.
                            if self._by_id.get(member[0]) is member:
                                del self._by_id[member[0]]
                    # Those held then without a record, and those held since.
                    rest = chain(appended.plain, firing_ids[appended.upto :])
                elif appended is not None:
                    unsure.extend(appended.slices)
                for firing_id in rest:
                    held = self._by_id.get(firing_id)
                    # Else revoked, forgotten, or held again for another instant.
                    if held is not None and held[4] == instant:
                        del self._by_id[firing_id]
                        due.append(held)
            await _start_many(due, unsure, queued)
        self._instants.clear()
        self._at.clear()
        self._prebuilt.clear()
        self._crowds.clear()

    def _lead(self, instant: int) -> int | None:
        """How long before ``instant`` its crowd's batches are appended (µs); None: not again.

        Firings held for it after that are appended in turn (a top-up): by
        a crowd's lead if they are a crowd themselves, else ``TOPUP_AHEAD_US``
        (and ``PREBUILD_EACH_US`` a firing) before the instant.
        """
        held = len(self._at.get(instant, ()))
        appended = self._prebuilt.get(instant)
        if appended is None:
            return PREBUILD_AHEAD_US + PREBUILD_EACH_US * held
        since = held - appended.upto
        if not appended.intact or since <= 0:
            return None
        if since >= PREBUILD_MIN:
            return PREBUILD_AHEAD_US + PREBUILD_EACH_US * since
        if appended.topped:
            return None  # one small top-up: after it, each would be a slice of a few
        return TOPUP_AHEAD_US + PREBUILD_EACH_US * since

    async def _prebuild(self, instant: int) -> None:
        """Append the batches of a crowd of Kafka firings due at ``instant`` (see ``PREBUILD_MIN``).

        Called again for those held since (a top-up, ``_lead``). A firing
        held after the last, or revoked before the instant, is not lost:
        whatever a slice no longer matches is sent the ordinary way.
        """
        firing_ids = self._at.get(instant, [])
        appended = self._prebuilt.get(instant)
        start = 0 if appended is None else appended.upto
        crowd: list[Held] = []
        records: list[KafkaRecord] = []
        plain: list[str] = []
        seen: set[str] = set()
        for firing_id in islice(firing_ids, start, None):
            held = self._by_id.get(firing_id)
            # Not held: revoked. Held for another instant, or seen: held
            # again after a revocation.
            if held is None or held[4] != instant or firing_id in seen:
                continue
            seen.add(firing_id)
            if held[3] is not None:
                crowd.append(held)
                records.append(held[3])
            else:
                plain.append(firing_id)
        if appended is None:
            appended = self._prebuilt[instant] = _Appended([], len(firing_ids), plain)
            if len(crowd) < PREBUILD_MIN:
                appended.plain = [held[0] for held in crowd] + plain
                return
        else:  # a top-up: those held since the last appending
            appended.upto = len(firing_ids)
            appended.plain.extend(plain)
            appended.topped = appended.topped or len(crowd) + len(plain) < PREBUILD_MIN
        for first in range(0, len(crowd), KAFKA_BATCH):
            part = crowd[first : first + KAFKA_BATCH]
            try:
                built = await executors.prebuild_kafka(
                    records[first : first + KAFKA_BATCH], instant // 1000
                )
            except Exception:
                log.exception(
                    "cannot prebuild %d Kafka firings; sending them at the instant", len(part)
                )
                appended.plain.extend(held[0] for held in part)
                continue
            appended.slices.append((part, built))
            _prebuilt_count.inc(len(part))


#: Firings of one crowd and the batches appended for them.
Slice = tuple[list[Held], list[Prebuilt]]


@dataclass(slots=True)
class _Appended:
    """What was appended ahead of an instant for its crowd (``_Held._prebuild``)."""

    slices: list[Slice]
    upto: int
    """How many firing ids the instant had then: those after it go the usual way."""
    plain: list[str]
    """Of those, the firings not in a slice: held without a record, of a crowd too small
    or of a slice that could not be appended."""
    intact: bool = True
    """No firing held for the instant was dropped since (until the instant's release
    takes this out), so every slice still holds."""
    topped: bool = False
    """The small top-up was made: firings held since go the usual way, unless a crowd."""


def _queue_ahead(built: list[Prebuilt]) -> None:
    for one in built:
        # A refusal is met again, and reported, when the slice is settled.
        with contextlib.suppress(Exception):
            queue_prebuilt(one)


def _ring(alarm: asyncio.Future[None] | None) -> None:
    if alarm is not None and not alarm.done():
        alarm.set_result(None)


_held = _Held()
metrics.gauge("scheduler_firings_held", lambda: len(_held), "firings waiting for their instant")


async def _start(firing: dict[str, Any], message: Any) -> None:
    await slots().acquire()
    running = asyncio.ensure_future(_settle(firing, message))
    _running.add(running)
    running.add_done_callback(_running.discard)


#: Kafka deliveries due at the same instant are produced together, this many
#: to one delivery slot. They share the producer's batches, and aiokafka sends
#: one batch per partition per round trip: a crowd cut into small slices
#: waits on a round trip per slice, one after another, and goes out late;
#: in one slice it takes a few.
KAFKA_BATCH = 50_000
#: A batch's results are settled (counted, acknowledged) with a turn of the
#: loop every this many: settled in one go, a crowd's first slice held the
#: loop while the requests of its next slice waited to be written, and that
#: slice went out late (figures in the commit that added this).
SETTLE_YIELD = 1_000


#: From this many Kafka firings due at one instant on, their batches are
#: appended ahead of it (``_Held._prebuild``), ``PREBUILD_AHEAD_US`` early and
#: ``PREBUILD_EACH_US`` more for each firing held for it: appended at the
#: instant, a big crowd's first batch could not leave until all of its
#: records were appended, so every delivery of it started late. The lead
#: grows with the crowd because appending costs per firing: with a fixed
#: second, a crowd of 100,000 was still being appended at its instant and
#: went out late as a whole (the figures are in the commit that made this
#: so, 90170e8).
PREBUILD_MIN = 1_000
PREBUILD_AHEAD_US = 1_000_000
PREBUILD_EACH_US = 25
#: Firings held for a crowd's instant after its batches were appended are
#: appended too, this long before it (µs) and ``PREBUILD_EACH_US`` more for
#: each: sent the usual way at the instant, they went after the crowd.
TOPUP_AHEAD_US = 100_000
#: Turns of the loop the release gives the producer's sender once a crowd's
#: batches are queued, before its own per-firing work.
SENDER_TURNS = 3
#: While a crowd waits to be appended (or topped up), the release looks again
#: this often (µs): the crowd's lead grows with each firing held for it.
PREBUILD_LOOK_US = 250_000


async def _start_many(
    due: list[Held], prebuilt: list[Slice] | None = None, queued: list[Slice] | None = None
) -> None:
    """Start the firings due at one instant: Kafka ones in batches, the others one by one.

    ``queued``: slices whose batches were queued on their producers already
    (their sending is not held back by the slots, only their settling);
    ``due`` holds none of their firings. A ``prebuilt`` slice goes as built
    if every firing in it is still due here as it was held then (none
    revoked, forgotten or held again since); else its firings go with the
    rest.
    """
    for members, built in queued or ():
        await slots().acquire()
        _spawn(_settle_kafka(members, built))
    if prebuilt:
        by_id = {held[0]: held for held in due}
        for members, built in prebuilt:
            if not all(by_id.get(held[0]) is held for held in members):
                continue
            for held in members:
                del by_id[held[0]]
            await slots().acquire()
            _spawn(_settle_kafka(members, built))
        due = list(by_id.values())
    kafka: list[Held] = []
    for held in due:
        if held[3] is not None:
            kafka.append(held)
        else:
            await _start(_firing(held[1]), held[1])
    for start in range(0, len(kafka), KAFKA_BATCH):
        await slots().acquire()
        _spawn(_settle_kafka(kafka[start : start + KAFKA_BATCH]))


def _spawn(work: Awaitable[None]) -> None:
    running = asyncio.ensure_future(work)
    _running.add(running)
    running.add_done_callback(_running.discard)


async def _settle_kafka(batch: list[Held], prebuilt: list[Prebuilt] | None = None) -> None:
    try:
        _in_flight.inc(len(batch))
        records = [held[3] for held in batch if held[3] is not None]
        results = await executors.deliver_kafka(records, prebuilt)
    except Exception as exc:  # a fault of ours: each counts as a failed attempt
        log.exception("a batch of %d Kafka deliveries failed unexpectedly", len(batch))
        failed = Result(Outcome.RETRYABLE, shorten(f"{type(exc).__name__}: {exc}"))
        results = [failed] * len(batch)
    finally:
        slots().release()
    # When the batch's results came back: each success's lateness is from here.
    now_us = clock.now_us()
    delivered = 0
    try:
        for count, ((firing_id, message, keeps_history, _, due_us), result) in enumerate(
            zip(batch, results, strict=True), start=1
        ):
            if count % SETTLE_YIELD == 0:
                await asyncio.sleep(0)
            try:
                if result.ok and not keeps_history:
                    # All conclude would do, without parsing the firing again
                    # (a firing from ``firings`` is always attempt 1).
                    _kafka_late.observe((now_us - due_us) / 1_000_000)
                    delivered += 1
                    log.debug("delivered %s attempt 1", firing_id)
                else:
                    await conclude(_firing(message), result)
            except Exception as exc:
                stuck(firing_id, exc)
                continue
            _ack(message)
    finally:
        _kafka_delivered.inc(delivered)  # once for the batch, not once a firing


async def bury_unreadable(stream: Any, event: Any, exc: Exception) -> None:
    """A record no worker can read goes to ``firings-dead`` as text, then is acknowledged."""
    if await _buried_unreadable(event.value, event.message, exc):
        await stream.ack(event)


async def _buried_unreadable(value: bytes | None, message: Any, exc: Exception) -> bool:
    """Whether the broker took ``message``'s record as a dead letter (else the worker stops)."""
    text = bytes(value or b"").decode("utf-8", "replace")
    where = f"{message.tp.topic}[{message.tp.partition}]@{message.offset}"
    try:
        await _bury(
            {"record": shorten(text), "source": where},
            None,
            f"unreadable record at {where}: {type(exc).__name__}: {exc}",
            "unreadable",
        )
    except Exception as failure:
        stuck(where, failure)
        return False
    return True


def backlog() -> int:
    """Firings fetched from ``firings`` and not yet taken by the executor."""
    queued = _fetched.qsize() if _fetched is not None else 0
    return queued + sum(count() for count in fetched_elsewhere)


#: How many firings wait for the executor's own path (``scheduler.streams.executor``).
fetched_elsewhere: list[Callable[[], int]] = []


#: The most queued firings the executor takes in one turn of the loop.
TAKE_QUEUED = 100


@app.agent(firings_topic, name="deliver-firings")
async def deliver_firings(stream: Any) -> Any:
    """Take what reaches Faust's stream of ``firings``.

    Nothing does while ``scheduler.streams.executor`` diverts the topic
    (it reads the records itself and hands each to :func:`take`); the agent
    stays subscribed so that Faust assigns the topic's partitions.
    """
    global _fetched
    _fetched = getattr(stream.channel, "queue", None)
    async for event in stream.noack().events():
        await take(event.value, event.message)
        # And what else is queued, without a turn of the loop each
        # (scheduler.patches.batching.take_queued).
        for queued in take_queued(stream, TAKE_QUEUED):
            await take(queued.value, queued.message)


async def take(value: bytes | None, message: Any) -> None:
    """Take one record of ``firings``: hold it, start it, or apply the revocation it is.

    ``message`` is what is acknowledged once the record is settled
    (:func:`_ack`): its ``tp`` and ``offset`` say where it came from.
    """
    gcpace.pace()
    read = fastlane.held(value) if value is not None else None
    if read is not None:
        firing_id, due_us, kind, keeps_history, produced = read
        if kind == "kafka" or due_us > clock.now_us():
            record = KafkaRecord(*produced) if produced is not None else None
            _held.keep(due_us, firing_id, keeps_history, record, message)
            return
    try:
        firing = json.loads(value)  # type: ignore[arg-type]
        if not isinstance(firing, dict):
            raise TypeError(f"a firing is a JSON object, not {type(firing).__name__}")
        if "revoked" in firing:
            if not isinstance(firing["revoked"], list):
                raise TypeError("revoked: a list of firing ids")
        else:
            if not isinstance(firing.get("firing_id"), str):
                raise TypeError("firing_id: a string")
            parse_utc(firing["scheduled_for"])
            if "deliver_at" in firing:
                parse_utc(firing["deliver_at"])
            firing["task"]["type"]
    except Exception as exc:
        if await _buried_unreadable(value, message, exc):
            _ack(message)
        return
    revoked = firing.get("revoked")
    if revoked is not None:
        _revocations.inc(_held.revoke(revoked))
        _ack(message)
        return
    # A jittered firing waits for its own delivery time, after its instant.
    due_us = clock.to_us(parse_utc(firing.get("deliver_at") or firing["scheduled_for"]))
    if due_us > clock.now_us() or (firing.get("task") or {}).get("type") == "kafka":
        # A Kafka firing already due goes the same way, at once: the release
        # sends all those taken meanwhile together, in batches. One by one,
        # each was a task, a timeout and a send of its own, a noticeable share
        # of the worker's CPU when a big burst is fired late (measured in bench/).
        _held.hold(due_us, firing, message)
        return
    await _start(firing, message)


async def _settle(firing: dict[str, Any], message: Any) -> None:
    slot = Slot(slots())  # acquired by _start
    try:
        await attempt(firing, slot)
    except Exception as exc:
        stuck(firing.get("firing_id"), exc)
        return
    finally:
        slot.release()
    _ack(message)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _drop_held(sender: Any, revoked: Any, **kwargs: Any) -> None:
    """The partition's next owner re-reads these held firings.

    Keeping them here would deliver them twice.
    """
    _held.forget(set(revoked))
