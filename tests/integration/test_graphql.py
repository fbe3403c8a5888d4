"""GraphQL at ``/graphql`` on real workers: lists and paging, one schedule with its
history and preview, every mutation, refusals that store nothing, and tokens.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any

import httpx
import pytest

from scheduler.graphql_api import MAX_CALLS, MAX_FIRST
from tests.support import Clients, HttpTarget, Worker, read_topic

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="graphql", application="gql", group="itest")
client, sid_of = CLIENTS.client, CLIENTS.sid

SUBMIT = "mutation($commands: [JSON!]!) { submit(commands: $commands) { scheduleId action } }"
UPSERT = "mutation($command: JSON!) { upsert(command: $command) { scheduleId action } }"
LOOKUP = """
query($id: ID!) {
  schedule(id: $id) {
    scheduleId name type schedule timezone status paused nextFireAt nextFireAtLocal
    fireCount task client { operation application group key type }
  }
}
"""
PAGE = """
query($filter: ScheduleFilter, $first: Int!, $after: String) {
  schedules(filter: $filter, first: $first, after: $after) {
    nodes { scheduleId name status client { key } }
    pageInfo { endCursor hasNextPage }
  }
}
"""


def act(action: str) -> str:
    """The mutation of ``action`` (delete, pause, resume, trigger) on one client."""
    return (
        f"mutation($client: ClientInput!) {{ {action}(client: $client) {{ scheduleId action }} }}"
    )


async def gql(
    worker: Worker, query: str, token: str | None = None, **variables: Any
) -> dict[str, Any]:
    """The JSON answer of one GraphQL request, which must be answered 200."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=60) as http:
        answer = await http.post(
            f"{worker.url}/graphql", json={"query": query, "variables": variables}, headers=headers
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def data(worker: Worker, query: str, token: str | None = None, **variables: Any) -> Any:
    """The ``data`` of a request that must succeed."""
    body = await gql(worker, query, token, **variables)
    assert not body.get("errors"), body
    return body["data"]


async def refused(worker: Worker, query: str, **variables: Any) -> dict[str, Any]:
    """The ``extensions`` of the one error of a request that must be refused."""
    body = await gql(worker, query, **variables)
    assert body.get("data") is None, body
    (error,) = body["errors"]
    assert error["message"], error
    extensions: dict[str, Any] = error["extensions"]
    return extensions


async def lookup(worker: Worker, sid: str, token: str | None = None) -> Any:
    return (await data(worker, LOOKUP, token, id=sid))["schedule"]


async def gone(worker: Worker, sid: str) -> bool:
    return await lookup(worker, sid) is None


async def until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``check`` (plain or async) until it returns something truthy, and return it."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(0.3)
    raise AssertionError(f"condition not met in {timeout}s; last: {last!r}")


def command(key: str, url: str = "http://127.0.0.1:9/x", **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"job-{key}",
        "client": client(key),
        "type": "cron",
        "schedule": "0 9 1 1 *",
        "timezone": "Asia/Seoul",
        "task": {"type": "rest", "connection": {"host": url}, "data": {"key": key}},
    }
    body.update(changes)
    return body


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_schedules_are_filtered_and_paged_in_id_order(worker: Worker) -> None:
    paging = Clients(operation="graphql", application="gql-paging", group="itest")
    keys = [f"p{index}" for index in range(7)]
    bodies = [{**command(key), "client": paging.client(key)} for key in keys]
    accepted = (await data(worker, SUBMIT, commands=bodies))["submit"]
    assert accepted == [{"scheduleId": paging.sid(key), "action": "upsert"} for key in keys]
    wanted = sorted(paging.sid(key) for key in keys)

    async def page(first: int, after: str | None = None, **match: str) -> Any:
        where = {"application": "gql-paging", **match}
        return (await data(worker, PAGE, filter=where, first=first, after=after))["schedules"]

    def ids(found: Any) -> list[str]:
        return [node["scheduleId"] for node in found["nodes"]]

    everything = await until(lambda: _when(page(100), lambda p: len(p["nodes"]) == 7))
    assert ids(everything) == wanted
    assert everything["pageInfo"] == {"endCursor": wanted[-1], "hasNextPage": False}
    # A page exactly as long as what is left says there is no next page.
    assert (await page(7))["pageInfo"] == {"endCursor": wanted[-1], "hasNextPage": False}

    pages, after = [], None
    for _ in range(5):
        found = await page(3, after)
        pages.append(found)
        after = found["pageInfo"]["endCursor"]
        if not found["pageInfo"]["hasNextPage"]:
            break
    assert [len(found["nodes"]) for found in pages] == [3, 3, 1]
    assert [sid for found in pages for sid in ids(found)] == wanted
    assert [found["pageInfo"]["endCursor"] for found in pages] == [wanted[2], wanted[5], wanted[6]]

    assert ids(await page(10, key="p3")) == [paging.sid("p3")]
    assert ids(await page(10, name="job-p5")) == [paging.sid("p5")]
    nothing = await page(10, key="p3", name="job-p5")
    assert nothing == {"nodes": [], "pageInfo": {"endCursor": None, "hasNextPage": False}}

    await data(worker, act("pause"), client=paging.client("p2"))
    paused = await until(lambda: _when(page(10, status="paused"), lambda p: p["nodes"]))
    assert ids(paused) == [paging.sid("p2")]
    assert paused["nodes"][0]["status"] == "paused"
    assert ids(await page(10, status="active")) == [
        sid for sid in wanted if sid != paging.sid("p2")
    ]

    for first in (0, MAX_FIRST + 1):
        extensions = await refused(worker, PAGE, filter={}, first=first)
        assert extensions["code"] == "bad_request" and extensions["field"] == "first"


async def _when(pending: Any, test: Callable[[Any], Any]) -> Any:
    value = await pending
    return value if test(value) else None


async def test_one_schedule_with_history_and_preview(
    worker: Worker, http_target: HttpTarget
) -> None:
    url = f"{http_target.url}/ok/gql-hist"
    body = command("hist", url, type="delay-recur", schedule="2")
    body["task"].update(
        history_check=True,
        connection={"host": url, "headers": {"Authorization": "Bearer very-secret", "X-Team": "a"}},
    )
    await data(worker, UPSERT, command=body)
    sid = sid_of("hist")
    query = """
    query($id: ID!, $limit: Int!, $count: Int!) {
      schedule(id: $id) {
        scheduleId status timezone task
        history(limit: $limit) { event at firingId scheduledFor attempt data }
        preview(count: $count) { scheduleId timezone status instants { utc local deliveredAt } }
      }
    }
    """

    async def seen() -> Any:
        found = (await data(worker, query, id=sid, limit=50, count=3))["schedule"]
        events = [event["event"] for event in (found or {}).get("history", [])]
        return found if "succeeded" in events else None

    found = await until(seen, timeout=40)
    assert found["scheduleId"] == sid and found["status"] == "active"
    # Secrets are shown masked, as every lookup shows them.
    assert found["task"]["connection"]["headers"] == {"Authorization": "***", "X-Team": "a"}

    history = found["history"]
    assert [event["at"] for event in history] == sorted((e["at"] for e in history), reverse=True)
    assert {"registered", "fired", "succeeded"} <= {event["event"] for event in history}
    keys = {request["headers"]["Idempotency-Key"] for request in http_target.of("gql-hist")}
    succeeded = [event for event in history if event["event"] == "succeeded"]
    for event in succeeded:
        assert event["firingId"] in keys
        assert event["attempt"] == 1 and len(event["scheduledFor"]) == 1
        assert event["data"]["event"] == "succeeded" and event["data"]["schedule_id"] == sid

    preview = found["preview"]
    assert preview["scheduleId"] == sid and preview["status"] == "active"
    assert preview["timezone"] == "Asia/Seoul"
    instants = preview["instants"]
    assert len(instants) == 3
    utc = [at(item["utc"]) for item in instants]
    assert [b - a for a, b in pairwise(utc)] == [timedelta(seconds=2)] * 2
    for item, instant in zip(instants, utc, strict=True):
        local = datetime.fromisoformat(item["local"])
        assert local == instant and local.utcoffset() == timedelta(hours=9)
        assert item["deliveredAt"] is None  # no jitter

    one = (await data(worker, query, id=sid, limit=1, count=0))["schedule"]
    assert len(one["history"]) == 1 and one["preview"]["instants"] == []

    # A bad count is refused on its field; the rest of the answer stands.
    answer = await gql(worker, query, id=sid, limit=1, count=5000)
    (error,) = answer["errors"]
    assert error["path"] == ["schedule", "preview"]
    assert error["extensions"]["code"] == "bad_request"
    assert error["extensions"]["field"] == "count"
    assert answer["data"]["schedule"]["scheduleId"] == sid

    await data(worker, act("delete"), client=client("hist"))
    await until(lambda: gone(worker, sid))


async def test_each_mutation_is_stored_and_visible(worker: Worker, http_target: HttpTarget) -> None:
    sid = sid_of("life")
    url = f"{http_target.url}/ok/gql-life"
    accepted = (await data(worker, UPSERT, command=command("life", url)))["upsert"]
    assert accepted == {"scheduleId": sid, "action": "upsert"}
    stored = await until(lambda: lookup(worker, sid))
    assert stored["status"] == "active" and stored["paused"] is False
    assert stored["client"] == client("life")
    assert stored["nextFireAtLocal"].endswith("-01-01T09:00:00+09:00")

    async def status_is(wanted: str) -> Any:
        found = await lookup(worker, sid)
        return found if found and found["status"] == wanted else None

    for action, status in (("pause", "paused"), ("resume", "active")):
        done = (await data(worker, act(action), client=client("life")))[action]
        assert done == {"scheduleId": sid, "action": action}
        found = await until(lambda status=status: status_is(status))
        assert found["paused"] is (status == "paused")

    done = (await data(worker, act("trigger"), client=client("life")))["trigger"]
    assert done == {"scheduleId": sid, "action": "trigger"}
    await until(lambda: http_target.of("gql-life"))
    (request,) = http_target.of("gql-life")
    assert request["headers"]["X-Schedule-Id"] == sid
    assert request["body"] == {"key": "life"}
    after = await lookup(worker, sid)
    assert after["status"] == "active" and after["nextFireAt"] == stored["nextFireAt"]

    await data(worker, UPSERT, command=command("life", url, name="renamed"))
    await until(lambda: _when(lookup(worker, sid), lambda s: s["name"] == "renamed"))

    done = (await data(worker, act("delete"), client=client("life")))["delete"]
    assert done == {"scheduleId": sid, "action": "delete"}
    await until(lambda: gone(worker, sid))


async def test_refused_commands_name_the_field_and_store_nothing(worker: Worker) -> None:
    bad_cron = await refused(worker, UPSERT, command=command("bad-cron", schedule="61 * * * *"))
    assert bad_cron["code"] == "invalid_command" and bad_cron["field"] == "schedule"

    wrong_action = await refused(worker, UPSERT, command=command("bad-act", action="delete"))
    assert wrong_action["code"] == "invalid_command" and wrong_action["field"] == "action"

    not_object = await refused(worker, UPSERT, command=[command("bad-list")])
    assert not_object["code"] == "bad_json"

    big = command("bad-big")
    big["task"]["data"] = {"blob": "x" * 300_000}
    assert (await refused(worker, UPSERT, command=big))["code"] == "too_large"

    empty_key = await refused(worker, act("pause"), client={**client("x"), "key": ""})
    assert empty_key["code"] == "invalid_command" and empty_key["field"] == "client.key"

    # All or none: the good first command is not stored either.
    mixed = [command("bad-ok"), command("bad-tz", timezone="Mars/Olympus")]
    item = await refused(worker, SUBMIT, commands=mixed)
    assert item["code"] == "invalid_command" and item["field"] == "timezone"
    assert item["index"] == 1

    # Everything above was refused before the topic: a command sent after them
    # is on the topic, and none of theirs is before it.
    await data(worker, UPSERT, command=command("bad-marker"))
    marker = sid_of("bad-marker").encode()
    records = await read_topic(
        worker.bootstrap,
        worker.topic("schedule-commands"),
        until=lambda found: any(record["key"] == marker for record in found),
    )
    refused_ids = {sid_of(key).encode() for key in ("bad-cron", "bad-act", "bad-big", "bad-ok")}
    assert refused_ids.isdisjoint(record["key"] for record in records)
    await until(lambda: lookup(worker, sid_of("bad-marker")))
    assert await lookup(worker, sid_of("bad-ok")) is None


async def test_get_queries_and_no_ide_and_a_bound_on_lookups(worker: Worker) -> None:
    async with httpx.AsyncClient(timeout=60) as http:
        page = await http.get(f"{worker.url}/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 404 and "<html" not in page.text.lower()
        query = '{ schedule(id: "sch_nothing_here") { scheduleId } }'
        got = await http.get(f"{worker.url}/graphql", params={"query": query})
        assert got.status_code == 200 and got.json() == {"data": {"schedule": None}}
        # A mutation changes state: never by GET.
        mutation = (
            'mutation { pause(client: {operation: "a", application: "b", group: "c", '
            'key: "d", type: "e"}) { scheduleId } }'
        )
        sneaked = await http.get(f"{worker.url}/graphql", params={"query": mutation})
        assert sneaked.status_code == 400, sneaked.text

    many = " ".join(
        f'a{index}: schedule(id: "sch_nothing_{index}") {{ scheduleId }}'
        for index in range(MAX_CALLS + 1)
    )
    answer = await gql(worker, f"{{ {many} }}")
    codes = [error["extensions"]["code"] for error in answer["errors"]]
    assert codes == ["too_many_lookups"]
    assert sum(value is None for value in answer["data"].values()) == MAX_CALLS + 1


async def test_tokens_guard_graphql_and_travel_with_its_lookups(make_worker: Any) -> None:
    guarded: Worker = make_worker(extra_env={"SCHEDULER_WEB_TOKENS": "gql-one,gql-two"}).start()
    query = {"query": "{ __typename }"}
    async with httpx.AsyncClient(timeout=60) as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            answer = await http.post(f"{guarded.url}/graphql", json=query, headers=headers)
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"] == "unauthorized"
        assert (await http.get(f"{guarded.url}/graphql", params=query)).status_code == 401

    # With a token: the mutation is taken, and the lookups /graphql makes of the
    # web view carry the caller's token (else they would be refused with 401).
    sid = sid_of("guarded")
    accepted = (await data(guarded, UPSERT, "gql-two", command=command("guarded")))["upsert"]
    assert accepted["scheduleId"] == sid
    found = await until(lambda: lookup(guarded, sid, "gql-one"))
    assert found["client"] == client("guarded")
    listed = await data(guarded, PAGE, "gql-two", filter={"key": "guarded"}, first=10)
    assert [node["scheduleId"] for node in listed["schedules"]["nodes"]] == [sid]
