"""Misfire planning: which due instants fire when a timer wakes up late."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain.misfire import ON_TIME_CAP, SCAN_LIMIT, MisfirePolicy, plan

SECOND = timedelta(seconds=1)
NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def every(
    seconds: float, *, until: datetime | None = None
) -> Callable[[datetime], datetime | None]:
    """A grid step: the next instant ``seconds`` later, none past ``until``."""

    def step(instant: datetime) -> datetime | None:
        upcoming = instant + timedelta(seconds=seconds)
        if until is not None and upcoming > until:
            return None
        return upcoming

    return step


def one_shot(_: datetime) -> datetime | None:
    return None


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def test_an_instant_due_exactly_now_fires() -> None:
    result = plan(NOW, every(60), NOW, policy=MisfirePolicy.FIRE_ONCE, grace=HOUR)
    assert result.fire == [NOW]
    assert result.missed == 0
    assert result.last_missed is None
    assert result.next_fire == NOW + 60 * SECOND


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_an_instant_within_the_threshold_is_on_time_under_every_policy(
    policy: MisfirePolicy,
) -> None:
    result = plan(ago(0.9), every(60), NOW, policy=policy, grace=HOUR)
    assert result.fire == [ago(0.9)]
    assert result.missed == 0


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_lateness_equal_to_the_threshold_is_still_on_time(policy: MisfirePolicy) -> None:
    result = plan(ago(2), every(60), NOW, policy=policy, grace=HOUR, threshold=2 * SECOND)
    assert result.fire == [ago(2)]
    assert result.missed == 0


def test_skip_drops_an_instant_just_past_the_threshold() -> None:
    result = plan(ago(1.001), every(60), NOW, policy=MisfirePolicy.SKIP, grace=HOUR)
    assert result.fire == []
    assert result.missed == 1
    assert result.last_missed == ago(1.001)


def test_fire_once_fires_only_the_latest_late_instant() -> None:
    # Due 55, 45, 35, 25, 15, 5 seconds ago; next at now + 5 s.
    result = plan(ago(55), every(10), NOW, policy=MisfirePolicy.FIRE_ONCE, grace=HOUR)
    assert result.fire == [ago(5)]
    assert result.missed == 5
    assert result.last_missed == ago(15)
    assert result.next_fire == NOW + 5 * SECOND


def test_fire_once_catch_up_comes_before_an_on_time_instant() -> None:
    # 30, 20, 10 s late, and one due now.
    result = plan(ago(30), every(10), NOW, policy=MisfirePolicy.FIRE_ONCE, grace=HOUR)
    assert result.fire == [ago(10), NOW]
    assert result.missed == 2
    assert result.last_missed == ago(20)


def test_fire_all_fires_each_late_instant_oldest_first() -> None:
    result = plan(ago(40), every(10), NOW, policy=MisfirePolicy.FIRE_ALL, grace=HOUR)
    assert result.fire == [ago(40), ago(30), ago(20), ago(10), NOW]
    assert result.missed == 0
    assert result.last_missed is None
    assert result.next_fire == NOW + 10 * SECOND


def test_fire_all_keeps_the_newest_late_instants_up_to_the_cap() -> None:
    # Ten late instants (100 s .. 10 s ago), cap 3: the three newest fire.
    result = plan(ago(100), every(10), ago(0.5), policy=MisfirePolicy.FIRE_ALL, grace=HOUR, cap=3)
    assert result.fire == [ago(30), ago(20), ago(10)]
    assert result.missed == 7
    assert result.last_missed == ago(40)


def test_fire_all_with_a_zero_cap_fires_no_late_instant_but_the_on_time_one() -> None:
    result = plan(ago(30), every(10), NOW, policy=MisfirePolicy.FIRE_ALL, grace=HOUR, cap=0)
    assert result.fire == [NOW]
    assert result.missed == 3
    assert result.last_missed == ago(10)


def test_skip_fires_nothing_late_and_counts_every_instant() -> None:
    result = plan(ago(50), every(10), ago(5), policy=MisfirePolicy.SKIP, grace=HOUR)
    assert result.fire == []
    assert result.missed == 5
    assert result.last_missed == ago(10)
    assert result.next_fire == NOW


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_instants_older_than_grace_never_fire(policy: MisfirePolicy) -> None:
    # 50 .. 10 s ago with a 25 s grace: 50, 40, 30 are expired.
    result = plan(ago(50), every(10), NOW, policy=policy, grace=25 * SECOND)
    assert ago(50) not in result.fire
    assert ago(40) not in result.fire
    assert ago(30) not in result.fire
    assert result.missed + len(result.fire) == 6


def test_only_expired_instants_are_counted_and_remembered() -> None:
    result = plan(ago(50), every(10), ago(25), policy=MisfirePolicy.FIRE_ALL, grace=4 * SECOND)
    # Due: 50, 40, 30 s ago, all more than 4 s before ``now`` (25 s ago).
    assert result.fire == []
    assert result.missed == 3
    assert result.last_missed == ago(30)
    assert result.next_fire == ago(20)


def test_remaining_budget_limits_firings_and_ends_the_schedule() -> None:
    result = plan(ago(40), every(10), NOW, policy=MisfirePolicy.FIRE_ALL, grace=HOUR, remaining=2)
    assert result.fire == [ago(40), ago(30)]
    assert result.missed == 3
    assert result.next_fire is None


def test_remaining_budget_spent_exactly_ends_the_schedule() -> None:
    result = plan(ago(0.5), every(10), NOW, policy=MisfirePolicy.FIRE_ONCE, grace=HOUR, remaining=1)
    assert result.fire == [ago(0.5)]
    assert result.missed == 0
    assert result.next_fire is None


def test_remaining_budget_not_yet_spent_keeps_the_schedule_going() -> None:
    result = plan(NOW, every(10), NOW, policy=MisfirePolicy.FIRE_ONCE, grace=HOUR, remaining=5)
    assert result.fire == [NOW]
    assert result.next_fire == NOW + 10 * SECOND


def test_zero_remaining_fires_nothing() -> None:
    result = plan(ago(20), every(10), NOW, policy=MisfirePolicy.FIRE_ALL, grace=HOUR, remaining=0)
    assert result.fire == []
    assert result.missed == 3
    assert result.next_fire is None


def test_next_fire_is_the_first_instant_after_now_not_at_it() -> None:
    result = plan(ago(20), every(10), NOW, policy=MisfirePolicy.SKIP, grace=HOUR)
    assert result.next_fire == NOW + 10 * SECOND
    early = plan(NOW + 5 * SECOND, every(10), NOW, policy=MisfirePolicy.FIRE_ONCE, grace=HOUR)
    assert early.fire == []
    assert early.missed == 0
    assert early.next_fire == NOW + 5 * SECOND


def test_a_schedule_that_ends_before_now_has_no_next_fire() -> None:
    result = plan(ago(30), every(10, until=ago(20)), NOW, policy=MisfirePolicy.FIRE_ALL, grace=HOUR)
    assert result.fire == [ago(30), ago(20)]
    assert result.next_fire is None


@pytest.mark.parametrize(
    ("lateness", "policy", "fired"),
    [
        (0, MisfirePolicy.SKIP, True),
        (30, MisfirePolicy.FIRE_ONCE, True),
        (30, MisfirePolicy.FIRE_ALL, True),
        (30, MisfirePolicy.SKIP, False),
        (7200, MisfirePolicy.FIRE_ONCE, False),
    ],
)
def test_a_one_shot_fires_at_most_once_and_never_again(
    lateness: float, policy: MisfirePolicy, fired: bool
) -> None:
    result = plan(ago(lateness), one_shot, NOW, policy=policy, grace=HOUR)
    assert result.fire == ([ago(lateness)] if fired else [])
    assert result.missed == (0 if fired else 1)
    assert result.next_fire is None


def test_a_one_shot_still_in_the_future_waits() -> None:
    later = NOW + 30 * SECOND
    result = plan(later, one_shot, NOW, policy=MisfirePolicy.FIRE_ONCE, grace=HOUR)
    assert result.fire == []
    assert result.missed == 0
    assert result.next_fire == later


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (MisfirePolicy.FIRE_ONCE, [ago(2), ago(1), NOW]),
        (MisfirePolicy.FIRE_ALL, [ago(6), ago(5), ago(4), ago(3), ago(2), ago(1), NOW]),
    ],
)
def test_far_behind_past_the_scan_limit_still_fires_the_newest_and_on_time_instants(
    policy: MisfirePolicy, expected: list[datetime]
) -> None:
    """A per-second schedule three hours behind: more due instants than SCAN_LIMIT.

    The counting may be rough there, but which instants fire must not change:
    ``fire_once`` stands for the latest late instant and ``fire_all`` keeps the
    newest ``cap``; the instants within the threshold (1 s ago, now) are on
    time and fire.
    """
    behind = 3 * 3600
    assert behind > SCAN_LIMIT
    result = plan(ago(behind), every(1), NOW, policy=policy, grace=HOUR, cap=5)
    assert result.fire == expected
    assert result.next_fire == NOW + SECOND


# --- property ------------------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    """A grid of ``period`` seconds from ``first``, and ``now`` about ``periods`` later.

    Grace and threshold are drawn in periods too, so that most examples mix
    expired, late and on-time instants instead of falling into one class.
    """
    period = draw(st.sampled_from([1, 2, 5, 10, 60, 3600]))
    first = NOW + timedelta(microseconds=draw(st.integers(-(10**6), 10**6)))
    periods = draw(st.integers(0, 1500))
    jitter_us = draw(st.integers(-period * 10**6 + 1, period * 10**6 - 1))
    now = first + timedelta(seconds=period * periods, microseconds=jitter_us)
    until = draw(st.none() | st.integers(0, 2000).map(lambda k: first + k * period * SECOND))
    grace = draw(st.integers(0, periods + 2)) * period + draw(st.floats(0.001, period))
    threshold = draw(st.floats(0, 5) | st.integers(0, 20).map(lambda k: float(k * period)))
    return {
        "period": period,
        "first": first,
        "now": now,
        "until": until,
        "policy": draw(st.sampled_from(list(MisfirePolicy))),
        "grace": timedelta(seconds=grace),
        "threshold": timedelta(seconds=threshold),
        "cap": draw(st.integers(0, 200)),
        "remaining": draw(st.none() | st.integers(0, 50)),
    }


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_plan_accounts_for_every_due_instant(case: dict[str, object]) -> None:
    period = case["period"]
    first = case["first"]
    now = case["now"]
    until = case["until"]
    remaining = case["remaining"]
    grace = case["grace"]
    threshold = case["threshold"]
    assert isinstance(period, int)
    assert isinstance(first, datetime) and isinstance(now, datetime)
    assert until is None or isinstance(until, datetime)
    assert remaining is None or isinstance(remaining, int)
    assert isinstance(grace, timedelta) and isinstance(threshold, timedelta)
    step = every(period, until=until)

    due: list[datetime] = []
    instant: datetime | None = first
    while instant is not None and instant <= now:
        due.append(instant)
        instant = step(instant)
    after_now = instant
    assert len(due) < SCAN_LIMIT

    result = plan(
        first,
        step,
        now,
        policy=case["policy"],  # type: ignore[arg-type]
        grace=grace,
        threshold=threshold,
        cap=case["cap"],  # type: ignore[arg-type]
        remaining=remaining,
    )

    assert set(result.fire) <= set(due)
    assert all(a < b for a, b in pairwise(result.fire))
    assert len(result.fire) + result.missed == len(due)
    assert result.next_fire is None or result.next_fire > now
    assert all(now - t <= grace for t in result.fire)
    if remaining is not None:
        assert len(result.fire) <= remaining
    if remaining is None or len(result.fire) < remaining:
        assert result.next_fire == after_now
    if result.missed and remaining is None:
        assert result.last_missed in due
        assert result.last_missed not in result.fire
    if remaining is None:
        on_time = [t for t in due if now - t <= min(threshold, grace)]
        assert set(on_time) <= set(result.fire)
        late = [t for t in due if threshold < now - t <= grace]
        fired_late = [t for t in result.fire if t in late]
        if case["policy"] is MisfirePolicy.FIRE_ONCE:
            assert fired_late == late[-1:]
        elif case["policy"] is MisfirePolicy.FIRE_ALL:
            cap = case["cap"]
            assert isinstance(cap, int)
            assert fired_late == (late[-cap:] if cap else [])
    if case["policy"] is MisfirePolicy.SKIP:
        assert all(now - t <= threshold for t in result.fire)


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_one_plan_fires_at_most_the_cap_and_leaves_the_rest_due(policy: MisfirePolicy) -> None:
    # A millisecond grid woken on time: 1,001 instants are due within the threshold.
    first = ago(1.0)
    result = plan(first, every(0.001), NOW, policy=policy, grace=HOUR)
    assert len(result.fire) == ON_TIME_CAP
    assert result.fire[0] == first and result.missed == 0
    # Nothing is lost: the timer goes on at the first instant not fired, already due.
    assert result.next_fire == first + ON_TIME_CAP * timedelta(milliseconds=1)
    assert result.next_fire is not None and result.next_fire <= NOW
    rest = plan(result.next_fire, every(0.001), NOW, policy=policy, grace=HOUR)
    assert len(result.fire) + len(rest.fire) == 1_001
