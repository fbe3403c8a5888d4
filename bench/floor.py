"""The floor under registration: Faust's consumer with no work behind it.

A worker that only takes records of a topic in batches
(``scheduler.patches.batching.take_batches``, as the command agents do) and
acknowledges them, with every adjustment ``scheduler.patches`` makes to Faust and
aiokafka, the worker's statistics sensor (``QuietMonitor``) and its garbage
collector settings (``scheduler.gcpace.tune``). How fast it drains a
backlog of the same commands is as fast as any agent of ours can take them
on this machine, before a command is parsed, validated or stored: the
registration workload reports it beside the worker's own rate.

Run by ``bench.ours`` as ``python -m bench.floor worker``, configured by
environment: ``FLOOR_BROKER``, ``FLOOR_APP_ID``, ``FLOOR_TOPIC``,
``FLOOR_PARTITIONS``, ``FLOOR_COUNT``, ``FLOOR_WEB_PORT`` and
``FLOOR_DATA_DIR``. When ``FLOOR_COUNT`` records have been taken it prints
one line, ``FLOOR {json}`` (records, seconds, rate, CPU per record), and
exits.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import faust

from scheduler import gcpace, patches
from scheduler.patches.batching import take_batches
from scheduler.patches.monitor import QuietMonitor

patches.install()  # the same adjustments as a worker's

BATCH_MAX = 1_000

app = faust.App(
    os.environ.get("FLOOR_APP_ID", "bench-floor"),
    broker=os.environ.get("FLOOR_BROKER", "kafka://127.0.0.1:9092"),
    store="memory://",
    datadir=os.environ.get("FLOOR_DATA_DIR", "floor-data"),
    autodiscover=False,
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=10,
    broker_heartbeat_interval=1,
    web_port=int(os.environ.get("FLOOR_WEB_PORT", "6098")),
    web_bind="127.0.0.1",
    Monitor=QuietMonitor,
)
topic = app.topic(
    os.environ.get("FLOOR_TOPIC", "floor"),
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=int(os.environ.get("FLOOR_PARTITIONS", "8")),
)
COUNT = int(os.environ.get("FLOOR_COUNT", "100000"))


@app.agent(topic)
async def take(stream: Any) -> None:
    taken = 0
    started: tuple[float, float] | None = None
    async for events in take_batches(stream, BATCH_MAX):
        if started is None:
            # Timed from the end of the first batch, as the worker's rate is
            # from its first applied command.
            started = (time.monotonic(), time.process_time())
            continue
        taken += len(events)
        if taken >= COUNT - BATCH_MAX:
            seconds = time.monotonic() - started[0]
            cpu = time.process_time() - started[1]
            result = {
                "records": taken,
                "seconds": round(seconds, 2),
                "rate": round(taken / seconds),
                "cpu_us_per_record": round(cpu / taken * 1e6, 1),
            }
            print("FLOOR " + json.dumps(result), flush=True)
            os._exit(0)


if __name__ == "__main__":
    gcpace.tune()  # as a worker does before it starts
    app.main()
