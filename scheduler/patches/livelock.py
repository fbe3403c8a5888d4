"""Faust's check for stalled partitions runs once a minute.

Upstream: Faust checks every assigned partition for a stalled stream every
2.5 commit intervals (7 s by default). The check only logs.

Ours: at most once every ``LIVELOCK_CHECK_S``.

Why: it was the largest share of an idle worker's CPU in a profile; once a
minute still reports a stall.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

from faust.transport.consumer import Consumer

REPLACES = ("faust.transport.consumer:Consumer.verify_all_partitions_active",)
USES: tuple[str, ...] = ()

LIVELOCK_CHECK_S = 60.0
_verify_partitions = Consumer.verify_all_partitions_active


async def verify_all_partitions_active(self: Any) -> None:
    now = monotonic()
    if now - getattr(self, "_scheduler_verified_at", -LIVELOCK_CHECK_S) < LIVELOCK_CHECK_S:
        return
    self._scheduler_verified_at = now
    await _verify_partitions(self)


def install() -> None:
    Consumer.verify_all_partitions_active = verify_all_partitions_active  # type: ignore[method-assign]
