"""Several local brokers as one Kafka cluster, and a broker that wants TLS and SASL.

For tests that need what one plain broker cannot show: replication across
brokers (one killed with -9 while the others go on), and a listener that
only a client with the right CA, mechanism and password gets through.

A :class:`LocalCluster` is ``size`` combined broker+controller nodes with
static voters (``controller.quorum.voters``), each formatted with one shared
cluster id; its bootstrap list names every node. :func:`tls_files` makes a
CA and a broker certificate for 127.0.0.1 with ``openssl``;
:func:`secured_properties` gives a broker a ``SASL_SSL`` listener (PLAIN and
both SCRAM mechanisms, certificates read as PEM) beside the plain one its
own replication uses; :func:`scram_users` the ``StorageTool format``
arguments that create SCRAM users.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scheduler.devtools.broker.process import LocalBroker, free_port
from scheduler.devtools.broker.properties import HOST, PropertyValue, new_cluster_id
from scheduler.domain.errors import BrokerError


class LocalCluster:
    """``size`` local brokers forming one cluster, every topic replicated to all by default."""

    def __init__(self, data_dir: Path, size: int = 3, heap: str = "512m") -> None:
        self.data_dir = Path(data_dir)
        self.cluster_id = new_cluster_id()
        ports = [(free_port(), free_port()) for _ in range(size)]
        voters = ",".join(f"{node}@{HOST}:{cport}" for node, (_, cport) in enumerate(ports, 1))
        replicas = str(size)
        insync = str(max(size - 1, 1))
        self.nodes = [
            LocalBroker(
                port=port,
                controller_port=cport,
                data_dir=self.data_dir / f"node{node}",
                heap=heap,
                cluster_id=self.cluster_id,
                standalone=False,
                extra_properties={
                    "node.id": node,
                    "controller.quorum.voters": voters,
                    "controller.quorum.bootstrap.servers": None,
                    "default.replication.factor": replicas,
                    "min.insync.replicas": insync,
                    "offsets.topic.replication.factor": replicas,
                    "transaction.state.log.replication.factor": replicas,
                    "transaction.state.log.min.isr": insync,
                },
            )
            for node, (port, cport) in enumerate(ports, 1)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def start(self, timeout: float = 180) -> None:
        """Start every node at once (each waits for the others' votes to become ready)."""
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            for started in [pool.submit(node.start, timeout) for node in self.nodes]:
                started.result()

    def kill9(self, index: int) -> None:
        node = self.nodes[index]
        if node.pid is not None:
            os.kill(node.pid, signal.SIGKILL)

    def stop(self) -> None:
        for node in self.nodes:
            if node.is_running:
                node.stop()


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    """The CA's certificate (PEM): what clients trust."""
    broker: Path
    """The broker's private key and certificate in one PEM file, as Kafka's PEM keystore wants."""
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    done = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BrokerError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


def tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA, a broker certificate for 127.0.0.1 and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        _openssl(*args, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=scheduler-test-ca")  # fmt: skip
    for name, extensions in (
        ("broker", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")  # fmt: skip
        (directory / f"{name}.ext").write_text(extensions + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip
    # Kafka's PEM keystore: the key (PKCS#8, unencrypted) and its certificate, in one file.
    key = (directory / "broker.key").read_text()
    cert = (directory / "broker.pem").read_text()
    (directory / "broker-keystore.pem").write_text(key + cert)
    return TlsFiles(
        ca=directory / "ca.pem",
        broker=directory / "broker-keystore.pem",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )


def secured_properties(
    *,
    sasl_port: int,
    plain_port: int,
    controller_port: int,
    tls: TlsFiles,
    plain_users: dict[str, str],
    ssl_port: int | None = None,
    sasl_plaintext_port: int | None = None,
) -> dict[str, PropertyValue | None]:
    """A ``SASL_SSL`` listener on ``sasl_port`` (the one to bootstrap from), and the
    broker's own traffic on a plain listener at ``plain_port``.

    With ``ssl_port``, an ``SSL`` listener there that requires a client
    certificate (mutual TLS); with ``sasl_plaintext_port``, a ``SASL_PLAINTEXT``
    one. Each SASL listener takes PLAIN and both SCRAM mechanisms.
    """
    secured = {"SASL_SSL": sasl_port, "SSL": ssl_port, "SASL_PLAINTEXT": sasl_plaintext_port}
    named = {name: port for name, port in secured.items() if port is not None}
    named["PLAINTEXT"] = plain_port
    advertised = ",".join(f"{name}://{HOST}:{port}" for name, port in named.items())
    plain = " ".join(f'user_{name}="{password}"' for name, password in plain_users.items())
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    props: dict[str, PropertyValue | None] = {
        "listeners": f"{advertised},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": advertised,
        "listener.security.protocol.map": ",".join(
            [f"{name}:{name}" for name in named] + ["CONTROLLER:PLAINTEXT"]
        ),
        "inter.broker.listener.name": "PLAINTEXT",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.broker),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca),
        "ssl.client.auth": "requested",
    }
    for listener in ("sasl_ssl", "sasl_plaintext"):
        if listener.upper() not in named:
            continue
        props[f"listener.name.{listener}.plain.sasl.jaas.config"] = (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain};"
        )
        props[f"listener.name.{listener}.scram-sha-256.sasl.jaas.config"] = scram
        props[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"] = scram
    if ssl_port is not None:
        props["listener.name.ssl.ssl.client.auth"] = "required"
    return props


def scram_users(users: dict[str, str]) -> list[str]:
    """``StorageTool format`` arguments creating each user for both SCRAM mechanisms."""
    args = []
    for name, password in users.items():
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            args += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    return args
