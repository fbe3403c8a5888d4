"""The command format, validated once at the edge.

The fields are those of the scheduler service we replace, kept field for
field, plus ``action``. Unknown fields are refused rather than ignored: a
misspelt ``timezon`` silently falling back to UTC would fire at the wrong
hour, which is worse than a rejection that names the field.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any, Generic, TypeVar, overload
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from scheduler.domain import ids
from scheduler.domain.errors import InvalidCommand, InvalidSchedule
from scheduler.domain.jitter import MAX_JITTER_S
from scheduler.domain.misfire import MisfirePolicy
from scheduler.domain.secrets import MASK, masked_task, masked_url, sensitive
from scheduler.domain.timezones import resolve_zone
from scheduler.domain.triggers import (
    TriggerSpec,
    fire_times,
    local_instant,
    next_fire_parts,
    validate_parts,
)

#: Acceptance instant used when a command is validated before it has one.
_VALIDATION_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class Action(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"
    PAUSE = "pause"
    RESUME = "resume"
    TRIGGER = "trigger"


class ScheduleType(StrEnum):
    CRON = "cron"
    DATE = "date"
    DELAY = "delay"
    DELAY_RECUR = "delay-recur"
    NOW = "now"

    @property
    def one_shot(self) -> bool:
        return self in _ONE_SHOT


#: A set, not a tuple: a member's ``==`` is Python code, its hash is ``str``'s.
_ONE_SHOT = frozenset({ScheduleType.DATE, ScheduleType.DELAY, ScheduleType.NOW})


class TaskType(StrEnum):
    REST = "rest"
    KAFKA = "kafka"
    REDIS = "redis"


class RedisMode(StrEnum):
    PUBLISH = "publish"
    STREAM = "stream"
    LIST = "list"


class FailedPolicy(StrEnum):
    """What happens after a failed delivery.

    ``none``: no retry, the firing goes to ``firings-dead`` with its error.
    ``retry``: retryable failures are retried after ``retry_wait`` seconds,
    up to ``max_retries`` times, then dead-lettered.
    """

    NONE = "none"
    RETRY = "retry"


Text = Annotated[str, Field(min_length=1, max_length=512)]


_T = TypeVar("_T")


class cached(Generic[_T]):
    """``functools.cached_property`` without its lock: computed at first use, then kept.

    Python 3.11's takes a lock at every first use, a visible share of what a
    command costs on its way in (two per command); a command is only ever
    read by the event loop's thread. The value goes into the instance's
    ``__dict__``, which is looked up first from then on, as with the original.
    """

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.attrname = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.attrname = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached[_T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...
    def __get__(self, instance: object, owner: type | None = None) -> cached[_T] | _T:
        if instance is None:
            return self
        value = self.func(instance)
        instance.__dict__[self.attrname] = value
        return value


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, str_strip_whitespace=True, ignored_types=(cached,)
    )


class Client(_Strict):
    """The five fields that together name a schedule."""

    operation: Text
    application: Text
    group: Text
    key: Text
    type: Text

    @cached
    def schedule_id(self) -> str:
        # Cached: a command's id is asked for several times on its way in.
        return ids.schedule_id(self.operation, self.application, self.group, self.key, self.type)


#: An HTTP header name: an RFC 9110 token.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Headers a command may set, and their total size.
MAX_HEADERS = 64
MAX_HEADER_BYTES = 16_384


class Connection(_Strict):
    host: Text | None = None
    #: A Kafka target cluster the operator named (``SCHEDULER_TARGET_CLUSTERS``), for
    #: a kafka task instead of ``host``.
    cluster: Text | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    topic: Text | None = None
    key: Text | None = None
    mode: RedisMode | None = None

    @field_validator("headers")
    @classmethod
    def _valid_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        # Checked here, at the edge, rather than at each delivery: a line break
        # in a value would end the header and start another (header injection).
        if len(headers) > MAX_HEADERS:
            raise ValueError(f"at most {MAX_HEADERS} headers (got {len(headers)})")
        size = 0
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"header name {name[:80]!r} is not a valid HTTP token")
            if any(ch in value for ch in "\r\n\x00"):
                raise ValueError(f"header {name!r}: its value holds a line break or NUL")
            size += len(name) + len(value)
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"headers total {size} characters, more than {MAX_HEADER_BYTES}")
        return headers


#: The port of a redis task's host that names none: Redis's own.
REDIS_PORT = 6379

_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:\[\]]*)(?::(?P<port>.*))?")
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_.])?")


def redis_url(host: str) -> str:
    """The URL a redis task's ``connection.host`` stands for, or ``ValueError`` saying why not.

    The service we replace took ``host:port`` (as its Kafka tasks do), so besides
    a ``redis://`` or ``rediss://`` URL (returned as written) this takes
    ``host:port``, ``host`` and ``[IPv6]:port``, meaning ``redis://host:port``
    (port 6379 when none is written). A ``unix:`` URL passes, for the egress
    policy to refuse as it refuses every unix socket. The one reading of the
    field: validation, the egress check and the executor all call this, and
    a command keeps the text its sender wrote.
    """
    if any(ch.isspace() for ch in host):
        raise _bad_redis_host(host, "holds a space")
    if "://" in host or host.lower().startswith("unix:"):
        return _redis_url_as_written(host)
    if "@" in host:
        raise _bad_redis_host(host, "a user or password goes in a URL: redis://:password@host:port")
    match = _HOST_PORT.fullmatch(host)
    if match is None:
        raise _bad_redis_host(host, _REDIS_FORMS)
    name, port = match["host"], match["port"]
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            raise _bad_redis_host(host, "holds no IPv6 address between its brackets") from None
    elif port is not None and ":" in port:
        raise _bad_redis_host(host, "an IPv6 address is written in brackets, as [::1]:6379")
    elif not name:
        raise _bad_redis_host(host, "names no host")
    elif not _HOST_NAME.fullmatch(name):
        raise _bad_redis_host(host, _REDIS_FORMS)
    if port is None:
        return f"redis://{name}:{REDIS_PORT}"
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise _bad_redis_host(host, "the port must be a number from 1 to 65535")
    return f"redis://{name}:{int(port)}"


def _redis_url_as_written(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _bad_redis_host(url, f"is not a valid URL ({exc})") from None
    if parts.scheme == "unix":
        return url
    if parts.scheme not in ("redis", "rediss"):
        raise _bad_redis_host(url, _REDIS_FORMS)
    if not parts.hostname:
        raise _bad_redis_host(url, "names no host")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise _bad_redis_host(url, "the port must be a number from 1 to 65535")
    return url


_REDIS_FORMS = "must be a redis:// or rediss:// URL, host:port or host for a redis task"


def _bad_redis_host(host: str, why: str) -> ValueError:
    if "://" in host:
        shown = masked_url(host)
    else:
        shown = host if "@" not in host else f"{MASK}@{host.rpartition('@')[2]}"
    return ValueError(f"connection.host: {why} (got {shown!r})")


class Task(_Strict):
    type: TaskType
    connection: Connection
    data: Any = None
    history_check: bool = False
    failed_policy: FailedPolicy = FailedPolicy.NONE
    retry_wait: float = Field(default=60.0, gt=0, le=7 * 86400)
    max_retries: int = Field(default=3, ge=0, le=1000)
    retry_backoff: float = Field(default=1.0, ge=1.0, le=10.0)
    """Each retry waits this many times longer than the one before (1: constant)."""
    retry_max_wait: float | None = Field(default=None, gt=0, le=7 * 86400)
    """Cap on one wait when backing off."""
    retry_max_age: float | None = Field(default=None, gt=0, le=366 * 86400)
    """No retry later than this many seconds after the scheduled instant."""
    timeout: float = Field(default=10.0, gt=0, le=3600)
    """Seconds one delivery may take; a hang past it is a retryable failure."""

    @model_validator(mode="after")
    def _connection_fits_type(self, info: ValidationInfo) -> Task:
        conn = self.connection
        if conn.cluster is not None and self.type is not TaskType.KAFKA:
            raise ValueError(
                f"connection.cluster: is only for kafka tasks (got {conn.cluster!r} "
                f"on a {self.type.value} task)"
            )
        if self.type is TaskType.KAFKA:
            if (conn.host is None) == (conn.cluster is None):
                raise ValueError(
                    "connection: a kafka task names either host (a bootstrap list) "
                    "or cluster (one the operator configured), not both and not neither"
                )
        elif conn.host is None:
            raise ValueError(f"connection.host: is required for a {self.type.value} task")
        if self.type is TaskType.REST:
            assert conn.host is not None
            if not is_http_url(conn.host):
                raise ValueError(
                    "connection.host: must be an http(s) URL for a rest task "
                    f"(got {masked_url(conn.host)!r})"
                )
        elif self.type is TaskType.KAFKA:
            if not conn.topic:
                raise ValueError("connection.topic: is required for a kafka task")
        elif self.type is TaskType.REDIS:
            assert conn.host is not None
            # A stored command passed this when it was accepted; checks added
            # since must not make it unreadable (its delivery says what is wrong).
            if not (info.context or {}).get("stored"):
                redis_url(conn.host)
            if not conn.topic:
                raise ValueError("connection.topic: is required for a redis task")
        if conn.mode is not None and self.type is not TaskType.REDIS:
            raise ValueError(
                f"connection.mode: is only for redis tasks (got {conn.mode.value!r} "
                f"on a {self.type.value} task)"
            )
        return self


@functools.lru_cache(maxsize=4_096)
def is_http_url(host: str) -> bool:
    """Whether a rest task's host is an http(s) URL with a host name.

    Remembered: an application's commands name the same few targets, and
    parsing the URL again was a visible share of validating a command.
    """
    parts = urlsplit(host)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


#: What ``schedule`` takes as written, text or a number read as its text: so the
#: JSON Schema (and the web view's OpenAPI document) says.
_ScheduleInput = Annotated[str, Field(max_length=512)] | float | None


#: Instants looked at to find a recurring schedule's shortest interval.
_INTERVAL_SAMPLE = 100


def _shortest_interval(spec: TriggerSpec) -> float | None:
    """Seconds between the closest two of a recurring schedule's first instants."""
    instants = fire_times(spec, spec.accepted_at, _INTERVAL_SAMPLE)
    gaps = [(b - a).total_seconds() for a, b in pairwise(instants)]
    return min(gaps) if gaps else None


class Command(_Strict):
    action: Action = Action.UPSERT
    name: str | None = Field(default=None, max_length=512)
    client: Client
    type: ScheduleType | None = None
    schedule: str | None = Field(default=None, max_length=512)
    timezone: str = "UTC"
    task: Task | None = None
    misfire_policy: MisfirePolicy = MisfirePolicy.FIRE_ONCE
    misfire_grace: float = Field(default=3600.0, gt=0, le=366 * 86400)
    """Seconds an instant may be late and still fire (see ``scheduler.domain.misfire``)."""
    start: str | None = Field(default=None, max_length=64)
    """Recurring types: no instant before this (ISO-8601, local in ``timezone``)."""
    end: str | None = Field(default=None, max_length=64)
    """Recurring types: no instant after this."""
    max_fires: int | None = Field(default=None, ge=1)
    """Recurring types: complete after this many firings."""
    jitter: float | None = Field(default=None, ge=0, le=MAX_JITTER_S)
    """Seconds each instant may be delivered after it, spread by its firing id
    (``scheduler.domain.jitter``); never before it."""

    @field_validator("schedule", mode="before", json_schema_input_type=_ScheduleInput)
    @classmethod
    def _number_as_text(cls, value: Any) -> Any:
        # A delay of 50 is as natural as "50"; bool is an int in Python, refuse it.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        resolve_zone(value)
        return value

    @model_validator(mode="after")
    def _complete_for_action(self, info: ValidationInfo) -> Command:
        if self.action is not Action.UPSERT or (info.context or {}).get("stored"):
            return self
        if self.type is None:
            raise ValueError("type: is required for an upsert")
        if self.task is None:
            raise ValueError("task: is required for an upsert")
        if self.type is not ScheduleType.NOW and not self.schedule:
            raise ValueError(f"schedule: is required for a {self.type.value} schedule")
        # Most commands set none of start, end and max_fires: one test for them all.
        bounded = self.start is not None or self.end is not None or self.max_fires is not None
        if bounded:
            for name in ("start", "end"):
                text = getattr(self, name)
                if text is not None:
                    try:
                        local_instant(text, self.timezone)
                    except InvalidSchedule as exc:
                        raise ValueError(f"{name}: {exc}") from None
        try:
            # The spec's fields, not the spec: every command is checked here.
            validate_parts(*self._trigger_fields(_VALIDATION_EPOCH)[:4])
        except InvalidSchedule as exc:
            raise ValueError(f"schedule: {exc}") from None
        if bounded and self.type.one_shot:
            bounds = {"start": self.start, "end": self.end, "max_fires": self.max_fires}
            for name, value in bounds.items():
                if value is not None:
                    raise ValueError(
                        f"{name}: only cron and delay-recur schedules take {name} "
                        f"(got {value!r} on a {self.type.value} schedule)"
                    )
        if self.start and self.end and self.end_at() <= self.start_at():  # type: ignore[operator]
            raise ValueError(f"end: must be after start (got {self.end!r} <= {self.start!r})")
        if self.jitter and not self.type.one_shot:
            shortest = _shortest_interval(self.trigger(_VALIDATION_EPOCH))
            if shortest is not None and self.jitter >= shortest:
                raise ValueError(
                    f"jitter: must be less than the schedule's shortest interval, "
                    f"{shortest:g} s (got {self.jitter:g}): its instants would wait on "
                    "each other"
                )
        return self

    def start_at(self) -> datetime | None:
        return None if self.start is None else local_instant(self.start, self.timezone)

    def end_at(self) -> datetime | None:
        return None if self.end is None else local_instant(self.end, self.timezone)

    @property
    def schedule_id(self) -> str:
        return self.client.schedule_id

    def trigger(self, accepted_at: datetime) -> TriggerSpec:
        # Positional: a dataclass takes them markedly faster than by name.
        return TriggerSpec(*self._trigger_fields(accepted_at))

    def fire_after(self, accepted_at: datetime, after: datetime) -> datetime | None:
        """``next_fire(self.trigger(accepted_at), after)``, without building the spec
        (``triggers.next_fire_parts`` says why)."""
        return next_fire_parts(*self._trigger_fields(accepted_at), after)

    def _trigger_fields(
        self, accepted_at: datetime
    ) -> tuple[str, str, str, datetime, datetime | None]:
        """The fields of :meth:`trigger`'s spec, in their order."""
        if self.type is None:
            raise InvalidSchedule(f"a {self.action.value} command has no schedule")
        return (
            str(self.type),  # kind: its value (a StrEnum), without enum's slow ``.value``
            self.schedule or "",  # expression
            self.timezone,  # zone
            accepted_at,
            self.start_at() if self.type is ScheduleType.DELAY_RECUR else None,  # start
        )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    @cached
    def json_bytes(self) -> bytes:
        """``to_json()`` as compact UTF-8 JSON, built once per command (pydantic's encoder).

        Except for a command read back from a record (:meth:`from_json_bytes`):
        the bytes it was read from, which may be the text it was sent as
        (:attr:`stored_json`). To compare commands, use :attr:`canonical_json`."""
        return self.canonical_json

    @cached
    def canonical_json(self) -> bytes:
        """``to_json()`` as compact UTF-8 JSON, always pydantic's: the same for equal commands."""
        return self.__pydantic_serializer__.to_json(self, exclude_none=True)

    @cached
    def stored_json(self) -> bytes:
        """This command as its schedule's record stores it (``ScheduleRecord.to_bytes``).

        The bytes it was read from, when :func:`parse_command` or
        :meth:`from_json_bytes` read it from bytes: they hold this very command,
        and encoding it again cost as much as reading it. Else
        :attr:`json_bytes`. Equal commands may be stored as different text;
        compare :attr:`canonical_json` (:func:`same_command`).

        So a record keeps what was sent, and reading it applies the model's
        defaults and conversions (``"3"`` for an int) again: the defaults are
        part of the storage format, and ``tests/unit/test_stored_commands.py``
        holds them fixed (``docs/architecture.md``, Stored records).
        """
        return self.json_bytes

    @classmethod
    def from_json_bytes(cls, encoded: bytes) -> Command:
        """The command a record stored as ``encoded`` (its ``stored_json``), keeping those bytes.

        pydantic reads the JSON itself (about half the time of ``json.loads``
        and ``model_validate``), and a record that is read, advanced and
        written again does not encode its command again. The checks that
        only a new command needs (that its schedule parses, its bounds are
        in order) are skipped: a stored command passed them when accepted.
        """
        command = cls.model_validate_json(encoded, context=_STORED)
        command.__dict__["json_bytes"] = encoded  # what ``cached`` would store
        command.__dict__["stored_json"] = encoded
        return command

    @cached
    def firing_fields(self) -> bytes:
        """``"name"``, ``"client"`` and ``"task"`` of this command's firings, as JSON members.

        The same in every firing of a schedule, so encoded once per command.
        """
        return self.model_dump_json(include=_FIRING_FIELDS).encode()[1:-1]


def same_command(one: Command, other: Command) -> bool:
    """Whether two commands are the same, however their senders wrote them."""
    # The same stored text is the same command, without encoding either.
    return one.stored_json == other.stored_json or one.canonical_json == other.canonical_json


#: Validation context of a command read back from storage (``Command.from_json_bytes``).
_STORED = {"stored": True}
_FIRING_FIELDS = {"name", "client", "task"}


def parse_command(raw: bytes | str | dict[str, Any], *, max_bytes: int = 262_144) -> Command:
    """Decode and validate one command, or raise ``InvalidCommand`` saying why."""
    if isinstance(raw, dict):
        data: Any = raw
    else:
        if isinstance(raw, str):  # as bytes, so a lone surrogate in it is refused below
            raw = raw.encode("utf-8", "surrogatepass")
        size = len(raw)
        if size > max_bytes:
            raise InvalidCommand(
                "too_large",
                f"command is {size} bytes, more than the limit of {max_bytes} bytes",
                value=size,
            )
        if _SURROGATE_ESCAPE.search(raw):
            _refuse_lone_surrogates(raw)
        try:
            # pydantic reads the JSON itself, in about half the time of
            # json.loads and model_validate; on any error the slow path below
            # finds the same problem and words it as ours.
            command = Command.model_validate_json(raw)
            # bytes(): a bytearray the caller still holds would be stored as it changes.
            command.__dict__["stored_json"] = bytes(raw)  # what ``cached`` would store
            return command
        except (ValidationError, InvalidSchedule):
            pass
        try:
            # json.loads would take UTF-8 bytes that encode a lone surrogate
            # ("surrogatepass"), leaving text that cannot be encoded again.
            text = raw.decode(json.detect_encoding(raw))
        except UnicodeError as exc:
            raise InvalidCommand("bad_json", f"command is not valid UTF-8 text: {exc}") from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            # ValueError: not JSON, or an integer past Python's 4,300 digits;
            # RecursionError: nested deeper than the parser goes.
            raise InvalidCommand(
                "bad_json", f"command is not valid JSON: {(str(exc) or type(exc).__name__)[:200]}"
            ) from None
    if not isinstance(data, dict):
        raise InvalidCommand(
            "bad_json", f"command must be a JSON object, got {type(data).__name__}", value=data
        )
    try:
        return Command.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    except InvalidSchedule as exc:
        raise InvalidCommand("invalid_command", f"schedule: {exc}") from None


#: A JSON escape of a UTF-16 surrogate: legal JSON, and a lone one decodes to
#: text that cannot be encoded again (schedule ids, deliveries, the topics).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _refuse_lone_surrogates(raw: bytes | str) -> None:
    """Raise ``InvalidCommand`` if the JSON holds a surrogate escape not part of a pair."""
    try:
        json.dumps(json.loads(raw), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidCommand(
            "bad_json", f"command holds a lone UTF-16 surrogate escape ({exc.reason})"
        ) from None
    except (ValueError, RecursionError):
        pass  # not JSON: the parse below says so


def from_validation_error(exc: ValidationError) -> InvalidCommand:
    """One readable sentence per problem: ``field: what is wrong (got value)``."""
    problems = []
    first_field, first_value = "$", None
    for index, err in enumerate(exc.errors(include_url=False)):
        field = ".".join(str(part) for part in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        inner = _INNER_FIELD.match(message)
        if inner:
            # A cross-field check names the field itself, relative to where it ran.
            field = f"{field}.{inner['field']}" if field else inner["field"]
            text = f"{field}: {inner['message']}"
        else:
            field = field or "$"
            text = f"{field}: {message}" if field != "$" else message
            if field != "$" and err["type"] != "missing":
                text += f" (got {_short(_shown(err.get('input')))})"
        problems.append(text)
        if index == 0:
            first_field, first_value = field, _shown(err.get("input"))
    return InvalidCommand("invalid_command", "; ".join(problems), first_field, first_value)


_INNER_FIELD = re.compile(r"^(?P<field>[A-Za-z_][\w.]*): (?P<message>.*)$", re.DOTALL)


def _shown(value: Any) -> Any:
    """A rejected value as it may be shown: no header secret, no URL password.

    A rejection goes back to the sender and onto the rejected topic, where
    other teams read it."""
    if isinstance(value, dict):
        if "connection" in value:
            return masked_task(value)
        if "host" in value or "headers" in value:
            return masked_task({"connection": value})["connection"]
        if all(isinstance(name, str) for name in value):
            return {name: MASK if sensitive(name) else item for name, item in value.items()}
        return value
    if isinstance(value, str) and "@" in value:
        return masked_url(value)
    return value


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."
