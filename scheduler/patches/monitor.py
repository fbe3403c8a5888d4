"""Faust's main sensor without its sampler or its per-record counts.

Upstream: Faust's ``Monitor`` (its ``Monitor`` setting) runs a sampler that
turns its counters into rates every second, and keeps a dict of counts and
timestamps for every record and event. Both feed Faust's ``/stats`` page
(served only in its debug mode, so never here) and its optional
``/performance`` page, off here.

Ours: the sampler task returns at once and the four per-record hooks do
nothing. The rest of the sensor stays: Faust's consumer calls into it for end
offsets and commits. Our own figures are in ``/metrics``.

Why: the sampler woke an idle worker's loop every second, and the
per-record counts were a measurable share of a record's cost on the command
path (``bench/``).
"""

from __future__ import annotations

from typing import Any

from faust.sensors import Monitor
from mode import Service

REPLACES = (
    "faust.sensors.monitor:Monitor._sampler",
    "faust.sensors.monitor:Monitor.on_message_in",
    "faust.sensors.monitor:Monitor.on_stream_event_in",
    "faust.sensors.monitor:Monitor.on_stream_event_out",
    "faust.sensors.monitor:Monitor.on_message_out",
)
USES: tuple[str, ...] = ()


class QuietMonitor(Monitor):
    """The app's ``Monitor``: Faust's, without the sampler or per-record counts."""

    @Service.task
    async def _sampler(self) -> None:
        return None

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


def install() -> None:
    """Nothing to install: the app names the class in its settings (``scheduler.app``)."""
