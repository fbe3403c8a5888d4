"""Jitter: each instant delivered a little after it, by the same amount every time.

A schedule with ``jitter`` J has each instant delivered at its nominal time
plus an offset in [0, J) taken from the instant's firing id. So the offset
is the same for a replay and for a duplicate (they carry the same id), it
differs from instant to instant and from schedule to schedule (which is what
spreads a crowd registered for 09:00), and nothing is ever delivered before
its instant. ``X-Scheduled-For`` and the firing id stay the nominal instant.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from scheduler.domain import ids

__all__ = ["MAX_JITTER_S", "delivery_time", "offset"]

#: The largest jitter a schedule may ask for: a day.
MAX_JITTER_S = 86_400.0

_ZERO = timedelta(0)
_SPAN = 1 << 64


def offset(firing_id: str, jitter: float | None) -> timedelta:
    """How long after its instant the firing ``firing_id`` is delivered."""
    if not jitter:
        return _ZERO
    digest = hashlib.blake2b(firing_id.encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / _SPAN  # [0, 1)
    return timedelta(microseconds=int(jitter * 1_000_000 * fraction))


def delivery_time(schedule_id: str, instant: datetime, jitter: float | None) -> datetime:
    """When ``schedule_id``'s ``instant`` is delivered: the instant plus its offset."""
    if not jitter:
        return instant
    return instant + offset(ids.firing_id(schedule_id, instant), jitter)
