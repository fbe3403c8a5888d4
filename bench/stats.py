"""Pure arithmetic over what the targets recorded: lateness percentiles, missing, duplicates.

A delivery is ``(arrival, scheduled, firing_id, schedule_id)`` with both
times in seconds since the epoch, as the target recorded them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

Delivery = tuple[float, float, str, str]

#: README: "up to 1 s late: on time".
ON_TIME = 1.0


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile of ``values`` (which need not be sorted)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def lateness(deliveries: Iterable[Delivery]) -> list[float]:
    return [arrival - scheduled for arrival, scheduled, _, _ in deliveries]


def spread(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


def burst(deliveries: list[Delivery], expected: set[str], due: float) -> dict[str, Any]:
    """One-shot schedules all due at ``due``: each expected schedule id should arrive once."""
    ours = [d for d in deliveries if d[3] in expected]
    firsts: dict[str, float] = {}
    for arrival, _, _, schedule in ours:
        if schedule not in firsts or arrival < firsts[schedule]:
            firsts[schedule] = arrival
    firing_ids = {d[2] for d in ours}
    late = [arrival - due for arrival in firsts.values()]
    return {
        "expected": len(expected),
        "delivered": len(ours),
        "missing": len(expected) - len(firsts),
        "duplicates": len(ours) - len(firing_ids),
        "unexpected": len(deliveries) - len(ours),
        **spread(late),
        "last": (max(firsts.values()) - due) if firsts else None,
    }


def expected_instants(starts: Iterable[float], interval: float, low: float, high: float) -> int:
    """How many of ``start + k*interval`` (k >= 1) fall in ``[low, high)``, over all starts."""
    total = 0
    for start in starts:
        first = max(1, math.ceil((low - start) / interval - 1e-9))
        last = math.ceil((high - start) / interval - 1e-9) - 1
        total += max(0, last - first + 1)
    return total


def steady(
    deliveries: list[Delivery], expected: int, window: tuple[float, float]
) -> dict[str, Any]:
    """Recurring schedules over ``window``: rate achieved, lateness, missing, duplicates."""
    low, high = window
    inside = [d for d in deliveries if low <= d[1] < high]
    distinct = {(d[3], round(d[1], 6)) for d in inside}
    arrived = sum(1 for d in deliveries if low <= d[0] < high)
    late = lateness(inside)
    return {
        "expected": expected,
        "delivered": len(inside),
        "missing": max(0, expected - len(distinct)),
        "duplicates": len(inside) - len(distinct),
        "rate": arrived / (high - low),
        "target_rate": expected / (high - low),
        **spread(late),
        "late_over_1s": sum(1 for value in late if value > ON_TIME),
        # The same lateness without the window's first seconds: what a start
        # (every schedule registered at once just before the window) costs shows
        # as the difference between the two.
        "p99_settled": percentile(lateness(d for d in inside if d[1] >= low + SETTLE), 99),
    }


#: Seconds at the start of the steady window left out of ``p99_settled``.
SETTLE = 10.0


#: Seconds of normal running before a kill that tell what "on time" is for a system.
BASELINE = 8.0
#: Added to a system's own worst lateness before a kill, when that exceeds ``ON_TIME``.
MARGIN = 0.5


def baseline(deliveries: list[Delivery], schedules: set[str], since: float) -> float:
    """What "on time" means for this system after an outage that began at ``since``.

    ``ON_TIME``, unless the system's normal running is later than that: then its
    worst lateness over the ``BASELINE`` seconds before ``since`` plus ``MARGIN``
    (rq-scheduler polls once a second and rounds instants to whole seconds, so
    it is routinely a little over a second late). Only deliveries that arrived
    before ``since`` count: redeliveries after a restart are not normal running.
    """
    before = [
        d[0] - d[1]
        for d in deliveries
        if d[3] in schedules and since - BASELINE <= d[1] and d[0] < since
    ]
    worst = max(before, default=0.0)
    return ON_TIME if worst <= ON_TIME else worst + MARGIN


def recovery(
    deliveries: list[Delivery],
    schedules: set[str],
    since: float,
    *,
    settle: float = 3.0,
    threshold: float = ON_TIME,
) -> dict[str, Any]:
    """After an outage that began at ``since``: when was every schedule delivered and on time?

    ``caught_up`` is when the last of ``schedules`` got its first delivery for an
    instant after ``since``; ``on_time`` is the arrival of the last delivery (for
    an instant after ``since`` minus one second) more than ``threshold`` late; the
    recovery is the later of the two. ``None`` when some schedule never came back.
    """
    after = [d for d in deliveries if d[3] in schedules and d[1] > since - ON_TIME]
    first: dict[str, float] = {}
    for arrival, scheduled, _, schedule in after:
        if scheduled > since and (schedule not in first or arrival < first[schedule]):
            first[schedule] = arrival
    late = [d for d in after if d[0] - d[1] > threshold]
    last_late = max((d[0] for d in late), default=None)
    caught_up = max(first.values()) if len(first) == len(schedules) and first else None
    recovered = None
    if caught_up is not None:
        recovered = max(caught_up, last_late or caught_up)
        newest = max(d[0] for d in after)
        if newest - recovered < settle:
            recovered = None  # not yet seen on time for long enough to call it
    firing_ids = [d[2] for d in after]
    return {
        "schedules": len(schedules),
        "came_back": len(first),
        "caught_up_s": None if caught_up is None else caught_up - since,
        "last_late_s": None if last_late is None else last_late - since,
        "recovered_s": None if recovered is None else recovered - since,
        "on_time_threshold_s": threshold,
        "late_deliveries": len(late),
        "max_lateness": max((d[0] - d[1] for d in after), default=None),
        "duplicates": len(firing_ids) - len(set(firing_ids)),
    }


def first_on_time(
    deliveries: list[Delivery], schedules: set[str], since: float, threshold: float = ON_TIME
) -> float | None:
    """Seconds from ``since`` to the first on-time delivery, for an instant after it, of any."""
    times = [
        d[0] for d in deliveries if d[3] in schedules and d[1] > since and d[0] - d[1] <= threshold
    ]
    return min(times) - since if times else None
