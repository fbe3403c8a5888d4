"""The dashboard: plain HTML pages at ``/`` and ``/ui/...``, served by the web view.

Rendered on the server (Jinja2, every value escaped), with no script but a
confirm on Delete and no build step, readable on a phone. Each page reads
what it shows from the JSON endpoints of this same worker over HTTP
(``/schedules``, ``/schedules/{id}``, its preview and history, ``/health``
and ``/metrics`` of every worker), with the visitor's token: the dashboard
sees exactly what the API answers, Faust routes each lookup to the owning
worker, and there is no second way into the tables. Its buttons send their
commands through ``POST /commands`` the same way, so they are validated and
acknowledged as any other command. Dead letters are read from the tail of
``firings-dead`` itself (:mod:`scheduler.ui.dead`).

Tokens: a browser cannot add a bearer header to a page it loads, so
``/ui/login`` takes a token once and keeps it in a cookie (HttpOnly,
SameSite=Strict) that the token middleware accepts on ``/ui/`` pages only
(``scheduler.webauth``). A form posted from another origin is refused
whatever SameSite does.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web as aioweb
from faust import web
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client.parser import text_string_to_metric_families

from scheduler.app import app, settings
from scheduler.domain.state import FILTERS
from scheduler.domain.timefmt import parse_utc
from scheduler.webauth import COOKIE, token_of

#: Schedules on one page of the list.
PAGE = 50
#: Instants and history events shown on a schedule's page.
SHOWN = 20
#: The actions a schedule's page has buttons for.
ACTIONS = ("pause", "resume", "trigger", "delete")
#: How long a page waits for a worker's answer.
ANSWER_TIMEOUT = aiohttp.ClientTimeout(total=10)
#: How long the dashboard's sign-in lasts.
COOKIE_HOURS = 12
#: What the cluster page shows of each worker's metrics: label -> metric name.
FIGURES = {
    "Timers pending": "scheduler_timer_pending",
    "Firings held": "scheduler_firings_held",
    "Retries held": "scheduler_retries_held",
    "Consumer lag": "scheduler_consumer_lag",
}

_pages = Environment(
    loader=PackageLoader("scheduler.ui"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class ApiError(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


def _token(request: aioweb.Request) -> str | None:
    return token_of(request.headers.get("Authorization")) or request.cookies.get(COOKIE)


async def _api(
    request: aioweb.Request,
    method: str,
    path: str,
    *,
    base: str | None = None,
    text: bool = False,
    **kwargs: Any,
) -> Any:
    """Ask a worker's web view (this one by default) as the visitor, with their token."""
    token = _token(request)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = (base or str(app.conf.canonical_url)).rstrip("/") + path
    async with app.http_client.request(
        method, url, headers=headers, timeout=ANSWER_TIMEOUT, **kwargs
    ) as response:
        if text:
            if response.status >= 400:
                raise ApiError(response.status, await response.text())
            return await response.text()
        body = await response.json(content_type=None)
        if response.status >= 400:
            raise ApiError(response.status, body)
        return body


def _page(template: str, status: int = 200, **values: Any) -> aioweb.Response:
    body = _pages.get_template(template).render(app_id=settings.app_id, **values)
    return aioweb.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _see(location: str) -> aioweb.Response:
    return aioweb.Response(status=303, headers={"Location": location})


def _problem(exc: ApiError) -> aioweb.Response:
    detail = exc.body.get("detail", exc.body) if isinstance(exc.body, dict) else exc.body
    return _page("base.html", status=exc.status, notice=f"{exc.status}: {detail}")


@app.page("/ui/schedules")
class SchedulesPage(web.View):
    """The list: filters on the client fields, status and name; a page at a time."""

    async def get(self, request: aioweb.Request) -> aioweb.Response:
        filters = {name: request.query[name] for name in FILTERS if request.query.get(name)}
        after = request.query.get("after") or None
        query = {**filters, "limit": str(PAGE), **({"after": after} if after else {})}
        try:
            body = await _api(request, "GET", "/schedules", params=query)
        except ApiError as exc:
            return _problem(exc)
        following = body.get("next")
        return _page(
            "schedules.html",
            section="schedules",
            schedules=body["schedules"],
            filters=filters,
            after=after,
            first_page="/ui/schedules?" + urlencode(filters),
            next_page="/ui/schedules?" + urlencode({**filters, "after": following})
            if following
            else None,
            notice=None
            if body["schedules"] or not following
            else "No match among the schedules read for this page; the next page goes on.",
        )


@app.page("/ui/schedules/{schedule_id}")
class SchedulePage(web.View):
    """One schedule: its state, next instants, history and command, with its buttons."""

    async def get(self, request: aioweb.Request, schedule_id: str) -> aioweb.Response:
        try:
            item = await _api(request, "GET", f"/schedules/{schedule_id}")
            preview = await _api(
                request, "GET", f"/schedules/{schedule_id}/preview", params={"count": SHOWN}
            )
            history = await _api(
                request, "GET", f"/schedules/{schedule_id}/history", params={"limit": SHOWN}
            )
        except ApiError as exc:
            return _problem(exc)
        kept = bool((item.get("task") or {}).get("history_check"))
        done = request.query.get("done")
        return _page(
            "schedule.html",
            section="schedules",
            item=item,
            preview=preview["instants"],
            history=[_with_lateness(event) for event in history["events"]],
            history_kept=kept,
            command_json=json.dumps(item.get("task"), indent=2, ensure_ascii=False),
            notice=f"{done} sent; the page shows it once the worker has applied it."
            if done in ACTIONS
            else None,
        )


@app.page("/ui/schedules/{schedule_id}/{action}")
class ScheduleAction(web.View):
    """A button: the action as a command, through ``POST /commands``."""

    async def post(self, request: aioweb.Request, schedule_id: str, action: str) -> Any:
        if action not in ACTIONS:
            return _page("base.html", status=404, notice=f"no action {action!r}")
        if not _same_origin(request):
            return _page("base.html", status=403, notice="a form from another site was refused")
        try:
            item = await _api(request, "GET", f"/schedules/{schedule_id}")
            command = {"action": action, "client": item["client"]}
            await _api(request, "POST", "/commands", data=json.dumps(command).encode())
        except ApiError as exc:
            return _problem(exc)
        if action == "delete":
            return _see("/ui/schedules?" + urlencode({"deleted": schedule_id}))
        return _see(f"/ui/schedules/{schedule_id}?done={action}")


@app.page("/ui/dead-letters")
class DeadLettersPage(web.View):
    async def get(self, request: aioweb.Request) -> aioweb.Response:
        from scheduler.ui import dead

        letters = await dead.latest()
        return _page("dead.html", section="dead", letters=letters, topic=dead.topic_name())


@app.page("/ui/cluster")
class ClusterPage(web.View):
    """Every worker: its state, the partitions it owns, and a few of its gauges."""

    async def get(self, request: aioweb.Request) -> aioweb.Response:
        own = str(app.conf.canonical_url).rstrip("/")
        urls = sorted({own, *(str(url).rstrip("/") for url in app.router.tables_metadata())})
        workers = await asyncio.gather(*(_worker(request, url) for url in urls))
        owned = {p for worker in workers for p in worker["partitions"]}
        return _page(
            "cluster.html",
            section="cluster",
            workers=workers,
            figures=list(FIGURES),
            partitions=settings.partitions,
            unowned=[p for p in range(settings.partitions) if p not in owned],
        )


async def _worker(request: aioweb.Request, url: str) -> dict[str, Any]:
    try:
        health = await _api(request, "GET", "/health", base=url)
    except (ApiError, OSError, TimeoutError, aiohttp.ClientError) as exc:
        return {"url": url, "ready": False, "state": f"unreachable: {exc}", "partitions": [],
                "figures": {}}  # fmt: skip
    figures: dict[str, str] = {}
    try:
        text = await _api(request, "GET", "/metrics", base=url, text=True)
        sums: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
        figures = {label: f"{sums[name]:g}" for label, name in FIGURES.items() if name in sums}
    except (ApiError, OSError, ValueError, TimeoutError, aiohttp.ClientError):
        pass  # the figures are extras; the worker row stands without them
    if health.get("rebalancing"):
        state = "rebalancing"
    else:
        state = "ready" if health.get("ready") else "recovering"
    return {
        "url": url,
        "ready": bool(health.get("ready")),
        "state": state,
        "partitions": health.get("active_partitions") or [],
        "figures": figures,
    }


@app.page("/ui/login")
class LoginPage(web.View):
    async def get(self, request: aioweb.Request) -> aioweb.Response:
        return _page("login.html", next=_local_path(request.query.get("next")))

    async def post(self, request: aioweb.Request) -> aioweb.Response:
        if not _same_origin(request):
            return _page("base.html", status=403, notice="a form from another site was refused")
        form = await request.post()
        token = str(form.get("token") or "")
        if not settings.web_token_list():
            return _see(_local_path(str(form.get("next") or "")))
        from scheduler.webauth import accepted

        if not accepted(token, settings.web_token_list()):
            return _page("login.html", status=401, next=form.get("next"), notice="wrong token")
        response = _see(_local_path(str(form.get("next") or "")))
        # Secure whenever the visitor came over HTTPS, a proxy's TLS included; for
        # a working day, not for ever.
        https = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        response.set_cookie(
            COOKIE,
            token,
            httponly=True,
            samesite="Strict",
            path="/ui/",
            secure=https,
            max_age=COOKIE_HOURS * 3600,
        )
        return response


def _local_path(path: str | None) -> str:
    """Where to go after signing in: a path of this dashboard, never another site."""
    if path and path.startswith("/ui/") and not path.startswith("//"):
        return path
    return "/ui/schedules"


def _same_origin(request: aioweb.Request) -> bool:
    """Whether a form came from this site: its Origin, or failing that its Referer,
    names this host (``webauth`` already refused a foreign Origin)."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin is None  # no header: not a browser form post from elsewhere
    return urlsplit(origin).netloc == request.host


def _with_lateness(event: dict[str, Any]) -> dict[str, Any]:
    """A history event with how late it came after its instant, when it has one."""
    instant, at = event.get("scheduled_for"), event.get("at")
    if event.get("event") in ("succeeded", "failed", "dead") and instant and at:
        try:
            late = (parse_utc(at) - parse_utc(instant)).total_seconds()
            return {**event, "late": f"{late:.3f} s"}
        except ValueError:
            pass
    return event
