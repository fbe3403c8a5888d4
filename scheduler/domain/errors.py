"""One exception root for the service, with small data-carrying subclasses.

Callers at the edges (the command agent, the web view, the CLI) catch
``SchedulerError`` and turn it into a rejection record, an HTTP 4xx or a
non-zero exit; each subclass carries what that reply needs.
"""

from __future__ import annotations

from typing import Any


class SchedulerError(Exception):
    """Root of every error the service raises on purpose."""


class InvalidCommand(SchedulerError):
    """A command that cannot be accepted.

    ``field`` is the dotted path of the offending field (``"schedule"``,
    ``"task.connection.host"``) or ``"$"`` for the command as a whole, and
    ``value`` the value that was given, so a user can find the mistake
    without reading our code.
    """

    def __init__(self, error: str, detail: str, field: str = "$", value: Any = None) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.field = field
        self.value = value


class InvalidSchedule(SchedulerError, ValueError):
    """A schedule expression, date or time zone that the trigger math rejects.

    It subclasses ``ValueError`` so that pydantic validators can raise it and
    have its message reported against the right field.
    """


class BrokerError(SchedulerError):
    """The local Kafka broker could not be fetched, formatted or started."""
