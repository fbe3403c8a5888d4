"""Which due instants of a schedule fire when its timer wakes up late.

A worker normally fires an instant within milliseconds. It wakes up late
after a crash, a rebalance, or a long stop: the instants due meanwhile are
then decided here, purely, from the first due instant, a way to step to the
next instant, and the clock reading taken once at the edge.

- An instant at most ``threshold`` late (1 s by default) is on time: it fires.
- An instant later than that is *missed*, and the schedule's policy decides:
  ``fire_once`` (default) fires one catch-up firing standing for all of them
  (for the latest missed instant); ``fire_all`` fires each, oldest first, at
  most ``cap`` (the newest ones); ``skip`` fires none.
- An instant later than ``grace`` is expired: never fired, only counted.

Every instant that is not fired is counted as missed, so a lookup shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum


class MisfirePolicy(StrEnum):
    FIRE_ONCE = "fire_once"
    FIRE_ALL = "fire_all"
    SKIP = "skip"


#: How many due instants are stepped through one by one before jumping ahead.
SCAN_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Plan:
    fire: list[datetime] = field(default_factory=list)
    """Instants to fire now, oldest first."""
    missed: int = 0
    """Due instants that are not fired (expired, skipped, coalesced or over the cap)."""
    last_missed: datetime | None = None
    next_fire: datetime | None = None
    """The first instant after ``now``: where the timer goes on."""


def plan(
    first: datetime,
    step: Callable[[datetime], datetime | None],
    now: datetime,
    *,
    policy: MisfirePolicy,
    grace: timedelta,
    threshold: timedelta = timedelta(seconds=1),
    cap: int = 100,
    remaining: int | None = None,
) -> Plan:
    """Decide the firings for the due instants from ``first`` up to ``now``.

    ``step(t)`` is the schedule's next instant strictly after ``t`` (None when
    it has no more). ``remaining`` is how many firings the schedule may still
    make (its ``max_fires`` budget), None for no limit.
    """
    on_time: list[datetime] = []
    late: list[datetime] = []
    missed = 0
    last_missed: datetime | None = None
    instant: datetime | None = first
    scanned = 0
    while instant is not None and instant <= now:
        lateness = now - instant
        if lateness > grace:
            missed += 1
            last_missed = instant
        elif lateness > threshold:
            late.append(instant)
        else:
            on_time.append(instant)
        scanned += 1
        if scanned >= SCAN_LIMIT:
            # Far behind (a per-second schedule stopped for hours): count the
            # rest only roughly, by jumping straight past now.
            instant = step(now)
            missed += 1
            break
        instant = step(instant)
    next_fire = instant

    if policy is MisfirePolicy.FIRE_ALL:
        chosen = late[-cap:] if cap else []
        dropped = late[: len(late) - len(chosen)]
    elif policy is MisfirePolicy.FIRE_ONCE:
        chosen = late[-1:]
        dropped = late[:-1]
    else:
        chosen, dropped = [], late
    if dropped:
        missed += len(dropped)
        last_missed = max(dropped[-1], last_missed) if last_missed else dropped[-1]
    fire = chosen + on_time
    if remaining is not None and len(fire) > remaining:
        missed += len(fire) - remaining
        fire = fire[:remaining] if remaining > 0 else []
        next_fire = None
    elif remaining is not None and len(fire) == remaining:
        next_fire = None
    return Plan(fire=fire, missed=missed, last_missed=last_missed, next_fire=next_fire)
