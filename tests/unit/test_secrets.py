"""Secrets in tasks: masked wherever shown, resolved only at delivery (scheduler.domain.secrets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scheduler.domain.secrets import (
    SecretMissing,
    expand,
    masked_command_text,
    masked_task,
    masked_url,
    sensitive,
)


def task(headers: dict[str, str], host: str = "https://api.example.com/hook") -> dict[str, object]:
    return {"type": "rest", "connection": {"host": host, "headers": headers}, "data": {"x": 1}}


def test_sensitive_header_names() -> None:
    for name in ("Authorization", "proxy-authorization", "Cookie", "X-Api-Key", "X-Auth-Token",
                 "client_secret", "X-Password"):  # fmt: skip
        assert sensitive(name), name
    for name in ("Content-Type", "X-Request-Id", "Accept"):
        assert not sensitive(name), name


def test_literal_secrets_are_masked_and_references_shown_as_written() -> None:
    shown = masked_task(
        task(
            {
                "Authorization": "Bearer abc123",
                "X-Api-Key": "{{secret:api-key}}",
                "X-Trace": "keep-me",
            },
            host="https://user:hunter2@api.example.com/hook",
        )
    )
    headers = shown["connection"]["headers"]  # type: ignore[index]
    assert headers == {
        "Authorization": "***",
        "X-Api-Key": "{{secret:api-key}}",
        "X-Trace": "keep-me",
    }
    assert shown["connection"]["host"] == "https://user:***@api.example.com/hook"  # type: ignore[index]
    assert shown["data"] == {"x": 1}


def test_a_redis_url_password_is_masked() -> None:
    assert masked_url("redis://:pw@10.0.0.5:6379/0") == "redis://:***@10.0.0.5:6379/0"
    assert masked_url("redis://10.0.0.5:6379/0") == "redis://10.0.0.5:6379/0"


def test_a_rejected_commands_text_is_masked_and_other_text_kept() -> None:
    text = json.dumps({"client": {}, "task": task({"Cookie": "session=1"})})
    assert "session=1" not in masked_command_text(text)
    assert masked_command_text("not json at all") == "not json at all"


def test_references_are_read_from_the_secrets_dir_at_delivery(tmp_path: Path) -> None:
    (tmp_path / "api-key").write_text("k-123\n")
    assert expand("Bearer {{secret:api-key}}", tmp_path) == "Bearer k-123"
    assert expand("no reference", None) == "no reference"
    with pytest.raises(SecretMissing, match="secret gone") as caught:
        expand("{{secret:gone}}", tmp_path)
    assert "k-123" not in str(caught.value)
    with pytest.raises(SecretMissing, match="SCHEDULER_SECRETS_DIR is not set"):
        expand("{{secret:api-key}}", None)
    with pytest.raises(SecretMissing, match="not a secret name"):
        expand("{{secret:..}}", tmp_path)


def test_only_a_url_password_is_read_from_a_reference(tmp_path: Path) -> None:
    from scheduler.domain.secrets import expand_url

    (tmp_path / "pw").write_text("p@ss/word\n")
    assert expand_url("https://bot:{{secret:pw}}@h.example/x", tmp_path) == (
        "https://bot:p%40ss%2Fword@h.example/x"
    )
    # Anywhere else a reference is sent as written: no secret in a query string.
    leak = "https://h.example/x?k={{secret:pw}}"
    assert expand_url(leak, tmp_path) == leak
