"""The local broker's configuration and preflight checks, without starting a JVM.

A fake ``mvn`` (a shell script) stands in for Maven, so the fetch logic that
guards the jar cache is exercised for real but in milliseconds.
"""

from __future__ import annotations

import base64
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scheduler.devtools.broker import (
    HOST,
    KAFKA_VERSION,
    LocalBroker,
    fetch_jars,
    free_port,
    is_port_free,
    is_port_open,
    log4j2_properties,
    new_cluster_id,
    render_properties,
    server_properties,
    wait_for_port,
)
from scheduler.domain.errors import BrokerError

KAFKA_JAR = f"kafka_2.13-{KAFKA_VERSION}.jar"


def parse(text: str) -> dict[str, str]:
    """Enough of java.util.Properties to read back what render_properties writes."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        assert key not in result, f"{key} written twice"
        result[key] = value.encode("latin-1").decode("unicode_escape")
    return result


def which_only(*found: str) -> Callable[[str], str | None]:
    return lambda name: f"/usr/bin/{name}" if name in found else None


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen()
        yield sock


# ----------------------------------------------------------------------------- properties


def test_server_properties_make_one_node_its_own_controller(tmp_path: Path) -> None:
    props = server_properties(port=19092, controller_port=19093, data_dir=tmp_path)

    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == props["listeners"]
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["listener.security.protocol.map"] == "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    assert props["log.dirs"] == str(tmp_path / "logs")
    assert "controller.quorum.voters" not in props  # --standalone formatting owns the voter set


def test_server_properties_fit_a_single_replica(tmp_path: Path) -> None:
    props = server_properties(port=9092, controller_port=9093, data_dir=tmp_path)

    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "share.coordinator.state.topic.replication.factor",
        "num.partitions",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"
    assert int(props["log.cleaner.backoff.ms"]) < 15000  # Kafka's default
    assert int(props["log.segment.bytes"]) < 1024**3


def test_extra_properties_override_and_extend(tmp_path: Path) -> None:
    props = server_properties(
        port=9092,
        controller_port=9093,
        data_dir=tmp_path,
        extra={"num.partitions": 8, "auto.create.topics.enable": False, "message.max.bytes": "2"},
    )

    assert props["num.partitions"] == "8"
    assert props["auto.create.topics.enable"] == "false"
    assert props["message.max.bytes"] == "2"
    assert list(props).count("num.partitions") == 1


def test_rendered_properties_read_back_identically(tmp_path: Path) -> None:
    data_dir = tmp_path / "dätä dir" / "with:colon=and\\backslash"
    props = server_properties(port=9092, controller_port=9093, data_dir=data_dir)

    text = render_properties(props, header="two\nlines")

    assert text.isascii()  # Properties.load reads ISO-8859-1; non-ASCII must be escaped
    assert text.startswith("# two\n# lines\n")
    assert parse(text) == props


def test_log4j2_writes_info_to_the_file_and_only_warnings_to_the_console(
    tmp_path: Path,
) -> None:
    props = log4j2_properties(tmp_path / "broker.log")

    assert props["appender.file.fileName"] == str(tmp_path / "broker.log")
    assert props["rootLogger.level"] == "info"
    assert props["appender.console.filter.threshold.level"] == "warn"


def test_cluster_id_is_kafka_shaped() -> None:
    cluster_id = new_cluster_id()

    assert len(cluster_id) == 22
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16


def test_cluster_id_never_starts_with_a_dash() -> None:
    draws = iter([b"\xf8" + bytes(15), bytes(16)])  # 0xf8 encodes to a leading "-"

    assert new_cluster_id(lambda n: next(draws)) == "AAAAAAAAAAAAAAAAAAAAAA"


# ----------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heap": "lots"}, "heap must be a JVM size such as 512m or 2g, got 'lots'"),
        ({"heap": "-Xmx1g"}, "heap must be"),
        ({"port": 0}, "port must be between 1 and 65535, got 0"),
        ({"port": 70000}, "port must be between 1 and 65535, got 70000"),
        ({"port": 9092, "controller_port": 9092}, "controller_port must differ from port"),
    ],
)
def test_bad_options_are_rejected_when_declared(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(BrokerError, match=message):
        LocalBroker(data_dir=tmp_path, **kwargs)  # type: ignore[arg-type]


def test_addresses(tmp_path: Path) -> None:
    broker = LocalBroker(port=19092, data_dir=tmp_path)

    assert broker.bootstrap == "127.0.0.1:19092"
    assert broker.url == "kafka://127.0.0.1:19092"
    assert not broker.is_running
    assert broker.pid is None
    broker.stop()  # stopping a broker that never started is a no-op


def test_storage_counts_as_formatted_once_meta_properties_exists(tmp_path: Path) -> None:
    broker = LocalBroker(data_dir=tmp_path)
    assert not broker.is_formatted

    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "meta.properties").write_text("node.id=1\n")

    assert broker.is_formatted


# ----------------------------------------------------------------------------- missing tools


def test_missing_java_names_what_to_install(tmp_path: Path) -> None:
    broker = LocalBroker(
        data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", which=which_only()
    )

    with pytest.raises(BrokerError) as caught:
        broker.start()

    assert str(caught.value) == (
        "java not found on PATH: install a JDK 17+ (apt-get install -y openjdk-17-jre-headless)"
    )
    assert not (tmp_path / "data").exists()


def test_missing_maven_names_what_to_install(tmp_path: Path) -> None:
    broker = LocalBroker(
        data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", which=which_only("java")
    )

    with pytest.raises(BrokerError, match=r"^mvn not found on PATH: install Apache Maven \("):
        broker.ensure_jars()


def test_missing_tools_are_reported_with_a_real_path_lookup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: neither java nor mvn

    with pytest.raises(BrokerError, match=r"^java not found on PATH"):
        fetch_jars(tmp_path / "cache")


# ----------------------------------------------------------------------------- fetching


FAKE_MVN = """#!/bin/sh
# Stands in for Maven: copies two "jars" to -DoutputDirectory, or fails on request.
echo "$@" >> "{calls}"
if [ -n "{fail}" ]; then echo "[ERROR] Could not resolve dependencies"; exit 1; fi
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}";; esac
done
mkdir -p "$out"
: > "$out/{jar}"
: > "$out/kafka-clients-{version}.jar"
"""


def fake_tools(tmp_path: Path, *, fail: bool = False) -> tuple[Callable[[str], str | None], Path]:
    calls = tmp_path / "mvn-calls.txt"
    mvn = tmp_path / "mvn"
    mvn.write_text(
        FAKE_MVN.format(
            calls=calls, fail="yes" if fail else "", jar=KAFKA_JAR, version=KAFKA_VERSION
        )
    )
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
    tools = {"mvn": str(mvn), "java": "/usr/bin/java"}
    return tools.get, calls


def test_fetch_runs_maven_once_and_reuses_the_cache(tmp_path: Path) -> None:
    which, calls = fake_tools(tmp_path)
    cache = tmp_path / "cache"

    libs = fetch_jars(cache, which=which)
    again = fetch_jars(cache, which=which_only())  # a warm cache needs neither java nor mvn

    assert libs == again == cache / "libs"
    assert (libs / KAFKA_JAR).is_file()
    assert len(calls.read_text().splitlines()) == 1
    arguments = calls.read_text().split()
    assert "dependency:copy-dependencies" in arguments
    assert "-DincludeScope=runtime" in arguments
    assert sorted(p.name for p in cache.iterdir()) == [".lock", "libs"]  # no staging left


def test_failed_fetch_leaves_nothing_behind_and_says_why(tmp_path: Path) -> None:
    which, _ = fake_tools(tmp_path, fail=True)
    cache = tmp_path / "cache"

    with pytest.raises(BrokerError) as caught:
        fetch_jars(cache, which=which)

    assert "Maven could not fetch Kafka 4.1.1 (exit 1)" in str(caught.value)
    assert "[ERROR] Could not resolve dependencies" in str(caught.value)
    assert sorted(p.name for p in cache.iterdir()) == [".lock"]


def test_a_libs_dir_without_the_marker_is_fetched_again(tmp_path: Path) -> None:
    which, calls = fake_tools(tmp_path)
    half = tmp_path / "cache" / "libs"
    half.mkdir(parents=True)
    (half / "truncated.jar").write_bytes(b"PK")

    libs = fetch_jars(tmp_path / "cache", which=which)

    assert len(calls.read_text().splitlines()) == 1
    assert sorted(p.name for p in libs.glob("*.jar")) == sorted(
        [KAFKA_JAR, f"kafka-clients-{KAFKA_VERSION}.jar"]
    )


def test_a_cache_from_another_pom_is_fetched_again(tmp_path: Path) -> None:
    which, calls = fake_tools(tmp_path)
    libs = fetch_jars(tmp_path / "cache", which=which)
    (libs / ".complete").write_text("hash-of-an-older-pom\n")

    fetch_jars(tmp_path / "cache", which=which)

    assert len(calls.read_text().splitlines()) == 2


# ----------------------------------------------------------------------------- ports


def test_free_port_is_bindable() -> None:
    port = free_port()

    assert 1024 <= port <= 65535
    assert is_port_free(port)


def test_port_helpers_see_a_listener(listening: socket.socket) -> None:
    port = listening.getsockname()[1]

    assert not is_port_free(port)
    assert is_port_open(HOST, port)
    wait_for_port(HOST, port, timeout=1)


def test_wait_for_port_gives_up() -> None:
    port = free_port()

    with pytest.raises(TimeoutError, match=f"nothing listening on 127.0.0.1:{port} after 0.2 s"):
        wait_for_port(HOST, port, timeout=0.2, interval=0.05)


def test_busy_port_is_reported_before_any_jvm_starts(
    tmp_path: Path, listening: socket.socket
) -> None:
    which, _ = fake_tools(tmp_path)
    port = listening.getsockname()[1]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "broker.pid").write_text(f"{os.getpid()}\n")  # a live pid

    broker = LocalBroker(
        port=port, data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", which=which
    )
    with pytest.raises(BrokerError) as caught:
        broker.start()

    message = str(caught.value)
    assert message.startswith(f"127.0.0.1:{port} (port) is already in use")
    assert f"names pid {os.getpid()}, which is still running" in message
    assert not (tmp_path / "data" / "server.properties").exists()


def test_busy_controller_port_is_reported(tmp_path: Path, listening: socket.socket) -> None:
    which, _ = fake_tools(tmp_path)
    broker = LocalBroker(
        port=free_port(),
        controller_port=listening.getsockname()[1],
        data_dir=tmp_path / "data",
        cache_dir=tmp_path / "cache",
        which=which,
    )

    with pytest.raises(BrokerError, match=r"\(controller_port\) is already in use$"):
        broker.start()


def test_controller_port_defaults_to_the_next_port_or_any_free_one(
    tmp_path: Path, listening: socket.socket
) -> None:
    busy = listening.getsockname()[1]

    next_one = LocalBroker(port=busy + 1, data_dir=tmp_path)
    moved = LocalBroker(port=busy - 1, data_dir=tmp_path)

    if is_port_free(busy + 2):
        assert next_one._choose_controller_port() == busy + 2
    chosen = moved._choose_controller_port()
    assert chosen not in (busy, busy - 1)
    assert is_port_free(chosen)
