"""``GET /schedules`` pages in schedule id order across two workers, with filters.

Real workers sharing the partitions: paging with a small ``limit`` visits
every schedule once, in order, whichever worker owns it; a filter pages the
same way over the matches only; ``limit`` out of range is refused by name.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
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


async def test_pages_visit_every_schedule_once_in_order_across_workers(
    make_worker: Any, tmp_path: Path
) -> None:
    first = make_worker().start()
    second = first.sibling(tmp_path / "second")
    await asyncio.to_thread(second.start)
    groups = {f"k{n:03d}": ("even" if n % 2 == 0 else "odd") for n in range(240)}
    await send_commands(first, *(schedule(key, group) for key, group in groups.items()))

    def stored() -> bool:
        body = httpx.get(f"{first.url}/schedules", params={"limit": 1000}, timeout=30).json()
        return len(body["schedules"]) == len(groups)

    await eventually(stored, timeout=60)
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
