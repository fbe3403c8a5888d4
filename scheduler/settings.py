"""The one settings object of the service.

Every knob comes from a ``SCHEDULER_``-prefixed environment variable or a CLI
flag (flags win: the CLI builds the object with explicit overrides). Nothing
else in the package reads ``os.environ``.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCHEDULER_", frozen=True, extra="ignore")

    broker: str = "kafka://127.0.0.1:9092"
    """Kafka bootstrap, as ``kafka://host:port[;host:port]`` or ``host:port[,host:port]``."""

    app_id: str = "scheduler"
    """Faust application id: the consumer group and the prefix of Faust's own topics."""

    partitions: int = Field(default=8, ge=1, le=1024)
    """Partitions of every scheduler topic; fixed once topics exist."""

    topic_prefix: str = ""
    """Prefix for the contract topics (``schedule-commands`` and friends)."""

    web_host: str = "127.0.0.1"
    """Address the web view binds to and advertises to the other workers."""

    web_port: int = Field(default=6066, ge=1, le=65535)

    data_dir: Path = Path("scheduler-data")
    """Local RocksDB cache of the tables. Deleting it loses nothing."""

    kafka_cache_dir: Path | None = None
    """Where ``scheduler broker`` keeps the Kafka jars (default ~/.cache/kafka-scheduler/...)."""

    max_command_bytes: int = Field(default=262_144, ge=1024)
    """Commands larger than this are rejected (the broker's own cap is ~1 MiB)."""

    session_timeout: float = Field(default=10.0, gt=0)
    """Seconds without a heartbeat before Kafka moves a dead worker's partitions."""

    heartbeat_interval: float = Field(default=1.0, gt=0)
    """Seconds between heartbeats. A survivor learns of a dead worker's partitions at
    its next heartbeat after the session timeout, so this adds to failover time
    (a longer interval made failover measurably slower in bench/, see
    bench/RESULTS.md)."""

    instance_id: str | None = None
    """Static group membership (Kafka KIP-345): a worker that restarts with the
    same id within the session timeout gets its partitions back at once, with
    no rebalance of the others. Default ``<hostname>-<web port>``; set it
    to an empty string to turn static membership off. The price: a static
    member does not leave the group when it stops, so the partitions of a
    worker stopped for good move only after ``session_timeout``."""

    standby_replicas: int = Field(default=1, ge=0)
    """Warm copies of each table partition on other workers, for fast failover."""

    fire_ahead: float = Field(default=5.0, ge=0, le=10)
    """Seconds before its instant a schedule is fired: its firing is written to
    ``firings`` then, and the executor holds it until the instant. The work of
    firing is done ahead, so a burst of instants is delivered on time; a
    delete, a pause or a change accepted meanwhile revokes the held firing. 0
    fires at the instant."""

    max_in_flight: int = Field(default=256, ge=1, le=10_000)
    """Deliveries running at once per worker (all targets together)."""

    max_in_flight_per_target: int = Field(default=128, ge=1, le=10_000)
    """Deliveries running at once to one target (a REST origin, a Kafka cluster, a
    Redis server); 8 times as many more may wait, without holding a worker
    slot, and past that a delivery is put off on ``firings-retry`` (1 s, doubling to 30 s)
    (``scheduler.targets.guard``). So one target that hangs holds at most this
    many of ``max_in_flight``."""

    producer_batch_bytes: int = Field(default=1_000_000, ge=16_384)
    """Kafka producer batch size per partition (bytes)."""

    producer_linger_ms: float = Field(default=10.0, ge=0)
    """How long the worker's producer waits to fill a batch; adds at most this to
    latency. Firings are written ahead of their instant (``fire_ahead``), so
    this delays no delivery, and fewer, fuller produce requests leave a steady
    stream of firings less CPU-bound than a shorter linger does (measured in
    bench/, see bench/RESULTS.md)."""

    log_level: str = "info"

    # -- the service's own Kafka cluster: TLS and SASL (scheduler.kafka_auth) ----------

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How every client of the service (worker, CLI, replay) talks to its cluster."""

    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    """Never printed; prefer ``kafka_sasl_password_file``."""
    kafka_sasl_password_file: Path | None = None
    """A file holding the password (as a mounted Kubernetes secret); its trailing newline
    is ignored."""

    kafka_ssl_cafile: Path | None = None
    """The CA certificates (PEM) to trust; default: the system's."""
    kafka_ssl_certfile: Path | None = None
    """A client certificate (PEM), for brokers that ask for one; with ``kafka_ssl_keyfile``."""
    kafka_ssl_keyfile: Path | None = None

    web_tokens: str | None = None
    """Bearer tokens for the web view, comma-separated; set, every endpoint but
    ``GET /health`` wants one (``scheduler.webauth``). Prefer ``web_tokens_file``."""
    web_tokens_file: Path | None = None
    """A file with one token a line (blank lines and ``#`` comments ignored)."""

    secrets_dir: Path | None = None
    """Where ``{{secret:NAME}}`` in a header or a URL password is read from at
    delivery: the file ``NAME`` in it (``scheduler.domain.secrets``)."""

    target_clusters: Path | None = None
    """A JSON file naming Kafka target clusters, each with its bootstrap list and
    security, for ``connection.cluster`` (``scheduler.targets.clusters``)."""

    egress_allow: str | None = None
    """Targets a worker may connect to: CIDRs and host names (``*.`` wildcards),
    comma-separated; set, nothing else is allowed (``scheduler.targets.egress``)."""
    egress_deny: str | None = None
    """Targets never connected to, whatever else allows them."""

    replication_factor: int = Field(default=-1, ge=-1, le=32)
    """Replicas of every topic and changelog the service creates; -1: the cluster's
    ``default.replication.factor``."""

    min_insync_replicas: int | None = Field(default=None, ge=1, le=32)
    """``min.insync.replicas`` of the topics it creates; None: the cluster's default."""

    @model_validator(mode="after")
    def _kafka_access_is_complete(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL"):
            missing = [
                name
                for name, value in (
                    ("SCHEDULER_KAFKA_SASL_MECHANISM", self.kafka_sasl_mechanism),
                    ("SCHEDULER_KAFKA_SASL_USERNAME", self.kafka_sasl_username),
                    (
                        "SCHEDULER_KAFKA_SASL_PASSWORD or SCHEDULER_KAFKA_SASL_PASSWORD_FILE",
                        self.kafka_sasl_password or self.kafka_sasl_password_file,
                    ),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"{protocol} needs {', '.join(missing)}")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError(
                "SCHEDULER_KAFKA_SSL_CERTFILE and SCHEDULER_KAFKA_SSL_KEYFILE go together"
            )
        return self

    def web_token_list(self) -> tuple[str, ...]:
        """Every configured web token, in order (none: the web view is open).

        The CLI sends the first one."""
        found = [part.strip() for part in (self.web_tokens or "").split(",")]
        if self.web_tokens_file is not None:
            for line in self.web_tokens_file.read_text().splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    found.append(line.strip())
        return tuple(dict.fromkeys(token for token in found if token))

    def kafka_password(self) -> str | None:
        """The SASL password, from the setting or its file."""
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        if self.kafka_sasl_password_file is not None:
            return self.kafka_sasl_password_file.read_text().rstrip("\r\n")
        return None

    @property
    def bootstrap_servers(self) -> str:
        """The broker list as ``host:port,host:port`` for aiokafka."""
        raw = self.broker
        if "://" in raw:
            raw = raw.split("://", 1)[1]
        return ",".join(part.strip() for part in raw.replace(";", ",").split(",") if part.strip())

    @property
    def faust_broker(self) -> str:
        """The broker list as Faust wants it: ``kafka://host:port;host:port``."""
        return "kafka://" + ";".join(self.bootstrap_servers.split(","))

    @property
    def group_instance_id(self) -> str | None:
        if self.instance_id is None:
            return f"{socket.gethostname()}-{self.web_port}"
        return self.instance_id or None

    @property
    def web_url(self) -> str:
        host = "127.0.0.1" if self.web_host in ("0.0.0.0", "") else self.web_host
        return f"http://{host}:{self.web_port}"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


_current: Settings | None = None


def configure(**overrides: object) -> Settings:
    """Fix the process's settings: environment first, then ``overrides`` (CLI flags).

    Called by the CLI before the Faust app is imported, because the app, its
    topics and its tables are declared at import time from these settings.
    """
    global _current
    clean = {name: value for name, value in overrides.items() if value is not None}
    _current = Settings(**clean)  # type: ignore[arg-type]
    return _current


def current() -> Settings:
    """The process's settings, read from the environment on first use."""
    global _current
    if _current is None:
        _current = Settings()
    return _current
