"""Identifiers that every worker computes the same way.

A schedule id is derived from the five client fields, so re-sending a
command with the same client tuple addresses the same schedule on any
worker, and a producer can key its record without asking us. A firing id
is derived from the schedule id and the nominal instant, so a firing that
is emitted twice (after a crash or a rebalance) carries the same id and a
target can drop the copy.

Form: ``sch_`` followed by the first 32 hex digits of the SHA-256 of the
compact JSON array ``[operation, application, group, key, type]``; a firing
id is ``fir_`` and 32 hex digits of the SHA-256 of
``<schedule id>|<instant as UTC ISO-8601 with microseconds>``. JSON keeps
field boundaries unambiguous (no separator can be smuggled into a field),
and the hex form is safe in a URL path, a header and a Redis key.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from scheduler.timefmt import format_utc


def schedule_id(operation: str, application: str, group: str, key: str, type_: str) -> str:
    canonical = json.dumps(
        [operation, application, group, key, type_], ensure_ascii=False, separators=(",", ":")
    )
    return "sch_" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def firing_id(schedule: str, scheduled_for: datetime) -> str:
    material = f"{schedule}|{format_utc(scheduled_for, micros=True)}"
    return "fir_" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def trigger_firing_id(schedule: str, accepted_at: datetime) -> str:
    """The id of a ``trigger`` firing: its own namespace, never a nominal instant's."""
    return firing_id(schedule + "!trigger", accepted_at)
