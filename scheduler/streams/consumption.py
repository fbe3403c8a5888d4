"""What this worker consumes, read from Faust's assignment and consumer at each scrape.

- ``scheduler_partitions_owned{role}``: the partitions this worker is active
  for, and those it keeps a standby copy of (the ``schedules`` table's);
- ``scheduler_consumer_lag{topic}``: per topic the agents read, the records
  of this worker's partitions not yet settled: the partition's highwater
  (the offset the next record will get) minus the group's committed offset,
  as ``kafka-consumer-groups`` counts it. Records read and held unsettled
  count: a firing held for its instant, a retry waiting in a delay tier;
- ``scheduler_retries_pending``: that lag summed over ``firings-retry`` and
  its delay tiers: every retry (or delivery put off) written for this
  worker's partitions and not yet delivered or dead-lettered, whether it
  waits on the broker or in memory (``scheduler_retries_held`` and
  ``scheduler_retries_due_soon`` are the part in memory).

Topics are labelled by their contract name, without ``SCHEDULER_TOPIC_PREFIX``,
so dashboards and alert rules hold for any prefix. A highwater comes with
each fetch: a partition whose fetching is paused (a full delay tier) shows
the one it last had. A partition with no committed offset yet counts from 0.
The changelogs are left out: recovery and standbys keep their own offsets.
"""

from __future__ import annotations

from typing import Any

from scheduler import metrics
from scheduler.app import app, settings
from scheduler.domain.retry import TIERS_S
from scheduler.patches import private
from scheduler.tables import schedules
from scheduler.topics import keyed_commands_topic, name_of

#: The topics the agents read, by contract name.
READ = (
    "schedule-commands",
    "schedule-commands-keyed",
    "firings",
    "firings-retry",
    *(f"firings-retry-{delay}s" for delay in TIERS_S),
    "schedule-history",
)
#: Where retries wait: the retry topic and its delay tiers.
RETRY_TOPICS = frozenset(name for name in READ if name.startswith("firings-retry"))
_CONTRACT = {settings.topic(name): name for name in READ}


def lag() -> dict[str, int]:
    """Records not yet settled per topic (contract name), over this worker's active partitions."""
    mine = [tp for tp in app.assignor.assigned_actives() if tp.topic in _CONTRACT]
    if not mine:
        return {}
    consumer = app.consumer
    committed = private.committed_offsets(consumer)
    found: dict[str, int] = {}
    for tp in mine:
        try:
            highwater = consumer.highwater(tp)
        except Exception:  # not (yet) assigned to the Kafka consumer itself
            continue
        if highwater is None:  # nothing fetched from it yet
            continue
        name = _CONTRACT[tp.topic]
        start = committed.get(tp) or 0
        found[name] = found.get(name, 0) + max(highwater - max(start, 0), 0)
    return found


def owned() -> dict[tuple[str, ...], float]:
    assignor: Any = app.assignor
    source = name_of(keyed_commands_topic)
    changelog = name_of(schedules.changelog_topic)
    active = {tp.partition for tp in assignor.assigned_actives() if tp.topic == source}
    standby = {tp.partition for tp in assignor.assigned_standbys() if tp.topic == changelog}
    return {("active",): len(active), ("standby",): len(standby)}


metrics.Reading(
    "scheduler_partitions_owned",
    "partitions this worker owns: active (it fires and delivers their schedules), "
    "standby (it keeps a copy of their table)",
    ("role",),
).bind(owned)
metrics.Reading(
    "scheduler_consumer_lag",
    "records of this worker's partitions not yet settled, per topic read: highwater minus "
    "committed offset (held firings and waiting retries count)",
    ("topic",),
).bind(lambda: {(name,): value for name, value in lag().items()})
metrics.Reading(
    "scheduler_retries_pending",
    "retries (and deliveries put off) of this worker's partitions not yet delivered or "
    "dead-lettered, waiting on firings-retry and its delay tiers or in memory",
).bind(lambda: {(): sum(n for name, n in lag().items() if name in RETRY_TOPICS)})
