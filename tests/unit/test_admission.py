"""One judgement of a command for the topic and ``POST /commands`` (scheduler.admission).

The topic judges each record with ``admit_raw``; ``POST /commands`` judges
its body with ``admit_body``, which hands each command of an array to
``admit_raw`` as its own JSON text and produces those same bytes. The
property tests below build bodies from generated items and check that the
two make the same decision for every item: the same command, or the same
error and field. Pure functions only: no Faust agent, no web server.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler import admission
from scheduler.admission import Body, InvalidItem, Rules, admit_body, admit_raw, split_array
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Command
from scheduler.targets.egress import Policy

#: Small enough that a generated command can be too large.
MAX_BYTES = 4096
RULES = Rules(Policy.of(None, None), frozenset({"main"}), MAX_BYTES)

TARGETS: list[dict[str, Any]] = [
    {"type": "rest", "connection": {"host": "http://10.0.0.1:8080/run"}},
    {"type": "kafka", "connection": {"host": "10.0.0.2:9092", "topic": "jobs"}},
    {"type": "kafka", "connection": {"cluster": "main", "topic": "jobs"}},
    {"type": "redis", "connection": {"host": "10.0.0.5:6379", "topic": "jobs"}},
    {"type": "redis", "connection": {"host": "redis://cache:6379/0", "topic": "jobs"}},
]
SCHEDULES = {
    "cron": "*/5 * * * *",
    "date": "2030-01-01T09:00:00",
    "delay": "50",
    "delay-recur": "60",
    "now": None,
}

#: One field of a valid command made wrong: (dotted path, bad value); None removes it.
BREAKS: list[tuple[str, Any]] = [
    ("schedule", "61 * * * *"),
    ("timezone", "Mars/Base"),
    ("type", "weekly"),
    ("action", "explode"),
    ("client", None),
    ("client.key", ""),
    ("timezon", "UTC"),
    ("misfire_grace", -1),
    ("task", None),
    ("task.type", "ftp"),
    ("task.retry_wait", 0),
    ("task.connection.host", "cache:notaport"),
    ("task.connection.host", ":6379"),
    ("task.connection.host", "169.254.169.254:6379"),
    ("task.connection.host", "http://169.254.169.254/latest"),
    ("task.connection.host", "unix:///var/run/redis.sock"),
    ("task.connection.cluster", "nowhere"),
    ("task.connection.headers", {"Bad Name": "x"}),
    ("task.data", "\udc00"),  # a lone surrogate
    ("task.data", "x" * MAX_BYTES),  # too large
]


def command(key: str, kind: str, target: dict[str, Any], data: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "client": {"operation": "op", "application": "app", "group": "g", "key": key, "type": "t"},
        "type": kind,
        "task": {**target, "data": data},
    }
    if SCHEDULES[kind] is not None:
        out["schedule"] = SCHEDULES[kind]
    return out


def broken(cmd: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    cmd = json.loads(json.dumps(cmd))  # a deep copy
    *parents, name = path.split(".")
    node = cmd
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(name, None)
    else:
        node[name] = value
    return cmd


scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["가나다", "\U0001f600", "\u2028", "\\", '"'])
)
data = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
valid = st.builds(
    command,
    key=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1),
    kind=st.sampled_from(sorted(SCHEDULES)),
    target=st.sampled_from(TARGETS),
    data=data,
)
with_a_broken_field = st.builds(
    lambda cmd, change: broken(cmd, *change), valid, st.sampled_from(BREAKS)
)
#: What a producer might send that is no command at all.
not_commands = st.one_of(
    scalars,  # numbers, strings, null, booleans
    valid.map(json.dumps),  # a string holding a command's JSON
    st.lists(valid, max_size=2),  # an array, nested in the body's
    valid.map(lambda cmd: [[cmd]]),
    data,
)
#: Any JSON value a producer might send as a command: mostly commands, good or not
#: (``st.one_of`` would flatten ``not_commands`` and pick its branches as often).
values = st.sampled_from([valid, valid, with_a_broken_field, with_a_broken_field, not_commands])
values = values.flatmap(lambda strategy: strategy)


@st.composite
def encoded(draw: st.DrawFn, value: Any) -> bytes:
    """``value`` as a producer may write it: either escaping, any spacing."""
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 2])),
        separators=draw(st.sampled_from([(",", ":"), (", ", ": ")])),
    )
    return text.encode("utf-8", "surrogatepass")


items = values.flatmap(encoded)
spacing = st.sampled_from(["", " ", "\n", "\t ", "\r\n  "]).map(str.encode)


def decision(judge: Any, raw: bytes) -> tuple[str, Any]:
    """What ``judge`` makes of ``raw``: the command's stored bytes, or (error, field)."""
    try:
        command: Command = judge(raw, RULES)
    except InvalidCommand as exc:
        return ("refused", (exc.error, exc.field, exc.detail))
    return ("accepted", command.json_bytes)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(spacing, items, spacing), max_size=4), spacing)
def test_an_array_is_judged_item_by_item_as_the_topic_judges_each(
    parts: list[tuple[bytes, bytes, bytes]], outer: bytes
) -> None:
    raws = [item for _, item, _ in parts]
    body = outer + b"[" + b",".join(a + item + b for a, item, b in parts) + b"]" + outer
    by_topic = [decision(admit_raw, raw) for raw in raws]
    try:
        got = admit_body(body, RULES)
    except InvalidItem as exc:
        refused = exc.index
        assert all(verdict == "accepted" for verdict, _ in by_topic[:refused])
        assert by_topic[refused] == ("refused", (exc.error, exc.field, exc.detail))
        return
    assert got.many
    assert [verdict for verdict, _ in by_topic] == ["accepted"] * len(raws)
    # Produced as written: each item's own bytes, which the topic then judges alike.
    assert [text for _, text in got.commands] == raws
    assert [command.json_bytes for command, _ in got.commands] == [kept for _, kept in by_topic]


@settings(max_examples=300, deadline=None)
@given(items, spacing)
def test_a_single_command_is_judged_as_the_topic_judges_it(raw: bytes, space: bytes) -> None:
    if raw.startswith(b"["):
        return  # an array body is many commands: the test above
    try:
        got = admit_body(space + raw + space, RULES)  # judged, and sent, without the spacing
    except InvalidItem:
        pytest.fail("a single command is not an item")
    except InvalidCommand as exc:
        assert decision(admit_raw, raw) == ("refused", (exc.error, exc.field, exc.detail))
        return
    assert not got.many
    assert got.commands[0][1] == raw
    assert decision(admit_raw, raw) == ("accepted", got.commands[0][0].json_bytes)


JSON_PUNCTUATION = [bytes([char]) for char in b'"[]{},\\:']


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A valid array body cut short, or with bytes put in or taken out."""
    body = draw(st.lists(items, max_size=3).map(lambda raws: b"[" + b",".join(raws) + b"]"))
    at = draw(st.integers(0, len(body)))
    edit = draw(st.sampled_from(["cut", "insert", "drop"]))
    if edit == "cut":
        return body[:at]
    if edit == "insert":
        return body[:at] + draw(st.sampled_from(JSON_PUNCTUATION)) + body[at:]
    return body[:at] + body[at + 1 :]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), mangled(), st.text().map(str.encode)))
def test_any_body_gets_a_decision_never_an_exception(body: bytes) -> None:
    try:
        got = admit_body(body, RULES)
    except InvalidCommand as exc:
        assert exc.error and exc.detail and exc.field
        return
    assert isinstance(got, Body)


# --- the cases the issue named ---------------------------------------------------------


VALID = command("k1", "cron", TARGETS[0], {"n": 1})


def refusal(body: bytes) -> tuple[str, str, int | None]:
    with pytest.raises(InvalidCommand) as caught:
        admit_body(body, RULES)
    exc = caught.value
    return exc.error, exc.field, exc.index if isinstance(exc, InvalidItem) else None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"5", ("bad_json", "$", None)),
        (b"null", ("bad_json", "$", None)),
        (b"[1]", ("bad_json", "$", 0)),
        (b"[null]", ("bad_json", "$", 0)),
        (b"[[]]", ("bad_json", "$", 0)),
        (json.dumps([json.dumps(VALID)]).encode(), ("bad_json", "$", 0)),  # a string of JSON
        (json.dumps([VALID, 5]).encode(), ("bad_json", "$", 1)),
        (json.dumps([VALID]).encode()[:-1] + b",]", ("bad_json", "$", 1)),  # trailing comma
        (json.dumps([VALID]).encode() + b"]", ("bad_json", "$", None)),  # text after it
        (b'["never closed]', ("bad_json", "$", None)),
        (b"[{}", ("bad_json", "$", None)),
        (b"[}", ("bad_json", "$", None)),
        (
            json.dumps([VALID, broken(VALID, "timezone", "Mars/Base")]).encode(),
            ("invalid_command", "timezone", 1),
        ),
        (
            json.dumps([broken(VALID, "task.connection.host", "http://169.254.169.254/")]).encode(),
            ("egress_denied", "task.connection.host", 0),
        ),
    ],
)
def test_malformed_bodies_are_refused_naming_the_field_and_index(
    body: bytes, expected: tuple[str, str, int | None]
) -> None:
    assert refusal(body) == expected


def test_each_command_is_produced_as_its_own_text() -> None:
    first = json.dumps(VALID, ensure_ascii=False).encode()
    second = json.dumps(command("k2", "now", TARGETS[3], "가나다"), ensure_ascii=False).encode()
    got = admit_body(b" [\n  " + first + b" ,\n" + second + b"\n] ", RULES)
    assert got.many
    assert [text for _, text in got.commands] == [first, second]
    assert b"\xea\xb0\x80" in got.commands[1][1]  # "가" as sent, not escaped
    one = admit_body(b"\n" + first + b"\n", RULES)
    assert not one.many and one.commands[0][1] == first


def test_a_command_near_the_limit_is_judged_at_the_size_it_is_sent() -> None:
    # Before, POST judged json.dumps(item) (every non-ASCII character escaped, six
    # bytes each) and refused as too large what the topic took.
    cmd = command("big", "now", TARGETS[0], "가" * 1000)
    raw = json.dumps(cmd, ensure_ascii=False).encode()
    assert len(raw) < MAX_BYTES < len(json.dumps(cmd).encode())
    assert decision(admit_raw, raw)[0] == "accepted"
    assert admit_body(b"[" + raw + b"]", RULES).commands[0][1] == raw


def test_empty_array_has_no_commands() -> None:
    assert admit_body(b"[]", RULES) == Body([], many=True)
    assert split_array(b" [ \n ] ") == []
    assert split_array(b'{"a": [1, 2]}') is None


def test_a_utf16_body_is_read_and_sent_as_utf8() -> None:
    got = admit_body(json.dumps([VALID]).encode("utf-16"), RULES)
    assert got.commands[0][1] == json.dumps(VALID).encode()


def test_a_fault_in_judging_is_a_refusal_said_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(raw: bytes, *, max_bytes: int) -> Command:
        raise RuntimeError("boom")

    monkeypatch.setattr(admission, "parse_command", fails)
    with pytest.raises(InvalidCommand) as caught:
        admit_raw(json.dumps(VALID).encode(), RULES)
    assert caught.value.error == "unreadable"
    assert "cannot read the command: RuntimeError: boom" in caught.value.detail
    assert refusal(json.dumps([VALID]).encode()) == ("unreadable", "$", 0)
