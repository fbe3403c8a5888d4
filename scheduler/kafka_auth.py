"""How every client of the service reaches its own Kafka cluster: TLS and SASL.

One place turns the ``SCHEDULER_KAFKA_*`` settings into what aiokafka's
clients take (:func:`client_options`) and what Faust takes
(:func:`faust_credentials`), so the worker, every CLI command and
``replay`` connect alike.

aiokafka reports a refused login or an untrusted certificate only as
"Unable to bootstrap from ...", after logging the real cause.
:func:`explained` runs a connection attempt while listening to those logs,
and turns a failure into one message that says what was tried (servers,
protocol, mechanism, user: never the password) and what the broker or the
TLS layer answered.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.helpers import create_ssl_context

from scheduler.domain.errors import BrokerError
from scheduler.settings import Settings

T = TypeVar("T")


class KafkaAccessError(BrokerError):
    """A Kafka cluster could not be reached with the settings given."""


@dataclass(frozen=True)
class Access:
    """How to reach one Kafka cluster: the service's own, or a named target cluster."""

    bootstrap_servers: str
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    password: str | None = field(default=None, repr=False)
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    #: What the settings are called, for messages (``SCHEDULER_KAFKA_SSL_CAFILE``...).
    named: str = "SCHEDULER_KAFKA"

    @classmethod
    def of(cls, settings: Settings) -> Access:
        return cls(
            settings.bootstrap_servers,
            settings.kafka_security_protocol,
            settings.kafka_sasl_mechanism,
            settings.kafka_sasl_username,
            settings.kafka_password(),
            settings.kafka_ssl_cafile,
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
        )

    def kafka_password(self) -> str | None:
        return self.password


Reachable = Settings | Access


def uses_tls(settings: Reachable) -> bool:
    return settings.kafka_security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Reachable) -> bool:
    return settings.kafka_security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def ssl_context(settings: Reachable) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL: the CA file (else the system's), a client
    certificate if one is given; None for the other protocols."""
    if not uses_tls(settings):
        return None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
        return context
    except (OSError, ssl.SSLError) as exc:
        raise KafkaAccessError(
            f"cannot read the Kafka TLS files of {_named(settings)} (CA "
            f"{settings.kafka_ssl_cafile}, certificate {settings.kafka_ssl_certfile}, key "
            f"{settings.kafka_ssl_keyfile}): {exc}"
        ) from exc


def _named(settings: Reachable) -> str:
    return settings.named if isinstance(settings, Access) else "SCHEDULER_KAFKA_*"


def client_options(settings: Reachable) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client of the service's own cluster."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if uses_sasl(settings):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_password()
    return options


def faust_credentials(settings: Reachable) -> Any:
    """Faust's ``broker_credentials`` for the same settings (None for PLAINTEXT)."""
    import faust

    if uses_sasl(settings):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_password(),
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ssl_context(settings),
        )
    if uses_tls(settings):
        return faust.SSLCredentials(ssl_context(settings))
    return None


def describe(settings: Reachable) -> str:
    """What a connection tries, for messages: never the password."""
    how: str = settings.kafka_security_protocol
    if uses_sasl(settings):
        how += f" with {settings.kafka_sasl_mechanism} as user {settings.kafka_sasl_username!r}"
    if uses_tls(settings):
        how += f", CA {settings.kafka_ssl_cafile or 'from the system'}"
    return f"Kafka at {settings.bootstrap_servers} over {how}"


class _Heard(logging.Handler):
    """Keeps what aiokafka logs at warning and above while a connection is tried."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.lines) < 20:
            self.lines.append(record.getMessage())


@contextmanager
def _listening() -> Iterator[_Heard]:
    heard = _Heard()
    logger = logging.getLogger("aiokafka")
    logger.addHandler(heard)
    try:
        yield heard
    finally:
        logger.removeHandler(heard)


def cause(lines: list[str], error: BaseException) -> str:
    """The most telling reason among what aiokafka logged and the error it raised."""
    telling = ("Authentication", "SASL", "sasl", "SSL", "certificate", "handshake")
    for line in lines:
        if any(word in line for word in telling):
            return line
    return lines[-1] if lines else f"{type(error).__name__}: {error}"


async def explained(settings: Reachable, attempt: Awaitable[T]) -> T:
    """Await ``attempt`` (a client's start); on failure, raise one clear error."""
    with _listening() as heard:
        try:
            return await attempt
        except Exception as exc:
            reason = cause(heard.lines, exc)
            hint = ""
            if "Authentication" in reason or "SASL" in reason or "sasl" in reason:
                hint = " (check the user, its password and the SASL mechanism)"
            elif "certificate" in reason or "SSL" in reason:
                hint = " (check SCHEDULER_KAFKA_SSL_CAFILE and the broker's certificate)"
            raise KafkaAccessError(
                f"cannot connect to {describe(settings)}: {reason}{hint}"
            ) from exc
