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

from collections import deque
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
_TICK = timedelta(microseconds=1)
#: The most on-time instants one plan fires; a wake-up's work stays bounded
#: whatever the schedule's interval.
ON_TIME_CAP = 1_000


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
    expired_before = now - grace
    late_before = now - threshold
    missed = 0
    last_missed: datetime | None = None
    instant: datetime | None = first

    # Expired instants: counted, never fired. Far behind, jump instead of stepping.
    scanned = 0
    while instant is not None and instant < expired_before:
        missed += 1
        last_missed = instant
        scanned += 1
        instant = step(instant)
        if scanned >= SCAN_LIMIT and instant is not None and instant < expired_before:
            instant = step(expired_before - _TICK)  # the rest of them, counted once
            missed += 1

    # Late instants (missed): only the newest ``cap`` can matter to any policy.
    late: deque[datetime] = deque(maxlen=max(cap, 1))
    late_total = 0
    evicted: datetime | None = None
    while instant is not None and instant < late_before:
        if len(late) == late.maxlen:
            evicted = late[0]
        late.append(instant)
        late_total += 1
        instant = step(instant)
        if late_total == SCAN_LIMIT and instant is not None and instant < late_before:
            # A huge grace: estimate the period and jump to the newest stretch.
            period = (late[-1] - late[0]) / max(len(late) - 1, 1)
            target = late_before - period * (late.maxlen or 1) - _TICK
            if target > late[-1]:
                evicted = late[-1]
                late.clear()
                late_total += 1  # the jumped-over stretch, counted once
                instant = step(target)

    # On-time instants: at most ``threshold`` late; they always fire, but at
    # most ``ON_TIME_CAP`` in one plan: the rest stay due (``next_fire``) and
    # fire at the next wake-up, which comes at once.
    on_time: list[datetime] = []
    while instant is not None and instant <= now and len(on_time) < ON_TIME_CAP:
        on_time.append(instant)
        instant = step(instant)
    next_fire = instant

    late_list = list(late)
    missed += late_total - len(late_list)
    if evicted is not None:
        last_missed = evicted

    if policy is MisfirePolicy.FIRE_ALL:
        chosen = late_list[-cap:] if cap else []
        dropped = late_list[: len(late_list) - len(chosen)]
    elif policy is MisfirePolicy.FIRE_ONCE:
        chosen = late_list[-1:]
        dropped = late_list[:-1]
    else:
        chosen, dropped = [], late_list
    if dropped:
        missed += len(dropped)
        last_missed = max(dropped[-1], last_missed) if last_missed else dropped[-1]
    fire = chosen + on_time
    if remaining is not None and len(fire) > remaining:
        cut = fire[remaining:]
        missed += len(cut)
        last_missed = max(cut[-1], last_missed) if last_missed else cut[-1]
        fire = fire[:remaining]
        next_fire = None
    elif remaining is not None and len(fire) == remaining:
        next_fire = None
    return Plan(fire=fire, missed=missed, last_missed=last_missed, next_fire=next_fire)
