"""The service on a Kafka that wants TLS and a login: real broker, real certificates.

The broker is started here with a ``SASL_SSL`` listener (PLAIN, SCRAM-SHA-256
and SCRAM-SHA-512), a CA and a broker certificate made with ``openssl``, and
SCRAM users created when its storage is formatted. A worker and the CLI get
through with the right settings; with a wrong password, an unknown user or
an untrusted CA they fail with a message that says what was tried and what
went wrong, and never shows the password.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from scheduler.devtools.broker import LocalBroker, free_port
from scheduler.devtools.broker.cluster import TlsFiles, scram_users, secured_properties, tls_files
from tests.support import SCHEDULER, Clients, HttpTarget, Worker

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-for-tests"
CLIENTS = Clients(operation="security", application="sasl", group="itest")


class Secured(NamedTuple):
    broker: LocalBroker  # bootstrap: the SASL_SSL listener
    tls: TlsFiles
    ssl_port: int  # SSL that requires a client certificate
    sasl_plaintext_port: int


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    work = tmp_path_factory.mktemp("secured")
    tls = tls_files(work / "tls")
    port, plain, controller = free_port(), free_port(), free_port()
    ssl_port, sasl_plaintext_port = free_port(), free_port()
    broker = LocalBroker(
        port=port,
        controller_port=controller,
        data_dir=work / "kafka",
        extra_properties=secured_properties(
            sasl_port=port,
            plain_port=plain,
            controller_port=controller,
            tls=tls,
            plain_users={"plain-app": PASSWORD},
            ssl_port=ssl_port,
            sasl_plaintext_port=sasl_plaintext_port,
        ),
        format_args=scram_users({"app": PASSWORD}),
    )
    broker.start(timeout=120)
    try:
        yield Secured(broker, tls, ssl_port, sasl_plaintext_port)
    finally:
        broker.stop()


def access(
    tls: TlsFiles,
    *,
    mechanism: str = "SCRAM-SHA-512",
    user: str = "app",
    password_file: Path | None = None,
    password: str = PASSWORD,
    cafile: Path | None = None,
) -> dict[str, str]:
    env = {
        "SCHEDULER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SCHEDULER_KAFKA_SASL_MECHANISM": mechanism,
        "SCHEDULER_KAFKA_SASL_USERNAME": user,
        "SCHEDULER_KAFKA_SSL_CAFILE": str(cafile or tls.ca),
    }
    if password_file is not None:
        env["SCHEDULER_KAFKA_SASL_PASSWORD_FILE"] = str(password_file)
    else:
        env["SCHEDULER_KAFKA_SASL_PASSWORD"] = password
    return env


def submit(bootstrap: str, env: dict[str, str], command: dict[str, Any], prefix: str) -> Any:

    return subprocess.run(
        [SCHEDULER, "submit", json.dumps(command)],
        env={
            **os.environ,
            "SCHEDULER_BROKER": bootstrap,
            "SCHEDULER_TOPIC_PREFIX": prefix,
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def command(key: str, url: str) -> dict[str, Any]:
    return {
        "client": CLIENTS.client(key),
        "type": "now",
        "task": {"type": "rest", "connection": {"host": url}},
    }


async def test_a_worker_and_the_cli_work_over_sasl_ssl_with_scram(
    secured: Secured, tmp_path: Path, http_target: HttpTarget
) -> None:
    broker, tls, *_ = secured
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")  # as a mounted secret: the newline is not part of it
    env = access(tls, password_file=secret)
    worker = Worker(broker.bootstrap, tmp_path / "worker", extra_env=env)
    try:
        await asyncio.to_thread(worker.start, 120)
        done = submit(
            broker.bootstrap, env, command("scram", f"{http_target.url}/ok/scram"), worker.prefix
        )
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 60
        while not http_target.of("scram"):
            assert time.monotonic() < deadline, worker.tail()
            await asyncio.sleep(0.2)
    finally:
        worker.stop()


@pytest.mark.parametrize(("mechanism", "user"), [("PLAIN", "plain-app"), ("SCRAM-SHA-256", "app")])
def test_the_cli_logs_in_with_plain_and_scram_sha_256(
    secured: Secured, mechanism: str, user: str, http_target: Any
) -> None:
    broker, tls, *_ = secured
    env = access(tls, mechanism=mechanism, user=user)
    done = submit(broker.bootstrap, env, command(mechanism, "http://127.0.0.1:9/x"), "cli-")
    assert done.returncode == 0, done.stderr


def test_the_cli_works_over_sasl_plaintext_and_over_ssl_with_a_client_certificate(
    secured: Secured,
) -> None:
    _, tls, ssl_port, sasl_plaintext_port = secured
    over_sasl = {
        "SCHEDULER_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SCHEDULER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SCHEDULER_KAFKA_SASL_USERNAME": "app",
        "SCHEDULER_KAFKA_SASL_PASSWORD": PASSWORD,
    }
    done = submit(f"127.0.0.1:{sasl_plaintext_port}", over_sasl, command("sp", "http://h/x"), "sp-")
    assert done.returncode == 0, done.stderr
    mutual = {
        "SCHEDULER_KAFKA_SECURITY_PROTOCOL": "SSL",
        "SCHEDULER_KAFKA_SSL_CAFILE": str(tls.ca),
        "SCHEDULER_KAFKA_SSL_CERTFILE": str(tls.client_cert),
        "SCHEDULER_KAFKA_SSL_KEYFILE": str(tls.client_key),
    }
    done = submit(f"127.0.0.1:{ssl_port}", mutual, command("mtls", "http://h/x"), "mtls-")
    assert done.returncode == 0, done.stderr
    # The listener requires a client certificate: without one the CLI is refused, and says so.
    without = {k: v for k, v in mutual.items() if "CERTFILE" not in k and "KEYFILE" not in k}
    done = submit(f"127.0.0.1:{ssl_port}", without, command("no-cert", "http://h/x"), "mtls-")
    assert done.returncode != 0
    assert "cannot connect to Kafka at" in done.stderr, done.stderr
    assert "SSL" in done.stderr, done.stderr


def test_replay_reaches_a_secured_cluster(secured: Secured) -> None:
    broker, tls, *_ = secured
    env = access(tls)
    done = submit(broker.bootstrap, env, command("replay", "http://h/x"), "rp-")
    assert done.returncode == 0, done.stderr
    replayed = subprocess.run(
        [SCHEDULER, "replay", "schedule-commands", "--from-beginning", "--dry-run", "--json"],
        env={
            **os.environ,
            "SCHEDULER_BROKER": broker.bootstrap,
            "SCHEDULER_TOPIC_PREFIX": "rp-",
            "SCHEDULER_APP_ID": "replay-over-sasl",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert replayed.returncode == 0, replayed.stderr
    said = json.loads(replayed.stdout)
    assert said["topic"] == "rp-schedule-commands" and said["dry_run"] is True
    assert said["partitions"] and all("target" in row for row in said["partitions"]), said


def test_a_wrong_password_is_a_clear_error_that_never_shows_a_password(
    secured: Secured,
) -> None:
    broker, tls, *_ = secured
    wrong = "not-the-password"
    done = submit(
        broker.bootstrap, access(tls, password=wrong), command("x", "http://127.0.0.1:9/x"), "w-"
    )
    assert done.returncode != 0
    said = done.stderr
    assert "cannot connect to Kafka at" in said, said
    assert "SASL_SSL with SCRAM-SHA-512 as user 'app'" in said, said
    assert "Authentication failed" in said or "authentication" in said.lower(), said
    assert "check the user, its password and the SASL mechanism" in said, said
    assert wrong not in said and PASSWORD not in said


def test_an_untrusted_certificate_is_a_clear_error(secured: Secured, tmp_path: Path) -> None:
    broker, *_ = secured
    other = tls_files(tmp_path / "other")  # a CA that did not sign the broker's certificate
    done = submit(
        broker.bootstrap,
        access(other),
        command("x", "http://127.0.0.1:9/x"),
        "c-",
    )
    assert done.returncode != 0
    said = done.stderr
    assert "cannot connect to Kafka at" in said, said
    assert "certificate" in said.lower(), said
    assert "SCHEDULER_KAFKA_SSL_CAFILE" in said, said


async def test_a_worker_with_a_wrong_password_stops_and_says_why(
    secured: Secured, tmp_path: Path
) -> None:
    broker, tls, *_ = secured
    worker = Worker(broker.bootstrap, tmp_path / "worker", extra_env=access(tls, password="nope"))
    with pytest.raises(RuntimeError, match="worker exited with"):
        await asyncio.to_thread(worker.start, 60)
    worker.stop()
    log = worker.tail(200)
    assert "cannot connect to Kafka at" in log, log
    assert "nope" not in log


async def test_a_command_names_a_target_cluster_whose_login_stays_with_the_operator(
    secured: Secured, tmp_path: Path
) -> None:
    """A Kafka target named ``vault`` in SCHEDULER_TARGET_CLUSTERS, with its own SCRAM
    login (SHA-256, where the worker itself uses SHA-512): the command carries only
    the name. A name that is not configured is refused at the edge."""
    import httpx
    from aiokafka import AIOKafkaConsumer
    from aiokafka.helpers import create_ssl_context

    broker, tls, *_ = secured
    clusters_file = tmp_path / "clusters.json"
    clusters_file.write_text(
        json.dumps(
            {
                "vault": {
                    "bootstrap": broker.bootstrap,
                    "security_protocol": "SASL_SSL",
                    "sasl_mechanism": "SCRAM-SHA-256",
                    "sasl_username": "app",
                    "sasl_password": PASSWORD,
                    "ssl_cafile": str(tls.ca),
                }
            }
        )
    )
    env = {**access(tls), "SCHEDULER_TARGET_CLUSTERS": str(clusters_file)}
    worker = Worker(broker.bootstrap, tmp_path / "worker", extra_env=env)
    topic = f"vault-{int(time.time())}"
    try:
        await asyncio.to_thread(worker.start, 120)
        named = {
            "client": CLIENTS.client("vault"),
            "type": "now",
            "task": {"type": "kafka", "connection": {"cluster": "vault", "topic": topic}},
        }
        answer = httpx.post(f"{worker.url}/commands", json=named, timeout=30)
        assert answer.status_code == 202, answer.text
        unknown = {**named, "client": CLIENTS.client("nowhere")}
        unknown["task"] = {"type": "kafka", "connection": {"cluster": "nowhere", "topic": topic}}
        refused = httpx.post(f"{worker.url}/commands", json=unknown, timeout=30)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == "unknown_cluster"
        assert "vault" in refused.json()["detail"]

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username="app",
            sasl_plain_password=PASSWORD,
            ssl_context=create_ssl_context(cafile=str(tls.ca)),
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), timeout=60)
        finally:
            await consumer.stop()
        headers = dict(record.headers)
        assert headers["X-Schedule-Id"].decode() == CLIENTS.sid("vault")
    finally:
        worker.stop()
