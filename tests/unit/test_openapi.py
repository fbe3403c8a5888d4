"""The OpenAPI document: valid OpenAPI 3.1, and the same routes as the app serves.

The routes are read from the aiohttp app Faust builds, after importing every
module the worker imports (``scheduler.worker.PARTS``) and applying Faust's
own blueprints as a starting worker does: a view added anywhere and not
described here fails the test, unless it is named below as undocumented, with
the reason.
"""

from __future__ import annotations

import copy
import importlib
from datetime import UTC, datetime
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing.exceptions import Unresolvable

from scheduler import openapi, worker
from scheduler.domain import state
from scheduler.domain.models import parse_command
from scheduler.domain.preview import preview, shown, upcoming

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def undocumented(method: str, path: str, module: str) -> str | None:
    """Why a route the app serves is not in the document, or None if it must be."""
    if method == "HEAD":
        return "Faust adds HEAD to every view: GET without its body, or 405 with no GET"
    if module.startswith("faust."):
        return "Faust's own page (its index at /; its table and router pages are off)"
    if path == "/" or path.startswith("/ui/"):
        return "the dashboard's HTML pages, for a browser"
    if path == "/graphql":
        return "GraphQL, described by its own schema (introspection)"
    return None


def served_routes() -> tuple[set[tuple[str, str]], dict[tuple[str, str], str]]:
    """(method, path) of every route of the worker's web app: to document, and left out."""
    for name in worker.PARTS:
        importlib.import_module(name)
    from scheduler.app import app

    app.web.init_server()  # Faust's blueprints, as a worker's web server applies them
    documented: set[tuple[str, str]] = set()
    left_out: dict[tuple[str, str], str] = {}
    for route in app.web.web_app.router.routes():
        path = route.resource.canonical
        view = app.web.views.get(path)
        module = type(view).__module__ if view is not None else ""
        reason = undocumented(route.method, path, module)
        if reason is None:
            documented.add((route.method, path))
        else:
            left_out[(route.method, path)] = reason
    return documented, left_out


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in METHODS
    }


@pytest.mark.parametrize("tokens", [False, True])
def test_document_is_valid_openapi_3_1(tokens: bool) -> None:
    doc = openapi.document(tokens=tokens)
    assert doc["openapi"].startswith("3.1.")
    validate(doc, cls=OpenAPIV31SpecValidator)


def test_the_validator_refuses_a_broken_document() -> None:
    """The check above can fail: a response without its description, a parameter
    without a schema, a reference to nothing."""
    doc = openapi.document(tokens=False)
    no_description = copy.deepcopy(doc)
    del no_description["paths"]["/metrics"]["get"]["responses"]["200"]["description"]
    no_schema = copy.deepcopy(doc)
    del no_schema["paths"]["/preview"]["post"]["parameters"][0]["schema"]
    for broken in (no_description, no_schema):
        with pytest.raises(OpenAPIValidationError):
            validate(broken, cls=OpenAPIV31SpecValidator)
    dangling = copy.deepcopy(doc)
    dangling["components"]["schemas"]["SchedulePage"]["properties"]["schedules"]["items"] = {
        "$ref": "#/components/schemas/NoSuchSchema"
    }
    with pytest.raises(Unresolvable):
        validate(dangling, cls=OpenAPIV31SpecValidator)


def test_every_route_is_documented_and_every_operation_served() -> None:
    served, left_out = served_routes()
    doc = openapi.document(tokens=False)
    documented = operations(doc)
    assert served - documented == set(), "served but not in the document"
    assert documented - served == set(), "in the document but not served"
    # What is left out is what the rules above say, and no more than that.
    assert ("GET", "/openapi.json") in served
    assert all(method == "HEAD" or not path.startswith("/schedules") for method, path in left_out)


def test_tokens_protect_what_webauth_protects() -> None:
    """With tokens, exactly the operations the middleware lets through are open."""
    from scheduler import webauth

    doc = openapi.document(tokens=True)
    assert doc["security"] == [{"bearer": []}]
    for method, path in operations(doc):
        operation = doc["paths"][path][method.lower()]
        if (method, path) in webauth.OPEN:
            assert operation["security"] == [], (method, path)
            assert "401" not in operation["responses"]
        else:
            assert "security" not in operation, (method, path)
            assert "401" in operation["responses"], (method, path)
    assert {("GET", "/health"), ("GET", "/openapi.json")} <= webauth.OPEN
    assert "security" not in openapi.document(tokens=False)


def test_the_command_schema_is_the_models() -> None:
    from scheduler.domain.models import Command

    schemas = openapi.document(tokens=False)["components"]["schemas"]
    generated = Command.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in generated.pop("$defs").items():
        assert schemas[name] == schema, name
    assert schemas["Command"]["properties"] == generated["properties"]
    # ``schedule`` takes a number as well (a delay of 50): the schema says so.
    assert {"type": "number"} in schemas["Command"]["properties"]["schedule"]["anyOf"]


def schema_validator(name: str) -> OAS31Validator:
    doc = openapi.document(tokens=False)
    root = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    return OAS31Validator(root, format_checker=OAS31Validator.FORMAT_CHECKER)


COMMANDS: list[dict[str, Any]] = [
    {
        "name": "weekday",
        "client": {"operation": "o", "application": "a", "group": "g", "key": "1", "type": "t"},
        "type": "cron",
        "schedule": "0 9 * * 1-5",
        "timezone": "Asia/Seoul",
        "jitter": 30,
        "max_fires": 5,
        "task": {
            "type": "rest",
            "connection": {
                "host": "http://user:pw@example.com/run",
                "headers": {"Authorization": "Bearer x", "X-Trace": "1"},
            },
            "data": {"any": ["json", 1]},
            "history_check": True,
            "failed_policy": "retry",
        },
    },
    {
        "client": {"operation": "o", "application": "a", "group": "g", "key": "2", "type": "t"},
        "type": "delay",
        "schedule": 50,
        "task": {"type": "kafka", "connection": {"host": "k:9092", "topic": "out"}},
    },
    {
        "client": {"operation": "o", "application": "a", "group": "g", "key": "3", "type": "t"},
        "type": "now",
        "task": {
            "type": "redis",
            "connection": {"host": "redis://r:6379", "topic": "c", "mode": "stream"},
        },
    },
]


def properties(name: str) -> set[str]:
    return set(openapi.document(tokens=False)["components"]["schemas"][name]["properties"])


@pytest.mark.parametrize("body", COMMANDS, ids=lambda body: body.get("type"))
def test_domain_answers_fit_their_schemas(body: dict[str, Any]) -> None:
    """What ``describe`` and ``shown`` return fits the document, field for field.

    The real worker's answers are checked in tests/integration/test_openapi.py;
    this also catches a field added to them and not to the document.
    """
    schema_validator("Command").validate(body)
    command = parse_command(body)
    record = state.apply(None, command, NOW)
    assert record is not None
    described = state.describe(record)
    schema_validator("Schedule").validate(described)
    assert set(described) == properties("Schedule")

    for answer in (shown(command, preview(command, NOW, 3)), shown(record, upcoming(record, 3))):
        schema_validator("Preview").validate(answer)
        assert set(answer) <= properties("Preview")
        for instant in answer["instants"]:
            assert set(instant) <= properties("PreviewInstant")


def test_a_wrong_answer_does_not_fit() -> None:
    """The schemas are not so loose that anything passes."""
    record = state.apply(None, parse_command(COMMANDS[0]), NOW)
    assert record is not None
    described = state.describe(record)
    for broken in (
        {**described, "status": "sleeping"},
        {**described, "next_fire_at": "tomorrow"},
        {key: value for key, value in described.items() if key != "created_at"},
        {**described, "task": {**described["task"], "surprise": 1}},
    ):
        assert not schema_validator("Schedule").is_valid(broken), broken
