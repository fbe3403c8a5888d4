"""Faust's statistics sensor, without its sampler or per-record counts (QuietMonitor)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.sensors import Monitor
from faust.types import TP

from scheduler.app import app
from scheduler.patches.monitor import QuietMonitor


def test_the_app_uses_the_quiet_monitor() -> None:
    assert isinstance(app.monitor, QuietMonitor)
    assert isinstance(app.monitor, Monitor)  # Faust's consumer calls into its counters


def test_its_sampler_returns_at_once_where_faust_s_loops_every_second() -> None:
    async def sampled(monitor: Monitor) -> bool:
        sampler = asyncio.ensure_future(monitor._sampler(monitor))
        await asyncio.sleep(0.05)
        done = sampler.done()
        sampler.cancel()
        return done

    assert asyncio.run(sampled(QuietMonitor())) is True
    assert asyncio.run(sampled(Monitor())) is False


def test_it_keeps_no_count_per_record_where_faust_s_does() -> None:
    tp = TP("schedule-commands", 0)

    class Owner:
        pass

    class Stream:  # Faust keeps streams and their tasks in weak dicts
        task_owner = Owner()

    def counted(monitor: Monitor) -> tuple[int, int]:
        message = SimpleNamespace(time_in=None, time_out=None, time_total=None)
        stream = Stream()
        monitor.on_message_in(tp, 1, message)  # type: ignore[arg-type]
        state = monitor.on_stream_event_in(tp, 1, stream, None)  # type: ignore[arg-type]
        monitor.on_stream_event_out(tp, 1, stream, None, state)  # type: ignore[arg-type]
        monitor.on_message_out(tp, 1, message)  # type: ignore[arg-type]
        return monitor.messages_received_total, monitor.events_total

    assert counted(QuietMonitor()) == (0, 0)
    assert counted(Monitor()) == (1, 1)
