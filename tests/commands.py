"""The design document's example command, as the unit tests build on it."""

from __future__ import annotations

import copy
from typing import Any

DESIGN_EXAMPLE: dict[str, Any] = {
    "name": "bbb",
    "client": {
        "operation": "op#1",
        "application": "chef",
        "group": "system",
        "key": "12345678",
        "type": "scheduler",
    },
    "type": "cron",
    "schedule": "30 * * * * *",
    "timezone": "Asia/Seoul",
    "task": {
        "type": "rest",
        "connection": {
            "host": "http://localhost:3000/api/run",
            "headers": {"Content-Type": "application/json"},
        },
        "data": {"instanceName": "delay-test-999", "variables": {}},
        "history_check": False,
        "failed_policy": "retry",
        "retry_wait": 60,
    },
}


def example(**changes: Any) -> dict[str, Any]:
    """A fresh copy of the example; a change to ``None`` removes that field."""
    body = copy.deepcopy(DESIGN_EXAMPLE)
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body
