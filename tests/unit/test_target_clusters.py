"""Kafka target clusters named by the operator (scheduler.targets.clusters) and
``connection.cluster`` in commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import parse_command
from scheduler.targets import clusters


def command(connection: dict[str, Any], kind: str = "kafka") -> bytes:
    return json.dumps(
        {
            "client": {"operation": "o", "application": "a", "group": "g", "key": "k", "type": "t"},
            "type": "now",
            "task": {"type": kind, "connection": connection},
        }
    ).encode()


def test_a_kafka_task_names_a_host_or_a_cluster_not_both_and_not_neither() -> None:
    parsed = parse_command(command({"cluster": "events", "topic": "t"}))
    assert parsed.task is not None and parsed.task.connection.cluster == "events"
    for connection in ({"topic": "t"}, {"cluster": "events", "host": "h:9092", "topic": "t"}):
        with pytest.raises(InvalidCommand, match="either host"):
            parse_command(command(connection))


def test_only_kafka_tasks_name_a_cluster() -> None:
    with pytest.raises(InvalidCommand, match=r"connection\.cluster: is only for kafka tasks"):
        parse_command(command({"host": "http://h/x", "cluster": "events"}, kind="rest"))
    with pytest.raises(InvalidCommand, match=r"connection\.host: is required for a rest task"):
        parse_command(command({}, kind="rest"))


def test_the_clusters_file_is_read_and_checked(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("p4ss\n")
    path = tmp_path / "clusters.json"
    path.write_text(
        json.dumps(
            {
                "events": {
                    "bootstrap": "k1:9093,k2:9093",
                    "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_username": "scheduler",
                    "sasl_password_file": str(secret),
                },
                "plain": {"bootstrap": "kafka://k3:9092"},
            }
        )
    )
    found = clusters.load(path)
    assert found["events"].bootstrap_servers == "k1:9093,k2:9093"
    assert found["events"].kafka_password() == "p4ss"
    assert found["plain"].bootstrap_servers == "k3:9092"
    assert clusters.target_key({"cluster": "events"}) == "cluster:events"
    assert clusters.target_key({"host": "k3:9092", "cluster": None}) == "k3:9092"


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ({"security_protocol": "SSL"}, "bootstrap is required"),
        ({"bootstrap": "k:1", "colour": "red"}, "unknown keys ['colour']"),
        ({"bootstrap": "k:1", "security_protocol": "TLS"}, "security_protocol 'TLS'"),
        ({"bootstrap": "k:1", "security_protocol": "SASL_SSL"}, "sasl_mechanism must be"),
    ],
)
def test_a_bad_cluster_is_refused_naming_it_and_the_key(
    tmp_path: Path, spec: dict[str, Any], said: str
) -> None:
    path = tmp_path / "clusters.json"
    path.write_text(json.dumps({"events": spec}))
    with pytest.raises(clusters.ClusterFileError, match="cluster 'events'") as caught:
        clusters.load(path)
    assert said in str(caught.value)
