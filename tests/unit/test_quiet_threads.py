"""Agent supervisors and the consumer thread without their idle wake-ups (scheduler.patches)."""

from __future__ import annotations

import asyncio

import pytest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode import Service

from scheduler.app import app
from scheduler.patches import supervisor as supervisor_module
from scheduler.patches.consumer_thread import QuietConsumerThread
from scheduler.patches.supervisor import PatientSupervisor


class _Counted(Service):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.starts = 0

    async def on_start(self) -> None:
        self.starts += 1


async def _until(check: object, limit_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + limit_s
    while asyncio.get_running_loop().time() < deadline:
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return False


def test_the_agents_get_the_patient_supervisor() -> None:
    assert app.conf.agent_supervisor is PatientSupervisor


def test_a_crashed_service_is_restarted_at_once_though_the_timed_look_is_a_minute_away() -> None:
    async def run() -> tuple[int, bool]:
        service = _Counted()
        supervisor = PatientSupervisor(max_restarts=100.0, over=1.0)
        supervisor.add(service)
        await supervisor.start()
        try:
            await service.crash(RuntimeError("boom"))  # wakes its supervisor
            restarted = await _until(lambda: service.starts == 2 and not service.crashed, 2.0)
            return service.starts, restarted
        finally:
            await supervisor.stop()

    assert supervisor_module.SUPERVISOR_LOOK_S >= 60
    starts, restarted = asyncio.run(run())
    assert restarted, f"started {starts} times"


def test_the_timed_look_starts_a_service_nobody_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "SUPERVISOR_LOOK_S", 0.05)

    async def run() -> bool:
        supervisor = PatientSupervisor(max_restarts=100.0, over=1.0)
        await supervisor.start()
        late = _Counted()
        supervisor.add(late)  # added after the start: only the look starts it
        try:
            return await _until(lambda: late.starts == 1, 2.0)
        finally:
            await supervisor.stop()

    assert asyncio.run(run())


def test_the_consumer_thread_has_no_keepalives() -> None:
    consumer = app.consumer
    assert isinstance(consumer._thread, QuietConsumerThread)
    assert isinstance(consumer._thread, AIOKafkaConsumerThread)

    async def finished_at_once(thread: type) -> bool:
        first = asyncio.ensure_future(thread._thread_keepalive(consumer._thread))
        second = asyncio.ensure_future(thread._keepalive2(consumer._thread))
        await asyncio.sleep(0.05)
        done = first.done() and second.done()
        first.cancel()
        second.cancel()
        return done

    assert asyncio.run(finished_at_once(QuietConsumerThread)) is True
