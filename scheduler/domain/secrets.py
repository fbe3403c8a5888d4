"""Secrets in tasks: referenced, resolved at delivery, and never shown.

A header value, or the password of a target URL, may be written
``{{secret:NAME}}``: it is read at delivery time from the file
``SCHEDULER_SECRETS_DIR/NAME`` (one file per secret, as Kubernetes mounts
them), and the command, the tables and every record keep the reference, not
the value (:func:`expand`).

A secret given literally is still kept as given (a command is stored as it
was sent), but it is never shown: :func:`masked_task` replaces the values of
sensitive headers (:func:`sensitive`) and URL passwords with ``***`` in
lookups, lists, dead letters, rejections and logs. References are shown as
written: they are names, not secrets.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

MASK = "***"

#: Header names whose values are secrets, compared lower-case.
SENSITIVE_NAMES = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})
SENSITIVE_WORDS = ("token", "secret", "password")

REFERENCE = re.compile(r"\{\{secret:([A-Za-z0-9_.-]{1,200})\}\}")
#: A value that is one reference and nothing else is shown as written.
WHOLE_REFERENCE = re.compile(r"^\{\{secret:[A-Za-z0-9_.-]{1,200}\}\}$")
#: A secret file larger than this is refused (a header is not a payload).
MAX_SECRET_BYTES = 64 * 1024


class SecretMissing(Exception):
    """A referenced secret that cannot be read; ``str()`` names it, never its value."""


def sensitive(name: str) -> bool:
    lower = name.lower()
    return lower in SENSITIVE_NAMES or any(word in lower for word in SENSITIVE_WORDS)


def _masked_value(value: Any) -> Any:
    if isinstance(value, str) and WHOLE_REFERENCE.match(value):
        return value
    return MASK


def masked_url(url: str) -> str:
    """``url`` with a password in it replaced by ``***`` (a reference is kept)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        # Not a URL one can take apart: hide whatever sits between "://" and "@".
        return re.sub(r"(://[^/@]*?:)[^/@]*@", rf"\g<1>{MASK}@", url)
    if password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    shown = password if WHOLE_REFERENCE.match(password) else MASK
    netloc = f"{user}:{shown}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def masked_task(task: Any) -> Any:
    """A copy of a task (as a dict) with its secrets replaced by ``***``."""
    if not isinstance(task, dict):
        return task
    connection = task.get("connection")
    if not isinstance(connection, dict):
        return task
    shown = dict(connection)
    headers = connection.get("headers")
    if isinstance(headers, dict):
        shown["headers"] = {
            name: _masked_value(value) if sensitive(str(name)) else value
            for name, value in headers.items()
        }
    if isinstance(connection.get("host"), str):
        shown["host"] = masked_url(connection["host"])
    return {**task, "connection": shown}


def masked_command_text(text: str) -> str:
    """A command's text with its task's secrets masked; text that is not a JSON
    object with a task is returned as it is (it carries no task to mask)."""
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):
        return text
    if not isinstance(parsed, dict) or not isinstance(parsed.get("task"), dict):
        return text
    masked = masked_task(parsed["task"])
    if masked == parsed["task"]:
        return text
    return json.dumps({**parsed, "task": masked}, ensure_ascii=False)


def expand_url(url: str, secrets_dir: Path | None) -> str:
    """``url`` with a ``{{secret:NAME}}`` password read from the secrets dir.

    Only the password: a reference anywhere else in a URL (its path, its
    query) is sent as written, so a command cannot carry a secret to a host
    in a query string.
    """
    if "{{secret:" not in url:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is None or not WHOLE_REFERENCE.match(password):
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    secret = quote(expand(password, secrets_dir), safe="")
    netloc = f"{user}:{secret}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def expand(value: str, secrets_dir: Path | None) -> str:
    """``value`` with each ``{{secret:NAME}}`` replaced by the file's content."""
    if "{{secret:" not in value:
        return value

    def read(match: re.Match[str]) -> str:
        name = match.group(1)
        if secrets_dir is None:
            raise SecretMissing(f"secret {name}: SCHEDULER_SECRETS_DIR is not set")
        if name in (".", "..") or name.startswith("."):
            raise SecretMissing(f"secret {name}: not a secret name")
        path = secrets_dir / name
        try:
            if path.stat().st_size > MAX_SECRET_BYTES:
                raise SecretMissing(f"secret {name}: larger than {MAX_SECRET_BYTES} bytes")
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise SecretMissing(f"secret {name}: cannot be read ({type(exc).__name__})") from None

    return REFERENCE.sub(read, value)
