"""Bearer tokens for the web view (``SCHEDULER_WEB_TOKENS``), as an aiohttp middleware.

With tokens configured, every request but those ``OPEN`` lists must carry
``Authorization: Bearer <one of them>``, else it is answered 401 with a
JSON body in the web view's error shape. Tokens are compared in constant
time. A lookup Faust routes to the worker that owns the key carries the
caller's headers, token included, and the list fan-out passes it on
(``scheduler.web``), so one token works against any worker.

The dashboard's pages (``/ui/...``, ``scheduler.ui``) also take the token
from the cookie ``/ui/login`` sets, since a browser cannot add a header to
a page it loads; only there, so a cookie never opens the JSON API to a
page of another site. ``/`` is sent to the dashboard.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

#: Open without a token: what a load balancer or an orchestrator probes, and
#: the dashboard's sign-in form.
OPEN = frozenset(
    {("GET", "/health"), ("HEAD", "/health"), ("GET", "/ui/login"), ("POST", "/ui/login")}
    # The API's description (scheduler.openapi): it holds no data, and says how to authenticate.
    | {("GET", "/openapi.json"), ("HEAD", "/openapi.json")}
)
#: The cookie the dashboard keeps the visitor's token in.
COOKIE = "scheduler_token"
#: Where that cookie counts.
COOKIE_PATHS = "/ui/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def same_origin(request: web.Request) -> bool:
    """Whether a request is not a browser's from another site: no ``Origin`` (not a
    browser page), or one naming this very host and port."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.host


def token_of(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def accepted(token: str | None, tokens: tuple[str, ...]) -> bool:
    if token is None:
        return False
    # Every token compared, each in constant time: no early exit tells which matched.
    matches = [hmac.compare_digest(token.encode(), known.encode()) for known in tokens]
    return any(matches)


def middleware(tokens: tuple[str, ...]) -> Any:
    """The aiohttp middleware that enforces ``tokens`` (none: everything is open)."""

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/" and request.method in ("GET", "HEAD"):
            raise web.HTTPFound("/ui/schedules")  # Faust's own index says only "OK"
        if request.method not in ("GET", "HEAD", "OPTIONS") and not same_origin(request):
            # A page of another site posting here through a visitor's browser
            # (which sends Origin): a command in their name, tokens or not.
            return web.json_response(
                {"error": "cross_origin", "detail": "a request from another site's page"},
                status=403,
            )
        if not tokens or (request.method, request.path) in OPEN:
            return await handler(request)
        if accepted(token_of(request.headers.get("Authorization")), tokens):
            return await handler(request)
        if request.path.startswith(COOKIE_PATHS):
            if accepted(request.cookies.get(COOKIE), tokens):
                return await handler(request)
            raise web.HTTPFound("/ui/login?" + urlencode({"next": request.path_qs}))
        return web.json_response(
            {
                "error": "unauthorized",
                "detail": "this endpoint needs Authorization: Bearer <token> "
                "(one of SCHEDULER_WEB_TOKENS)",
            },
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="scheduler"'},
        )

    return require_token
