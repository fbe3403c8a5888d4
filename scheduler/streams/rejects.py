"""Rejected commands: the reason and the original text, to ``schedule-commands-rejected``."""

from __future__ import annotations

import json
import logging

from prometheus_client import Counter

from scheduler import clock, metrics
from scheduler.app import app
from scheduler.domain import secrets
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.timefmt import format_utc
from scheduler.patches import produce_guard
from scheduler.topics import rejected_topic

log = logging.getLogger(__name__)

#: The error codes a rejection may carry; any other is counted as ``other``, so
#: that the label's values stay few whatever a new check calls its error.
ERRORS = (
    "bad_json",
    "too_large",
    "invalid_command",
    "egress_denied",
    "unknown_cluster",
    "unknown_schedule",
    "unreadable",
)
_commands = Counter(
    "scheduler_commands",
    "commands read from schedule-commands, by outcome: accepted, or rejected with its error "
    "code (a command accepted and then found to name no schedule counts as both)",
    ["outcome", "error"],
    registry=metrics.REGISTRY,
)
#: Bound once, for the command agent.
ACCEPTED = _commands.labels("accepted", "")
_rejected = {error: _commands.labels("rejected", error) for error in (*ERRORS, "other")}
metrics.Total(
    "scheduler_commands_accepted_total",
    "valid commands accepted",
    _commands,
    {"outcome": {"accepted"}},
)
metrics.Total(
    "scheduler_commands_rejected_total", "commands rejected", _commands, {"outcome": {"rejected"}}
)


#: Bytes a rejection record may take: under what the producer sends at most
#: (Faust's ``producer_max_request_size``, 1,000,000 bytes), with room for
#: the record's key and framing.
REJECTION_MAX_BYTES = 900_000


def rejection(exc: InvalidCommand, original: bytes | str | None) -> bytes:
    """The rejection record: the reason, and the original text with its secrets masked.

    A command the broker took can make a larger rejection once its text is
    escaped as JSON (a control character takes six bytes); one over
    ``REJECTION_MAX_BYTES`` could not be sent, and its command would be
    neither stored nor rejected. So its text is cut to fit (after masking,
    which needs the whole text), and the rejection says so:
    ``command_truncated`` and the original's size in bytes, ``command_bytes``.
    """
    if isinstance(original, bytes):
        size = len(original)
        text = original.decode("utf-8", errors="replace")
    else:
        text = original or ""
        size = len(text.encode("utf-8", "surrogatepass"))
    shown = secrets.masked_command_text(text)
    body: dict[str, object] = {
        "error": exc.error,
        "detail": exc.detail,
        "field": exc.field,
        "command": shown,
        "received_at": format_utc(clock.now()),
    }
    encoded = _encoded(body)
    keep = len(shown)
    while len(encoded) > REJECTION_MAX_BYTES and keep > 0:
        # Scaled by how much the text grew when encoded, then a tenth less each time.
        keep = min(keep - 1, keep * REJECTION_MAX_BYTES * 9 // (len(encoded) * 10))
        body["command"] = shown[: max(keep, 0)]
        body["command_truncated"] = True
        body["command_bytes"] = size
        encoded = _encoded(body)
    return encoded


def _encoded(body: dict[str, object]) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")


async def reject(exc: InvalidCommand, key: bytes | None, original: bytes | str | None) -> None:
    _rejected.get(exc.error, _rejected["other"]).inc()
    log.info("rejected command: %s", exc.detail)
    sent = await rejected_topic.send(key=key, value=rejection(exc, original))
    produce_guard.watch(sent, "a rejection record", app.consumer)
