"""Partition timers on the real broker: on time, once, and never lost.

These tests read the ``firings`` topic to watch the timers themselves, so
their workers fire at the instant (``SCHEDULER_FIRE_AHEAD=0``): the
arrival of a firing on the topic is then the timer's timing. The default,
firing ahead and delivering at the instant, is in ``test_fire_ahead``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.devtools.broker import LocalBroker
from scheduler.domain.ids import firing_id
from scheduler.domain.timefmt import parse_utc
from tests.support import Clients, Collector, Worker, eventually, instant, send_commands

pytestmark = pytest.mark.integration


CLIENTS = Clients(operation="fire", application="timers", group="itest")
client, sid_of = CLIENTS.client, CLIENTS.sid

AT_THE_INSTANT = {"SCHEDULER_FIRE_AHEAD": "0"}


@pytest.fixture(scope="module")
def worker(kafka: LocalBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """This module's worker, firing at the instant."""
    started = Worker(
        kafka.bootstrap, tmp_path_factory.mktemp("timers") / "data", extra_env=AT_THE_INSTANT
    )
    started.start()
    yield started
    started.stop()


def upsert(key: str, kind: str, schedule: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client": client(key),
        "type": kind,
        "timezone": "Europe/Berlin",
        "task": {
            "type": "rest",
            "connection": {"host": "http://127.0.0.1:9/x"},
            "data": {"key": key},
        },
        **extra,
    }
    if schedule is not None:
        body["schedule"] = schedule
    return body


def action(name: str, key: str) -> dict[str, Any]:
    return {"action": name, "client": client(key)}


def lookup(worker: Worker, key: str) -> dict[str, Any]:
    response = httpx.get(f"{worker.url}/schedules/{sid_of(key)}", timeout=10)
    return dict(response.json()) if response.status_code == 200 else {}


def firings_of(collector: Collector, key: str) -> list[dict[str, Any]]:
    return collector.values(schedule_id=sid_of(key))


async def test_a_two_second_delay_fires_once_within_100ms(worker: Worker) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        await send_commands(worker, upsert("delay-2s", "delay", 2))
        await firings.wait(lambda _: len(firings_of(firings, "delay-2s")) >= 1, timeout=15)
        await asyncio.sleep(1.5)  # a second firing would show up here
        got = [r for r in firings.records if r["value"]["schedule_id"] == sid_of("delay-2s")]
    assert len(got) == 1
    firing = got[0]["value"]
    record = lookup(worker, "delay-2s")
    accepted = instant(record["accepted_at"])
    assert instant(firing["scheduled_for"]) == pytest.approx(accepted + 2, abs=0.002)
    lateness = got[0]["arrived"] - instant(firing["scheduled_for"])
    assert -0.05 <= lateness <= 0.100, f"arrived {lateness * 1000:.0f} ms after its instant"
    assert firing["firing_id"] == firing_id(sid_of("delay-2s"), parse_utc(firing["scheduled_for"]))
    assert firing["attempt"] == 1 and firing["task"]["data"] == {"key": "delay-2s"}
    assert record["status"] == "completed" and record["fire_count"] == 1


async def test_delay_recur_fires_every_second_with_distinct_ids(worker: Worker) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        await send_commands(worker, upsert("recur-1s", "delay-recur", 1))
        await firings.wait(lambda _: len(firings_of(firings, "recur-1s")) >= 5, timeout=20)
        await send_commands(worker, action("delete", "recur-1s"))
        got = firings_of(firings, "recur-1s")[:5]
        late = [
            r["arrived"] - instant(r["value"]["scheduled_for"])
            for r in firings.records
            if r["value"]["schedule_id"] == sid_of("recur-1s")
        ][:5]
    instants = [instant(f["scheduled_for"]) for f in got]
    assert [round(b - a, 3) for a, b in pairwise(instants)] == [1.0] * 4
    assert len({f["firing_id"] for f in got}) == 5
    assert max(late) < 0.25


async def test_six_field_cron_fires_on_its_seconds(worker: Worker) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        await send_commands(worker, upsert("cron-secs", "cron", "*/3 * * * * *"))
        await firings.wait(lambda _: len(firings_of(firings, "cron-secs")) >= 3, timeout=20)
        await send_commands(worker, action("delete", "cron-secs"))
        got = firings_of(firings, "cron-secs")[:3]
    for f in got:
        at = parse_utc(f["scheduled_for"])
        assert at.second % 3 == 0 and at.microsecond == 0, f["scheduled_for"]
    stamps = [instant(f["scheduled_for"]) for f in got]
    assert [b - a for a, b in pairwise(stamps)] == [3.0, 3.0]


async def test_pause_stops_and_resume_continues_without_a_burst(worker: Worker) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        await send_commands(worker, upsert("pausing", "delay-recur", 1))
        await firings.wait(lambda _: len(firings_of(firings, "pausing")) >= 2, timeout=20)
        await send_commands(worker, action("pause", "pausing"))
        await eventually(lambda: lookup(worker, "pausing").get("status") == "paused")
        count_at_pause = len(firings_of(firings, "pausing"))
        await asyncio.sleep(3.2)
        assert len(firings_of(firings, "pausing")) <= count_at_pause + 1  # one may be in flight
        paused_count = len(firings_of(firings, "pausing"))
        resumed_at = time.time()
        await send_commands(worker, action("resume", "pausing"))
        await firings.wait(
            lambda _: len(firings_of(firings, "pausing")) >= paused_count + 2, timeout=20
        )
        await send_commands(worker, action("delete", "pausing"))
        after = firings_of(firings, "pausing")[paused_count:]
    # No catch-up of the ~3 instants skipped while paused: the next ones come after the resume.
    assert all(instant(f["scheduled_for"]) >= resumed_at - 0.05 for f in after)
    assert len({f["firing_id"] for f in after}) == len(after)


async def test_delete_stops_for_good(worker: Worker) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        await send_commands(worker, upsert("deleting", "delay-recur", 1))
        await firings.wait(lambda _: len(firings_of(firings, "deleting")) >= 1, timeout=20)
        await send_commands(worker, action("delete", "deleting"))
        await eventually(lambda: lookup(worker, "deleting") == {})
        settled = len(firings_of(firings, "deleting"))
        await asyncio.sleep(2.5)
        assert len(firings_of(firings, "deleting")) == settled


async def test_trigger_fires_once_now_with_its_own_id(worker: Worker) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        await send_commands(worker, upsert("trig", "cron", "0 0 1 1 *"))
        await eventually(lambda: lookup(worker, "trig").get("status") == "active")
        sent = time.time()
        await send_commands(worker, action("trigger", "trig"))
        await firings.wait(lambda _: len(firings_of(firings, "trig")) >= 1, timeout=15)
        await asyncio.sleep(1)
        got = firings_of(firings, "trig")
    assert len(got) == 1
    assert abs(instant(got[0]["scheduled_for"]) - sent) < 2
    assert got[0]["firing_id"] != firing_id(sid_of("trig"), parse_utc(got[0]["scheduled_for"]))
    record = lookup(worker, "trig")
    # The trigger left the schedule alone: still waiting for New Year in Berlin.
    assert record["next_fire_at"].endswith("-12-31T23:00:00.000Z")
    assert record["status"] == "active" and record["fire_count"] == 0


async def test_update_recomputes_the_next_instant(worker: Worker) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        await send_commands(worker, upsert("upd", "delay-recur", 1))
        await firings.wait(lambda _: len(firings_of(firings, "upd")) >= 2, timeout=20)
        await send_commands(worker, upsert("upd", "delay-recur", 3))
        await eventually(lambda: lookup(worker, "upd").get("schedule") == "3")
        changed = len(firings_of(firings, "upd"))
        await firings.wait(lambda _: len(firings_of(firings, "upd")) >= changed + 2, timeout=20)
        await send_commands(worker, action("delete", "upd"))
        later = firings_of(firings, "upd")[changed : changed + 2]
    gap = instant(later[1]["scheduled_for"]) - instant(later[0]["scheduled_for"])
    assert gap == pytest.approx(3.0, abs=0.001)


async def test_max_fires_and_end_complete_a_recurring_schedule(worker: Worker) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        await send_commands(worker, upsert("capped", "delay-recur", 1, max_fires=3))
        await eventually(lambda: lookup(worker, "capped").get("status") == "completed", timeout=20)
        await asyncio.sleep(1.5)
        assert len(firings_of(firings, "capped")) == 3
    assert lookup(worker, "capped")["fire_count"] == 3


async def test_a_date_long_past_is_recorded_as_missed_not_fired(worker: Worker) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        await send_commands(worker, upsert("ancient", "date", "2020-01-01T00:00:00"))
        record = await eventually(
            lambda: (r := lookup(worker, "ancient")).get("status") == "completed" and r
        )
        await asyncio.sleep(1)
        assert firings_of(firings, "ancient") == []
    assert record["missed_count"] == 1 and record["fire_count"] == 0


async def test_a_date_just_past_fires_once_by_default(worker: Worker) -> None:
    from datetime import UTC, datetime, timedelta

    when = (datetime.now(UTC) - timedelta(seconds=30)).isoformat()
    async with Collector(worker.bootstrap, worker.topic("firings")) as firings:
        await send_commands(worker, upsert("just-past", "date", when))
        await firings.wait(lambda _: len(firings_of(firings, "just-past")) >= 1)
        await asyncio.sleep(1)
        got = firings_of(firings, "just-past")
    # Within the default grace (an hour) a late one-shot still fires, once.
    assert len(got) == 1
    assert got[0]["scheduled_for"].startswith(when[:19])


async def test_empty_data_dir_rebuilds_timers_from_the_changelog(
    kafka: LocalBroker, tmp_path: Path
) -> None:
    first = Worker(kafka.bootstrap, tmp_path / "first", extra_env=AT_THE_INSTANT)
    first.start()
    async with Collector(first.bootstrap, first.topic("firings")) as firings:
        await send_commands(
            first, upsert("survivor", "delay", 12), upsert("survivor-r", "delay-recur", 2)
        )
        await eventually(lambda: lookup(first, "survivor").get("status") == "active")
        first.stop()
        fresh = first.sibling(tmp_path / "fresh", same_port=True, extra_env=AT_THE_INSTANT)
        fresh.start()
        try:
            await firings.wait(lambda _: len(firings_of(firings, "survivor")) >= 1, timeout=30)
            await firings.wait(lambda _: len(firings_of(firings, "survivor-r")) >= 4, timeout=30)
        finally:
            fresh.stop()
    recur = firings_of(firings, "survivor-r")
    stamps = sorted({instant(f["scheduled_for"]) for f in recur})
    # Every 2 s instant since acceptance is there: none was lost across the restart.
    assert [round(b - a, 3) for a, b in pairwise(stamps)] == [2.0] * (len(stamps) - 1)
