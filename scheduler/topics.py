"""Every topic of the service, declared once.

Keys are raw bytes (the schedule id, UTF-8) everywhere, so that Faust's
partitioner, the table's changelog and any producer that keys by schedule
id all agree on which partition owns a schedule.
"""

from __future__ import annotations

import faust

from scheduler.app import app, settings


def _topic(name: str, *, internal: bool = False, value_serializer: str = "raw") -> faust.TopicT:
    return app.topic(
        settings.topic(name),
        key_type=bytes,
        value_type=bytes if value_serializer == "raw" else None,
        key_serializer="raw",
        value_serializer=value_serializer,
        partitions=settings.partitions,
        internal=internal,
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
retry_topic = _topic("firings-retry")
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
