"""Rejected commands: the reason and the original text, to ``schedule-commands-rejected``."""

from __future__ import annotations

import json
import logging

from scheduler import clock, metrics
from scheduler.app import app
from scheduler.domain import secrets
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.timefmt import format_utc
from scheduler.patches import produce_guard
from scheduler.topics import rejected_topic

log = logging.getLogger(__name__)

_rejected = metrics.counter("scheduler_commands_rejected_total", "commands rejected")


def rejection(exc: InvalidCommand, original: bytes | str | None) -> bytes:
    if isinstance(original, bytes):
        text = original.decode("utf-8", errors="replace")
    else:
        text = original or ""
    body = {
        "error": exc.error,
        "detail": exc.detail,
        "field": exc.field,
        "command": secrets.masked_command_text(text),
        "received_at": format_utc(clock.now()),
    }
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


async def reject(exc: InvalidCommand, key: bytes | None, original: bytes | str | None) -> None:
    _rejected.inc()
    log.info("rejected command: %s", exc.detail)
    sent = await rejected_topic.send(key=key, value=rejection(exc, original))
    produce_guard.watch(sent, "a rejection record", app.consumer)
