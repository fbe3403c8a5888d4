"""``GET /metrics`` of a real worker, parsed as Prometheus would read it.

Commands go in through the topic, deliveries reach a real HTTP target, and
the exposition is parsed by ``prometheus_client``'s own parser: what an
operator's dashboards and alert rules (``deploy/``) are built on.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Clients, HttpTarget, Worker, eventually, send_commands

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="metrics", application="observe", group="itest")
client = CLIENTS.client


def rest(key: str, url: str, **task: Any) -> dict[str, Any]:
    return {
        "client": client(key),
        "type": "now",
        "task": {"type": "rest", "connection": {"host": url}, "data": {"job": key}, **task},
    }


Samples = list[tuple[str, dict[str, str], float]]


def scrape(worker: Worker) -> Samples:
    response = httpx.get(f"{worker.url}/metrics", timeout=10)
    response.raise_for_status()
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s series that carry ``labels``."""
    return sum(
        value
        for found, have, value in samples
        if found == name and all(have.get(k) == v for k, v in labels.items())
    )


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [labels for found, labels, _ in samples if found == name]


async def test_deliveries_lateness_commands_partitions_and_lag_are_served(
    worker: Worker, http_target: HttpTarget
) -> None:
    before = scrape(worker)
    delivered = 3
    await send_commands(
        worker,
        *(rest(f"ok-{n}", f"{http_target.url}/ok/metrics-{n}") for n in range(delivered)),
        rest("refused", f"{http_target.url}/status/metrics-refused?status=400"),
        b'{"client": ',  # not JSON: rejected
        {**rest("zone", f"{http_target.url}/ok/zone"), "timezone": "Mars/Olympus"},
    )
    await eventually(
        lambda: (
            all(http_target.of(f"metrics-{n}") for n in range(delivered))
            and http_target.of("metrics-refused")
        )
    )

    def settled() -> Samples | None:
        now = scrape(worker)
        rejected = total(now, "scheduler_commands_total", outcome="rejected") - total(
            before, "scheduler_commands_total", outcome="rejected"
        )
        dead = total(now, "scheduler_dead_letters_total") - total(
            before, "scheduler_dead_letters_total"
        )
        return now if rejected == 2 and dead == 1 else None

    after = await eventually(settled)

    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # Every success observed once, by task type; the refused delivery is not.
    assert grew("scheduler_delivery_lateness_seconds_count", task_type="rest") == delivered
    assert grew("scheduler_delivery_lateness_seconds_count", attempt="first") == delivered
    late = grew("scheduler_delivery_lateness_seconds_sum", task_type="rest")
    assert 0 <= late < 10 * delivered, late
    assert (
        grew("scheduler_delivery_lateness_seconds_bucket", task_type="rest", le="+Inf") == delivered
    )
    assert grew("scheduler_deliveries_total", task_type="rest", outcome="success") == delivered
    assert grew("scheduler_deliveries_total", task_type="rest", outcome="permanent") == 1
    assert grew("scheduler_deliveries_succeeded_total") == delivered  # the older name still adds up
    assert grew("scheduler_dead_letters_total", reason="permanent") == 1

    # Commands by outcome, a rejection by its error code.
    assert grew("scheduler_commands_total", outcome="accepted") == delivered + 1
    assert grew("scheduler_commands_total", outcome="rejected", error="bad_json") == 1
    assert grew("scheduler_commands_total", outcome="rejected", error="invalid_command") == 1
    assert grew("scheduler_commands_rejected_total") == 2

    # One worker: every partition is its own, and no other worker has a copy to give it.
    assert total(after, "scheduler_partitions_owned", role="active") == worker.partitions
    assert total(after, "scheduler_partitions_owned", role="standby") == 0

    # Lag per topic read; the commands are all settled, so theirs comes down to 0.
    topics = {labels["topic"] for labels in series(after, "scheduler_consumer_lag")}
    assert {"schedule-commands", "schedule-commands-keyed", "firings"} <= topics, topics
    await eventually(
        lambda: total(scrape(worker), "scheduler_consumer_lag", topic="schedule-commands") == 0
    )
    assert total(after, "scheduler_retries_pending") == 0

    # The one-shots fired and are done; the worker counted them as they changed.
    await eventually(
        lambda: total(scrape(worker), "scheduler_schedules", status="completed") == delivered + 1
    )
    assert total(after, "scheduler_schedules", status="active") == 0
