"""What the broker is told: its server.properties and log4j2.properties.

Plain functions from ports and paths to ordered mappings, and
:func:`render_properties`, which writes them in the form
``java.util.Properties`` reads back exactly: nothing here starts a process.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

HOST = "127.0.0.1"
"""The one address the local broker listens on and advertises."""

PropertyValue = str | int | bool
"""A property as callers give it; booleans are written the Java way."""


def new_cluster_id(token_bytes: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A Kafka cluster id, made here to save a JVM start (``StorageTool random-uuid``).

    Kafka's format is 16 random bytes in unpadded base64url. Like Kafka we
    reject ids that start with ``-``: command-line parsers read them as flags.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(token_bytes(16)).rstrip(b"=").decode("ascii")
        if not cluster_id.startswith("-"):
            return cluster_id


def _text(value: PropertyValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def server_properties(
    *,
    port: int,
    controller_port: int,
    data_dir: Path,
    extra: Mapping[str, PropertyValue | None] | None = None,
) -> dict[str, str]:
    """Broker settings for one node that is its own controller and sole replica.

    Every replication factor and ISR minimum is 1 because there is no second
    broker to satisfy a larger one. The log cleaner is tuned so that the
    compacted changelog topics behind Faust tables are actually compacted on
    a long-running development broker instead of growing until a 1 GiB
    segment fills. ``extra`` is applied last and wins; a value of None
    removes the property (a cluster node drops the single-node quorum
    bootstrap for its static voters).
    """
    listeners = f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}"
    props: dict[str, str] = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": listeners,
        "advertised.listeners": listeners,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(Path(data_dir) / "logs"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        # Compaction only rewrites closed segments: smaller segments close sooner.
        "log.segment.bytes": str(64 * 1024 * 1024),
        "log.cleaner.enable": "true",
        "log.cleaner.backoff.ms": "1000",
        "log.cleaner.min.cleanable.ratio": "0.1",
        # Kafka's default dedupe buffer is sized for a large heap, not this one.
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
    }
    for key, value in (extra or {}).items():
        if value is None:
            props.pop(str(key), None)
        else:
            props[str(key)] = _text(value)
    return props


def log4j2_properties(log_file: Path) -> dict[str, str]:
    """Everything at INFO to a rotating file; only WARN and up to the console.

    The console is the terminal of ``scheduler broker`` (or ``broker.out``),
    where the broker's start-up chatter would bury the lines that matter.
    """
    pattern = "[%d] %p %m (%c)%n"
    return {
        "status": "warn",
        "name": "scheduler-local-broker",
        "appender.file.type": "RollingFile",
        "appender.file.name": "file",
        "appender.file.fileName": str(log_file),
        "appender.file.filePattern": f"{log_file}.%i",
        "appender.file.layout.type": "PatternLayout",
        "appender.file.layout.pattern": pattern,
        "appender.file.policies.type": "Policies",
        "appender.file.policies.size.type": "SizeBasedTriggeringPolicy",
        "appender.file.policies.size.size": "20MB",
        "appender.file.strategy.type": "DefaultRolloverStrategy",
        "appender.file.strategy.max": "5",
        "appender.console.type": "Console",
        "appender.console.name": "console",
        "appender.console.target": "SYSTEM_ERR",
        "appender.console.layout.type": "PatternLayout",
        "appender.console.layout.pattern": pattern,
        "appender.console.filter.threshold.type": "ThresholdFilter",
        "appender.console.filter.threshold.level": "warn",
        "rootLogger.level": "info",
        "rootLogger.appenderRef.file.ref": "file",
        "rootLogger.appenderRef.console.ref": "console",
    }


def _escape(text: str, *, key: bool) -> str:
    """Escape for ``java.util.Properties.load``, which reads ISO-8859-1.

    Anything outside printable ASCII becomes ``\\uXXXX`` so a data directory
    with a non-ASCII name reaches the JVM intact.
    """
    out: list[str] = []
    for index, char in enumerate(text):
        if char == "\\":
            out.append("\\\\")
        elif char in "\t\n\r\f":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r", "\f": "\\f"}[char])
        elif char in " :=#!" and (key or (char == " " and index == 0)):
            out.append("\\" + char)
        elif not " " <= char <= "~":
            units = char.encode("utf-16-be")
            out.extend(f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
        else:
            out.append(char)
    return "".join(out)


def render_properties(props: Mapping[str, str], header: str | None = None) -> str:
    """Java properties text, one ``key=value`` a line, in the mapping's order."""
    lines = [f"# {line}" for line in (header or "").splitlines()]
    lines.extend(f"{_escape(k, key=True)}={_escape(v, key=False)}" for k, v in props.items())
    return "\n".join(lines) + "\n"
