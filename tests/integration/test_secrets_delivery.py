"""Secrets reach the target and nowhere else (a real HTTP server, the worker's executors).

A header written ``{{secret:NAME}}`` and a URL password are read from the
secrets directory at delivery; the firing keeps the reference. A reference to
a secret that is not there fails for good, naming the secret and not a value.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from scheduler.domain.retry import Outcome
from scheduler.targets.executors import Executors
from tests.support import HttpTarget

pytestmark = pytest.mark.integration


def firing(url: str, headers: dict[str, str]) -> dict[str, Any]:
    return {
        "firing_id": "fir_secret",
        "schedule_id": "sch_secret",
        "scheduled_for": "2030-01-01T00:00:00.000000Z",
        "attempt": 1,
        "task": {
            "type": "rest",
            "connection": {"host": url, "headers": headers},
            "data": {"x": 1},
            "timeout": 10.0,
        },
    }


async def test_references_are_read_at_delivery_and_the_firing_keeps_them(
    tmp_path: Path, http_target: HttpTarget
) -> None:
    (tmp_path / "api-token").write_text("tok-987\n")
    (tmp_path / "basic").write_text("pa:ss")
    executors = Executors(secrets_dir=tmp_path)
    url = http_target.url.replace("http://", "http://bot:{{secret:basic}}@") + "/ok/secret"
    sent = firing(url, {"X-Api-Key": "{{secret:api-token}}"})
    try:
        result = await executors.deliver(sent)
        missing = await executors.deliver(
            firing(f"{http_target.url}/ok/missing", {"X-Api-Key": "{{secret:nope}}"})
        )
    finally:
        await executors.close()
    assert result.ok, result
    hit = http_target.of("secret")[0]
    assert hit["headers"]["X-Api-Key"] == "tok-987"
    assert hit["headers"]["Authorization"] == "Basic " + base64.b64encode(b"bot:pa:ss").decode()
    # The firing itself still holds the references, not the values.
    assert sent["task"]["connection"]["headers"]["X-Api-Key"] == "{{secret:api-token}}"
    assert missing.outcome is Outcome.PERMANENT
    assert missing.error is not None and "secret nope" in missing.error
    assert http_target.of("missing") == []
