from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from scheduler.ids import firing_id, schedule_id


def test_schedule_id_is_stable_and_url_safe() -> None:
    sid = schedule_id("op#1", "chef", "system", "12345678", "scheduler")
    assert sid == schedule_id("op#1", "chef", "system", "12345678", "scheduler")
    assert sid.startswith("sch_")
    assert all(ch in "0123456789abcdef" for ch in sid[4:])


def test_firing_id_is_the_same_for_the_same_instant_in_any_offset() -> None:
    instant = datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    seoul = instant.astimezone(timezone(timedelta(hours=9)))
    assert firing_id("sch_x", instant) == firing_id("sch_x", seoul)
    assert firing_id("sch_x", instant) != firing_id("sch_x", instant + timedelta(seconds=1))
    assert firing_id("sch_x", instant) != firing_id("sch_y", instant)
    assert firing_id("sch_x", instant) != firing_id("sch_x", instant + timedelta(microseconds=1))
