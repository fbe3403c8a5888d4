"""Start a worker: create the topics, then run the Faust app with its web view."""

from __future__ import annotations

import asyncio
import importlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from scheduler import gcpace, patches
from scheduler.domain.errors import BrokerError
from scheduler.settings import Settings

log = logging.getLogger(__name__)

#: The modules whose import registers the worker's agents, tasks and views.
PARTS = (
    "scheduler.streams.accept",
    "scheduler.streams.apply",
    "scheduler.streams.timers",
    "scheduler.streams.delivery",
    "scheduler.streams.history",
    "scheduler.web",
)


async def ensure_topics(settings: Settings, timeout: float = 60.0) -> None:
    """Create the contract topics with the configured partition count.

    Faust creates its own changelog topics but not the topics other programs
    write to; creating them here gives them our partition count instead of
    the broker's auto-create default of one.
    """
    from scheduler.topics import CONTRACT_TOPICS

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=int(timeout * 1000)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(settings.topic(name), settings.partitions, 1)
            for name in CONTRACT_TOPICS
            if settings.topic(name) not in existing
        ]
        if wanted:
            response = await admin.create_topics(wanted)
            for topic, code, *message in response.topic_errors:
                # 36: TOPIC_ALREADY_EXISTS, another worker won the race.
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise BrokerError(f"cannot create topic {topic}: error {code} {message}")
        keyed = settings.topic("schedule-commands-keyed")
        for described in await admin.describe_topics([keyed]):
            count = len(described.get("partitions", []))
            if count and count != settings.partitions:
                raise BrokerError(
                    f"topic {keyed} has {count} partitions but SCHEDULER_PARTITIONS is "
                    f"{settings.partitions}; the partition count is fixed once topics exist"
                )
    finally:
        await admin.close()


def run(settings: Settings) -> None:
    """Run one worker in the foreground until SIGINT/SIGTERM."""
    patches.check_versions()  # before anything touches the broker
    asyncio.run(ensure_topics(settings))
    asyncio.set_event_loop(asyncio.new_event_loop())

    for name in PARTS:
        importlib.import_module(name)
    from scheduler.app import app
    from scheduler.patches.spinner import Worker

    gcpace.tune()
    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
