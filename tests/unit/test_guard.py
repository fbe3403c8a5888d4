"""Per-target gates: the in-flight limit, the waiting bound and the circuit breaker."""

from __future__ import annotations

import asyncio

import pytest

from scheduler.targets.executors import target_of
from scheduler.targets.guard import Gates, Limits, Refused


async def test_a_target_takes_its_limit_then_its_queue_then_refuses() -> None:
    gate = Gates(Limits(limit=2, queue=1)).of("http://a")
    assert await gate.enter() is False
    assert await gate.enter() is False
    waiting = asyncio.ensure_future(gate.enter())
    await asyncio.sleep(0)
    assert not waiting.done() and gate.waiting == 1
    with pytest.raises(Refused, match="target busy: 2 deliveries in flight and 1 waiting"):
        await gate.enter()
    await gate.leave(probe=False, down=False)
    assert await waiting is False
    assert gate.in_flight == 2 and gate.waiting == 0


async def test_the_breaker_opens_after_failures_in_a_row_and_a_probe_closes_it() -> None:
    gate = Gates(Limits(limit=10, queue=0, trip_after=3, open_s=0.2)).of("kafka:x")
    for _ in range(2):
        await gate.enter()
        await gate.leave(probe=False, down=True)
    await gate.enter()
    await gate.leave(probe=False, down=False)  # an answer resets the count
    for _ in range(3):
        await gate.enter()
        await gate.leave(probe=False, down=True)
    with pytest.raises(Refused, match="circuit open after 3 failures"):
        await gate.enter()
    await asyncio.sleep(0.25)
    assert await gate.enter() is True  # the probe
    with pytest.raises(Refused, match="circuit open"):
        await gate.enter()  # one probe at a time
    await gate.leave(probe=True, down=True)  # failed: open again
    with pytest.raises(Refused, match="circuit open"):
        await gate.enter()
    await asyncio.sleep(0.25)
    assert await gate.enter() is True
    await gate.leave(probe=True, down=False)  # answered: closed
    assert await gate.enter() is False


def test_idle_gates_beyond_the_cap_are_dropped_busy_ones_kept() -> None:
    gates = Gates(Limits(), cap=3)
    busy = gates.of("busy")
    busy.in_flight = 1
    for name in ("a", "b", "c", "d"):
        gates.of(name)
    assert len(gates) <= 3 + 1
    assert gates.of("busy") is busy


def test_targets_are_origins_clusters_and_servers() -> None:
    rest = {"type": "rest", "connection": {"host": "https://api.example.com:8443/hook?x=1"}}
    assert target_of(rest) == "https://api.example.com:8443"
    kafka = {"type": "kafka", "connection": {"host": "b1:9092,b2:9092", "topic": "t"}}
    assert target_of(kafka) == "kafka:b1:9092,b2:9092"


async def test_a_batch_does_not_wait_and_a_cancelled_delivery_counts_for_nothing() -> None:
    gate = Gates(Limits(limit=1, queue=5, trip_after=1, open_s=60)).of("kafka:y")
    await gate.enter()
    with pytest.raises(Refused, match="target busy") as refused:
        await gate.enter(wait=False)
    assert refused.value.busy
    await gate.leave(probe=False, down=None)  # cancelled: neither a failure nor a success
    assert gate.failures == 0 and not gate.open_until
    await gate.enter()
    await gate.leave(probe=False, down=True)
    with pytest.raises(Refused, match="circuit open") as opened:
        await gate.enter()
    assert not opened.value.busy


async def test_a_delivery_waiting_at_a_gate_gives_its_worker_slot_back() -> None:
    """Deliveries queued for one busy target must not hold the slots others need."""
    import asyncio as aio

    from scheduler.targets.executors import Slot

    worker_slots = aio.Semaphore(2)
    gate = Gates(Limits(limit=1, queue=4)).of("http://busy")
    await gate.enter()  # the busy target's one delivery in flight
    await worker_slots.acquire()
    slot = Slot(worker_slots)
    waiting = aio.ensure_future(gate.enter(before_wait=slot.give_back))
    await aio.sleep(0)
    assert not slot.held and not worker_slots.locked()  # given back while waiting
    await worker_slots.acquire()  # ...so another target's delivery gets it
    worker_slots.release()
    await gate.leave(probe=False, down=False)
    await waiting
    await slot.take()
    assert slot.held
    slot.release()
    slot.release()  # idempotent: released once
    assert worker_slots._value == 2
