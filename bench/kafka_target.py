"""The Kafka target: a consumer in its own process, recording arrival against X-Scheduled-For.

It reads every partition of one topic from the beginning (assigned, not
subscribed, so no rebalance can pause it) and records each record under the
topic's name, with the time it reached this process, the ``X-Scheduled-For``,
``Idempotency-Key`` and ``X-Schedule-Id`` headers our service sets on
every Kafka delivery. Reads are served like the HTTP target's
(``GET /count/{topic}``, ``GET /dump/{topic}``).

The consumer is librdkafka's (confluent-kafka), in a thread of its own: it
fetches in the background and hands over a record for ~5 µs of CPU.
aiokafka's consumer, the first one here, cost ~30 µs a record and stamped a
fetch's records only once it had parsed all of them (up to 10,000): a burst
of 50,000 Kafka firings, all produced within 0.15 s of their instant (their
CreateTime), was stamped over 1.0 s, so the target measured itself rather
than the scheduler. Each record's arrival is stamped when the call that
handed it over returns, so no stamp is earlier than the record's arrival.

    python -m bench.kafka_target --bootstrap HOST:PORT --topic T --partitions N --port P
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench import procs
from bench.target import Control, Record, Recorder


class KafkaRecorder(Recorder):
    """Records as handed over, each batch with its arrival; headers are read at the dump.

    So the consumer's loop costs next to nothing a record, and a stamp is
    never held back by the parsing of the batch before it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.batches: dict[str, list[tuple[float, list[Any]]]] = {}
        self.counts: dict[str, int] = {}

    def add_batch(self, topic: str, arrival: float, messages: list[Any]) -> None:
        self.batches.setdefault(topic, []).append((arrival, messages))
        self.counts[topic] = self.counts.get(topic, 0) + len(messages)

    def count(self, run: str) -> int:
        return self.counts.get(run, 0)

    def records(self, run: str) -> list[Record]:
        out: list[Record] = []
        # A copy: the consumer thread may be adding to it.
        for arrival, messages in list(self.batches.get(run, ())):
            for message in messages:
                headers = dict(message.headers() or ())
                out.append(
                    (
                        arrival,
                        headers.get("X-Scheduled-For", b"").decode(),
                        headers.get("Idempotency-Key", b"").decode(),
                        headers.get("X-Schedule-Id", b"").decode(),
                    )
                )
        return out


def consume(bootstrap: str, topic: str, partitions: int, recorder: KafkaRecorder) -> None:
    """Record every record of ``topic`` as it arrives; runs until the process ends."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-target-{topic}",  # required; never joined (assign, no subscribe)
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "fetch.min.bytes": 1,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
        }
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    try:
        while True:
            # One record as soon as there is one, then whatever else is queued.
            # (consume(n, timeout) would wait for n records or the timeout.)
            first = consumer.poll(0.5)
            if first is None:
                continue
            messages = [first, *consumer.consume(100_000, 0)]
            arrival = time.time()
            recorder.add_batch(topic, arrival, [m for m in messages if m.error() is None])
    finally:
        consumer.close()


async def serve(bootstrap: str, topic: str, partitions: int, port: int) -> None:
    recorder = KafkaRecorder()
    app = web.Application()
    recorder.routes(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.to_thread(consume, bootstrap, topic, partitions, recorder)


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
