"""The service's tables, declared once. A table is written only from an agent
processing a key of the same partition (see ``scheduler.streams``)."""

from __future__ import annotations

from scheduler.app import app, settings

#: The schedules, keyed by schedule id (bytes), value a ScheduleRecord as JSON.
schedules = app.Table(
    "schedules",
    key_type=bytes,
    value_type=None,
    partitions=settings.partitions,
)

#: The due-index: key ``<instant in µs since the epoch, 17 digits>|<schedule id>``,
#: value ``b"1"``. Keys sort by time within each partition's RocksDB, so a
#: partition's timer reads only the near future instead of every schedule.
#: It is written beside ``schedules`` by the same agent, on the same partition.
timers = app.Table(
    "timers",
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
)

#: Recent history events per schedule id (JSON list, newest last), kept by the
#: agent that reads ``schedule-history``.
history = app.Table(
    "history",
    key_type=bytes,
    value_type=bytes,
    partitions=settings.partitions,
)
