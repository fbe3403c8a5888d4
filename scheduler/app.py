"""The Faust application, its topics and its tables, each declared once.

This module imports no agents or views (``scheduler.worker`` does), so any
module can import the topics without pulling in the whole worker. Settings
are fixed before the first import: see ``scheduler.settings.configure``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import faust

from scheduler.settings import current

settings = current()

app = faust.App(
    settings.app_id,
    broker=settings.faust_broker,
    store="rocksdb://",
    datadir=str(settings.data_dir),
    autodiscover=False,
    topic_partitions=settings.partitions,
    topic_replication_factor=1,
    # Only at_least_once: it recovers a table ~30x faster than exactly_once,
    # firing ids make a repeated firing harmless, and the agents produce
    # their records outside Faust's transactions (scheduler.outbox).
    processing_guarantee="at_least_once",
    table_standby_replicas=settings.standby_replicas,
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=settings.heartbeat_interval,
    consumer_group_instance_id=settings.group_instance_id,
    broker_rebalance_timeout=max(settings.session_timeout, 10.0),
    stream_wait_empty=False,
    web_enabled=True,
    web_bind=settings.web_host,
    web_host=settings.web_host if settings.web_host != "0.0.0.0" else "127.0.0.1",
    web_port=settings.web_port,
    canonical_url=settings.web_url,
    producer_acks=-1,
    # Measured (bench/): with aiokafka's 16 KiB default a partition's batch
    # fills after ~20 schedule records and the next waits for the broker's
    # ack, which capped a worker near 1,000 events/s with the CPU mostly idle.
    producer_max_batch_size=settings.producer_batch_bytes,
    producer_linger=settings.producer_linger_ms / 1000,
    table_cleanup_interval=timedelta(seconds=30).total_seconds(),
)

from faust.transport.producer import ProducerBuffer  # noqa: E402

ProducerBuffer.max_messages = 100_000


# Faust builds its aiokafka consumer with fetch_max_wait_ms=1500, hard-coded.
# Measured (bench/ steady workload, 2,000 firings/s): in about a third of the
# runs the worker settled 3-4 s behind with its CPU half idle, and with
# 500 ms it did not in ten runs (p99 100-260 ms); an idle worker pays
# ~1 millicore more for the shorter long poll. Only Faust's driver sees this.
FETCH_MAX_WAIT_MS = 500

import aiokafka as _aiokafka  # noqa: E402
from faust.transport.drivers import aiokafka as _driver  # noqa: E402


class _Consumer(_aiokafka.AIOKafkaConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = FETCH_MAX_WAIT_MS
        super().__init__(*args, **kwargs)


class _AiokafkaForFaust:
    """aiokafka as Faust's driver sees it: the same, but for its consumer class."""

    def __getattr__(self, name: str) -> Any:
        return _Consumer if name == "AIOKafkaConsumer" else getattr(_aiokafka, name)


_driver.aiokafka = _AiokafkaForFaust()  # type: ignore[attr-defined]
