"""How instants are written and read at the edges: UTC ISO-8601 with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime


def format_utc(instant: datetime, *, micros: bool = False) -> str:
    """UTC ISO-8601 with a trailing ``Z``; milliseconds unless ``micros``."""
    utc = instant if instant.tzinfo is UTC else instant.astimezone(UTC)
    # An aware UTC instant's ISO form ends in "+00:00": swapped for "Z" (faster
    # than dropping the zone first, and this runs several times per firing).
    return utc.isoformat(timespec="microseconds" if micros else "milliseconds")[:-6] + "Z"


def parse_utc(text: str) -> datetime:
    """Read an ISO-8601 instant; one without an offset is taken as UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def from_millis(millis: int) -> datetime:
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def to_millis(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)
