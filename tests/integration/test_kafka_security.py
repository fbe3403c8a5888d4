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
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.devtools.broker import LocalBroker, free_port
from scheduler.devtools.broker.cluster import TlsFiles, scram_users, secured_properties, tls_files
from tests.support import SCHEDULER, Clients, HttpTarget, Worker

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-for-tests"
CLIENTS = Clients(operation="security", application="sasl", group="itest")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalBroker, TlsFiles]]:
    work = tmp_path_factory.mktemp("secured")
    tls = tls_files(work / "tls")
    port, plain, controller = free_port(), free_port(), free_port()
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
        ),
        format_args=scram_users({"app": PASSWORD}),
    )
    broker.start(timeout=120)
    try:
        yield broker, tls
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
    import json

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
    secured: tuple[LocalBroker, TlsFiles], tmp_path: Path, http_target: HttpTarget
) -> None:
    broker, tls = secured
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
    secured: tuple[LocalBroker, TlsFiles], mechanism: str, user: str, http_target: Any
) -> None:
    broker, tls = secured
    env = access(tls, mechanism=mechanism, user=user)
    done = submit(broker.bootstrap, env, command(mechanism, "http://127.0.0.1:9/x"), "cli-")
    assert done.returncode == 0, done.stderr


def test_a_wrong_password_is_a_clear_error_that_never_shows_a_password(
    secured: tuple[LocalBroker, TlsFiles],
) -> None:
    broker, tls = secured
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


def test_an_untrusted_certificate_is_a_clear_error(
    secured: tuple[LocalBroker, TlsFiles], tmp_path: Path
) -> None:
    broker, _ = secured
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
    secured: tuple[LocalBroker, TlsFiles], tmp_path: Path
) -> None:
    broker, tls = secured
    worker = Worker(broker.bootstrap, tmp_path / "worker", extra_env=access(tls, password="nope"))
    with pytest.raises(RuntimeError, match="worker exited with"):
        await asyncio.to_thread(worker.start, 60)
    worker.stop()
    log = worker.tail(200)
    assert "cannot connect to Kafka at" in log, log
    assert "nope" not in log
