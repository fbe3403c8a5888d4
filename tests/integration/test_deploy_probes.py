"""What the deployment files promise about a real worker (real Kafka, real processes).

deploy/k8s probes ``/health?ready=1`` for readiness and expects it to answer
503 until the worker is ready, while liveness asks plain ``/health``, which
must answer 200 all along; and both deploy/k8s and compose.yaml give a worker
a grace period to stop on SIGTERM, which a worker with schedules and
deliveries in flight must fit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import Clients, HttpTarget, Worker, eventually, send_commands

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = Clients(operation="deploy", application="probes", group="itest")


def test_readiness_answers_503_until_the_worker_is_ready(make_worker: Any) -> None:
    worker: Worker = make_worker(partitions=4)
    seen: list[tuple[int, bool, int]] = []
    stop = threading.Event()

    def poll() -> None:
        with httpx.Client(timeout=2) as client:
            while not stop.is_set():
                try:
                    readiness = client.get(f"{worker.url}/health", params={"ready": "1"})
                    liveness = client.get(f"{worker.url}/health")
                    seen.append(
                        (readiness.status_code, readiness.json()["ready"], liveness.status_code)
                    )
                except httpx.HTTPError:
                    pass  # not listening yet
                time.sleep(0.02)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        worker.start()
        time.sleep(1)
    finally:
        stop.set()
        poller.join(10)

    assert seen, "the web view never answered"
    for readiness, ready, liveness in seen:
        assert readiness == (200 if ready else 503), (readiness, ready)
        assert liveness == 200
    assert any(status == 503 for status, _, _ in seen), "never saw the worker not ready"
    assert seen[-1][0] == 200


def _grace_periods() -> dict[str, float]:
    statefulset = yaml.safe_load((ROOT / "deploy/k8s/statefulset.yaml").read_text())
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    stop_grace = str(compose["services"]["worker"]["stop_grace_period"])
    assert stop_grace.endswith("s") and stop_grace[:-1].isdigit(), stop_grace
    return {
        "deploy/k8s terminationGracePeriodSeconds": float(
            statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        ),
        "compose.yaml stop_grace_period": float(stop_grace[:-1]),
    }


async def test_a_busy_worker_stops_on_sigterm_within_the_grace_periods(
    make_worker: Any, http_target: HttpTarget
) -> None:
    worker: Worker = make_worker(partitions=4).start()
    idle = [
        {
            "client": CLIENTS.client(f"idle-{index}"),
            "type": "delay",
            "schedule": "3600",
            "task": {"type": "rest", "connection": {"host": f"{http_target.url}/ok/idle"}},
        }
        for index in range(500)
    ]
    busy = [
        {
            "client": CLIENTS.client(f"busy-{index}"),
            "type": "delay-recur",
            "schedule": "1",
            "task": {"type": "rest", "connection": {"host": f"{http_target.url}/ok/busy"}},
        }
        for index in range(20)
    ]
    await send_commands(worker, *idle, *busy)
    # Firing every second, on every partition, when the signal comes.
    await eventually(lambda: len(http_target.of("busy")) >= 60, timeout=60)

    assert worker.proc is not None
    started = time.monotonic()
    os.killpg(worker.proc.pid, signal.SIGTERM)
    code = await asyncio.to_thread(worker.proc.wait, 60)
    took = time.monotonic() - started
    print(f"SIGTERM to exit: {took:.2f} s")

    assert code == 0, worker.tail()
    for where, grace in _grace_periods().items():
        assert took < grace, f"stopping took {took:.1f} s, {where} is {grace:.0f} s"
