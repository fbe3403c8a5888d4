"""The OpenAPI document against a real worker: every answer fits it.

Real requests to each endpoint, good and bad, on a worker with a real broker
and a real HTTP target; each request and each answer is checked against the
document by openapi-core's validators. A request the document rejects (a
limit that is no integer, a body that is no JSON) must be rejected by the
worker too, and the worker's refusal must itself fit the document. With web
tokens, each operation answers 401 without one exactly where the document
says a token is needed. Every operation of the document is exercised.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_core.validation.request.exceptions import (
    RequestValidationError,
    SecurityValidationError,
)

from scheduler import openapi
from scheduler.domain.models import parse_command
from scheduler.domain.preview import preview, shown
from scheduler.domain.timefmt import parse_utc
from tests.support import Clients, HttpTarget, Worker, eventually

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="openapi", application="spec", group="itest")
UNKNOWN = "sch_" + "0" * 32


class Api:
    """Calls a worker, and checks each request and answer against ``doc``."""

    def __init__(self, doc: dict[str, Any], base: str, headers: dict[str, str] | None = None):
        self.spec = OpenAPI.from_dict(doc)
        self.base = base
        self.headers = headers or {}
        #: (method, path template, status) of every checked answer.
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(
        self,
        method: str,
        template: str,
        status: int,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        raw: bytes | None = None,
        valid: bool = True,
        headers: dict[str, str] | None = None,
        **path: str,
    ) -> httpx.Response:
        """``method template`` must answer ``status``; ``valid``: whether the
        document takes the request."""
        content = raw if raw is not None else None if body is None else json.dumps(body).encode()
        sent = {**self.headers, **(headers or {})}
        if content is not None:
            sent["Content-Type"] = "application/json"
        response = httpx.request(
            method,
            self.base + template.format(**path),
            params=params,
            content=content,
            headers=sent,
            timeout=30,
        )
        assert response.status_code == status, (method, template, params, response.text[:500])
        request = self.request_of(response)
        if valid:
            self.spec.validate_request(request)
        else:
            with pytest.raises(RequestValidationError):
                self.spec.validate_request(request)
        self.spec.validate_response(
            request,
            MockResponse(
                response.content,
                status_code=response.status_code,
                headers=dict(response.headers),
                content_type=response.headers.get("content-type", ""),
            ),
        )
        self.seen.add((method, template, response.status_code))
        return response

    @staticmethod
    def request_of(response: httpx.Response) -> MockRequest:
        """The request ``response`` answers, as openapi-core reads a request."""
        sent = response.request
        return MockRequest(
            host_url=f"{sent.url.scheme}://{sent.url.netloc.decode()}",
            method=sent.method,
            path=sent.url.path,
            args=dict(sent.url.params),
            headers=dict(sent.headers),
            data=sent.content or None,
            content_type=sent.headers.get("content-type", ""),
        )


def operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }


def rest(key: str, target: str, **fields: Any) -> dict[str, Any]:
    return {
        "client": CLIENTS.client(key),
        "task": {
            "type": "rest",
            "connection": {"host": f"{target}/ok/{key}", "headers": {"X-Api-Key": "s3cret"}},
            "data": {"key": key},
            "history_check": True,
        },
        **fields,
    }


async def test_every_answer_fits_the_document(worker: Worker, http_target: HttpTarget) -> None:
    doc = openapi.document(tokens=False)
    api = Api(doc, worker.url)

    # The document itself, as the worker serves it.
    served = api("GET", "/openapi.json", 200).json()
    assert served == doc

    # Commands: one, an array, and every kind of refusal.
    every_second = rest("tick", http_target.url, type="delay-recur", schedule=1, name="tick")
    accepted = api("POST", "/commands", 202, body=every_second).json()
    assert accepted == {"schedule_id": CLIENTS.sid("tick")}
    pair = [
        rest(
            "cron",
            http_target.url,
            type="cron",
            schedule="0 9 * * 1-5",
            jitter=60,
            timezone="Asia/Seoul",
        ),
        rest("later", http_target.url, type="delay", schedule="3600"),
    ]
    assert api("POST", "/commands", 202, body=pair).json() == [
        {"schedule_id": CLIENTS.sid("cron")},
        {"schedule_id": CLIENTS.sid("later")},
    ]
    broken = api("POST", "/commands", 400, raw=b'{"client": ', valid=False).json()
    assert broken["error"] == "bad_json"
    unknown_field = {**rest("x", http_target.url, type="now"), "timezon": "UTC"}
    refused = api("POST", "/commands", 400, body=unknown_field, valid=False).json()
    assert refused["field"] == "timezon"
    # Valid by the schema, refused by the rules the schema cannot state.
    zone = rest("x", http_target.url, type="cron", schedule="0 9 * * *", timezone="Mars/Base")
    assert api("POST", "/commands", 400, body=zone).json()["field"] == "timezone"
    bad_cron = rest("y", http_target.url, type="cron", schedule="61 * * * *")
    in_array = api("POST", "/commands", 400, body=[pair[0], bad_cron]).json()
    assert (in_array["index"], in_array["field"]) == (1, "schedule")
    huge = rest("z", http_target.url, type="now")
    huge["task"]["data"] = {"blob": "x" * 300_000}
    assert api("POST", "/commands", 413, body=huge).json()["error"] == "too_large"

    # Lookups: once the worker has applied the commands.
    def stored() -> Any:
        return all(
            httpx.get(f"{worker.url}/schedules/{CLIENTS.sid(key)}", timeout=10).status_code == 200
            for key in ("tick", "cron", "later")
        )

    await eventually(stored, timeout=30)
    for key in ("tick", "cron", "later"):
        one = api("GET", "/schedules/{schedule_id}", 200, schedule_id=CLIENTS.sid(key)).json()
        assert one["task"]["connection"]["headers"]["X-Api-Key"] == "***"
    api("GET", "/schedules/{schedule_id}", 404, schedule_id=UNKNOWN)

    # Lists, a page at a time.
    mine = {"application": CLIENTS.application}
    listed = api("GET", "/schedules", 200, params={**mine, "limit": "10"}).json()
    assert [item["schedule_id"] for item in listed["schedules"]] == sorted(
        CLIENTS.sid(key) for key in ("tick", "cron", "later")
    )
    first = api("GET", "/schedules", 200, params={**mine, "limit": "1"}).json()
    assert first["next"] == first["schedules"][0]["schedule_id"]
    after = {**mine, "limit": "1", "after": first["next"]}
    second = api("GET", "/schedules", 200, params=after).json()
    assert second["schedules"][0]["schedule_id"] > first["next"]
    api("GET", "/schedules", 200, params={"status": "paused", "application": "none-such"})
    api("GET", "/schedules", 400, params={"limit": "many"}, valid=False)
    api("GET", "/schedules", 400, params={"limit": "0"}, valid=False)

    # History: the recurring schedule fires at the target, and says so.
    tick = CLIENTS.sid("tick")

    def delivered() -> Any:
        answer = httpx.get(f"{worker.url}/schedules/{tick}/history", timeout=10).json()
        return {event["event"] for event in answer["events"]} >= {"registered", "succeeded"}

    await eventually(delivered, timeout=60)
    events = api("GET", "/schedules/{schedule_id}/history", 200, schedule_id=tick).json()
    assert {"registered", "fired", "succeeded"} <= {e["event"] for e in events["events"]}
    assert http_target.of("tick")
    api(
        "GET",
        "/schedules/{schedule_id}/history",
        200,
        schedule_id=tick,
        params={"limit": "2"},
    )
    api(
        "GET",
        "/schedules/{schedule_id}/history",
        400,
        schedule_id=tick,
        params={"limit": "all"},
        valid=False,
    )

    # Previews: of a stored schedule, and of a command.
    cron = CLIENTS.sid("cron")
    upcoming = api(
        "GET", "/schedules/{schedule_id}/preview", 200, schedule_id=cron, params={"count": "3"}
    ).json()
    assert upcoming["status"] == "active" and len(upcoming["instants"]) == 3
    assert all("delivered_at" in instant for instant in upcoming["instants"])
    for count in ("-1", "lots"):
        api(
            "GET",
            "/schedules/{schedule_id}/preview",
            400,
            schedule_id=cron,
            params={"count": count},
            valid=False,
        )
    api("GET", "/schedules/{schedule_id}/preview", 404, schedule_id=UNKNOWN)
    query = {"after": "2030-01-01T00:00:00Z", "count": "2"}
    previewed = api("POST", "/preview", 200, body=pair[0], params=query).json()
    command = parse_command(pair[0])
    assert previewed == shown(command, preview(command, parse_utc(query["after"]), 2))
    api("POST", "/preview", 400, body=bad_cron)
    api("POST", "/preview", 400, body=pair[0], params={"after": "soon"})
    api("POST", "/preview", 400, raw=b"[1, 2", valid=False)

    # Stop the recurring schedule: a command of another action.
    deleted = api(
        "POST", "/commands", 202, body={"action": "delete", "client": CLIENTS.client("tick")}
    )
    assert deleted.json() == {"schedule_id": tick}

    # Probes and metrics.
    assert api("GET", "/health", 200).json()["ready"] is True
    assert api("GET", "/health", 200, params={"ready": "1"}).json()["ready"] is True
    assert "scheduler_" in api("GET", "/metrics", 200).text
    scraped = api("GET", "/metrics", 200, headers={"Accept": "application/openmetrics-text"})
    assert scraped.headers["content-type"].startswith("application/openmetrics-text")

    assert {(method, path) for method, path, _ in api.seen} == operations(doc)
    assert {status for *_, status in api.seen} >= {200, 202, 400, 404, 413}


async def test_the_document_says_where_a_token_is_needed(make_worker: Any) -> None:
    tokens = "spec-token"
    started: Worker = make_worker(extra_env={"SCHEDULER_WEB_TOKENS": tokens}).start()
    doc = openapi.document(tokens=True)
    anonymous = Api(doc, started.url)
    # Open: the document itself, which says how to authenticate.
    assert anonymous("GET", "/openapi.json", 200).json() == doc

    command = {
        "client": CLIENTS.client("guarded"),
        "type": "delay",
        "schedule": "3600",
        "task": {"type": "rest", "connection": {"host": "http://127.0.0.1:9/x"}},
    }
    for method, template in sorted(operations(doc)):
        operation = doc["paths"][template][method.lower()]
        open_ = operation.get("security") == []
        path = {"schedule_id": UNKNOWN} if "{schedule_id}" in template else {}
        body = command if method == "POST" else None
        if open_:
            anonymous(method, template, 200, body=body, **path)
        else:
            answer = httpx.request(
                method,
                started.url + template.format(**path),
                json=body,
                timeout=30,
            )
            assert answer.status_code == 401, (method, template)
            # The document says so too: the request lacks what it requires.
            with pytest.raises(SecurityValidationError):
                anonymous.spec.validate_request(Api.request_of(answer))
            anonymous.spec.validate_response(
                Api.request_of(answer),
                MockResponse(
                    answer.content,
                    status_code=401,
                    headers=dict(answer.headers),
                    content_type=answer.headers["content-type"],
                ),
            )
    signed = Api(doc, started.url, headers={"Authorization": f"Bearer {tokens}"})
    signed("GET", "/schedules", 200, params={"limit": "5"})
    signed("GET", "/schedules/{schedule_id}", 404, schedule_id=UNKNOWN)
