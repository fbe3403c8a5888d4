"""What pending retries cost a worker: its memory with N retries waiting an hour.

For each N, starts a local Kafka and one worker (8 partitions, as the bench's), measures
the worker's resident memory once it is idle, writes N retry records due in
an hour to ``firings-retry`` (as many failures would), waits until the worker
has sent every one on to its delay tier and committed it, and measures
again; then kills it (-9), starts it again on the same data and measures a
third time. Writes ``bench/results/retries.md``.

    .venv/bin/python -m bench.retries [--retries 100000 300000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import procs
from bench.config import DEFAULT
from bench.ours import PARTITIONS, Context, Worker
from scheduler.devtools.broker import LocalBroker

RESULTS = Path(__file__).parent / "results" / "retries.md"
#: Seconds a worker is left to settle before its memory is read.
SETTLE_S = 10.0


def record(index: int, not_before: str, url: str) -> tuple[bytes, bytes]:
    sid = f"sch_bench_retry_{index:08d}"
    body = {
        "firing_id": f"fir_bench_retry_{index:08d}",
        "schedule_id": sid,
        "scheduled_for": not_before,
        "attempt": 2,
        "not_before": not_before,
        "last_error": "HTTP 503 Service Unavailable",
        "errors": [
            {
                "attempt": 1,
                "at": not_before,
                "outcome": "retryable",
                "error": "HTTP 503 Service Unavailable",
            }
        ],
        "task": {
            "type": "rest",
            "connection": {"host": url, "headers": {"X-Team": "bench"}},
            "data": {"job": index, "payload": "x" * 200},
            "failed_policy": "retry",
            "retry_wait": 3600,
            "max_retries": 3,
            "timeout": 10.0,
        },
    }
    return sid.encode(), json.dumps(body).encode()


async def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1_000_000
    )
    await producer.start()
    try:
        not_before = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for index in range(count):
            key, value = record(index, not_before, "http://127.0.0.1:9/never")
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        total = 0
        for partition in range(PARTITIONS):
            total += await consumer.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await consumer.stop()


async def reading(worker: Worker) -> dict[str, Any]:
    await asyncio.sleep(SETTLE_S)
    metrics = await worker.metrics()
    return {
        "rss_mib": round(procs.rss_bytes(worker.pid) / 2**20, 1),
        "held": int(metrics.get("scheduler_retries_held", 0)),
        "hops": int(metrics.get("scheduler_retry_hops_total", 0)),
        "attempts": int(metrics.get("scheduler_deliveries_started_total", 0)),
    }


async def run(count: int, work: Path) -> dict[str, Any]:
    broker = LocalBroker(port=procs.free_port(), data_dir=work / "kafka")
    await asyncio.to_thread(broker.start, 180)
    ctx = Context(sizes=DEFAULT, work=work, results=work, http=None)  # type: ignore[arg-type]
    ctx.bootstrap = broker.bootstrap
    tag = uuid.uuid4().hex[:6]
    worker = Worker(ctx, "retries", app_id=f"retries-{tag}", prefix=f"r{tag}-")
    try:
        await worker.start()
        idle = await reading(worker)
        started = time.monotonic()
        entry = worker.prefix + "firings-retry"
        await produce(ctx.bootstrap, entry, count)
        while await committed(ctx.bootstrap, worker.app_id, entry) < count:
            await asyncio.sleep(1)
        moved_s = time.monotonic() - started
        pending = await reading(worker)
        worker.kill9()
        await worker.start()
        restarted = await reading(worker)
    finally:
        worker.stop()
        await asyncio.to_thread(broker.stop)
        procs.stop_all()
    return {
        "retries": count,
        "moved_s": round(moved_s, 1),
        "idle": idle,
        "pending": pending,
        "restarted": restarted,
    }


def write(results: list[dict[str, Any]]) -> None:
    lines = [
        "# Pending retries: a worker's memory",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on `{platform.node()}` with "
        "`.venv/bin/python -m bench.retries`: one worker, "
        f"{PARTITIONS} partitions, N retries due in an hour written to `firings-retry`, "
        "read once it had moved them all to their delay tier and committed them, and again "
        f"after a kill -9 and a restart (each {SETTLE_S:g} s after). "
        "Goal: 100,000 pending retries add at most 20 MiB.",
        "",
        "| N | idle RSS MiB | added once moved (s to move) | held | added after restart "
        "| held | attempts |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        idle, pending, restarted = result["idle"], result["pending"], result["restarted"]
        lines.append(
            f"| {result['retries']:,} | {idle['rss_mib']} "
            f"| {round(pending['rss_mib'] - idle['rss_mib'], 1)} ({result['moved_s']} s) "
            f"| {pending['held']} | {round(restarted['rss_mib'] - idle['rss_mib'], 1)} "
            f"| {restarted['held']} | {pending['attempts'] + restarted['attempts']} |"
        )
    lines += [
        "",
        "Held: retry records read from a tier and kept in memory until their tier's delay "
        "has passed (`scheduler_retries_held`); attempts: deliveries started, none due.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.retries", description=__doc__)
    parser.add_argument("--retries", type=int, nargs="+", default=[100_000, 300_000])
    args = parser.parse_args()
    results = []
    for count in args.retries:
        with tempfile.TemporaryDirectory(prefix="bench-retries-") as work:
            results.append(asyncio.run(run(count, Path(work))))
    write(results)


if __name__ == "__main__":
    main()
