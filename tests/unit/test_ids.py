from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

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


def test_schedule_id_is_the_hash_of_the_compact_json_array_for_any_fields() -> None:
    """The shortcut for fields JSON does not escape writes what ``compact_json`` writes."""
    import hashlib

    from hypothesis import given, settings
    from hypothesis import strategies as st

    text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
    tricky = st.sampled_from(['"', "\\", "\x00", "\x1f", "\x7f", "\u2028", "가", "\U0001f600"])
    field = st.one_of(text, st.tuples(text, tricky, text).map("".join))

    @settings(max_examples=400, deadline=None)
    @given(st.tuples(field, field, field, field, field))
    def check(fields: tuple[str, str, str, str, str]) -> None:
        canonical = compact_json(list(fields)).encode("utf-8")
        assert schedule_id(*fields) == "sch_" + hashlib.sha256(canonical).hexdigest()[:32]

    check()


@given(st.binary(max_size=300))
def test_murmur2_matches_kafkas_for_any_key(data: bytes) -> None:
    from aiokafka.partitioner import murmur2 as reference

    assert murmur2(data) == reference(data)
