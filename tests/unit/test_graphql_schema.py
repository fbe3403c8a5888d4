"""The GraphQL schema against the web view it stands for (scheduler.graphql_api).

A schedule in GraphQL is ``state.describe``'s view of it, field for field: a
field added to ``describe`` and not to the schema would be shown by REST and
silently missing from GraphQL. No worker here; the integration tier runs
the queries (tests/integration/test_graphql.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from graphql import build_schema

from scheduler.domain import state
from scheduler.domain.models import parse_command
from scheduler.graphql_api import SCHEDULE_FIELDS, HistoryEvent, Schedule, schema
from tests.commands import example


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _shown() -> dict[str, object]:
    task = {
        "type": "rest",
        "connection": {
            "host": "http://10.0.0.1/run",
            "headers": {"Authorization": "Bearer literal-secret"},
        },
    }
    command = parse_command(example(schedule="0 9 * * 1-5", jitter=5, task=task))
    record = state.apply(None, command, datetime(2030, 1, 1, tzinfo=UTC))
    assert record is not None
    return state.describe(record)


def test_a_schedule_has_every_field_describe_shows_and_no_other() -> None:
    shown = _shown()
    assert set(SCHEDULE_FIELDS) == set(shown)
    schedule = Schedule.of(shown)
    for name in SCHEDULE_FIELDS:
        if name != "client":
            assert getattr(schedule, name) == shown[name], name
    assert vars(schedule.client) == shown["client"]
    # What describe masks stays masked: Schedule takes its task as given.
    assert schedule.task["connection"]["headers"]["Authorization"] == "***"  # type: ignore[index]


def test_the_published_schema_names_each_field_in_camel_case() -> None:
    published = build_schema(schema.as_str())
    fields = set(published.type_map["Schedule"].fields)  # type: ignore[attr-defined]
    assert {_camel(name) for name in SCHEDULE_FIELDS} | {"history", "preview"} == fields
    assert set(published.query_type.fields) == {"schedules", "schedule"}  # type: ignore[union-attr]
    mutations = set(published.mutation_type.fields)  # type: ignore[union-attr]
    assert mutations == {"upsert", "delete", "pause", "resume", "trigger", "submit"}
    assert published.subscription_type is None


def test_history_events_keep_every_field_and_list_their_instants() -> None:
    fired = HistoryEvent.of(
        {
            "event": "fired",
            "schedule_id": "sch_x",
            "at": "t1",
            "firing_id": "f",
            "scheduled_for": "i",
        }
    )
    assert fired.scheduled_for == ["i"] and fired.firing_id == "f" and fired.attempt is None
    revoked = {"event": "revoked", "schedule_id": "sch_x", "at": "t2", "scheduled_for": ["a", "b"]}
    taken_back = HistoryEvent.of(revoked)
    assert taken_back.scheduled_for == ["a", "b"] and taken_back.data == revoked
