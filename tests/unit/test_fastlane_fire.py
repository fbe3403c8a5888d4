"""The compiled wake-up of a one-shot the lane stored (``scheduler_fastlane.fire``).

Whatever it fires, it writes what the Python path writes for it
(``scheduler.streams.firing.wake``): the record ``state.wake`` makes of the
stored record, and the firing ``state.firing_bytes`` writes, byte for byte.
The property test feeds it the records the lane wrote for generated commands
(``test_fastlane``'s), woken from well before their due instant to past it;
where it declines, the Python path decides, as before.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import scheduler_fastlane as lane
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import clock
from scheduler.domain import ids, state
from scheduler.domain.models import parse_command
from tests.unit.test_fastlane import (
    COMMON,
    KAFKA,
    REST,
    STAMP_MS,
    encoded,
    judged,
    raw_edits,
    shaped,
)

AHEAD = timedelta(seconds=5)


def python_fire(record: bytes, now_us: int) -> tuple[bytes, bytes]:
    """What the Python path writes when the timer wakes a new one-shot for its
    instant (``scheduler.streams.firing.wake``): the woken record and its firing."""
    current = state.ScheduleRecord.from_bytes(record)
    due = current.timed
    assert due is not None
    now = clock.from_us(now_us)
    woken = state.wake(current, due, now, ahead=AHEAD)
    assert woken.changed and woken.fire == (current.next_fire_at,)
    instant = woken.fire[0]
    firing = state.firing_bytes(
        woken.record, instant, ids.firing_id(current.schedule_id, instant), now
    )
    return woken.record.to_bytes(), firing


def fired(raw: bytes, offset_us: int) -> bool:
    """Whether the lane fired ``raw``'s record, woken ``offset_us`` from its
    instant; if it did, it wrote what the Python path writes."""
    taken = judged(raw)
    if taken is None:
        return False
    record, due_us = taken[2], taken[4]
    got = lane.fire(record, due_us, due_us + offset_us)
    if got is None:
        return False
    assert got == python_fire(record, due_us + offset_us), raw[:300]
    json.loads(got[1])  # a firing is JSON the executors read
    return True


#: From long before the instant to past the second a one-shot is on time, and past
#: the misfire graces the generated commands have (10 s, and an hour by default).
offsets = (
    st.integers(-40_000_000, 2_000_000)
    | st.integers(2_000_000, 4_000_000_000)
    | st.sampled_from([0, 1, 999_999, 1_000_000, 1_000_001, 9_998_999, 9_999_000, 10_000_000])
    | st.sampled_from([3_598_999_000, 3_599_000_000, 3_600_000_000, 3_600_000_001])
)


@settings(max_examples=1500, deadline=None)
@given(shaped().flatmap(encoded).flatmap(raw_edits), offsets)
def test_what_the_lane_fires_is_what_the_python_path_writes(raw: bytes, offset_us: int) -> None:
    fired(raw, offset_us)


#: ``data`` whose text the Python path writes back differently from how it came.
DATA = [
    b'{"a":1,"b":2,"a":3}',  # a key twice: the first place, the last value
    b"[1e16, 1e-7, 0.1, 0, 0.0, 5, 5.0, 1E2, 123.456e-3, 2.5e-320, -1.5, -7]",
    b"[9223372036854775807, -9223372036854775808, 18446744073709551615]",
    b'"\\u00e9\\u2028\\u001f\\/\\b"',
    b'{"":{"x":[null,true,false,{}]}}',
]


@pytest.mark.parametrize("value", DATA)
def test_data_is_written_as_the_python_path_writes_it(value: bytes) -> None:
    command = {"client": COMMON[0]["client"], "type": "delay", "schedule": "5"}
    raw = json.dumps({**command, "task": {**REST, "data": "@"}}).encode()
    assert fired(raw.replace(b'"@"', value), 0)


#: ``data`` the lane takes but cannot be sure to write as pydantic does: declined.
UNSURE = [
    b"100000000000000000000",  # an int past 2^64: read as a float here, an int in Python
    b"-9223372036854775809",
    b"1e19",
    b"-0",  # an int to Python; serde_json reads it as -0.0 (so -0.0 declines too)
    b"-0.0",
    b"{" + b",".join(b'"k%d":0' % i for i in range(65)) + b"}",
]


@pytest.mark.parametrize("value", UNSURE)
def test_data_it_cannot_write_for_sure_declines(value: bytes) -> None:
    command = {"client": COMMON[0]["client"], "type": "delay", "schedule": "5"}
    raw = json.dumps({**command, "task": {**KAFKA, "data": "@"}}).encode()
    assert not fired(raw.replace(b'"@"', value), 0)
    assert judged(raw.replace(b'"@"', value)) is not None  # stored by the lane all the same


@pytest.mark.parametrize("index", [0, 1, 2, 3, 4])
def test_a_common_one_shot_on_time_is_fired(index: int) -> None:
    raw = json.dumps(COMMON[index]).encode()
    for offset_us in (-30_000_000, 0, 1_000_000):
        assert fired(raw, offset_us)


def test_a_late_one_shot_within_its_grace_is_fired_as_the_misfire_policy_fires_it() -> None:
    """``fire_once`` and ``fire_all`` fire a one-shot's late instant (``misfire.plan``)."""
    for policy in (None, "fire_once", "fire_all"):
        extra = {"misfire_policy": policy} if policy else {}
        raw = json.dumps({**COMMON[0], **extra, "misfire_grace": 60}).encode()
        assert fired(raw, 1_000_001)
        assert fired(raw, 59_998_000)
        assert not fired(raw, 59_999_500)  # near the end of its grace: the Python path
        assert not fired(raw, 61_000_000)  # expired: missed, not fired


def test_what_the_misfire_policy_decides_otherwise_is_left_to_the_python_path() -> None:
    skip = json.dumps({**COMMON[0], "misfire_policy": "skip"}).encode()
    assert fired(skip, 1_000_000)
    assert not fired(skip, 1_000_001)  # more than a second late: skipped, counted missed
    recurring = json.dumps(COMMON[5]).encode()
    assert not fired(recurring, 0)
    short_grace = json.dumps({**COMMON[0], "misfire_grace": 0.5}).encode()
    assert not fired(short_grace, 0)


@pytest.mark.parametrize(
    "change",
    [
        {"name": " padded "},  # the model strips it
        {"task": {**REST, "connection": {**REST["connection"], "headers": {"X-A": "b "}}}},
    ],
)
def test_text_the_model_would_strip_declines(change: dict[str, Any]) -> None:
    raw = json.dumps({**COMMON[0], **change}).encode()
    assert judged(raw) is not None
    assert not fired(raw, 0)


def test_a_record_not_of_the_lane_or_a_stale_wake_up_is_declined() -> None:
    raw = json.dumps(COMMON[3]).encode()
    taken = judged(raw)
    assert taken is not None
    record, due_us = taken[2], taken[4]
    assert lane.fire(record, due_us, due_us) is not None
    assert lane.fire(record, due_us - 1, due_us) is None  # for another instant: stale
    assert lane.fire(record, due_us + 1, due_us) is None
    woken = python_fire(record, due_us)[0]  # fired already
    paused = record.replace(b'"status":"active"', b'"status":"paused"')
    for other in (woken, paused, record[:-1], record[1:], b""):
        assert lane.fire(other, due_us, due_us) is None


@pytest.mark.parametrize(
    "change",
    [
        {"client": {**COMMON[0]["client"], "key": " k1"}},  # stored as sent, read back stripped
        {"jitter": 5},
        {"task": {**REST, "connection": {**REST["connection"], "headers": {"X-A": "b"}}}},
    ],
)
def test_a_record_the_python_path_wrote_is_fired_only_if_the_lane_takes_its_command(
    change: dict[str, Any],
) -> None:
    """A command the lane declines is stored by the Python path, in the same
    format: its record is fired only by the Python path."""
    raw = json.dumps({**COMMON[0], **change}).encode()
    record = state.apply(None, parse_command(raw), clock.from_us(STAMP_MS * 1000))
    assert record is not None and record.timed is not None
    due_us = clock.to_us(record.timed)
    got = lane.fire(record.to_bytes(), due_us, due_us)
    if judged(raw) is None:
        assert got is None
    else:
        assert got == python_fire(record.to_bytes(), due_us)
