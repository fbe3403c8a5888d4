"""Whether a worker takes a command: one judgement, for the topic and ``POST /commands``.

:func:`admit_raw` judges one command as the topic carries it, as bytes: its
format (``parse_command``, ``scheduler.domain.models``), then this worker's
configuration (:func:`admit`): a target the egress policy denies as written
(``scheduler.targets.egress``), a Kafka target cluster no one configured
(``scheduler.targets.clusters``). The command agent calls it for each record;
``POST /commands`` calls it (:func:`admit_body`) for each command of its
body, on the very bytes it then produces to the topic. So the two accept and
refuse the same things by construction, not by keeping two checks alike.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass

from scheduler.app import egress_policy, settings, target_clusters
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Command, is_http_url, parse_command
from scheduler.targets import egress


@dataclass(frozen=True)
class Rules:
    """What a worker's configuration lets in: its egress policy, its Kafka target
    clusters (by name) and the largest command it takes."""

    policy: egress.Policy
    clusters: Collection[str]
    max_bytes: int


#: This worker's rules, from its settings.
WORKER_RULES = Rules(egress_policy, target_clusters, settings.max_command_bytes)


def admit_raw(raw: bytes, rules: Rules = WORKER_RULES) -> Command:
    """The command ``raw`` holds if ``rules`` let it in, else :class:`InvalidCommand` saying why.

    Never another exception: a fault of ours in reading it is a refusal
    (``unreadable``) too, so a command is never dropped, or answered with a
    500, without a reason.
    """
    try:
        command = parse_command(raw, max_bytes=rules.max_bytes)
        admit(command, rules)
    except InvalidCommand:
        raise
    except Exception as exc:
        why = f"cannot read the command: {type(exc).__name__}: {str(exc)[:200]}"
        raise InvalidCommand("unreadable", why) from exc
    return command


def admit_batch(raws: list[bytes], rules: Rules = WORKER_RULES) -> list[Command | InvalidCommand]:
    """What :func:`admit_raw` makes of each of ``raws``: its command, or why it was refused.

    The command path judges a fetched batch with this (``scheduler.streams.bulk``).
    """
    judged: list[Command | InvalidCommand] = []
    for raw in raws:
        try:
            judged.append(admit_raw(raw, rules))
        except InvalidCommand as exc:
            judged.append(exc)
    return judged


def admit(command: Command, rules: Rules = WORKER_RULES) -> None:
    """Raise :class:`InvalidCommand` if the configuration refuses the valid ``command``."""
    egress.check_command(command, rules.policy)
    task = command.task
    if task is not None and task.connection.cluster is not None:
        name = task.connection.cluster
        if name not in rules.clusters:
            known = ", ".join(sorted(rules.clusters)) or "none is configured"
            raise InvalidCommand(
                "unknown_cluster",
                f"task.connection.cluster: no Kafka target cluster {name!r} "
                f"(SCHEDULER_TARGET_CLUSTERS: {known})",
                field="task.connection.cluster",
                value=name,
            )


def admits_target(kind: str, host: str, rules: Rules = WORKER_RULES) -> bool:
    """Whether :func:`admit` lets in a task of type ``kind`` to ``host`` that names no cluster.

    The command path's compiled lane (``scheduler.streams.fastlane``) asks
    this once per target, and the format's own check of a rest task's host
    with it, so that the lane admits exactly what :func:`admit_raw` admits.
    Never raises.
    """
    try:
        if kind == "rest" and not is_http_url(host):
            return False
        return egress.judged(rules.policy, kind, host) is None
    except Exception:
        # A host the checks cannot read (``http://[::1``, a port of ``²``):
        # ``admit_raw`` refuses its command, saying why.
        return False


class InvalidItem(InvalidCommand):
    """A command of a JSON array that cannot be accepted; ``index`` is its place in it."""

    def __init__(self, index: int, cause: InvalidCommand) -> None:
        super().__init__(cause.error, cause.detail, cause.field, cause.value)
        self.index = index


@dataclass(frozen=True)
class Body:
    """The commands of a ``POST /commands`` body, each with the bytes the topic is sent."""

    commands: list[tuple[Command, bytes]]
    #: The body was an array of commands (and is answered with an array).
    many: bool


def admit_body(raw: bytes, rules: Rules = WORKER_RULES) -> Body:
    """Judge a body of one command, or a JSON array of them, each by :func:`admit_raw`.

    An array is split into its items' own JSON text (:func:`split_array`),
    and each is judged, and later produced, as those bytes: as the topic
    would judge them had they been sent to it one by one. Raises
    :class:`InvalidItem` for the first refused item of an array, and
    :class:`InvalidCommand` for a body that is not one command or whose array
    is itself broken. All or none: a body with one refused item stores nothing.
    """
    raw = _as_utf8(raw)
    items = split_array(raw)
    if items is None:
        text = raw.strip(_WHITESPACE)
        return Body([(admit_raw(text, rules), text)], many=False)
    commands = []
    for index, item in enumerate(items):
        try:
            commands.append((admit_raw(item, rules), item))
        except InvalidCommand as exc:
            raise InvalidItem(index, exc) from None
    return Body(commands, many=True)


#: JSON's whitespace.
_WHITESPACE = b" \t\r\n"
#: What splitting an array looks at: a whole string (skipped, brackets and
#: commas in it included), a quote that opens a string never closed, and the
#: brackets, braces and commas outside strings.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|"|[\[\]{},]', re.DOTALL)


def split_array(raw: bytes) -> list[bytes] | None:
    """The JSON text of each item of the array ``raw``, or None if ``raw`` is no array.

    Only the array's own brackets and commas are found here; what lies
    between them is judged by :func:`admit_raw`, item by item, so nothing
    about an item is decided here. Raises :class:`InvalidCommand` if the
    array is not closed, or is followed by more text.
    """
    body = raw.strip(_WHITESPACE)
    if not body.startswith(b"["):
        return None
    items: list[bytes] = []
    depth, start = 0, 1
    for token in _TOKENS.finditer(body):
        char = token.group()[:1]
        if char == b'"':
            if token.end() - token.start() == 1:
                raise _broken(f"a string at byte {token.start()} is never closed")
        elif char in b"[{":
            depth += 1
        elif char in b"]}":
            depth -= 1
            if depth == 0:
                if char != b"]":
                    raise _broken(f"the array is closed by '}}' at byte {token.start()}")
                if token.end() != len(body):
                    raise _broken(f"text after the array, at byte {token.end()}")
                last = body[start : token.start()].strip(_WHITESPACE)
                if last or items:  # "[]" has no item, "[1,]" an empty last one
                    items.append(last)
                return items
        elif depth == 1:  # a comma between two items
            items.append(body[start : token.start()].strip(_WHITESPACE))
            start = token.end()
    raise _broken("the array is never closed")


def _broken(why: str) -> InvalidCommand:
    return InvalidCommand("bad_json", f"body is not valid JSON: {why}")


def _as_utf8(raw: bytes) -> bytes:
    """``raw`` as UTF-8: a UTF-16 or UTF-32 body, which JSON parsers (and so the
    topic's) read too, is re-encoded before it is split and sent."""
    encoding = json.detect_encoding(raw)
    if encoding == "utf-8":
        return raw
    try:
        return raw.decode(encoding).encode("utf-8")
    except UnicodeError:
        return raw  # judged as it is: the parser says what is wrong with it
