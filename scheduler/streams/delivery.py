"""Executor agents: deliver ``firings``, retry via ``firings-retry``, give up to ``firings-dead``.

Deliveries run concurrently, at most ``SCHEDULER_MAX_IN_FLIGHT`` per worker.
Each source record is acknowledged only when its delivery is settled
(succeeded, or handed on to the retry or dead topic), so a worker killed
mid-delivery leaves the record uncommitted and whoever owns the partition
next delivers it again (same ``Idempotency-Key``).

A retry waits in memory until its ``not_before``, with its record
unacknowledged: waiting costs a sleeping task, not a consumer, so a long
wait for one schedule never holds back another's firings, and a restart
re-reads every retry that was not settled. A retry is never sent before its
``not_before``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from typing import Any

from scheduler import clock, metrics
from scheduler.app import app, settings
from scheduler.delivery import RetryPolicy, Verdict, attempt_error
from scheduler.executors import Executors
from scheduler.models import Task
from scheduler.streams import history
from scheduler.timefmt import format_utc, parse_utc
from scheduler.topics import dead_topic, firings_topic, retry_topic

log = logging.getLogger(__name__)

executors = Executors(max_connections=settings.max_in_flight)
_slots: asyncio.Semaphore | None = None
_running: set[asyncio.Future[None]] = set()
_waiting: dict[Any, set[asyncio.Future[None]]] = defaultdict(set)

_succeeded = metrics.counter("scheduler_deliveries_succeeded_total", "deliveries that succeeded")
_failed = metrics.counter("scheduler_deliveries_failed_total", "delivery attempts that failed")
_retried = metrics.counter("scheduler_deliveries_retried_total", "failures sent to firings-retry")
_dead = metrics.counter("scheduler_deliveries_dead_total", "firings sent to firings-dead")
_in_flight = metrics.counter("scheduler_deliveries_started_total", "delivery attempts started")


def slots() -> asyncio.Semaphore:
    global _slots
    if _slots is None:
        _slots = asyncio.Semaphore(settings.max_in_flight)
    return _slots


async def attempt(firing: dict[str, Any]) -> None:
    """One delivery attempt, then whatever its outcome calls for."""
    _in_flight.inc()
    task = firing["task"]
    sid = firing["schedule_id"]
    number = int(firing["attempt"])
    result = await executors.deliver(firing)
    keep_history = bool(task.get("history_check"))
    common = {
        "firing_id": firing["firing_id"],
        "scheduled_for": firing["scheduled_for"],
        "attempt": number,
    }
    if result.ok:
        _succeeded.inc()
        if keep_history:
            await history.record(sid, "succeeded", **common)
        log.debug("delivered %s attempt %d", firing["firing_id"], number)
        return
    _failed.inc()
    now = clock.now()
    errors = [*firing.get("errors", []), attempt_error(number, now, result)]
    policy = RetryPolicy.of(Task.model_validate(task))
    decision = policy.decide(number, result, parse_utc(firing["scheduled_for"]), now)
    if keep_history:
        await history.record(
            sid, "failed", error=result.error, outcome=result.outcome.value, **common
        )
    base = {k: v for k, v in firing.items() if k not in ("not_before", "last_error", "errors")}
    if decision.verdict is Verdict.RETRY:
        assert decision.not_before is not None
        body = {
            **base,
            "attempt": number + 1,
            "not_before": format_utc(decision.not_before, micros=True),
            "last_error": result.error,
            "errors": errors,
        }
        await retry_topic.send(key=sid.encode(), value=json.dumps(body).encode())
        _retried.inc()
        if keep_history:
            await history.record(sid, "retried", not_before=body["not_before"], **common)
        return
    body = {**base, "errors": errors, "reason": decision.reason, "dead_at": format_utc(now)}
    await dead_topic.send(key=sid.encode(), value=json.dumps(body).encode())
    _dead.inc()
    if keep_history:
        await history.record(sid, "dead", reason=decision.reason, error=result.error, **common)


@app.agent(firings_topic, name="deliver-firings")
async def deliver_firings(stream: Any) -> Any:
    async for event in stream.noack().events():
        firing = json.loads(event.value)
        await slots().acquire()
        running = asyncio.ensure_future(_settle(firing, stream, event))
        _running.add(running)
        running.add_done_callback(_running.discard)


async def _settle(firing: dict[str, Any], stream: Any, event: Any) -> None:
    try:
        await attempt(firing)
    except Exception:
        log.exception("delivery of %s failed unexpectedly", firing.get("firing_id"))
        return  # left unacknowledged: redelivered after the next rebalance or restart
    finally:
        slots().release()
    await stream.ack(event)


@app.agent(retry_topic, name="retry-firings")
async def retry_firings(stream: Any) -> Any:
    async for event in stream.noack().events():
        record = json.loads(event.value)
        tp = event.message.tp
        waiting = asyncio.ensure_future(_retry_when_due(record, stream, event))
        _waiting[tp].add(waiting)
        waiting.add_done_callback(_waiting[tp].discard)


async def _retry_when_due(record: dict[str, Any], stream: Any, event: Any) -> None:
    not_before = parse_utc(record["not_before"])
    while (left := (not_before - clock.now()).total_seconds()) > 0:
        await asyncio.sleep(left + 0.001)
    async with slots():
        try:
            await attempt(record)
        except Exception:
            log.exception("retry of %s failed unexpectedly", record.get("firing_id"))
            return
    await stream.ack(event)


@app.on_partitions_revoked.connect  # type: ignore[arg-type]
async def _drop_waiting_retries(sender: Any, revoked: Any, **kwargs: Any) -> None:
    """The partition's next owner re-reads these retries; waiting here would double them."""
    for tp in revoked:
        for waiting in list(_waiting.pop(tp, ())):
            waiting.cancel()
