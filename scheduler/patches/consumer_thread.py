"""Faust's consumer thread without mode's two keepalives.

Upstream: mode's ``ServiceThread`` wakes its thread's loop every second
(``_thread_keepalive``) and, every 1.1 s, wakes it again and runs an empty
coroutine on the main loop (``_keepalive2``).

Ours: both do nothing. They stand in for calls between the loops that would
not wake the loop they target; Faust's consumer makes every such call
through mode's ``MethodQueue``, with ``call_soon_threadsafe`` both ways,
which wakes it. The thread's loop still wakes at least once a second for its
own work (aiokafka's fetch routine and heartbeat).

Why: they were three wake-ups a second of an idle worker.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as driver
from mode import Service

REPLACES = (
    "faust.transport.drivers.aiokafka:Consumer._new_consumer_thread",
    "mode.threads:ServiceThread._thread_keepalive",
    "mode.threads:ServiceThread._keepalive2",
)
USES = ("faust.transport.drivers.aiokafka:AIOKafkaConsumerThread",)


class QuietConsumerThread(driver.AIOKafkaConsumerThread):
    """Faust's consumer thread, without the keepalives."""

    @Service.task
    async def _thread_keepalive(self) -> None:
        return None

    async def _keepalive2(self) -> None:
        return None


def _new_consumer_thread(self: Any) -> QuietConsumerThread:
    return QuietConsumerThread(self, loop=self.loop, beacon=self.beacon)


def install() -> None:
    driver.Consumer._new_consumer_thread = _new_consumer_thread  # type: ignore[method-assign]
