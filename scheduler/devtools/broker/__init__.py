"""A single-node Apache Kafka broker for development and tests, without Docker.

Kafka 4 runs in KRaft mode, so one JVM is both the controller and the broker
and nothing else (no ZooKeeper, no container) has to be running. The broker's
own jars come from Maven Central through ``mvn dependency:copy-dependencies``:
Maven is a one-line install on every platform, it resolves Kafka's exact
runtime dependency set from Kafka's own pom, and its ``~/.m2`` cache makes a
second fetch on the same machine nearly free.

One module per concern:

- :mod:`~scheduler.devtools.broker.jars` fetches Kafka's jars with Maven
  (from ``pom.xml`` beside it) into a per-user cache, once per pom;
- :mod:`~scheduler.devtools.broker.properties` makes the broker's
  ``server.properties`` and ``log4j2.properties`` and renders them;
- :mod:`~scheduler.devtools.broker.process` finds free ports and runs the
  JVM: :class:`LocalBroker`, and the exit hook that stops what is left.

Everything the broker writes stays under one data directory::

    <data_dir>/server.properties    rewritten on every start (ports may change)
    <data_dir>/log4j2.properties    rewritten on every start
    <data_dir>/logs/                Kafka's log.dirs: topics, offsets, metadata
    <data_dir>/broker.log           the broker's own log, INFO and up, rotated
    <data_dir>/broker.out           JVM stdout/stderr of the latest start
    <data_dir>/broker.pid           pid of the running broker

Storage is formatted only when ``logs/meta.properties`` is missing, so a
restart on the same data directory keeps every topic and committed offset.

Logging goes through log4j2 (``log4j-slf4j-impl``), the backend Kafka 4 itself
ships with; with the log4j 1.x bridge, log4j2 (pulled in by Kafka) complains on
every start that it has no configuration.
"""

from __future__ import annotations

from scheduler.devtools.broker.jars import (
    KAFKA_VERSION,
    default_cache_dir,
    fetch_jars,
    require_tool,
)
from scheduler.devtools.broker.process import (
    DEFAULT_HEAP,
    DEFAULT_PORT,
    LocalBroker,
    free_port,
    is_port_free,
    is_port_open,
    wait_for_port,
)
from scheduler.devtools.broker.properties import (
    HOST,
    log4j2_properties,
    new_cluster_id,
    render_properties,
    server_properties,
)

__all__ = [
    "DEFAULT_HEAP",
    "DEFAULT_PORT",
    "HOST",
    "KAFKA_VERSION",
    "LocalBroker",
    "default_cache_dir",
    "fetch_jars",
    "free_port",
    "is_port_free",
    "is_port_open",
    "log4j2_properties",
    "new_cluster_id",
    "render_properties",
    "require_tool",
    "server_properties",
    "wait_for_port",
]
