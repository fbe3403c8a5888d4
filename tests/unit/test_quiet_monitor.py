"""Faust's statistics sensor runs without its sampler (scheduler.app.QuietMonitor)."""

from __future__ import annotations

import asyncio

from faust.sensors import Monitor

from scheduler.app import QuietMonitor, app


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
