"""The web view: lookups, lists, command intake, preview, health, metrics.

Thin on purpose: decode the request, call the domain, answer JSON. A lookup
by id is routed by Faust to the worker that owns the id's partition; a list
asks every worker for the schedules of its own active partitions.
"""

from __future__ import annotations

import asyncio
import heapq
from datetime import UTC, datetime
from typing import Any

import aiohttp
from faust import web

from scheduler import metrics, paging, tables
from scheduler.admission import Body, InvalidItem, admit_body
from scheduler.app import app, settings
from scheduler.domain import state
from scheduler.domain.errors import InvalidCommand, InvalidSchedule, SchedulerError
from scheduler.domain.models import parse_command
from scheduler.domain.preview import check_count, preview, shown, upcoming
from scheduler.domain.timefmt import format_utc, parse_utc
from scheduler.patches import private
from scheduler.streams.history import KEEP, recent
from scheduler.tables import history as history_table
from scheduler.tables import schedules
from scheduler.topics import commands_topic, keyed_commands_topic

MAX_LIST = 10_000


def _error(view: web.View, status: int, error: str, detail: str, **extra: Any) -> web.Response:
    return view.json({"error": error, "detail": detail, **extra}, status=status)


@app.page("/schedules/{schedule_id}")
class ScheduleView(web.View):
    @app.table_route(table=schedules, match_info="schedule_id")  # type: ignore[arg-type]
    async def get(self, request: web.Request, schedule_id: str) -> web.Response:
        tables.flush()  # what the agents staged, so a lookup sees every applied command
        stored = schedules.get(schedule_id.encode())
        if stored is None:
            return _error(self, 404, "not_found", f"no schedule {schedule_id}")
        return self.json(state.describe(state.ScheduleRecord.from_bytes(stored)))


@app.page("/schedules")
class ScheduleListView(web.View):
    """A page of schedules in schedule id order, from every worker.

    Query: the filters (``state.FILTERS``), ``limit`` (at most ``MAX_LIST``)
    and ``after`` (a schedule id: the page starts past it). The answer's
    ``next`` is the ``after`` of the following page, or null at the end.
    Each worker reads its own partitions in key order from ``after`` and
    stops after ``MAX_SCANNED`` records, so a page costs the same at a
    million schedules as at ten, whatever the filter; a filter that matches
    little may then answer a short page with a ``next`` to go on from.
    """

    async def get(self, request: web.Request) -> web.Response:
        filters = {name: request.query[name] for name in state.FILTERS if name in request.query}
        after = request.query.get("after") or None
        try:
            limit = int(request.query.get("limit", "1000"))
            if not 1 <= limit <= MAX_LIST:
                raise ValueError
        except ValueError:
            return _error(
                self,
                400,
                "bad_request",
                f"limit: an integer from 1 to {MAX_LIST}, got {request.query.get('limit')!r}",
                field="limit",
            )
        if after is not None and not after.isascii():
            return _error(self, 400, "bad_request", f"after: not a schedule id: {after!r}")
        mine = await _local(filters, limit, after)
        if request.query.get("scope") == "local":
            return self.json(mine)
        peers = _peers()
        try:
            pages = [mine, *await asyncio.gather(*(_remote(url, request) for url in peers))]
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            return _error(
                self,
                503,
                "unavailable",
                f"a worker did not answer its part of the page ({type(exc).__name__}: {exc}); "
                "the page would miss its schedules: try again",
            )
        missing = paging.uncovered(pages, settings.partitions)
        if missing:
            return _error(
                self,
                503,
                "unavailable",
                f"partitions {', '.join(map(str, missing))} have no ready owner now (a "
                "rebalance or a recovery); the page would miss their schedules: try again",
            )
        return self.json(paging.merge(pages, limit))


#: How long a worker waits for another's part of a page.
PEER_TIMEOUT = aiohttp.ClientTimeout(total=10)
#: Records one worker reads for one page at most (a filter is checked on each).
MAX_SCANNED = 20_000
#: Records read between two turns of the event loop: a page never holds up firings.
_SCAN_SLICE = 1_000
_SID_PREFIX = b"sch_"


async def _local(filters: dict[str, str], limit: int, after: str | None) -> dict[str, Any]:
    """This worker's part of a page: up to ``limit`` matches past ``after``, and where
    it stopped if it did not reach the end of its partitions."""
    # Which partitions this part covers: none until the tables have recovered.
    ready = private.tables_recovered(app) and not app.rebalancing
    covered = sorted(
        tp.partition
        for tp in app.assignor.assigned_actives()
        if ready and tp.topic == keyed_commands_topic.get_topic_name()
    )
    tables.flush()
    start = after.encode() if after else _SID_PREFIX
    # The filter's values as they appear in a record's JSON, to pass over most
    # records without decoding them (decoding is what a scan costs).
    needles = [value.encode() for value in filters.values() if _plain(value)]
    merged = heapq.merge(
        *(db.items(from_key=start) for db in private.active_dbs(schedules)),
        key=lambda item: item[0],
    )
    found: list[dict[str, Any]] = []
    scanned = 0
    last: bytes | None = None
    for key, value in merged:
        if not key.startswith(_SID_PREFIX) or (after is not None and key <= start):
            continue
        scanned += 1
        last = key
        if all(needle in value for needle in needles):
            record = state.ScheduleRecord.from_bytes(value)
            if state.matches(record, filters):
                found.append(state.describe(record))
                if len(found) >= limit:
                    break
        if scanned >= MAX_SCANNED:
            break
        if scanned % _SCAN_SLICE == 0:
            await asyncio.sleep(0)
    else:
        last = None  # every partition read to its end
    return {
        "schedules": found,
        "next": last.decode() if last is not None else None,
        "partitions": covered,
    }


def _plain(value: str) -> bool:
    """Whether ``value`` is written as itself inside a JSON string (no escapes)."""
    return '"' not in value and "\\" not in value and all(ord(c) >= 0x20 for c in value)


def _peers() -> list[str]:
    own = str(app.conf.canonical_url).rstrip("/")
    urls = {str(url).rstrip("/") for url in app.router.tables_metadata()}
    return sorted(url for url in urls if url != own)


async def _remote(base: str, request: web.Request) -> dict[str, Any]:
    params = dict(request.query)
    params["scope"] = "local"
    token = request.headers.get("Authorization")
    headers = {"Authorization": token} if token else {}
    async with app.http_client.get(
        f"{base}/schedules", params=params, headers=headers, timeout=PEER_TIMEOUT
    ) as response:
        response.raise_for_status()
        body = await response.json()
    part = {"schedules": list(body["schedules"]), "next": body.get("next")}
    if "partitions" in body:
        part["partitions"] = body["partitions"]
    return part


@app.page("/commands")
class CommandsView(web.View):
    """One command, or a JSON array of them, judged as the topic judges each
    (``scheduler.admission.admit_body``) and produced to it as judged."""

    async def post(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if len(raw) > settings.max_command_bytes:
            return _error(
                self,
                413,
                "too_large",
                f"body is {len(raw)} bytes, more than {settings.max_command_bytes}",
            )
        try:
            body = admit_body(raw)
        except InvalidItem as exc:
            return _error(self, 400, exc.error, exc.detail, field=exc.field, index=exc.index)
        except InvalidCommand as exc:
            return _error(self, 400, exc.error, exc.detail, field=exc.field)
        # 202 only once the broker has every command: the answer is a promise.
        try:
            await produce_commands(body)
        except NotStored as exc:
            return _error(self, 503, "not_stored", str(exc))
        ids = [{"schedule_id": command.schedule_id} for command, _ in body.commands]
        return self.json(ids if body.many else ids[0], status=202)


class NotStored(SchedulerError):
    """The broker did not take every command of a body; some may be stored."""


async def produce_commands(body: Body) -> None:
    """Send ``body``'s commands to the topic, each keyed by its schedule id, and return
    once the broker has every one; else raise :class:`NotStored`.

    The one produce step of ``POST /commands`` and the GraphQL mutations
    (``scheduler.graphql_api``): both answer only after it.
    """
    try:
        sent = [
            await commands_topic.send(key=command.schedule_id.encode(), value=text)
            for command, text in body.commands
        ]
        await asyncio.gather(*sent)
    except Exception as exc:
        raise NotStored(
            f"the broker did not take the commands ({type(exc).__name__}: {exc}); "
            "some may be stored; sending them all again is safe"
        ) from exc


@app.page("/preview")
class PreviewView(web.View):
    """What a command would fire, without submitting it.

    Query: ``after`` (ISO-8601, default now) and ``count`` (default 10, at
    most ``MAX_COUNT``).
    """

    async def post(self, request: web.Request) -> web.Response:
        try:
            after, count = _preview_query(request)
            command = parse_command(await request.read(), max_bytes=settings.max_command_bytes)
            return self.json(shown(command, preview(command, after, count)))
        except InvalidCommand as exc:
            return _error(self, 400, exc.error, exc.detail, field=exc.field)
        except InvalidSchedule as exc:
            return _error(self, 400, "invalid_command", str(exc))


@app.page("/schedules/{schedule_id}/preview")
class SchedulePreviewView(web.View):
    """What a stored schedule will fire next (query ``count``), from its owner."""

    @app.table_route(table=schedules, match_info="schedule_id")  # type: ignore[arg-type]
    async def get(self, request: web.Request, schedule_id: str) -> web.Response:
        try:
            _, count = _preview_query(request)
        except InvalidCommand as exc:
            return _error(self, 400, exc.error, exc.detail, field=exc.field)
        tables.flush()
        stored = schedules.get(schedule_id.encode())
        if stored is None:
            return _error(self, 404, "not_found", f"no schedule {schedule_id}")
        record = state.ScheduleRecord.from_bytes(stored)
        return self.json(shown(record, upcoming(record, count)))


def _preview_query(request: web.Request) -> tuple[datetime, int]:
    """``after`` and ``count`` of a preview request, each refused by name."""
    text = request.query.get("after")
    try:
        after = parse_utc(text) if text is not None else datetime.now(UTC)
    except ValueError:
        raise InvalidCommand(
            "bad_request", f"after: not an ISO-8601 instant: {text!r}", field="after", value=text
        ) from None
    raw = request.query.get("count", "10")
    try:
        count = int(raw)
    except ValueError:
        raise InvalidCommand(
            "bad_request", f"count: not an integer: {raw!r}", field="count", value=raw
        ) from None
    return after, check_count(count)


@app.page("/health")
class HealthView(web.View):
    """Liveness and readiness of this worker.

    Plain ``GET /health`` answers 200 whenever the web view runs: a liveness
    probe must not restart a worker that is only recovering its tables.
    ``GET /health?ready=1`` answers 503 (same body) until ``ready``: an
    orchestrator's readiness probe sees only the status code, and a rolling
    update should wait for a worker's tables before stopping the next one
    (deploy/k8s).
    """

    async def get(self, request: web.Request) -> web.Response:
        actives = sorted(
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic == keyed_commands_topic.get_topic_name()
        )
        ready = private.tables_recovered(app) and not app.rebalancing
        return self.json(
            {
                "status": "ok",
                "ready": ready,
                "app_id": settings.app_id,
                "worker": str(app.conf.canonical_url),
                "rebalancing": bool(app.rebalancing),
                "active_partitions": actives,
                "time": format_utc(datetime.now(UTC)),
            },
            status=503 if request.query.get("ready") == "1" and not ready else 200,
        )


@app.page("/metrics")
class MetricsView(web.View):
    """The registry (``scheduler.metrics``): Prometheus' text format, or OpenMetrics
    when the scraper's ``Accept`` prefers it."""

    async def get(self, request: web.Request) -> web.Response:
        body, content_type = metrics.render(request.headers.get("Accept"))
        # As a header: aiohttp refuses a content_type argument that names a charset.
        return self.bytes(body, headers={"Content-Type": content_type})


@app.page("/schedules/{schedule_id}/history")
class HistoryView(web.View):
    """Recent events of a schedule with ``history_check``, newest first."""

    @app.table_route(table=history_table, match_info="schedule_id")  # type: ignore[arg-type]
    async def get(self, request: web.Request, schedule_id: str) -> web.Response:
        try:
            limit = min(int(request.query.get("limit", "100")), KEEP)
        except ValueError:
            return _error(self, 400, "bad_request", "limit must be an integer")
        events = recent(history_table.get(schedule_id.encode()), limit)
        return self.json({"schedule_id": schedule_id, "events": events})
