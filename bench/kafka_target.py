"""The Kafka target: a consumer in its own process, recording arrival against X-Scheduled-For.

It reads every partition of one topic from the beginning (no consumer
group, so no rebalance can pause it) and records each record under the
topic's name, with the time its fetch returned, the ``X-Scheduled-For``,
``Idempotency-Key`` and ``X-Schedule-Id`` headers our service sets on
every Kafka delivery. Reads are served like the HTTP target's
(``GET /count/{topic}``, ``GET /dump/{topic}``).

    python -m bench.kafka_target --bootstrap HOST:PORT --topic T --partitions N --port P
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path

from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from bench import procs
from bench.target import Control, Recorder


async def consume(bootstrap: str, topic: str, partitions: int, recorder: Recorder) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            arrival = time.time()
            for records in batch.values():
                for record in records:
                    headers = dict(record.headers or ())
                    recorder.add(
                        topic,
                        (
                            arrival,
                            headers.get("X-Scheduled-For", b"").decode(),
                            headers.get("Idempotency-Key", b"").decode(),
                            headers.get("X-Schedule-Id", b"").decode(),
                        ),
                    )
    finally:
        await consumer.stop()


async def serve(bootstrap: str, topic: str, partitions: int, port: int) -> None:
    recorder = Recorder()
    app = web.Application()
    recorder.routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await consume(bootstrap, topic, partitions, recorder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.bootstrap, args.topic, args.partitions, args.port))


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


class KafkaTarget(Control):
    """One topic, created here, and its consumer process."""

    def __init__(self, bootstrap: str, topic: str, partitions: int, log: Path) -> None:
        super().__init__(procs.free_port())
        self.topic = topic
        self.bootstrap = bootstrap
        self.proc = procs.spawn(
            [
                procs.PYTHON,
                "-m",
                "bench.kafka_target",
                "--bootstrap",
                bootstrap,
                "--topic",
                topic,
                "--partitions",
                str(partitions),
                "--port",
                str(self.port),
            ],
            log=log,
        )

    @classmethod
    async def start(cls, bootstrap: str, topic: str, log: Path, partitions: int = 8) -> KafkaTarget:
        await create_topic(bootstrap, topic, partitions)
        target = cls(bootstrap, topic, partitions, log)
        await asyncio.to_thread(procs.wait_port, target.port, target.proc, 30, "Kafka target")
        return target

    def stop(self) -> None:
        procs.kill(self.proc)


if __name__ == "__main__":
    main()
