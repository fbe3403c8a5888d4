"""Every topic of the service, declared once.

Keys are raw bytes (the schedule id, UTF-8) everywhere, so that Faust's
partitioner, the table's changelog and any producer that keys by schedule
id all agree on which partition owns a schedule.
"""

from __future__ import annotations

import faust

from scheduler.app import MAX_POLL_RECORDS, app, settings
from scheduler.domain.retry import TIERS_S

#: Records a retry tier's stream buffers before Faust stops fetching it.
TIER_BUFFER = 64
#: The same for ``firings-retry``, whose records are each sent on or delivered:
#: more than one fetch call hands over, since a full buffer holds up Faust's
#: handing over of every topic's records until the agent takes some.
RETRY_BUFFER = MAX_POLL_RECORDS + 512


def _topic(
    name: str,
    *,
    internal: bool = False,
    value_serializer: str = "raw",
    maxsize: int | None = None,
) -> faust.TopicT:
    return app.topic(
        settings.topic(name),
        key_type=bytes,
        value_type=bytes if value_serializer == "raw" else None,
        key_serializer="raw",
        value_serializer=value_serializer,
        partitions=settings.partitions,
        internal=internal,
        maxsize=maxsize,
    )


#: What applications send: raw bytes, because a poison record must be
#: rejected by us with its original text, not dropped by a deserializer.
commands_topic = _topic("schedule-commands")
#: Commands that failed validation, with the reason and the original text.
rejected_topic = _topic("schedule-commands-rejected")
#: Valid commands re-keyed by schedule id, so that each lands on the
#: partition that owns the schedule: the table may only be written there.
keyed_commands_topic = _topic("schedule-commands-keyed", internal=True, value_serializer="json")

#: Due firings, keyed by schedule id, for the executors.
firings_topic = _topic("firings")
#: Failed firings waiting for their retry: a firing plus ``not_before`` and errors.
retry_topic = _topic("firings-retry", maxsize=RETRY_BUFFER)
#: The delay tiers retries wait in (``scheduler.streams.retries``), by delay in seconds.
#: Their streams buffer little (Faust's default is 4,096 records): a tier
#: holds what it reads until it is due, and the buffer would add to that.
retry_tier_topics = {
    delay: _topic(f"firings-retry-{delay}s", internal=True, maxsize=TIER_BUFFER)
    for delay in TIERS_S
}
#: Firings whose delivery failed for good, with every attempt's error.
dead_topic = _topic("firings-dead")
#: One event per state change or delivery outcome of schedules with history_check.
history_topic = _topic("schedule-history")


def name_of(topic: faust.TopicT) -> str:
    """The Kafka name of a declared topic (or a table's changelog topic)."""
    name: str = topic.get_topic_name()
    return name


CONTRACT_TOPICS = (
    "schedule-commands",
    "schedule-commands-rejected",
    "schedule-commands-keyed",
    "firings",
    "firings-retry",
    "firings-dead",
    "schedule-history",
)

#: Topics of the service's own that it creates beside the contract ones.
INTERNAL_TOPICS = tuple(f"firings-retry-{delay}s" for delay in TIERS_S)
