"""The web view's OpenAPI 3.1 description, served at ``GET /openapi.json``.

Built in code, not kept as a file: the command format is the pydantic model's
own JSON Schema (``Command.model_json_schema()``; pydantic v2 writes JSON
Schema 2020-12, the dialect OpenAPI 3.1 uses), and the limits, filters and
statuses are the constants the views and the domain enforce. What is written
here by hand is what no code declares: the shape of each answer.

The document describes the worker that serves it in one respect: with
``SCHEDULER_WEB_TOKENS`` set, every operation but those ``scheduler.webauth``
leaves open requires the bearer scheme and may answer 401; without tokens,
none requires anything. ``GET /openapi.json`` is itself open, like
``GET /health``: it holds no data, only the contract docs/ already publish,
and a client has to read it to learn how to authenticate. It names no
server, so its paths are relative to the worker it was fetched from; every
worker serves the same endpoints.

Only the web view's JSON API and ``/metrics`` are described:
``tests/unit/test_openapi.py`` lists what the aiohttp app serves besides,
and why it is left out.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import metadata
from typing import Any

from faust import web

from scheduler import webauth
from scheduler.app import app, settings
from scheduler.domain import state
from scheduler.domain.models import Command
from scheduler.domain.preview import MAX_COUNT
from scheduler.streams.history import KEEP
from scheduler.web import MAX_LIST

__all__ = ["OPENAPI_VERSION", "document"]

OPENAPI_VERSION = "3.1.0"
_SCHEMAS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMAS + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


_INSTANT = {"type": "string", "format": "date-time"}
_UTC = {**_INSTANT, "description": "UTC, ISO-8601 (`...Z`)"}
_LOCAL = {
    **_INSTANT,
    "description": "the same instant in the schedule's time zone, with its offset",
}


def _command_schemas() -> dict[str, dict[str, Any]]:
    """``Command`` and every model and enum it is made of, as components."""
    schema = Command.model_json_schema(mode="validation", ref_template=_SCHEMAS + "{model}")
    found: dict[str, dict[str, Any]] = schema.pop("$defs")
    schema["description"] = (
        "One command (docs/commands.md). `type`, `task` and, but for `now`, `schedule` "
        "are required for an upsert; `delete`, `pause`, `resume` and `trigger` need "
        "only `client`. Unknown fields are refused."
    )
    found["Command"] = schema
    return found


def _schemas() -> dict[str, dict[str, Any]]:
    """The answers' shapes: what ``scheduler.web`` and the domain functions it calls return."""
    schedule = {
        "type": "object",
        "description": "A stored schedule (`scheduler.domain.state.describe`). Secret header "
        "values and URL passwords in `task` are shown as `***`.",
        "properties": {
            "schedule_id": {"type": "string", "pattern": "^sch_[0-9a-f]{32}$"},
            "name": _nullable({"type": "string"}),
            "client": _ref("Client"),
            "type": _nullable(_ref("ScheduleType")),
            "schedule": _nullable({"type": "string"}),
            "timezone": {"type": "string", "description": "an IANA zone name"},
            "task": _nullable(_ref("Task")),
            "status": {"type": "string", "enum": [status.value for status in state.Status]},
            "paused": {"type": "boolean"},
            "next_fire_at": _nullable(_UTC),
            "next_fire_at_local": _nullable(_LOCAL),
            "fire_count": {"type": "integer", "minimum": 0},
            "last_fired_at": _nullable(_UTC),
            "missed_count": {"type": "integer", "minimum": 0},
            "last_missed_at": _nullable(_UTC),
            "misfire_policy": _ref("MisfirePolicy"),
            "start": _nullable({"type": "string"}),
            "end": _nullable({"type": "string"}),
            "max_fires": _nullable({"type": "integer", "minimum": 1}),
            "jitter": _nullable({"type": "number", "minimum": 0}),
            "accepted_at": {
                **_INSTANT,
                "description": "when the command that last set the schedule was accepted (UTC)",
            },
            "created_at": _UTC,
            "updated_at": _UTC,
        },
    }
    schedule["required"] = list(schedule["properties"])
    page = {
        "type": "object",
        "required": ["schedules"],
        "properties": {
            "schedules": {"type": "array", "items": _ref("Schedule")},
            "next": {
                **_nullable({"type": "string"}),
                "description": "the `after` of the next page; null: this page is the last",
            },
        },
    }
    event = {
        "type": "object",
        "description": "One event of a schedule's history. `event` is one of `registered`, "
        "`updated`, `deleted`, `paused`, `resumed`, `triggered`, `revoked`, `missed`, "
        "`fired`, `succeeded`, `failed`, `retried` and `dead`; the other fields depend on it.",
        "required": ["event", "schedule_id", "at"],
        "properties": {
            "event": {"type": "string"},
            "schedule_id": {"type": "string"},
            "at": {**_INSTANT, "description": "when the event was recorded (UTC)"},
            "firing_id": {"type": "string"},
            "scheduled_for": {
                "description": "the nominal instant; a list of them for `revoked`",
                "anyOf": [_INSTANT, {"type": "array", "items": _INSTANT}],
            },
            "attempt": {"type": "integer", "minimum": 1},
            "status": {"type": "string"},
            "next_fire_at": _INSTANT,
            "not_before": _INSTANT,
            "last_missed_at": _INSTANT,
            "count": {"type": "integer"},
            "by": {"type": "string", "description": "the action that revoked firings"},
            "outcome": {"type": "string"},
            "error": {"type": "string"},
            "reason": {"type": "string"},
        },
    }
    history = {
        "type": "object",
        "required": ["schedule_id", "events"],
        "properties": {
            "schedule_id": {"type": "string"},
            "events": {
                "type": "array",
                "items": _ref("HistoryEvent"),
                "description": "newest first",
            },
        },
    }
    instant = {
        "type": "object",
        "required": ["utc", "local"],
        "properties": {
            "utc": _UTC,
            "local": _LOCAL,
            "delivered_at": {
                **_INSTANT,
                "description": "with `jitter` only: when the instant is delivered (UTC)",
            },
        },
    }
    preview = {
        "type": "object",
        "description": "What a schedule will fire (`scheduler.domain.preview.shown`).",
        "required": ["schedule_id", "timezone", "fire_times", "instants"],
        "properties": {
            "schedule_id": {"type": "string"},
            "timezone": {"type": "string"},
            "status": {
                "type": "string",
                "enum": [status.value for status in state.Status],
                "description": "a stored schedule's only",
            },
            "fire_times": {"type": "array", "items": _UTC},
            "instants": {"type": "array", "items": _ref("PreviewInstant")},
        },
    }
    accepted = {
        "type": "object",
        "required": ["schedule_id"],
        "properties": {"schedule_id": {"type": "string"}},
    }
    error = {
        "type": "object",
        "description": "Why a request was refused. `error` is a code (`invalid_command`, "
        "`bad_json`, `too_large`, `egress_denied`, `unknown_cluster`, `unreadable`, "
        "`bad_request`, `not_found`, `not_stored`, `unauthorized`), `detail` a sentence "
        "that names the field and the value.",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string"},
            "detail": {"type": "string"},
            "field": {
                "type": "string",
                "description": "dotted path of the refused field; `$` for the whole body",
            },
            "index": {
                "type": "integer",
                "minimum": 0,
                "description": "in an array of commands, the place of the refused one",
            },
        },
    }
    routing = {
        "type": "object",
        "description": "Faust's own answer when no worker is known to own the key yet "
        "(a rebalance is under way): try again.",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    }
    health = {
        "type": "object",
        "required": [
            "status",
            "ready",
            "app_id",
            "worker",
            "rebalancing",
            "active_partitions",
            "time",
        ],
        "properties": {
            "status": {"type": "string", "enum": ["ok"]},
            "ready": {
                "type": "boolean",
                "description": "the tables have recovered and no rebalance runs",
            },
            "app_id": {"type": "string"},
            "worker": {"type": "string", "description": "this worker's web address"},
            "rebalancing": {"type": "boolean"},
            "active_partitions": {
                "type": "array",
                "items": {"type": "integer", "minimum": 0},
            },
            "time": _UTC,
        },
    }
    return {
        "Schedule": schedule,
        "SchedulePage": page,
        "HistoryEvent": event,
        "History": history,
        "PreviewInstant": instant,
        "Preview": preview,
        "Accepted": accepted,
        "Error": error,
        "RoutingError": routing,
        "Health": health,
    }


_RESPONSE_COMPONENTS = {
    "BadRequest": _json(_ref("Error"), "the request is refused; `detail` says why"),
    "NotFound": _json(_ref("Error"), "no such schedule"),
    "Routing": _json(_ref("RoutingError"), "no worker is known to own the schedule yet; try again"),
    "Unauthorized": {
        **_json(_ref("Error"), "no `Authorization: Bearer <token>` with a configured token"),
        "headers": {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string"}},
        },
    },
}


def _schedule_id() -> dict[str, Any]:
    return {
        "name": "schedule_id",
        "in": "path",
        "required": True,
        "description": "`sch_` and 32 hex digits, derived from the five client fields "
        "(docs/commands.md)",
        "schema": {"type": "string"},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


#: What each ``GET /schedules`` filter matches (``state.FILTERS``).
_FILTER_TEXT = {
    "operation": "client field `operation`",
    "application": "client field `application`",
    "group": "client field `group`",
    "key": "client field `key`",
    "type": "client field `type` (not the schedule type)",
    "status": "status",
    "name": "`name`",
}


def _filters() -> list[dict[str, Any]]:
    out = []
    for name in state.FILTERS:
        schema: dict[str, Any] = {"type": "string"}
        if name == "status":
            schema["enum"] = [status.value for status in state.Status]
        out.append(_query(name, schema, f"only schedules whose {_FILTER_TEXT[name]} is this"))
    return out


def _count() -> dict[str, Any]:
    return _query(
        "count",
        {"type": "integer", "minimum": 0, "maximum": MAX_COUNT, "default": 10},
        "how many instants",
    )


def _paths() -> dict[str, Any]:
    routed = "Answered by the worker that owns the schedule's partition, whichever worker is asked."
    return {
        "/schedules": {
            "get": {
                "operationId": "listSchedules",
                "tags": ["schedules"],
                "summary": "A page of schedules from every worker, in schedule id order",
                "description": "A page may hold fewer than `limit` schedules and still have a "
                "`next`: each worker reads a bounded number of records per page. Go on "
                "while `next` is not null.",
                "parameters": [
                    *_filters(),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 1000},
                        "the most schedules on the page",
                    ),
                    _query(
                        "after",
                        {"type": "string"},
                        "a schedule id: the page starts past it (the `next` of the page before)",
                    ),
                    _query(
                        "scope",
                        {"type": "string", "enum": ["local"]},
                        "`local`: only this worker's partitions (what workers ask each other)",
                    ),
                ],
                "responses": {
                    "200": _json(_ref("SchedulePage"), "a page"),
                    "400": {"$ref": _RESPONSES + "BadRequest"},
                },
            }
        },
        "/schedules/{schedule_id}": {
            "parameters": [_schedule_id()],
            "get": {
                "operationId": "getSchedule",
                "tags": ["schedules"],
                "summary": "One schedule: its spec, status and next instant (UTC and local)",
                "description": routed,
                "responses": {
                    "200": _json(_ref("Schedule"), "the schedule"),
                    "404": {"$ref": _RESPONSES + "NotFound"},
                    "503": {"$ref": _RESPONSES + "Routing"},
                },
            },
        },
        "/schedules/{schedule_id}/history": {
            "parameters": [_schedule_id()],
            "get": {
                "operationId": "getScheduleHistory",
                "tags": ["schedules"],
                "summary": "Recent history events of a schedule, newest first",
                "description": f"Kept for schedules with `task.history_check`, the last {KEEP} "
                "events; an unknown schedule has none. " + routed,
                "parameters": [
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 0, "default": 100},
                        f"the most events; more than {KEEP} is taken as {KEEP}",
                    )
                ],
                "responses": {
                    "200": _json(_ref("History"), "the events"),
                    "400": {"$ref": _RESPONSES + "BadRequest"},
                    "503": {"$ref": _RESPONSES + "Routing"},
                },
            },
        },
        "/schedules/{schedule_id}/preview": {
            "parameters": [_schedule_id()],
            "get": {
                "operationId": "previewSchedule",
                "tags": ["schedules"],
                "summary": "The next instants a stored schedule will fire",
                "description": "None while it is paused or completed; no more than its "
                "`max_fires` leaves. " + routed,
                "parameters": [_count()],
                "responses": {
                    "200": _json(_ref("Preview"), "the instants"),
                    "400": {"$ref": _RESPONSES + "BadRequest"},
                    "404": {"$ref": _RESPONSES + "NotFound"},
                    "503": {"$ref": _RESPONSES + "Routing"},
                },
            },
        },
        "/commands": {
            "post": {
                "operationId": "submitCommands",
                "tags": ["commands"],
                "summary": "Submit one command or an array of them",
                "description": "Each command is judged as the `schedule-commands` topic judges "
                "a record; all or none are stored. 202 once the broker has every one. The "
                "body may be at most `SCHEDULER_MAX_COMMAND_BYTES` (262,144 by default).",
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {
                            "schema": {
                                "anyOf": [
                                    _ref("Command"),
                                    {"type": "array", "items": _ref("Command")},
                                ]
                            }
                        }
                    },
                },
                "responses": {
                    "202": _json(
                        {
                            "anyOf": [
                                _ref("Accepted"),
                                {"type": "array", "items": _ref("Accepted")},
                            ]
                        },
                        "stored: the schedule id of each command, an array for an array",
                    ),
                    "400": _json(
                        {"allOf": [_ref("Error"), {"required": ["field"]}]},
                        "refused, nothing stored: `field` names the field and, for an "
                        "array, `index` the command",
                    ),
                    "413": _json(_ref("Error"), "the body is larger than the limit"),
                    "503": _json(
                        _ref("Error"),
                        "`not_stored`: the broker did not take every command; some may be "
                        "stored, and sending them all again is safe",
                    ),
                },
            }
        },
        "/preview": {
            "post": {
                "operationId": "previewCommand",
                "tags": ["commands"],
                "summary": "The instants a command would fire, without submitting it",
                "parameters": [
                    _query(
                        "after",
                        {"type": "string"},
                        "an ISO-8601 instant (UTC when it has no offset) taken as the "
                        "moment of acceptance; default: now",
                    ),
                    _count(),
                ],
                "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("Command")}}},
                "responses": {
                    "200": _json(_ref("Preview"), "the instants"),
                    "400": {"$ref": _RESPONSES + "BadRequest"},
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "getHealth",
                "tags": ["operations"],
                "summary": "Whether this worker runs, and whether it is ready",
                "parameters": [
                    _query(
                        "ready",
                        {"type": "string", "enum": ["1"]},
                        "`1`: answer 503 until the worker is ready (a readiness probe)",
                    )
                ],
                "responses": {
                    "200": _json(_ref("Health"), "the worker's state"),
                    "503": _json(_ref("Health"), "with `ready=1`: not ready yet"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "tags": ["operations"],
                "summary": "This worker's metrics, for Prometheus",
                "responses": {
                    "200": {
                        "description": "the metrics: in the Prometheus text format, or in "
                        "OpenMetrics when the `Accept` header prefers it",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {},
                        },
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenAPI",
                "tags": ["operations"],
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "the OpenAPI document")},
            }
        },
    }


def _secure(paths: dict[str, Any]) -> None:
    """Mark the operations ``scheduler.webauth`` leaves open, and give the others a 401."""
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if (method.upper(), path) in webauth.OPEN:
                operation["security"] = []
            else:
                operation["responses"]["401"] = {"$ref": _RESPONSES + "Unauthorized"}


def document(*, tokens: bool) -> dict[str, Any]:
    """The OpenAPI document of a worker with (``tokens``) or without web tokens."""
    schemas = _command_schemas()
    answers = _schemas()
    if clash := schemas.keys() & answers.keys():
        raise RuntimeError(f"schema names used twice: {sorted(clash)}")
    paths = _paths()
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "kafka-scheduler web view",
            "version": metadata.version("kafka-scheduler"),
            "description": "Lookups, lists, history, previews and command intake of the "
            "scheduler service; every worker serves the same endpoints. docs/operations.md "
            "and docs/commands.md say more.",
        },
        "tags": [
            {"name": "schedules", "description": "stored schedules"},
            {"name": "commands", "description": "submitting and previewing commands"},
            {"name": "operations", "description": "probes, metrics and this document"},
        ],
        "paths": paths,
        "components": {
            "schemas": {**schemas, **answers},
            "responses": _RESPONSE_COMPONENTS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "one of the worker's `SCHEDULER_WEB_TOKENS`; required "
                    "only where tokens are configured",
                }
            },
        },
    }
    if tokens:
        doc["security"] = [{"bearer": []}]
        _secure(paths)
    return copy.deepcopy(doc)  # its own: parts of it are module constants


@cache
def _served() -> bytes:
    return json.dumps(document(tokens=bool(settings.web_token_list()))).encode()


@app.page("/openapi.json")
class OpenAPIView(web.View):
    async def get(self, request: web.Request) -> web.Response:
        return self.bytes(_served(), content_type=_JSON)
