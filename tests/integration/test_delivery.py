"""Firings delivered to real targets: an HTTP server, Redis and Kafka; retries and dead letters."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from redis import asyncio as aioredis

from scheduler.devtools.broker import LocalBroker
from tests.support import (
    SCHEDULER,
    Clients,
    Collector,
    HttpTarget,
    Worker,
    free_port,
    instant,
    send_commands,
)

pytestmark = pytest.mark.integration


CLIENTS = Clients(operation="deliver", application="exec", group="itest")
client, sid_of = CLIENTS.client, CLIENTS.sid


def rest(key: str, url: str, **task: Any) -> dict[str, Any]:
    return {
        "client": client(key),
        "type": "now",
        "task": {
            "type": "rest",
            "connection": {"host": url, "headers": {"X-Team": "platform"}},
            "data": {"job": key},
            **task,
        },
    }


def kafka(key: str, host: str, topic: str, **task: Any) -> dict[str, Any]:
    return {
        "client": client(key),
        "type": "now",
        "task": {
            "type": "kafka",
            "connection": {"host": host, "topic": topic},
            "data": {"job": key},
            **task,
        },
    }


async def until(check: Any, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.1)):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met")


async def test_rest_target_failing_twice_gets_the_third_attempt(
    worker: Worker, http_target: HttpTarget
) -> None:
    await send_commands(
        worker,
        rest(
            "flaky",
            f"{http_target.url}/fail/flaky?times=2",
            failed_policy="retry",
            retry_wait=1.5,
            max_retries=3,
        ),
    )
    await until(lambda: len(http_target.of("flaky")) >= 3, timeout=40)
    await asyncio.sleep(1)
    calls = http_target.of("flaky")
    assert len(calls) == 3
    assert [c["headers"]["X-Attempt"] for c in calls] == ["1", "2", "3"]
    keys = {c["headers"]["Idempotency-Key"] for c in calls}
    assert len(keys) == 1 and next(iter(keys)).startswith("fir_")
    assert all(c["headers"]["X-Schedule-Id"] == sid_of("flaky") for c in calls)
    assert all(c["headers"]["X-Team"] == "platform" for c in calls)
    assert calls[0]["body"] == {"job": "flaky"}
    assert instant(calls[0]["headers"]["X-Scheduled-For"]) <= calls[0]["arrived"]
    gaps = [b["arrived"] - a["arrived"] for a, b in pairwise(calls)]
    assert all(gap >= 1.5 for gap in gaps), gaps


async def test_permanent_and_exhausted_failures_end_in_firings_dead(
    worker: Worker, http_target: HttpTarget
) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings-dead")) as dead:
        await send_commands(
            worker,
            rest(
                "bad-request",
                f"{http_target.url}/status/bad-request?status=400",
                failed_policy="retry",
                retry_wait=0.5,
            ),
            rest(
                "always-down",
                f"{http_target.url}/status/always-down?status=503",
                failed_policy="retry",
                retry_wait=0.5,
                max_retries=2,
            ),
        )
        await dead.wait(
            lambda _: (
                len(dead.values(schedule_id=sid_of("always-down"))) >= 1
                and len(dead.values(schedule_id=sid_of("bad-request"))) >= 1
            ),
            timeout=40,
        )
        await asyncio.sleep(1)
        bad = dead.values(schedule_id=sid_of("bad-request"))
        down = dead.values(schedule_id=sid_of("always-down"))
    assert len(bad) == 1 and len(down) == 1
    assert [e["error"] for e in bad[0]["errors"]] == ["HTTP 400 Bad Request"]
    assert bad[0]["errors"][0]["outcome"] == "permanent"
    assert len(http_target.of("bad-request")) == 1
    assert [e["attempt"] for e in down[0]["errors"]] == [1, 2, 3]
    assert all(e["error"] == "HTTP 503 Service Unavailable" for e in down[0]["errors"])
    assert "gave up after 3 attempts" in down[0]["reason"]
    assert down[0]["task"]["data"] == {"job": "always-down"}


async def test_a_hanging_delivery_is_cut_off_and_counts_as_retryable(
    worker: Worker, http_target: HttpTarget
) -> None:
    async with Collector(worker.bootstrap, worker.topic("firings-dead")) as dead:
        await send_commands(
            worker,
            rest(
                "hangs",
                f"{http_target.url}/hang/hangs?seconds=20",
                timeout=1,
                failed_policy="retry",
                retry_wait=0.5,
                max_retries=1,
            ),
        )
        await dead.wait(lambda _: len(dead.values(schedule_id=sid_of("hangs"))) >= 1, timeout=30)
        record = dead.values(schedule_id=sid_of("hangs"))[0]
    assert [e["outcome"] for e in record["errors"]] == ["retryable", "retryable"]
    assert record["errors"][0]["error"] == "timed out after 1s"
    # It was retried (a permanent failure would not have been): two requests arrived.
    assert len(http_target.of("hangs")) == 2


async def test_redis_publish_stream_and_list_receive_the_envelope(
    worker: Worker, redis_url: str
) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    pubsub = redis.pubsub()
    await pubsub.subscribe("chan-jobs")
    await pubsub.get_message(timeout=1)  # the subscribe confirmation

    def redis_cmd(key: str, mode: str, topic: str) -> dict[str, Any]:
        return {
            "client": client(key),
            "type": "now",
            "task": {
                "type": "redis",
                "connection": {"host": redis_url, "topic": topic, "mode": mode},
                "data": {"via": mode},
            },
        }

    await send_commands(
        worker,
        redis_cmd("r-pub", "publish", "chan-jobs"),
        redis_cmd("r-stream", "stream", "stream-jobs"),
        redis_cmd("r-list", "list", "list-jobs"),
    )
    message = None
    for _ in range(200):
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message:
            break
    assert message is not None
    published = json.loads(message["data"])
    assert published["data"] == {"via": "publish"}
    assert published["firing_id"].startswith("fir_") and published["attempt"] == 1
    assert published["schedule_id"] == sid_of("r-pub")
    await until(lambda: True)
    for _ in range(100):
        if await redis.llen("list-jobs") and await redis.xlen("stream-jobs"):
            break
        await asyncio.sleep(0.1)
    listed = json.loads(await redis.lpop("list-jobs"))
    assert listed["data"] == {"via": "list"} and listed["schedule_id"] == sid_of("r-list")
    entries = await redis.xrange("stream-jobs")
    fields = {k.decode(): v.decode() for k, v in entries[0][1].items()}
    assert json.loads(fields["data"]) == {"via": "stream"}
    assert fields["firing_id"].startswith("fir_") and fields["schedule_id"] == sid_of("r-stream")
    await pubsub.aclose()
    await redis.aclose()


async def test_kafka_target_topic_receives_data_with_headers(worker: Worker) -> None:
    topic = worker.topic("target-orders")
    await send_commands(worker, kafka("k-target", worker.bootstrap, topic, data={"order": 42}))
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=worker.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        metadata_max_age_ms=500,
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert json.loads(record.value) == {"order": 42}
    assert record.key == sid_of("k-target").encode()
    headers = {k: v.decode() for k, v in record.headers}
    assert headers["Idempotency-Key"].startswith("fir_")
    assert headers["X-Schedule-Id"] == sid_of("k-target")
    assert headers["X-Attempt"] == "1" and headers["X-Scheduled-For"].endswith("Z")


async def test_held_kafka_firings_that_fail_or_keep_history_are_concluded_in_full(
    worker: Worker,
) -> None:
    """A Kafka firing is held with its record's bytes, not its parsed firing.

    A success with no history is counted straight away; a failure, or a task
    with ``history_check``, parses the firing again: this checks that nothing
    of it is lost on the way (retry, dead letter, history).
    """
    topic = worker.topic("target-concluded")
    nobody = f"127.0.0.1:{free_port()}"  # no broker listens here

    async with Collector(worker.bootstrap, worker.topic("firings-dead")) as dead:
        await send_commands(
            worker,
            kafka("k-nobody", nobody, topic, failed_policy="retry", retry_wait=0.5, max_retries=1),
            kafka("k-history", worker.bootstrap, topic, history_check=True),
        )
        await dead.wait(lambda _: bool(dead.values(schedule_id=sid_of("k-nobody"))), timeout=60)
        await asyncio.sleep(1)
        lost = dead.values(schedule_id=sid_of("k-nobody"))
    assert len(lost) == 1
    assert [e["attempt"] for e in lost[0]["errors"]] == [1, 2]
    assert all("KafkaConnectionError" in e["error"] for e in lost[0]["errors"]), lost[0]
    assert lost[0]["task"]["data"] == {"job": "k-nobody"}
    assert lost[0]["firing_id"].startswith("fir_")

    def events() -> list[str]:
        body = httpx.get(f"{worker.url}/schedules/{sid_of('k-history')}/history").json()
        return [e["event"] for e in body["events"]]

    await until(lambda: "succeeded" in events(), timeout=30)
    assert list(reversed(events())) == ["registered", "fired", "succeeded"]


async def test_history_shows_the_whole_life_in_order(
    worker: Worker, http_target: HttpTarget
) -> None:
    await send_commands(
        worker,
        rest(
            "lived",
            f"{http_target.url}/fail/lived?times=1",
            history_check=True,
            failed_policy="retry",
            retry_wait=0.5,
        ),
    )
    await until(lambda: len(http_target.of("lived")) >= 2, timeout=30)
    await asyncio.sleep(1)
    await send_commands(worker, {"action": "delete", "client": client("lived")})

    def events() -> list[str]:
        body = httpx.get(f"{worker.url}/schedules/{sid_of('lived')}/history").json()
        return [e["event"] for e in body["events"]]

    await until(lambda: events() and events()[0] == "deleted", timeout=30)
    assert list(reversed(events())) == [
        "registered",
        "fired",
        "failed",
        "retried",
        "succeeded",
        "deleted",
    ]
    cli = subprocess.run(
        [SCHEDULER, "history", sid_of("lived")],
        env=worker.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.strip().splitlines()
    assert lines[0].split()[1] == "deleted" and lines[-1].split()[1] == "registered"
    assert "HTTP 503" in cli.stdout


async def test_a_pending_retry_survives_kill_9(
    kafka: LocalBroker, tmp_path: Path, http_target: HttpTarget
) -> None:
    first = Worker(kafka.bootstrap, tmp_path / "before")
    first.start()
    async with Collector(kafka.bootstrap, first.topic("firings-retry")) as retries:
        await send_commands(
            first,
            rest(
                "survives",
                f"{http_target.url}/fail/survives?times=1",
                failed_policy="retry",
                retry_wait=8,
            ),
        )
        await retries.wait(lambda _: len(retries.values(schedule_id=sid_of("survives"))) >= 1)
        not_before = instant(retries.values(schedule_id=sid_of("survives"))[0]["not_before"])
    first.stop(sig=signal.SIGKILL)
    assert len(http_target.of("survives")) == 1
    second = first.sibling(tmp_path / "after")
    second.start()

    def second_attempts() -> list[dict[str, Any]]:
        return [c for c in http_target.of("survives") if c["headers"]["X-Attempt"] == "2"]

    try:
        await until(lambda: second_attempts(), timeout=90)
    finally:
        second.stop()
    # The first attempt may be delivered again too (its offset may not have been
    # committed before the kill): at-least-once, under the same Idempotency-Key.
    assert second_attempts()[0]["arrived"] >= not_before
    assert len({c["headers"]["Idempotency-Key"] for c in http_target.of("survives")}) == 1
