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
