"""The compiled lane on a real broker: new schedules it stores, everything else as before.

One backlog holds new schedules of the lane's shape and, keyed by their
schedule ids too, what the lane must leave to the Python path: an update of
a schedule stored earlier in the same backlog, a target the worker's egress
policy denies, an instant due at once, and a command the lane declines (a
cron schedule). The lane must store exactly the new ones, as the Python path
stores them (read back through the web view), and the rest must be updated,
refused, fired and stored as before.

A crowd (more than ``timers.CROWD`` instants in a partition's window) is
stored by the lane too, and its timer fires it.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from scheduler.domain import state
from scheduler.domain.models import parse_command
from scheduler.streams.timers import CROWD
from tests.integration.test_command_batches import produce_fast
from tests.support import Clients, Worker, eventually, metric, read_topic

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="op", application="fastlane", group="g")
NEW = 3_000
DENIED_HOST = "http://203.0.113.7/hook"
TARGET = {"type": "rest", "connection": {"host": "http://127.0.0.1:9/never"}, "data": {"n": 1}}


def new(n: int, schedule: str = "2031-01-01T00:00:00Z", **more: Any) -> dict[str, Any]:
    return {
        "client": CLIENTS.client(f"k{n}"),
        "type": "date",
        "schedule": schedule,
        "task": TARGET,
        **more,
    }


def keyed(command: dict[str, Any]) -> tuple[bytes, bytes]:
    sid = CLIENTS.sid(command["client"]["key"])
    return sid.encode(), json.dumps(command).encode()


async def test_the_lane_stores_new_schedules_and_leaves_the_rest_to_the_python_path(
    make_worker: Any,
) -> None:
    first: Worker = make_worker(extra_env={"SCHEDULER_EGRESS_DENY": "203.0.113.0/24"}).start()
    first.stop()
    records = [keyed(new(n)) for n in range(NEW)]
    records.append(keyed(new(0, "2032-02-02T00:00:00Z")))  # an update, in the same backlog
    records.append(keyed(new(NEW, task={**TARGET, "connection": {"host": DENIED_HOST}})))
    records.append(keyed({**new(NEW + 1), "type": "delay", "schedule": "0.001"}))  # due now
    records.append(keyed({**new(NEW + 2), "type": "cron", "schedule": "0 9 * * *"}))
    await produce_fast(first.bootstrap, first.topic("schedule-commands"), records)

    worker: Worker = make_worker(
        app_id=first.app_id, prefix=first.prefix, extra_env=first.extra_env
    )
    worker.data_dir = first.data_dir
    worker.start()
    applied = await eventually(
        lambda: (n := metric(worker, "scheduler_commands_applied_total")) >= NEW + 3 and n,
        timeout=120,
    )
    assert applied == NEW + 3  # the update, the due one and the cron one besides the new
    assert metric(worker, "scheduler_command_fastlane") == 1
    # Every new one; k0's update found it stored, and took the Python path.
    assert metric(worker, "scheduler_commands_fastlane_total") == NEW

    (refused,) = await read_topic(
        worker.bootstrap, worker.topic("schedule-commands-rejected"), lambda found: len(found) >= 1
    )
    assert refused["value"]["error"] == "egress_denied"
    assert refused["key"] == CLIENTS.sid(f"k{NEW}").encode()

    fired = await read_topic(
        worker.bootstrap, worker.topic("firings"), lambda found: len(found) >= 1, timeout=60
    )
    assert [record["value"]["schedule_id"] for record in fired] == [CLIENTS.sid(f"k{NEW + 1}")]

    def shown(n: int) -> dict[str, Any]:
        found = httpx.get(f"{worker.url}/schedules/{CLIENTS.sid(f'k{n}')}", timeout=10)
        assert found.status_code == 200, (n, found.text)
        body: dict[str, Any] = found.json()
        return body

    assert shown(0)["next_fire_at"] == "2032-02-02T00:00:00.000Z"  # the update won
    assert shown(NEW + 2)["type"] == "cron"
    # A record the lane wrote reads back as the Python path's record of the same command.
    for n in (1, NEW // 2, NEW - 1):
        body = shown(n)
        accepted = datetime.fromisoformat(body["accepted_at"].replace("Z", "+00:00"))
        expected = state.apply(None, parse_command(records[n][1]), accepted.astimezone(UTC))
        assert expected is not None
        assert body == json.loads(json.dumps(state.describe(expected)))
        assert body["next_fire_at"] == "2031-01-01T00:00:00.000Z"


async def test_a_batch_whose_only_lane_command_is_due_now_is_applied_by_the_python_path(
    make_worker: Any,
) -> None:
    """The lane's writer for the partition is made, then stores nothing: the batch
    must still be written (it once queued an empty list of records, and the
    worker stopped)."""
    worker: Worker = make_worker().start()
    await produce_fast(
        worker.bootstrap,
        worker.topic("schedule-commands"),
        [keyed({**new(1), "type": "delay", "schedule": "0.001"})],
    )
    fired = await read_topic(
        worker.bootstrap, worker.topic("firings"), lambda found: len(found) >= 1, timeout=60
    )
    assert [record["value"]["schedule_id"] for record in fired] == [CLIENTS.sid("k1")]
    assert metric(worker, "scheduler_commands_applied_total") == 1
    assert metric(worker, "scheduler_commands_fastlane_total") == 0
    assert worker.alive()


async def test_a_crowd_beyond_fire_ahead_is_stored_by_the_lane_and_fired_by_the_timers(
    make_worker: Any,
) -> None:
    """The Python path would fire each member of a crowd as it stores it
    (``PartitionTimer.takes``); the lane stores it and offers it to the timer,
    unless it is within ``fire_ahead``. The timers wake every one, and each is
    fired once, ahead of its instant."""
    worker: Worker = make_worker().start()
    count = 3 * CROWD * worker.partitions // 2  # about 1,500 a partition: a crowd in each
    due = datetime.fromtimestamp(int(time.time()) + 25, tz=UTC)
    at = due.strftime("%Y-%m-%dT%H:%M:%SZ")
    commands = [keyed(new(n, at)) for n in range(count)]
    await produce_fast(worker.bootstrap, worker.topic("schedule-commands"), commands)
    await eventually(
        lambda: metric(worker, "scheduler_commands_applied_total") >= count, timeout=120
    )
    assert metric(worker, "scheduler_commands_fastlane_total") == count
    await read_topic(
        worker.bootstrap,
        worker.topic("firings"),
        lambda found: len(found) >= count,
        timeout=120,
    )
    assert metric(worker, "scheduler_wakeups_sent_total") >= count
    # A firing written twice would come after the last of the others: read all
    # there is a while later.
    await asyncio.sleep(2)
    fired = await read_topic(
        worker.bootstrap, worker.topic("firings"), lambda found: False, timeout=5, quiet=True
    )
    assert sorted(record["value"]["schedule_id"] for record in fired) == sorted(
        CLIENTS.sid(f"k{n}") for n in range(count)
    )
    assert {record["value"]["scheduled_for"] for record in fired} == {
        due.strftime("%Y-%m-%dT%H:%M:%S.000000Z")
    }
    # Woken early, as a crowd is: written before the instant, held until it.
    assert max(record["value"]["fired_at"] for record in fired) < at.replace("Z", ".000000Z")
