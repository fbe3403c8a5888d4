from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

from scheduler.domain.ids import compact_json, firing_id, murmur2, schedule_id


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


def test_murmur2_matches_kafkas_for_every_tail_length() -> None:
    from aiokafka.partitioner import murmur2 as reference

    rng = random.Random(7)
    for length in range(0, 70):
        for _ in range(50):
            data = rng.randbytes(length)
            assert murmur2(data) == reference(data), data
    sid = schedule_id("op#1", "chef", "system", "12345678", "scheduler").encode()
    assert murmur2(sid) == reference(sid)


def test_compact_json_is_json_dumps_with_the_same_options() -> None:
    value = {"a": ["é", 1, None, {"b": 2.5}], "c": '\u2028 "q"'}
    assert compact_json(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
