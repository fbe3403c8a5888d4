"""``GET /schedules`` pages in schedule id order across two workers, with filters.

Real workers sharing the partitions: paging with a small ``limit`` visits
every schedule once, in order, whichever worker owns it; a filter pages the
same way over the matches only; ``limit`` out of range is refused by name.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support import Clients, Worker, eventually, send_commands

pytestmark = pytest.mark.integration

CLIENTS = {
    group: Clients(operation="paging", application="list", group=group) for group in ("even", "odd")
}


def sid(key: str, group: str) -> str:
    return CLIENTS[group].sid(key)


def schedule(key: str, group: str) -> dict[str, Any]:
    return {
        "client": CLIENTS[group].client(key),
        "type": "cron",
        "schedule": "0 0 1 1 *",
        "task": {"type": "rest", "connection": {"host": "http://127.0.0.1:9/x"}},
    }


def every_page(worker: Worker, **params: Any) -> list[str]:
    seen: list[str] = []
    after = None
    for _ in range(1000):
        query = {**params, **({"after": after} if after else {})}
        body = httpx.get(f"{worker.url}/schedules", params=query, timeout=30).json()
        assert len(body["schedules"]) <= int(params["limit"])
        seen += [item["schedule_id"] for item in body["schedules"]]
        after = body["next"]
        if after is None:
            return seen
    raise AssertionError("paging did not end")


async def test_pages_visit_every_schedule_once_in_order_across_workers(make_worker: Any) -> None:
    first = make_worker().start()
    # A second worker of the same group, started (and stopped) by the fixture.
    second = make_worker(app_id=first.app_id, prefix=first.prefix, partitions=first.partitions)
    await asyncio.to_thread(second.start)
    groups = {f"k{n:03d}": ("even" if n % 2 == 0 else "odd") for n in range(240)}
    await send_commands(first, *(schedule(key, group) for key, group in groups.items()))

    seen: dict[str, Any] = {}

    def stored() -> bool:
        answer = httpx.get(f"{first.url}/schedules", params={"limit": 1000}, timeout=30)
        seen["list"] = (answer.status_code, len(answer.json().get("schedules", [])))
        return answer.status_code == 200 and seen["list"][1] == len(groups)

    try:
        await eventually(stored, timeout=60)
    except AssertionError:
        for name, w in (("first", first), ("second", second)):
            part = httpx.get(f"{w.url}/schedules", params={"scope": "local", "limit": 1000})
            body = part.json()
            seen[name] = (len(body.get("schedules", [])), body.get("partitions"), w.alive())
        raise AssertionError(f"not every schedule listed: {seen}") from None
    owners = {
        len(httpx.get(f"{w.url}/schedules", params={"scope": "local"}).json()["schedules"])
        for w in (first, second)
    }
    assert 0 not in owners, "both workers own some schedules"

    everyone = sorted(sid(key, group) for key, group in groups.items())
    assert every_page(first, limit=17, operation="paging") == everyone
    assert every_page(second, limit=17, operation="paging") == everyone
    even = every_page(first, limit=9, operation="paging", group="even")
    assert even == sorted(sid(k, g) for k, g in groups.items() if g == "even")

    refused = httpx.get(f"{first.url}/schedules", params={"limit": 0})
    assert refused.status_code == 400 and refused.json()["field"] == "limit"
