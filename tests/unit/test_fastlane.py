"""The command path's compiled lane (``native/``, ``scheduler.streams.fastlane``).

The lane may decline anything, and takes only what the Python path accepts,
into the very bytes it writes: the property test feeds it generated
commands, most of them of the lane's own shape with one field at an edge
(valid or not), others from ``test_admission`` (every kind of command,
valid and broken), and checks each one it takes against ``admit_raw``,
``state.apply`` and ``index_key``. A list of common commands checks that it
does take what it is for. It is imported, not skipped: ``make`` builds it,
and a worker without it is slower.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import scheduler_fastlane as lane
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import clock
from scheduler.admission import admit_raw, admits_target
from scheduler.domain import ids, state
from scheduler.domain.errors import InvalidCommand
from scheduler.streams.timers import index_key
from tests.unit.test_admission import MAX_BYTES, RULES, data, encoded, items

PARTITIONS = 8
#: A record's Kafka timestamp, in ms.
STAMP_MS = 1_765_000_000_123


def python_path(raw: bytes, stamp_ms: int = STAMP_MS) -> tuple[Any, ...]:
    """What the Python path writes for ``raw`` as a new schedule, or raises ``InvalidCommand``."""
    command = admit_raw(raw, RULES)
    accepted_at = datetime.fromtimestamp(stamp_ms / 1000, tz=UTC)  # as scheduler.streams.accept
    record = state.apply(None, command, accepted_at)
    assert record is not None and record.timed is not None
    sid = command.schedule_id
    due = clock.to_us(record.timed)
    partition = (ids.murmur2(sid.encode()) & 0x7FFFFFFF) % PARTITIONS
    return sid, partition, record.to_bytes(), index_key(due, sid), due


def judged(raw: bytes, stamp_ms: int = STAMP_MS) -> tuple[Any, ...] | None:
    """The lane's result for ``raw`` if it takes it and this worker admits its target."""
    got = lane.judge_one(raw, stamp_ms, PARTITIONS, MAX_BYTES)
    if got is None:
        return None
    sid, partition, kind, host, record, entry, due = got
    if not admits_target(kind, host, RULES):
        with pytest.raises(InvalidCommand):  # the Python path refuses it too
            admit_raw(raw, RULES)
        return None
    return sid, partition, record, entry, due


def check(raw: bytes, stamp_ms: int = STAMP_MS) -> bool:
    """Whether the lane took ``raw``; if it did, it wrote what the Python path writes."""
    got = judged(raw, stamp_ms)
    if got is None:
        return False
    try:
        expected = python_path(raw, stamp_ms)
    except InvalidCommand as exc:
        pytest.fail(f"the lane took a command the Python path refuses: {exc} ({raw[:300]!r})")
    assert got == expected
    return True


# --- commands of the lane's shape, one field at an edge ------------------------------------

EDGY_TEXT = [
    "",
    " a",
    "a ",
    "a\tb",
    "\ta",
    'q"uote',
    "back\\slash",
    "é",
    "\U0001f600",
    "\x7f",
    "\x1f",
    "a\x1f",
    "\u2028",
    "\u00a0x",
    "x\u3000",
    "x" * 512,
    "x" * 513,
    "ø" * 512,
    "ø" * 513,
]
texts = st.one_of(st.text(max_size=8), st.sampled_from(EDGY_TEXT), st.just("op"))
DATES = [
    "2030-01-01T09:00:00",
    "2030-01-01T09:00:00Z",
    "2030-01-01T09:00:00z",
    "2030-01-01T09:00:00.123",
    "2030-01-01T09:00:00.123456+00:00",
    "2030-01-01T09:00:00.123456-00:00",
    "2030-01-01T09:00:00.1",
    "2030-01-01T09:00:00.12345",
    "2030-01-01T09:00:00.1234567",
    "2030-01-01 09:00:00",
    "2030-01-01T09:00",
    "2030-01-01",
    "20300101T090000",
    "2030-02-29T00:00:00",
    "2028-02-29T23:59:59",
    "2100-02-29T00:00:00",
    "2000-02-29T00:00:00",
    "1970-01-01T00:00:00",
    "1969-12-31T23:59:59",
    "1971-01-01T00:00:00",
    "9998-12-31T23:59:59.999999",
    "9999-12-31T23:59:59",
    "2030-01-01T24:00:00",
    "2030-13-01T00:00:00",
    "2030-04-31T00:00:00",
    "2030-01-01T09:00:60",
    "2030-01-01T09:00:00+09:00",
    "2030-01-01T09:00:00+00:00:00",
    "2030-01-01t09:00:00",
    " 2030-01-01T09:00:00",
    "2030-01-01T09:00:00 ",
    "\uff12\uff10\uff13\uff10-01-01T09:00:00",  # full-width digits
]
dates = st.one_of(
    st.sampled_from(DATES),
    st.datetimes(datetime(1960, 1, 1), datetime(9999, 12, 31)).map(
        lambda moment: moment.isoformat()
    ),
    st.datetimes(datetime(1960, 1, 1), datetime(9999, 12, 31)).map(
        lambda moment: moment.isoformat(timespec="milliseconds") + "Z"
    ),
)
DELAYS = [
    "50",
    "5.",
    ".5",
    "0",
    "0.0",
    "0.000001",
    "0.0000001",
    "0.9999995",
    "1.5",
    "1.123456",
    "1.1234567",
    "00012",
    "1e3",
    "-1",
    "+1",
    "PT5S",
    " 5",
    "5 ",
    "1_000",
    "9999999999",
    "99999999999",
    "9999999999.999999",
    "0.5",
    "1",
    "1.000000",
    "\u0663",  # an Arabic-Indic digit
]
delays = st.one_of(
    st.sampled_from(DELAYS),
    st.integers(0, 10**11).map(str),
    st.decimals(0, 10**6, places=7, allow_nan=False).map(str),
)
good_dates = st.datetimes(datetime(1971, 1, 1), datetime(9000, 1, 1)).map(
    lambda moment: moment.isoformat(timespec="microseconds") + "+00:00"
) | st.sampled_from(DATES[:5])
good_delays = st.integers(1, 10**9).map(str) | st.decimals(0, 10**6, places=6).map(str)
schedules = st.one_of(dates, delays, st.integers(-5, 10**6), st.floats(-1, 1e6), st.none())
NUMBERS = [0, 0.0, -1, 1, 1.5, "60", True, None, 604800, 604800.5, 1000, 1001, 3.0, 10, 10.5]
NUMBERS += [3600, 3600.1, 1e-9, 31622400, 31622400.5, 2**64]
HOSTS = [
    "http://10.0.0.1:8080/run",
    "https://example.com",
    "HTTP://example.com/x",
    "http://",
    "http:///path",
    "ftp://example.com",
    "10.0.0.2:9092",
    "",
    " http://a.example",
    "http://169.254.169.254/latest",
    "http://[::1]:80/",
    "http://localhost/x",
    "http://[::1",  # urlsplit raises on it
    "http://[notip]/",
    "b:\u00b2",  # a kafka port that isdigit() takes and int() does not
    None,
    5,
]
HEADERS = [
    None,
    {},
    {"Authorization": "Bearer x"},
    {"X-A": "1", "x-a": "2"},
    {"Bad Name": "x"},
    {"A": "a\nb"},
    {"A": "a\x00"},
    {"A": " spaced "},
    {"A": None},
    {"A": 1},
    {"": "x"},
    {f"h{i}": "v" for i in range(64)},
    {f"h{i}": "v" for i in range(65)},
    {"A": "v" * 16_383},
    {"A": "v" * 16_384},
]
TASK_FIELDS = ["failed_policy", "retry_wait", "max_retries", "retry_backoff"]
TASK_FIELDS += ["retry_max_wait", "retry_max_age", "timeout"]
task_extras = st.one_of(
    st.just({}),
    st.builds(
        lambda name, value: {name: value}, st.sampled_from(TASK_FIELDS), st.sampled_from(NUMBERS)
    ),
    st.sampled_from(
        [
            {"failed_policy": "retry"},
            {"failed_policy": "RETRY"},
            {"failed_policy": None},
            {"history_check": True},
            {"history_check": False},
            {"unknown": 1},
        ]
    ),
)
EXTRAS = [
    {"name": "nightly"},
    {"name": None},
    {"name": ""},
    {"name": " x "},
    {"name": "x" * 512},
    {"name": "x" * 513},
    {"name": 5},
    {"action": "upsert"},
    {"action": "UPSERT"},
    {"action": None},
    {"action": "delete"},
    {"timezone": "UTC"},
    {"timezone": "utc"},
    {"timezone": " UTC"},
    {"timezone": "Asia/Seoul"},
    {"timezone": "Etc/UTC"},
    {"timezone": None},
    {"jitter": 1},
    {"jitter": None},
    {"start": "2030-01-01T00:00:00"},
    {"max_fires": 1},
    {"misfire_policy": "skip"},
    {"misfire_policy": "later"},
    {"misfire_grace": 0},
    {"misfire_grace": 10},
    {"misfire_grace": "10"},
    {"unknown": 1},
]
extras = st.one_of(st.just({}), st.sampled_from(EXTRAS))


#: What :func:`shaped` may set at an edge, one at a time.
EDGES = ["client", "schedule", "kind", "host", "topic", "headers", "connection", "task", "data"]
EDGES += ["extras", "none", "none"]


@st.composite
def shaped(draw: st.DrawFn) -> dict[str, Any]:
    """A command of the shape the lane takes, one part of it drawn from its edges."""
    edge = draw(st.sampled_from(EDGES))
    kind = draw(st.sampled_from(["date", "delay", "delay-recur"]))
    if edge == "kind":
        kind = draw(st.sampled_from(["cron", "now", "Date", "delay_recur"]))
    schedule: Any = draw(good_dates if kind == "date" else good_delays)
    if edge == "schedule":
        schedule = draw(dates if kind == "date" else delays | schedules)
    client = {name: name[:2] for name in ("operation", "application", "group", "key", "type")}
    client["key"] = draw(st.text(max_size=12).filter(str.strip) | st.sampled_from(["k", "ключ"]))
    if edge == "client":
        client[draw(st.sampled_from(sorted(client)))] = draw(texts)
    task_type = draw(st.sampled_from(["rest", "kafka"]))
    connection: dict[str, Any] = {"host": HOSTS[0] if task_type == "rest" else HOSTS[6]}
    if edge == "host":
        connection["host"] = draw(st.sampled_from(HOSTS))
    if task_type == "kafka" or edge == "topic":
        connection["topic"] = draw(texts | st.none()) if edge == "topic" else "jobs"
    if edge == "headers" or draw(st.integers(0, 4)) == 0:
        connection["headers"] = draw(
            st.sampled_from(HEADERS[2:3] if edge != "headers" else HEADERS)
        )
    if edge == "connection":
        connection[draw(st.sampled_from(["key", "cluster", "mode", "port"]))] = draw(texts)
    task: dict[str, Any] = {"type": task_type, "connection": connection}
    if edge == "task":
        task.update(draw(task_extras))
        task["type"] = draw(st.sampled_from(["rest", "kafka", "redis", "REST"]))
    if edge == "data" or draw(st.booleans()):
        task["data"] = draw(data)
    command: dict[str, Any] = {"client": client, "type": kind, "task": task}
    if edge == "extras":
        command.update(draw(extras))
    if edge != "schedule" or draw(st.integers(0, 10)):
        command["schedule"] = schedule
    return command


#: Values JSON's grammar lacks or a float cannot hold, escapes, and nesting past serde's 128.
ODD_VALUES = [b"NaN", b"Infinity", b"1e400", b"-1e400", b"1e-400", b"1" + b"0" * 30]
ODD_VALUES += [b'"\\ud800"', b'"\\ud83d\\ude00"', b'"\\u0000"', b'"\\x"', b'"a\tb"', b"[" * 130]


#: Byte-level changes JSON text alone can carry.
@st.composite
def raw_edits(draw: st.DrawFn, raw: bytes) -> bytes:
    edit = draw(st.sampled_from(["none"] * 6 + ["dup", "bom", "tail", "bytes", "space"]))
    if edit == "dup":  # a member written twice
        member = draw(st.sampled_from([b'"type":"cron",', b'"type":"date",', b'"client":{},']))
        return b"{" + member + raw[1:]
    if edit == "bom":
        return b"\xef\xbb\xbf" + raw
    if edit == "tail":
        return raw + draw(st.sampled_from([b" ", b"\n", b"x", b"}", b"{}", b"\x00"]))
    if edit == "bytes":  # a byte that is not UTF-8, in a string
        return raw.replace(b'"op"', b'"o\xff"').replace(b'"ap"', b'"a\xc3"')
    return b"  " + raw + b"\r\n"


lane_commands = shaped().flatmap(encoded).flatmap(raw_edits)


def with_odd_data(value: bytes) -> bytes:
    """A command the lane takes, but for ``value`` as its task's data."""
    command = {"client": CLIENT, "type": "delay", "schedule": "5", "task": {**REST, "data": "@"}}
    return json.dumps(command).encode().replace(b'"@"', value)


@settings(max_examples=1500, deadline=None)
@given(
    st.one_of(lane_commands, lane_commands, items, st.sampled_from(ODD_VALUES).map(with_odd_data))
)
def test_whatever_the_lane_takes_the_python_path_accepts_into_the_same_bytes(raw: bytes) -> None:
    check(raw)


@settings(max_examples=200, deadline=None)
@given(shaped().flatmap(encoded), st.integers(-(10**13), 10**14))
def test_the_acceptance_instant_is_the_record_timestamp_to_the_millisecond(
    raw: bytes, stamp_ms: int
) -> None:
    check(raw, stamp_ms)


REST = {"type": "rest", "connection": {"host": "http://10.0.0.1:8080/run"}}
KAFKA = {"type": "kafka", "connection": {"host": "10.0.0.2:9092", "topic": "jobs"}}
CLIENT = {"operation": "op", "application": "app", "group": "g", "key": "k1", "type": "t"}
COMMON: list[dict[str, Any]] = [
    {"client": CLIENT, "type": "date", "schedule": "2030-01-01T09:00:00", "task": REST},
    {"client": CLIENT, "type": "date", "schedule": "2030-01-01T09:00:00.123Z", "task": KAFKA},
    {
        "client": CLIENT,
        "type": "date",
        "schedule": "2030-06-30T23:59:59.123456+00:00",
        "task": REST,
    },
    {"client": CLIENT, "type": "delay", "schedule": "50", "task": REST},
    {
        "client": CLIENT,
        "type": "delay",
        "schedule": "0.25",
        "task": {**KAFKA, "data": [1, {"a": None}]},
    },
    {"client": CLIENT, "type": "delay-recur", "schedule": "10", "task": KAFKA},
    {"client": CLIENT, "type": "delay-recur", "schedule": "1.5", "task": REST, "timezone": "UTC"},
    {
        "action": "upsert",
        "name": "reminder — 알림",
        "client": {**CLIENT, "key": "사용자/42 ø"},  # (an escaped surrogate pair declines)
        "type": "delay",
        "schedule": "3600",
        "misfire_policy": "skip",
        "misfire_grace": 60,
        "task": {
            "type": "rest",
            "connection": {
                "host": "https://hooks.example.com/run?x=1",
                "headers": {"Authorization": "Bearer t0ken", "X-Trace": "a b"},
            },
            "data": {"text": 'line\nbreak "quoted" \\ \u2028', "n": 1.5e300, "big": 10**30},
            "failed_policy": "retry",
            "retry_wait": 30,
            "max_retries": 5,
            "retry_backoff": 2,
            "retry_max_wait": 600.5,
            "retry_max_age": 86400,
            "timeout": 2.5,
        },
    },
]


@pytest.mark.parametrize("command", COMMON, ids=range(len(COMMON)))
@pytest.mark.parametrize("ensure_ascii", [False, True])
def test_the_lane_takes_common_commands(command: dict[str, Any], ensure_ascii: bool) -> None:
    assert check(json.dumps(command, ensure_ascii=ensure_ascii).encode())


@pytest.mark.parametrize(
    "command",
    [
        {**COMMON[0], "timezone": "Asia/Seoul"},  # a zone: the Python path's DST rule
        {**COMMON[0], "type": "cron", "schedule": "0 9 * * *"},
        {**COMMON[0], "jitter": 5},
        {**COMMON[5], "max_fires": 3},
        {**COMMON[0], "task": {**REST, "history_check": True}},  # keeps history
        {**COMMON[0], "task": {"type": "redis", "connection": {"host": "r:6379", "topic": "q"}}},
        {"action": "delete", "client": CLIENT},
    ],
)
def test_the_lane_declines_what_it_leaves_to_the_python_path(command: dict[str, Any]) -> None:
    raw = json.dumps(command).encode()
    admit_raw(raw, RULES)  # valid: declining is the lane's choice, not a refusal
    assert lane.judge_one(raw, STAMP_MS, PARTITIONS, MAX_BYTES) is None


def test_a_batch_declines_a_command_not_keyed_by_its_id_or_read_from_another_partition() -> None:
    raw = json.dumps(COMMON[3]).encode()
    sid, partition, *_ = python_path(raw)
    other = (partition + 1) % PARTITIONS

    def record(key: Any) -> SimpleNamespace:
        return SimpleNamespace(key=key, value=raw, timestamp=STAMP_MS)

    records = [record(sid.encode()), record(None), record(b"mine"), record(sid.encode())]
    taken, targets = lane.take_batch(records, partition, PARTITIONS, MAX_BYTES)
    assert [one is not None for one in taken] == [True, False, False, True]
    assert targets == [("rest", REST["connection"]["host"])]  # one target, judged once
    assert taken[0][1] == taken[3][1] == 0
    assert lane.take_batch(records, other, PARTITIONS, MAX_BYTES)[0] == [None] * 4
    assert lane.take_batch(
        [SimpleNamespace(key=sid.encode(), value=None, timestamp=STAMP_MS)],
        partition,
        PARTITIONS,
        MAX_BYTES,
    )[0] == [None]


#: A float field next to its bound, written with more digits than a double holds:
#: read correctly rounded, each lands outside it (or exactly on it).
NEAR_BOUNDS = [
    ("task", "timeout", b"3600.00000000000023"),
    ("task", "timeout", b"3600.0000000000001"),
    ("task", "retry_backoff", b"0.99999999999999994"),
    ("task", "retry_backoff", b"10.000000000000001"),
    ("task", "retry_wait", b"604800.000000000061"),
    ("task", "retry_max_wait", b"604800.000000000061"),
    ("task", "retry_max_age", b"31622400.000000002"),
    ("command", "misfire_grace", b"31622400.000000002"),
    ("command", "misfire_grace", b"4.9e-324"),
    ("command", "misfire_grace", b"0e5"),
]


@pytest.mark.parametrize(("where", "name", "number"), NEAR_BOUNDS)
def test_a_number_at_its_bound_is_read_as_the_python_path_reads_it(
    where: str, name: str, number: bytes
) -> None:
    command = json.loads(json.dumps(COMMON[3]))
    (command["task"] if where == "task" else command)[name] = "@"
    check(json.dumps(command).encode().replace(b'"@"', number))


def test_a_target_the_checks_cannot_read_is_refused_by_the_python_path() -> None:
    from scheduler.streams import fastlane

    for kind, host in [("rest", "http://[::1"), ("kafka", "b:\u00b2")]:
        assert fastlane._admits(kind, host) is False  # not an exception out of the batch
        task = {"type": kind, "connection": {"host": host, "topic": "t"}}
        raw = json.dumps({**COMMON[3], "task": task}).encode()
        assert lane.judge_one(raw, STAMP_MS, PARTITIONS, MAX_BYTES) is not None
        with pytest.raises(InvalidCommand):
            admit_raw(raw, RULES)


@pytest.mark.parametrize("stamp_ms", [2**32 * 1000 - 1, 2**32 * 1000, 10**14])
def test_a_timestamp_past_2106_is_declined(stamp_ms: int) -> None:
    """The Python path reads it through a float, a microsecond off now and then."""
    raw = json.dumps(COMMON[3]).encode()
    assert (lane.judge_one(raw, stamp_ms, PARTITIONS, MAX_BYTES) is None) == (
        stamp_ms >= 2**32 * 1000
    )


def test_no_partitions_declines_rather_than_dividing_by_zero() -> None:
    assert lane.judge_one(json.dumps(COMMON[3]).encode(), STAMP_MS, 0, MAX_BYTES) is None


def test_a_command_over_the_size_limit_is_declined() -> None:
    raw = json.dumps(COMMON[3]).encode()
    assert lane.judge_one(raw, STAMP_MS, PARTITIONS, len(raw)) is not None
    assert lane.judge_one(raw, STAMP_MS, PARTITIONS, len(raw) - 1) is None
