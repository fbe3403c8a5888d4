"""How instants are written and read at the edges: UTC ISO-8601 with a ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime

#: Instants formatted lately. A firing formats a dozen (its record's state,
#: its id, its body), mostly the same few: a crowd shares its instant, and a
#: new record's acceptance, creation and update are one instant. Looking one
#: up costs a small fraction of formatting it again.
_formatted: dict[tuple[datetime, bool], str] = {}
FORMATTED_MAX = 8_192


def format_utc(instant: datetime, *, micros: bool = False) -> str:
    """UTC ISO-8601 with a trailing ``Z``; milliseconds unless ``micros``."""
    if instant.tzinfo is not UTC:
        # Not looked up: two local times of one zone that differ only in
        # ``fold`` (the repeated hour of a DST change) compare equal, but
        # are an hour apart.
        instant = instant.astimezone(UTC)
    key = (instant, micros)
    found = _formatted.get(key)
    if found is not None:
        return found
    # An aware UTC instant's ISO form ends in "+00:00": swapped for "Z" (faster
    # than dropping the zone first).
    text = instant.isoformat(timespec="microseconds" if micros else "milliseconds")[:-6] + "Z"
    if len(_formatted) >= FORMATTED_MAX:
        _formatted.clear()
    _formatted[key] = text
    return text


def parse_utc(text: str) -> datetime:
    """Read an ISO-8601 instant; one without an offset is taken as UTC."""
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
