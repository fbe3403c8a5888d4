"""JSON shapes serde reads and the model refuses: the compiled lane declines them.

serde's derived readers take a struct written as an array of its fields in
order, and a unit enum variant written as ``{"name": null}``; the model
refuses both. Found in review of the executor's reading of firings
(``tests/unit/test_fastlane_held.py``): before, the lane stored such a
command, which the Python path refuses. The property test rewrites one
member of generated commands the lane takes into those shapes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_fastlane import CLIENT, REST, check, encoded, judged, shaped

BASE = {"client": CLIENT, "type": "date", "schedule": "2030-01-01T09:00:00", "task": REST}

#: Where a struct is read: the command, its client, task and connection.
STRUCTS = [(), ("client",), ("task",), ("task", "connection")]
#: Where an enum is read, with a name the model takes.
ENUMS = [
    (("type",), "date"),
    (("action",), "upsert"),
    (("timezone",), "UTC"),
    (("misfire_policy",), "skip"),
    (("task", "type"), "rest"),
    (("task", "failed_policy"), "retry"),
]


def rewritten(command: dict[str, Any], path: tuple[str, ...], change: Any) -> dict[str, Any]:
    """``command`` with the member at ``path`` replaced by ``change(member)``."""
    if not path:
        return change(command)  # type: ignore[no-any-return]
    head, *rest = path
    return {**command, head: rewritten(command[head], tuple(rest), change)}


@pytest.mark.parametrize("path", STRUCTS)
def test_a_struct_written_as_an_array_declines(path: tuple[str, ...]) -> None:
    assert judged(json.dumps(BASE).encode()) is not None
    raw = json.dumps(rewritten(BASE, path, lambda member: list(member.values()))).encode()
    assert judged(raw) is None


@pytest.mark.parametrize(("path", "name"), ENUMS)
def test_an_enum_written_as_an_object_declines(path: tuple[str, ...], name: str) -> None:
    named = rewritten(BASE, path[:-1], lambda member: {**member, path[-1]: name})
    assert judged(json.dumps(named).encode()) is not None  # by its name: taken
    raw = json.dumps(rewritten(named, path[:-1], lambda m: {**m, path[-1]: {name: None}}))
    assert judged(raw.encode()) is None


@st.composite
def reshaped(draw: st.DrawFn) -> bytes:
    command = json.loads(draw(shaped().flatmap(encoded)))
    if not isinstance(command, dict):
        return json.dumps(command).encode()
    paths = [p for p in STRUCTS if _at(command, p) is not None]
    paths += [p for p, _ in ENUMS if isinstance(_at(command, p), str)]
    if not paths:
        return json.dumps(command).encode()
    path = draw(st.sampled_from(paths))
    value = _at(command, path)
    if isinstance(value, dict):
        new: Any = list(value.values())
    else:
        new = {value: None}
    if not path:
        return json.dumps(new).encode()
    return json.dumps(rewritten(command, path[:-1], lambda m: {**m, path[-1]: new})).encode()


def _at(command: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(command, dict):
            return None
        command = command.get(name)
    return command


@settings(max_examples=600, deadline=None)
@given(reshaped())
def test_whatever_the_lane_takes_in_another_shape_the_python_path_accepts(raw: bytes) -> None:
    check(raw)
