"""Kafka target clusters an operator names (``SCHEDULER_TARGET_CLUSTERS``).

A command may name one in ``connection.cluster`` instead of giving a
bootstrap list in ``connection.host``: the cluster's address and its
security (TLS, SASL) then stay with the operator, and no credential is ever
in a command. The file is JSON, one object per cluster::

    {
      "events": {
        "bootstrap": "kafka-1.internal:9093,kafka-2.internal:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "scheduler",
        "sasl_password_file": "/run/secrets/events-password",
        "ssl_cafile": "/etc/ssl/internal-ca.pem"
      }
    }

Keys: ``bootstrap`` (required), and ``security_protocol``,
``sasl_mechanism``, ``sasl_username``, ``sasl_password`` or
``sasl_password_file``, ``ssl_cafile``, ``ssl_certfile``, ``ssl_keyfile``, as
for the service's own cluster. Named clusters are the operator's: the egress
policy does not apply to them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scheduler.domain.errors import SchedulerError
from scheduler.kafka_auth import Access

#: ``connection.cluster``, as a target key beside bootstrap lists.
PREFIX = "cluster:"

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KEYS = frozenset(
    {
        "bootstrap",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
        "sasl_password_file",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
    }
)


class ClusterFileError(SchedulerError):
    """The target clusters file cannot be used; the message names the cluster and key."""


def load(path: Path | None) -> dict[str, Access]:
    """The clusters of ``path`` (none without one), checked as a worker starts."""
    if path is None:
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ClusterFileError(f"SCHEDULER_TARGET_CLUSTERS {path}: {exc}") from None
    if not isinstance(raw, dict):
        raise ClusterFileError(f"SCHEDULER_TARGET_CLUSTERS {path}: must be a JSON object")
    return {str(name): _access(path, str(name), spec) for name, spec in raw.items()}


def _access(path: Path, name: str, spec: Any) -> Access:
    where = f"SCHEDULER_TARGET_CLUSTERS {path}, cluster {name!r}"
    if not isinstance(spec, dict):
        raise ClusterFileError(f"{where}: must be an object")
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise ClusterFileError(f"{where}: unknown keys {unknown}; known: {sorted(KEYS)}")
    bootstrap = spec.get("bootstrap")
    if not isinstance(bootstrap, str) or not bootstrap.strip():
        raise ClusterFileError(f"{where}: bootstrap is required (host:port[,host:port])")
    protocol = spec.get("security_protocol", "PLAINTEXT")
    if protocol not in PROTOCOLS:
        raise ClusterFileError(f"{where}: security_protocol {protocol!r} is not one of {PROTOCOLS}")
    mechanism = spec.get("sasl_mechanism")
    password = spec.get("sasl_password")
    if spec.get("sasl_password_file"):
        try:
            password = Path(spec["sasl_password_file"]).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ClusterFileError(f"{where}: sasl_password_file: {exc}") from None
    if protocol.startswith("SASL"):
        if mechanism not in MECHANISMS:
            raise ClusterFileError(f"{where}: sasl_mechanism must be one of {MECHANISMS}")
        if not spec.get("sasl_username") or not password:
            raise ClusterFileError(f"{where}: {protocol} needs sasl_username and a password")

    def path_of(key: str) -> Path | None:
        return Path(spec[key]) if spec.get(key) else None

    servers = bootstrap.split("://", 1)[-1].replace(";", ",")
    return Access(
        servers,
        protocol,
        mechanism,
        spec.get("sasl_username"),
        password,
        path_of("ssl_cafile"),
        path_of("ssl_certfile"),
        path_of("ssl_keyfile"),
        named=f"cluster {name!r}",
    )


def target_key(connection: dict[str, Any]) -> str:
    """What a Kafka task's producer is kept under: its named cluster, or its bootstrap list."""
    cluster = connection.get("cluster")
    return f"{PREFIX}{cluster}" if cluster else str(connection["host"])
