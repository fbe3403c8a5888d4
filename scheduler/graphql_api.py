"""GraphQL at ``/graphql``: the web view's lookups and commands as one schema.

Reads are the web view's own endpoints, called over HTTP on this worker with
the caller's ``Authorization`` header: ``GET /schedules`` for a page (which
gathers every worker's part), ``GET /schedules/{id}``, its ``/history`` and
``/preview`` (which Faust routes to the worker owning the id). So GraphQL
answers what REST answers, routed the same way, and secrets are masked by
the same ``state.describe``. Mutations take the path of ``POST /commands``:
``admission.admit_raw``/``admit_body`` judge the commands and
``web.produce_commands`` answers only once the broker has every one. A
refusal is a GraphQL error whose ``extensions`` hold the REST error's
``code``, ``field`` and, for an item of ``submit``, its ``index``.

The view is mounted with ``app.page`` like every other view, so Faust adds
its route to the aiohttp application when the worker imports this module,
before the server starts, and the token middleware (``scheduler.webauth``)
guards it like the rest.

GraphiQL, the in-browser IDE, is off. The page strawberry serves loads its
scripts from a public CDN, into the origin that takes commands: a worker
would run code it never shipped, and one with no way out to the internet
would serve a blank page. With tokens set a browser could not open it
anyway (a page load sends no bearer token). The schema is open to
introspection, so any GraphQL client, given the token, lists it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from functools import partial
from typing import Annotated, Any, cast
from urllib.parse import quote

import strawberry
from aiohttp import ClientError, ClientTimeout
from aiohttp.web import Request, Response, StreamResponse, WebSocketResponse
from faust import web
from graphql import GraphQLError
from strawberry.aiohttp.views import GraphQLView
from strawberry.extensions import MaskErrors
from strawberry.scalars import JSON
from strawberry.types import ExecutionContext

from scheduler.admission import Body, InvalidItem, admit_body, admit_raw
from scheduler.app import app, settings
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Action
from scheduler.web import NotStored, produce_commands

log = logging.getLogger(__name__)

#: The largest page ``schedules`` answers.
MAX_FIRST = 1000
#: Requests one GraphQL request may make of the web view. Each schedule of a
#: page whose ``history`` or ``preview`` is asked costs one: without a bound
#: a single query could send thousands of requests through the workers.
MAX_CALLS = 200
#: How long one of those requests may take.
CALL_TIMEOUT = ClientTimeout(total=30)


class Refused(GraphQLError):
    """A request the service turns down, on purpose and with a reason, as REST would.

    Shown to the caller as it is; any other exception is a fault of ours,
    logged with its traceback and shown only as an internal error.
    """

    def __init__(self, code: str, detail: str, *, field: str | None = None, **extra: Any) -> None:
        extensions: dict[str, Any] = {"code": code}
        if field is not None:
            extensions["field"] = field
        extensions.update(extra)
        super().__init__(detail, extensions=extensions)


@dataclass
class Context:
    request: Request
    calls: int = 0
    """Requests made of the web view so far (at most ``MAX_CALLS``)."""


Info = strawberry.Info[Context, None]


async def _call(info: Info, path: str, **params: Any) -> tuple[int, Any]:
    """``GET path`` on this worker's web view, as the caller: its status and JSON body."""
    context = info.context
    context.calls += 1
    if context.calls > MAX_CALLS:
        raise Refused(
            "too_many_lookups",
            f"one GraphQL request makes at most {MAX_CALLS} lookups (a schedule's history "
            "or preview is one each): ask for fewer schedules at once",
        )
    token = context.request.headers.get("Authorization")
    headers = {"Authorization": token} if token else {}
    base = str(app.conf.canonical_url).rstrip("/")
    query = {name: str(value) for name, value in params.items() if value is not None}
    try:
        async with app.http_client.get(
            f"{base}{path}", params=query, headers=headers, timeout=CALL_TIMEOUT
        ) as response:
            status = response.status
            raw = await response.read()
    except (ClientError, TimeoutError) as exc:
        raise Refused(
            "unavailable", f"the web view did not answer {path}: {type(exc).__name__}: {exc}"
        ) from None
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if status >= 400 and status != 404:
        error = body if isinstance(body, dict) else {}
        raise Refused(
            str(error.get("error", "upstream_error")),
            str(error.get("detail", f"{path} answered {status}: {raw[:200]!r}")),
            field=error.get("field"),
            status=status,
        )
    return status, body


def _sid_path(schedule_id: str, tail: str = "") -> str:
    return f"/schedules/{quote(schedule_id, safe='')}{tail}"


# --- what is read ---------------------------------------------------------------


@strawberry.type(description="The five fields that together name a schedule.")
class ScheduleClient:
    operation: str
    application: str
    group: str
    key: str
    type: str


@strawberry.type(description="One event of a schedule's history (tasks with history_check).")
class HistoryEvent:
    event: str
    at: str
    firing_id: str | None
    scheduled_for: list[str] | None = strawberry.field(
        description="The instant fired or delivered; the several a command revoked."
    )
    attempt: int | None
    data: JSON = strawberry.field(description="The whole event, every field as stored.")

    @classmethod
    def of(cls, event: dict[str, Any]) -> HistoryEvent:
        instants = event.get("scheduled_for")
        if isinstance(instants, str):
            instants = [instants]
        return cls(
            event=event["event"],
            at=event["at"],
            firing_id=event.get("firing_id"),
            scheduled_for=instants,
            attempt=event.get("attempt"),
            data=JSON(event),
        )


@strawberry.type
class PreviewInstant:
    utc: str
    local: str = strawberry.field(description="The same instant in the schedule's zone.")
    delivered_at: str | None = strawberry.field(
        description="When it is delivered, if jitter puts it after the instant."
    )


@strawberry.type(description="What a stored schedule will fire next.")
class Preview:
    schedule_id: strawberry.ID
    timezone: str
    status: str | None
    instants: list[PreviewInstant]


@strawberry.type(description="A schedule as GET /schedules/{id} shows it; secrets masked.")
class Schedule:
    schedule_id: strawberry.ID
    name: str | None
    client: ScheduleClient
    type: str | None
    schedule: str | None
    timezone: str
    task: JSON | None
    status: str
    paused: bool
    next_fire_at: str | None
    next_fire_at_local: str | None
    fire_count: int
    last_fired_at: str | None
    missed_count: int
    last_missed_at: str | None
    misfire_policy: str
    start: str | None
    end: str | None
    max_fires: int | None
    jitter: float | None
    accepted_at: str
    created_at: str
    updated_at: str

    @classmethod
    def of(cls, shown: dict[str, Any]) -> Schedule:
        """From ``state.describe``'s JSON; a unit test holds the two field for field."""
        fields: dict[str, Any] = {
            name: shown.get(name) for name in SCHEDULE_FIELDS if name != "client"
        }
        return cls(client=ScheduleClient(**shown["client"]), **fields)

    @strawberry.field(description="Recent events, newest first (GET /schedules/{id}/history).")  # type: ignore[untyped-decorator]
    async def history(self, info: Info, limit: int = 100) -> list[HistoryEvent]:
        if limit < 0:
            raise Refused("bad_request", f"limit: must be 0 or more, got {limit}", field="limit")
        _, body = await _call(info, _sid_path(self.schedule_id, "/history"), limit=limit)
        return [HistoryEvent.of(event) for event in (body or {}).get("events", [])]

    @strawberry.field(description="The next instants (GET /schedules/{id}/preview).")  # type: ignore[untyped-decorator]
    async def preview(self, info: Info, count: int = 10) -> Preview | None:
        status, body = await _call(info, _sid_path(self.schedule_id, "/preview"), count=count)
        if status == 404:
            return None  # deleted since it was read
        return Preview(
            schedule_id=body["schedule_id"],
            timezone=body["timezone"],
            status=body.get("status"),
            instants=[
                PreviewInstant(
                    utc=item["utc"], local=item["local"], delivered_at=item.get("delivered_at")
                )
                for item in body["instants"]
            ],
        )


#: The fields of ``state.describe`` that ``Schedule`` shows, all of them.
SCHEDULE_FIELDS = tuple(name for name in Schedule.__annotations__ if not name.startswith("_"))


@strawberry.type
class PageInfo:
    end_cursor: str | None = strawberry.field(
        description="The `after` of the next page: a schedule id."
    )
    has_next_page: bool


@strawberry.type(description="Schedules in schedule id order.")
class SchedulePage:
    nodes: list[Schedule]
    page_info: PageInfo


@strawberry.input(description="Only schedules whose fields equal these (all given must match).")
class ScheduleFilter:
    operation: str | None = None
    application: str | None = None
    group: str | None = None
    key: str | None = None
    type: str | None = strawberry.field(default=None, description="The client's type.")
    status: str | None = strawberry.field(default=None, description="active, paused or completed.")
    name: str | None = None


@strawberry.type
class Query:
    @strawberry.field(description="A page of schedules from every worker (GET /schedules).")  # type: ignore[untyped-decorator]
    async def schedules(
        self,
        info: Info,
        filter_: Annotated[ScheduleFilter | None, strawberry.argument(name="filter")] = None,
        first: int = 100,
        after: str | None = None,
    ) -> SchedulePage:
        if not 1 <= first <= MAX_FIRST:
            raise Refused(
                "bad_request", f"first: from 1 to {MAX_FIRST}, got {first}", field="first"
            )
        filters = asdict(filter_) if filter_ is not None else {}
        # One more than asked: whether a next page exists is then known, not guessed.
        _, body = await _call(info, "/schedules", limit=first + 1, after=after or None, **filters)
        shown = body["schedules"]
        if len(shown) > first:
            shown = shown[:first]
            cursor: str | None = shown[-1]["schedule_id"]
            more = True
        else:
            # The web view may stop short of a full page (it bounds what one page
            # reads): its ``next`` then says where to go on from.
            cursor = body.get("next")
            more = cursor is not None
            if cursor is None and shown:
                cursor = shown[-1]["schedule_id"]
        return SchedulePage(
            nodes=[Schedule.of(item) for item in shown],
            page_info=PageInfo(end_cursor=cursor, has_next_page=more),
        )

    @strawberry.field(description="One schedule, or null (GET /schedules/{id}).")  # type: ignore[untyped-decorator]
    async def schedule(self, info: Info, id: strawberry.ID) -> Schedule | None:
        status, body = await _call(info, _sid_path(id))
        return None if status == 404 else Schedule.of(body)


# --- what is done ----------------------------------------------------------------


@strawberry.input(description="The five fields that name a schedule.")
class ClientInput:
    operation: str
    application: str
    group: str
    key: str
    type: str


@strawberry.type(description="A command the broker has: it is applied shortly.")
class Accepted:
    schedule_id: strawberry.ID
    action: str


def _text(value: Any) -> bytes:
    """A command as the JSON text the topic is sent; non-ASCII text kept readable."""
    # A lone surrogate passes through as bytes no UTF-8 reader takes: the
    # validation refuses it as the topic would refuse such a record.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(
        "utf-8", "surrogatepass"
    )


async def _take(raw: bytes, *, many: bool) -> list[Accepted]:
    """Judge and produce ``raw`` as ``POST /commands`` would; raise :class:`Refused` if not."""
    if len(raw) > settings.max_command_bytes:
        raise Refused(
            "too_large", f"body is {len(raw)} bytes, more than {settings.max_command_bytes}"
        )
    try:
        body = admit_body(raw) if many else Body([(admit_raw(raw), raw)], many=False)
    except InvalidItem as exc:
        raise Refused(exc.error, exc.detail, field=exc.field, index=exc.index) from None
    except InvalidCommand as exc:
        raise Refused(exc.error, exc.detail, field=exc.field) from None
    try:
        await produce_commands(body)
    except NotStored as exc:
        raise Refused("not_stored", str(exc)) from None
    return [
        Accepted(schedule_id=strawberry.ID(command.schedule_id), action=command.action.value)
        for command, _ in body.commands
    ]


async def _act(action: Action, client: ClientInput) -> Accepted:
    (accepted,) = await _take(_text({"action": action.value, "client": asdict(client)}), many=False)
    return accepted


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create or update a schedule (the command's action: upsert).")  # type: ignore[untyped-decorator]
    async def upsert(self, command: JSON) -> Accepted:
        if isinstance(command, dict):
            action = command.get("action", Action.UPSERT.value)
            if action != Action.UPSERT.value:
                raise Refused(
                    "invalid_command",
                    f"action: upsert takes an upsert command, got {action!r}; "
                    "use delete, pause, resume, trigger or submit",
                    field="action",
                )
        (accepted,) = await _take(_text(command), many=False)
        return accepted

    @strawberry.mutation
    async def delete(self, client: ClientInput) -> Accepted:
        return await _act(Action.DELETE, client)

    @strawberry.mutation
    async def pause(self, client: ClientInput) -> Accepted:
        return await _act(Action.PAUSE, client)

    @strawberry.mutation
    async def resume(self, client: ClientInput) -> Accepted:
        return await _act(Action.RESUME, client)

    @strawberry.mutation(description="Fire once now, without changing the schedule.")  # type: ignore[untyped-decorator]
    async def trigger(self, client: ClientInput) -> Accepted:
        return await _act(Action.TRIGGER, client)

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Commands of any action, all or none (an array body of POST /commands)."
    )
    async def submit(self, commands: list[JSON]) -> list[Accepted]:
        return await _take(_text(commands), many=True)


# --- serving ---------------------------------------------------------------------


def _unexpected(error: GraphQLError) -> bool:
    """A fault of ours, not a refusal nor a mistake in the query."""
    return error.original_error is not None and not isinstance(error.original_error, GraphQLError)


class _Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Refusals and bad queries are the caller's to read, not the log's.
        for error in errors:
            if _unexpected(error):
                log.error("GraphQL: %s", error, exc_info=error.original_error)


schema = _Schema(
    query=Query,
    mutation=Mutation,
    # A factory, not an instance: an extension keeps per-request state.
    extensions=[partial(MaskErrors, should_mask_error=_unexpected, error_message="internal error")],
)


class _View(GraphQLView[Context, None]):
    async def get_context(
        self, request: Request, response: Response | WebSocketResponse
    ) -> Context:
        return Context(request)


_view = _View(schema, graphql_ide=None, subscription_protocols=())


@app.page("/graphql")
class GraphQLPage(web.View):
    """Queries by GET or POST, mutations by POST (strawberry's view answers both)."""

    async def get(self, request: web.Request) -> StreamResponse:
        return await _view(cast(Request, request))

    async def post(self, request: web.Request) -> StreamResponse:
        return await _view(cast(Request, request))


__all__ = ["MAX_CALLS", "MAX_FIRST", "SCHEDULE_FIELDS", "GraphQLPage", "schema"]
