"""A preview is what the schedule does: the same instants as the timer path fires.

The firing path is driven as a worker drives it: the command applied as the
topic agent applies it, then woken at each instant the record asks to be
woken at (``timed``), on time, with the fire-ahead a worker uses. Its
instants must be the preview's, one for one, over random schedules, zones
and years 1970-2100, with ``start``, ``end``, ``max_fires`` and jitter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.domain import state
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.ids import firing_id
from scheduler.domain.models import Command, parse_command
from scheduler.domain.preview import MAX_COUNT, preview, shown, upcoming
from scheduler.domain.timefmt import parse_utc
from tests.unit.test_timezones import DST_ZONES, FIXED_ZONES

AHEAD = timedelta(seconds=5)
COUNT = 12

CRONS = (
    "*/15 * * * *",
    "30 * * * *",
    "0 9 * * 1-5",
    "30 1 * * *",
    "30 2 * * *",
    "15 2 * * *",
    "0 0 29 2 *",
    "*/20 1 * * *",
    "*/10 * * * * *",
    "0 30 2 * * *",
    "0 0 1 * *",
    "45 23 * * 0",
)


def command(**fields: Any) -> Command:
    body = {
        "client": {"operation": "o", "application": "a", "group": "g", "key": "k", "type": "t"},
        "task": {"type": "rest", "connection": {"host": "http://target.example/x"}},
        **fields,
    }
    return parse_command(json.dumps(body))


@st.composite
def schedules(draw: st.DrawFn) -> tuple[Command, datetime]:
    zone = draw(st.sampled_from((*DST_ZONES, *FIXED_ZONES, "Pacific/Apia")))
    accepted = draw(st.datetimes(datetime(1970, 1, 2), datetime(2100, 6, 1))).replace(tzinfo=UTC)
    kind = draw(st.sampled_from(("cron", "cron", "cron", "delay-recur", "date", "delay", "now")))
    fields: dict[str, Any] = {"type": kind, "timezone": zone}
    if kind == "cron":
        fields["schedule"] = draw(st.sampled_from(CRONS))
    elif kind == "delay-recur":
        fields["schedule"] = str(draw(st.integers(1, 200_000)))
    elif kind == "delay":
        fields["schedule"] = str(draw(st.integers(1, 10**7)))
    elif kind == "date":
        moment = accepted + timedelta(seconds=draw(st.integers(-86_400, 10**8)))
        fields["schedule"] = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if kind in ("cron", "delay-recur"):
        if draw(st.booleans()):
            start = accepted + timedelta(seconds=draw(st.integers(-86_400, 10**7)))
            fields["start"] = start.strftime("%Y-%m-%dT%H:%M:%S")
            if draw(st.booleans()):
                end = start + timedelta(seconds=draw(st.integers(60, 10**7)))
                fields["end"] = end.strftime("%Y-%m-%dT%H:%M:%S")
        if draw(st.booleans()):
            fields["max_fires"] = draw(st.integers(1, 8))
    if draw(st.booleans()):
        fields["jitter"] = draw(st.sampled_from((0.5, 30, 3600)))
        try:
            return command(**fields), accepted
        except InvalidCommand:  # not less than the schedule's shortest interval
            del fields["jitter"]
    return command(**fields), accepted


def fired_by_the_timer(cmd: Command, accepted: datetime, count: int) -> list[dict[str, Any]]:
    """Apply, then wake on time at each ``timed``: the firings a worker would write."""
    record = state.apply(None, cmd, accepted)
    out: list[dict[str, Any]] = []
    while record is not None and record.timed is not None and len(out) < count:
        due = record.timed
        woken = state.wake(record, due, due - AHEAD, ahead=AHEAD)  # woken fire-ahead early
        assert woken.changed, "an on-time wake-up did nothing"
        for instant in woken.fire:
            out.append(state.firing(record, instant, firing_id(cmd.schedule_id, instant), due))
        record = woken.record
    return out[:count]


@settings(max_examples=250, deadline=None)
@given(schedules())
def test_preview_and_firing_agree_instant_for_instant(case: tuple[Command, datetime]) -> None:
    cmd, accepted = case
    shown_instants = preview(cmd, accepted, COUNT)
    firings = fired_by_the_timer(cmd, accepted, COUNT)
    assert [parse_utc(f["scheduled_for"]) for f in firings] == [i.at for i in shown_instants]
    for item, sent in zip(shown_instants, firings, strict=True):
        delivered = parse_utc(sent.get("deliver_at") or sent["scheduled_for"])
        assert delivered == item.delivered
        assert item.at <= delivered <= item.at + timedelta(seconds=cmd.jitter or 0)
    if cmd.max_fires is not None:
        assert len(shown_instants) <= cmd.max_fires
    start, end = cmd.start_at(), cmd.end_at()
    assert all(start is None or i.at >= start for i in shown_instants)
    assert all(end is None or i.at <= end for i in shown_instants)


def test_a_start_in_2030_and_max_fires_1_preview_one_instant_at_the_start() -> None:
    cmd = command(type="cron", schedule="0 9 * * *", start="2030-01-01T00:00:00", max_fires=1)
    got = preview(cmd, datetime(2026, 12, 6, tzinfo=UTC), 5)
    assert [i.at for i in got] == [datetime(2030, 1, 1, 9, tzinfo=UTC)]


def test_delay_recur_with_a_start_is_anchored_there() -> None:
    cmd = command(type="delay-recur", schedule="600", start="2030-01-01T00:00:00")
    got = preview(cmd, datetime(2026, 12, 6, 13, 7, 11, tzinfo=UTC), 3)
    assert [i.at.isoformat() for i in got] == [
        "2030-01-01T00:00:00+00:00",
        "2030-01-01T00:10:00+00:00",
        "2030-01-01T00:20:00+00:00",
    ]


def test_preview_shows_local_and_utc_and_jittered_delivery() -> None:
    cmd = command(type="cron", schedule="0 9 * * *", timezone="Asia/Seoul", jitter=60)
    got = preview(cmd, datetime(2026, 12, 6, tzinfo=UTC), 3)
    body = shown(cmd, got)
    assert body["fire_times"][0] == "2026-12-07T00:00:00.000Z"
    first = body["instants"][0]
    assert first["utc"] == "2026-12-07T00:00:00.000Z"
    assert first["local"] == "2026-12-07T09:00:00+09:00"
    delivered = parse_utc(first["delivered_at"])
    assert got[0].at <= delivered <= got[0].at + timedelta(seconds=60)
    # Different instants get different offsets (the id decides), the same one the same.
    offsets = {i.delivered - i.at for i in preview(cmd, datetime(2026, 12, 6, tzinfo=UTC), 20)}
    assert len(offsets) > 10
    assert preview(cmd, datetime(2026, 12, 6, tzinfo=UTC), 3) == got


def test_a_paused_or_completed_schedule_previews_nothing() -> None:
    cmd = command(type="cron", schedule="*/5 * * * *")
    record = state.apply(None, cmd, datetime(2026, 12, 6, tzinfo=UTC))
    assert record is not None and len(upcoming(record, 3)) == 3
    paused = state.apply(record, command(action="pause"), datetime(2026, 12, 6, 0, 1, tzinfo=UTC))
    assert paused is not None and upcoming(paused, 3) == []
    assert shown(paused, [])["status"] == "paused"


def test_a_stored_schedule_previews_the_fires_max_fires_leaves_it() -> None:
    cmd = command(type="cron", schedule="*/5 * * * *", max_fires=4)
    record = state.apply(None, cmd, datetime(2026, 12, 6, tzinfo=UTC))
    assert record is not None
    woken = state.wake(record, record.timed, record.timed)  # type: ignore[arg-type]
    assert len(woken.fire) == 1
    assert [i.at.minute for i in upcoming(woken.record, 10)] == [10, 15, 20]


@pytest.mark.parametrize("count", [-1, MAX_COUNT + 1, 10_000_000])
def test_count_is_capped_and_refused_by_name(count: int) -> None:
    cmd = command(type="cron", schedule="* * * * *")
    with pytest.raises(InvalidCommand) as raised:
        preview(cmd, datetime(2026, 12, 6, tzinfo=UTC), count)
    assert raised.value.field == "count" and str(count) in raised.value.detail


def test_the_largest_count_is_answered_quickly() -> None:
    cmd = command(type="cron", schedule="*/10 * * * * *", timezone="America/New_York")
    got = preview(cmd, datetime(2026, 11, 1, 5, tzinfo=UTC), MAX_COUNT)
    assert len(got) == MAX_COUNT


def test_a_command_that_is_not_an_upsert_is_refused_naming_the_action() -> None:
    with pytest.raises(InvalidCommand) as raised:
        preview(command(action="pause"), datetime(2026, 12, 6, tzinfo=UTC), 3)
    assert raised.value.field == "action" and "pause" in raised.value.detail


def test_a_jitter_not_less_than_the_shortest_interval_is_refused_by_name() -> None:
    for schedule, kind in (("*/15 * * * *", "cron"), ("600", "delay-recur")):
        with pytest.raises(InvalidCommand) as raised:
            command(type=kind, schedule=schedule, jitter=900 if kind == "cron" else 600)
        assert raised.value.field == "jitter" and "shortest interval" in raised.value.detail
    assert command(type="cron", schedule="*/15 * * * *", jitter=899).jitter == 899


def test_the_same_schedule_again_inside_its_jitter_window_keeps_the_waiting_instant() -> None:
    cmd = command(type="cron", schedule="0 9 * * *", jitter=3600)
    record = state.apply(None, cmd, datetime(2026, 12, 6, 8, tzinfo=UTC))
    assert record is not None and record.timed is not None
    nine = datetime(2026, 12, 6, 9, tzinfo=UTC)
    assert record.next_fire_at == nine and record.timed > nine
    again = state.apply(record, cmd, nine + (record.timed - nine) / 2)
    assert again is not None and again.next_fire_at == nine  # not tomorrow
    changed = command(type="cron", schedule="0 10 * * *", jitter=3600)
    moved = state.apply(record, changed, nine + (record.timed - nine) / 2)
    assert moved is not None and moved.next_fire_at == datetime(2026, 12, 6, 10, tzinfo=UTC)


def test_a_revoked_jittered_instant_leaves_the_batch_a_replay_would_resend() -> None:
    cmd = command(type="delay-recur", schedule="10", jitter=5)
    accepted = datetime(2026, 12, 6, tzinfo=UTC)
    record = state.apply(None, cmd, accepted)
    assert record is not None and record.timed is not None
    woken = state.wake(record, record.timed, record.timed - AHEAD, ahead=timedelta(seconds=30))
    assert len(woken.fire) >= 2
    first, second = woken.fire[0], woken.fire[1]
    # A pause accepted after the second instant but before its delivery takes it back.
    assert woken.record.delivered_at(second) > second  # this instant's offset is not zero
    pause_at = second + (woken.record.delivered_at(second) - second) / 2
    rolled, revoked = state.revoke(woken.record, pause_at)
    assert second in revoked and second not in rolled.last_batch
    assert first in rolled.last_batch or woken.record.delivered_at(first) > pause_at
