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


#: Characters of the original text a rejection carries. A record the broker
#: took can be larger than the one a rejection may be once its text is
#: escaped as JSON (a control character takes six bytes): the rejection
#: could not be sent, and the command was neither stored nor rejected.
SHOWN_MAX = 16_384


def rejection(exc: InvalidCommand, original: bytes | str | None) -> bytes:
    """The rejection record: the reason, and the original text with its secrets masked.

    A text longer than ``SHOWN_MAX`` characters is cut there (after masking,
    which needs the whole text), and says so: ``command_truncated`` and the
    original's size in bytes, ``command_bytes``.
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
        "command": shown[:SHOWN_MAX],
        "received_at": format_utc(clock.now()),
    }
    if len(shown) > SHOWN_MAX:
        body["command_truncated"] = True
        body["command_bytes"] = size
    return json.dumps(body, ensure_ascii=False).encode("utf-8", "replace")


async def reject(exc: InvalidCommand, key: bytes | None, original: bytes | str | None) -> None:
    _rejected.get(exc.error, _rejected["other"]).inc()
    log.info("rejected command: %s", exc.detail)
    sent = await rejected_topic.send(key=key, value=rejection(exc, original))
    produce_guard.watch(sent, "a rejection record", app.consumer)
