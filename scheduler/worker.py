"""Start a worker: create the topics, then run the Faust app with its web view."""

from __future__ import annotations

import asyncio
import importlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError

from scheduler import gcpace, kafka_auth, patches
from scheduler.domain.errors import BrokerError
from scheduler.settings import Settings

log = logging.getLogger(__name__)

#: The modules whose import registers the worker's agents, tasks and views.
PARTS = (
    "scheduler.streams.accept",
    "scheduler.streams.bulk",
    "scheduler.streams.apply",
    "scheduler.streams.timers",
    "scheduler.streams.delivery",
    "scheduler.streams.executor",
    "scheduler.streams.retries",
    "scheduler.streams.consumption",
    "scheduler.streams.history",
    "scheduler.web",
    "scheduler.openapi",
    "scheduler.ui",
    "scheduler.graphql_api",
)


async def ensure_topics(settings: Settings, timeout: float = 60.0) -> None:
    """Create every topic the worker uses, and wait until each has its leaders.

    Faust creates its tables' changelogs itself, but only as it starts, and
    its consumer may then see one with no partitions yet: an agent that
    writes a table at once stops with Faust's ``PartitionsMismatch``. So the
    changelogs are created here too (compacted, as Faust makes them), with
    the topics other programs write to, which Faust does not create; all get
    our partition count instead of the broker's auto-create default.
    """
    from scheduler import tables
    from scheduler.topics import CONTRACT_TOPICS, INTERNAL_TOPICS, name_of

    changelogs = [name_of(table.changelog_topic) for table in tables.ALL]
    wanted: dict[str, dict[str, str]] = {
        settings.topic(name): {} for name in (*CONTRACT_TOPICS, *INTERNAL_TOPICS)
    }
    wanted.update({name: {"cleanup.policy": "compact"} for name in changelogs})
    if settings.min_insync_replicas is not None:
        for configs in wanted.values():
            configs["min.insync.replicas"] = str(settings.min_insync_replicas)
    # Faust's own topic for electing the assignor's leader: one partition.
    leader = f"{settings.app_id}-__assignor-__leader"
    admin = AIOKafkaAdminClient(
        request_timeout_ms=int(timeout * 1000), **kafka_auth.client_options(settings)
    )
    await kafka_auth.explained(settings, admin.start())
    try:
        replicas = await replication_factor(admin, settings)
        if settings.min_insync_replicas is not None and settings.min_insync_replicas > replicas:
            raise BrokerError(
                f"SCHEDULER_MIN_INSYNC_REPLICAS is {settings.min_insync_replicas} but topics get "
                f"{replicas} replicas: every write with acks=all would be refused"
            )
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, settings.partitions, replicas, topic_configs=configs)
            for name, configs in wanted.items()
            if name not in existing
        ]
        if leader not in existing:
            configs = {}
            if settings.min_insync_replicas is not None:
                configs["min.insync.replicas"] = str(settings.min_insync_replicas)
            new.append(NewTopic(leader, 1, replicas, topic_configs=configs))
        if new:
            response = await admin.create_topics(new)
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
        await _wait_for_leaders(admin, [*wanted, leader], timeout)
        await _report_replication(admin, [*wanted, leader], replicas)
    finally:
        await admin.close()


async def replication_factor(admin: AIOKafkaAdminClient, settings: Settings) -> int:
    """SCHEDULER_REPLICATION_FACTOR, or the cluster's ``default.replication.factor``.

    Asked of a broker rather than sent as -1: aiokafka's topic creation
    request predates the version in which Kafka takes -1 for its default.
    """
    if settings.replication_factor > 0:
        return settings.replication_factor
    cluster = await admin.describe_cluster()
    brokers = cluster.get("brokers") or []
    if not brokers:
        return 1
    resource = ConfigResource(ConfigResourceType.BROKER, str(brokers[0]["node_id"]))
    for response in await admin.describe_configs([resource]):
        for _code, _message, _type, _name, entries in response.resources:
            for entry in entries:
                if entry[0] == "default.replication.factor" and entry[1]:
                    return min(int(entry[1]), len(brokers))
    return min(3, len(brokers))


async def _report_replication(admin: AIOKafkaAdminClient, topics: list[str], wanted: int) -> None:
    """Say at start which existing topics are replicated otherwise than wanted.

    Nothing is changed: moving replicas is an operator's decision
    (``kafka-reassign-partitions``), and a worker must not start one.
    """
    for described in await admin.describe_topics(topics):
        partitions = described.get("partitions") or []
        found = {len(part.get("replicas") or ()) for part in partitions}
        if found and found != {wanted}:
            log.warning(
                "topic %s has replication factor %s, but SCHEDULER_REPLICATION_FACTOR (or "
                "the cluster's default) is %d; existing topics are left as they are",
                described.get("topic"),
                "/".join(str(n) for n in sorted(found)),
                wanted,
            )


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str], timeout: float) -> None:
    """Return once every partition of ``topics`` has a leader; raise after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        missing = []
        for described in await admin.describe_topics(topics):
            partitions = described.get("partitions") or []
            leaderless = any(part.get("leader", -1) < 0 for part in partitions)
            if described.get("error_code") or not partitions or leaderless:
                missing.append(described.get("topic"))
        if not missing:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise BrokerError(f"topics without a leader after {timeout:g}s: {', '.join(missing)}")
        await asyncio.sleep(0.2)


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

    @app.timer(gcpace.TRIM_EVERY_S)  # type: ignore[untyped-decorator]
    async def trim_heap() -> None:
        await asyncio.to_thread(gcpace.trim)

    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()
