"""The compiled reading of a record of ``firings`` (``scheduler_fastlane.held``).

Whatever it reads, the Python path reads the same (``delivery.take`` and
``_Held.hold``): the firing's id, the instant it is delivered at, its task
type, whether it keeps history, and for a Kafka task the record
``kafka_record`` builds, byte for byte. The property tests feed it the
firings the Python path writes for generated commands, and generated
firings of every shape, well-formed or not; where it declines, the Python
path reads the record as before.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import scheduler_fastlane as lane
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import clock
from scheduler.domain import ids, state
from scheduler.domain.timefmt import format_utc, parse_utc
from scheduler.streams import fastlane
from scheduler.targets.executors import KafkaRecord, kafka_record
from tests.unit.test_fastlane import encoded, judged, shaped
from tests.unit.test_fastlane_fire import AHEAD


class Refused(Exception):
    """The Python path would not hold the record this way (a revocation, or unreadable)."""


def python_read(raw: bytes) -> tuple[Any, ...]:
    """What ``delivery.take`` and ``_Held.hold`` read off ``raw``, or :class:`Refused`.

    A Kafka task whose record cannot be built is read with ``"unbuilt"`` in
    the record's place (it is delivered one by one, where the error is said).
    """
    try:
        firing = json.loads(raw)
        if not isinstance(firing, dict) or "revoked" in firing:
            raise Refused
        if not isinstance(firing.get("firing_id"), str):
            raise Refused
        parse_utc(firing["scheduled_for"])
        if "deliver_at" in firing:
            parse_utc(firing["deliver_at"])
        kind = firing["task"]["type"]
        due_us = clock.to_us(parse_utc(firing.get("deliver_at") or firing["scheduled_for"]))
    except Refused:
        raise
    except Exception as exc:
        raise Refused from exc
    record: Any = None
    if kind == "kafka":
        try:
            record = kafka_record(firing)
        except Exception:
            record = "unbuilt"
    return (firing["firing_id"], due_us, kind, bool(firing["task"].get("history_check")), record)


def lane_read(raw: bytes) -> tuple[Any, ...] | None:
    read = lane.held(raw)
    if read is None:
        return None
    firing_id, due_us, kind, keeps, produced = read
    record = KafkaRecord(*produced) if produced is not None else None
    return (firing_id, due_us, kind, keeps, record)


def check(raw: bytes) -> bool:
    """Whether the lane read ``raw``; if it did, it read what the Python path reads."""
    got = lane_read(raw)
    if got is None:
        return False
    assert got == python_read(raw), raw[:400]
    return True


def python_firings(record: bytes, now_us: int) -> list[bytes]:
    """The firings the Python path writes when the timer wakes ``record`` at ``now_us``."""
    current = state.ScheduleRecord.from_bytes(record)
    assert current.timed is not None
    now = clock.from_us(now_us)
    woken = state.wake(current, current.timed, now, ahead=AHEAD)
    return [
        state.firing_bytes(woken.record, instant, ids.firing_id(current.schedule_id, instant), now)
        for instant in woken.fire
    ]


@settings(max_examples=600, deadline=None)
@given(shaped().flatmap(encoded), st.integers(-30_000_000, 5_000_000))
def test_the_firings_the_workers_write_are_read_as_the_python_path_reads_them(
    raw_command: bytes, offset_us: int
) -> None:
    taken = judged(raw_command)
    if taken is None:
        return
    record, due_us = taken[2], taken[4]
    for firing in python_firings(record, due_us + offset_us):
        check(firing)
    fired = lane.fire(record, due_us, due_us + offset_us)
    if fired is not None:
        assert check(fired[1])  # every firing the lane fires, it also reads


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=12,
)
instants = st.integers(-(10**12), 300_000_000_000_000_000).map(
    lambda us: (
        format_utc(clock.from_us(us), micros=True)
        if -62_135_596_800_000_000 <= us <= 253_402_300_799_999_999
        else "9999-99-99T00:00:00Z"
    )
)
odd = st.sampled_from(
    [None, 5, 1.5, True, "", "x", [], {}, "2026-01-01T00:00:00", "2026-01-01T00:00:00+00:00",
     "2026-01-01T00:00:00.123Z", "2026-01-01T00:00:00Z", " 2026-01-01T00:00:00Z",
     "0000-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "kafka", "rest", "\udc80", "sch_\u00e9"]
)  # fmt: skip


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A member's value as written, now and then another, or none at all (``...``)."""
    return st.integers(0, 29).flatmap(
        lambda n: value if n < 28 else odd if n == 28 else st.just(...)
    )


@st.composite
def firings(draw: st.DrawFn) -> dict[str, Any]:
    connection = {
        "host": draw(maybe(st.sampled_from(["10.0.0.2:9092", "k:1", "http://h/x"]))),
        "cluster": draw(maybe(st.sampled_from([None, "", "main", "é"]))),
        "topic": draw(maybe(st.sampled_from(["jobs", "t\u00e9", ""]))),
        "key": draw(maybe(st.sampled_from([None, "", "k", "kéy"]))),
    }
    task = {
        "type": draw(maybe(st.sampled_from(["kafka", "kafka", "rest", "redis"]))),
        "connection": {k: v for k, v in connection.items() if v is not ...},
        "data": draw(maybe(json_values)),
        "history_check": draw(maybe(st.booleans())),
        "timeout": draw(maybe(st.sampled_from([10.0, 2.5, 10, 0.1, 1e300]))),
    }
    firing = {
        "firing_id": draw(maybe(st.text(min_size=1, max_size=8))),
        "schedule_id": draw(maybe(st.sampled_from(["sch_1", "sch_é"]))),
        "scheduled_for": draw(maybe(instants)),
        "deliver_at": draw(st.one_of(st.just(...), st.just(...), maybe(instants))),
        "fired_at": "2026-01-01T00:00:00Z",
        "attempt": draw(maybe(st.integers(-1, 2**64))),
        "task": {k: v for k, v in task.items() if v is not ...},
        "errors": [],
    }
    if draw(st.integers(0, 20)) == 0:
        firing["revoked"] = draw(st.sampled_from([[], ["fir_1"], None]))
    return {k: v for k, v in firing.items() if v is not ...}


def encode(firing: dict[str, Any], ensure_ascii: bool) -> bytes:
    try:
        return json.dumps(firing, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")
    except (UnicodeEncodeError, ValueError):
        return b"{}"


@settings(max_examples=3000, deadline=None)
@given(firings(), st.booleans())
def test_any_firing_is_read_as_the_python_path_reads_it_or_declined(
    firing: dict[str, Any], ensure_ascii: bool
) -> None:
    raw = encode(firing, ensure_ascii)
    try:
        python_read(raw)
    except Refused:
        assert lane.held(raw) is None
        return
    check(raw)


@settings(max_examples=3000, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_float_in_data_is_written_as_python_writes_it(value: float) -> None:
    raw = _kafka_firing(json.dumps([value, {"v": value}]))
    read = lane.held(raw)
    # An integral float that may stand for an int (``Data`` in ``native/``).
    unsure = value.is_integer() and (abs(value) >= 2**63 or math.copysign(1, value) < 0)
    assert (read is None) == unsure
    if read is not None:
        assert check(raw)


def _kafka_firing(data: str) -> bytes:
    firing = {
        "firing_id": "fir_1",
        "schedule_id": "sch_1",
        "scheduled_for": "2026-12-07T10:00:00.000000Z",
        "fired_at": "2026-12-07T09:59:30.000000Z",
        "attempt": 1,
        "task": {
            "type": "kafka",
            "connection": {"host": "10.0.0.2:9092", "topic": "jobs", "key": None},
            "data": "@",
            "history_check": False,
            "timeout": 10.0,
        },
    }
    return json.dumps(firing).encode().replace(b'"@"', data.encode())


#: ``data`` as it may come on the wire: read as Python reads it, or declined.
RAW_DATA = [
    '{"a":1,"b":2,"a":3}',
    "[1e16, 1e-7, 0.1, 0, 0.0, 5, 5.0, 1E2, 123.456e-3, 2.5e-320, -1.5, -7, 1e15, 1e-4, 1e-5]",
    "[9223372036854775807, -9223372036854775808, 18446744073709551615]",
    '"\\u00e9\\u2028\\u001f\\u007f\\/\\b\\f\\r\\t\\n\\"\\\\"',
    '{"":{"x":[null,true,false,{}]}}',
    "  [ 1 , 2 ]  ",
]
#: ``data`` the lane declines: Python reads it into something else, or not at all.
DECLINED_DATA = ["-0", "-0.0", "1e19", "100000000000000000000", "NaN", "1e400", '"\\ud800"']


@pytest.mark.parametrize("data", RAW_DATA)
def test_data_as_it_may_come_is_read_as_python_reads_it(data: str) -> None:
    assert check(_kafka_firing(data))


@pytest.mark.parametrize("data", DECLINED_DATA)
def test_data_python_would_read_otherwise_declines(data: str) -> None:
    assert lane.held(_kafka_firing(data)) is None


def test_a_revocation_or_a_member_written_twice_is_left_to_the_python_path() -> None:
    raw = _kafka_firing("null")
    assert check(raw)
    assert lane.held(raw.replace(b'{"firing_id"', b'{"revoked":[],"firing_id"')) is None
    assert lane.held(raw.replace(b'{"firing_id"', b'{"revoked":null,"firing_id"')) is None
    assert lane.held(raw.replace(b'{"firing_id"', b'{"attempt":2,"firing_id"')) is None
    assert lane.held(raw.replace(b'"attempt": 1', b'"attempt": true')) is None
    assert lane.held(raw.replace(b'"timeout": 10.0', b'"timeout": "10"')) is None
    assert lane.held(b"[]") is None and lane.held(b"") is None and lane.held(b"{") is None


def test_a_jittered_firing_is_held_until_its_delivery_time() -> None:
    firing = json.loads(_kafka_firing("null"))
    firing["deliver_at"] = "2026-12-07T10:00:03.250000Z"
    raw = json.dumps(firing).encode()
    assert check(raw)
    assert lane.held(raw)[1] == clock.to_us(parse_utc("2026-12-07T10:00:03.250Z"))  # type: ignore[index]
    firing["deliver_at"] = None  # present and null: Python refuses it
    assert lane.held(json.dumps(firing).encode()) is None


def test_the_wrapper_reads_what_the_extension_reads() -> None:
    raw = _kafka_firing('{"n": 1}')
    assert fastlane.held(raw) == lane.held(raw) and fastlane.held(raw) is not None
