"""The REST delivery client: POST over kept-alive connections, HTTP/1.1 framing by h11.

Why not aiohttp's client here: it spends more CPU per POST on its own
machinery than everything else a firing costs, so a worker could not deliver
2,000 REST firings a second (measured in bench/, see bench/RESULTS.md). A
delivery needs little of what it offers: one POST with a body and headers,
the status back, the body read and dropped. The HTTP/1.1 itself (writing
the request, reading the response's framing) is h11's: a hand-written parser
here accepted what it should refuse (an endless chunk-size line kept whole
and scanned again on every read, negative, doubled or conflicting
Content-Length, Content-Length beside chunked, seven-digit status codes).
h11 costs about 56 µs a request and response on this machine (28 µs of it
the response).

What this client does:

- one request at a time per connection, connections kept alive and reused
  per origin (scheme, host, port); ``http`` and ``https`` (the system's
  default certificate checks); the connection goes to an address the egress
  policy allowed (``scheduler.targets.egress``);
- the path is percent-encoded where it must be and a name outside ASCII is
  sent in its IDNA form;
- the response body is read to its end and dropped; interim ``1xx``
  responses are skipped; a malformed response fails the delivery and its
  connection is closed, never reused; a head (or chunk line) over
  ``MAX_HEAD`` is malformed;
- ``user:password@`` in the URL becomes basic authentication, as aiohttp did;
- redirects are not followed: a 3xx is returned like any other status;
- a kept-alive connection the server had already closed when it was reused
  (no byte of a response came back) is retried once on a new connection,
  as browsers do; any other failure is the caller's.

Header names that are not HTTP tokens and values with a line break are
refused (``ValueError``); the delivery headers are ours, and a command's
own copies of them (or of the framing headers), in any case, are dropped.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import h11

from scheduler.domain.secrets import masked_url
from scheduler.targets.egress import Policy, resolve

#: Idle connections kept per origin.
MAX_IDLE = 256
#: Idle connections kept in all, over every origin.
MAX_IDLE_TOTAL = 1_024
#: Seconds an idle connection is kept before it is closed.
IDLE_S = 60.0
#: The longest response head (and chunk-size or trailer line) read; past it,
#: the response is malformed rather than buffered and scanned again.
MAX_HEAD = 64 * 1024
USER_AGENT = "kafka-scheduler"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go, and what every request to it carries."""

    scheme: str
    host: str
    port: int
    path: bytes
    """The request target: the URL's path and query, percent-encoded."""
    fixed: tuple[tuple[bytes, bytes], ...]
    """``Host`` (the name in IDNA form) and, from ``user:password@``, ``Authorization``."""


class StaleConnection(ConnectionError):
    """A reused connection closed before any byte of the response: safe to retry once."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, its HTTP/1.1 state (h11), and the response it awaits."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HEAD)
        self._waiter: asyncio.Future[tuple[int, str, bool]] | None = None
        self._closed = False
        self._got_bytes = False
        self._status = 0
        self._reason = ""
        self.reused = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for: do not reuse
            return
        self._got_bytes = True
        self._feed(data)

    def eof_received(self) -> bool | None:
        if self._waiter is not None:
            self._feed(b"")  # the end of a body read to the close
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            if self.reused and not self._got_bytes:
                self._fail(StaleConnection("connection closed by the server before a response"))
            else:
                reason = f": {exc}" if exc else ""
                self._fail(ConnectionError(f"connection closed mid-response{reason}"))

    # -- requests ------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()

    def send(self, request: h11.Request, body: bytes) -> asyncio.Future[tuple[int, str, bool]]:
        """Write the request (h11 checks every header name and value) and await its answer."""
        assert self.transport is not None
        data = (
            self._h11.send(request)
            + self._h11.send(h11.Data(data=body))
            + self._h11.send(h11.EndOfMessage())
        )
        self._waiter = asyncio.get_running_loop().create_future()
        self._got_bytes = False
        self.transport.write(data)
        return self._waiter

    def close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()

    # -- the response ----------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        try:
            self._h11.receive_data(data)
            while self._waiter is not None:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    return
                self._on(event)
        except h11.RemoteProtocolError as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))

    def _on(self, event: object) -> None:
        if isinstance(event, h11.InformationalResponse):
            return  # interim (100 Continue, 103 Early Hints): the real one follows
        if isinstance(event, h11.Response):
            names = {name for name, _ in event.headers}
            if b"transfer-encoding" in names and b"content-length" in names:
                # Two framings: which one a proxy on the way believed is unknown.
                raise h11.RemoteProtocolError("both Content-Length and Transfer-Encoding")
            self._status = event.status_code
            self._reason = event.reason.decode("latin-1", errors="replace")
        elif isinstance(event, h11.EndOfMessage):
            keep = self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE
            if keep:
                self._h11.start_next_cycle()
            self._finish(keep)
        elif isinstance(event, h11.ConnectionClosed):
            raise h11.RemoteProtocolError("connection closed mid-response")
        # h11.Data: the body, read and dropped.

    def _finish(self, keep: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if not keep:
            self.close()
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, self._reason, keep))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


class HttpClient:
    """Kept-alive connections per origin, and :meth:`post`."""

    def __init__(self, policy: Policy | None = None) -> None:
        #: Where it may connect (``scheduler.targets.egress``).
        self.policy = policy or Policy()
        #: Per origin, its idle connections, each with when it became idle.
        self._idle: dict[tuple[str, str, int], list[tuple[_Connection, float]]] = {}
        self._idle_count = 0
        self._targets: dict[str, Target] = {}
        self._ssl: ssl.SSLContext | None = None

    def target(self, url: str) -> Target:
        """The parsed form of ``url``, cached (a schedule posts to the same URL each time)."""
        found = self._targets.get(url)
        if found is None:
            found = self._targets[url] = _parse_url(url)
            if len(self._targets) > 10_000:
                self._targets.clear()
        return found

    async def post(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        timeout: float,
        own: dict[str, str] | None = None,
    ) -> tuple[int, str]:
        """POST ``body`` with the command's ``headers`` and our ``own`` (which win);
        the status and reason of the response, its body read and dropped."""
        target = self.target(url)
        request = _request(target, len(body), headers, own or {})
        async with asyncio.timeout(timeout):
            try:
                return await self._exchange(target, request, body, reuse=True)
            except StaleConnection:
                return await self._exchange(target, request, body, reuse=False)

    async def _exchange(
        self, target: Target, request: h11.Request, body: bytes, *, reuse: bool
    ) -> tuple[int, str]:
        origin = (target.scheme, target.host, target.port)
        connection = self._take_idle(origin) if reuse else None
        if connection is None:
            connection = await self._connect(target)
        else:
            connection.reused = True
        try:
            status, reason, keep = await connection.send(request, body)
        except BaseException:
            connection.close()  # cancelled (timeout) or failed: never reused mid-response
            raise
        if keep and connection.usable:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < MAX_IDLE and self._idle_count < MAX_IDLE_TOTAL:
                idle.append((connection, time.monotonic()))
                self._idle_count += 1
            else:
                connection.close()
        return status, reason

    def _take_idle(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        fresh = time.monotonic() - IDLE_S
        while idle:
            connection, since = idle.pop()
            self._idle_count -= 1
            if connection.usable and since >= fresh:
                return connection
            connection.close()
        return None

    def reap(self) -> int:
        """Close connections idle for more than ``IDLE_S``; forget origins left with none."""
        fresh = time.monotonic() - IDLE_S
        closed = 0
        for origin, idle in list(self._idle.items()):
            keep = [(c, since) for c, since in idle if since >= fresh and c.usable]
            for connection, since in idle:
                if since < fresh or not connection.usable:
                    connection.close()
                    closed += 1
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]
        self._idle_count -= closed
        return closed

    @property
    def idle_connections(self) -> int:
        return self._idle_count

    async def _connect(self, target: Target) -> _Connection:
        loop = asyncio.get_running_loop()
        context: Any = None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        # Connected to an address that was checked, not to the name again.
        addresses = await resolve(target.host, target.port, self.policy)
        failure: OSError | None = None
        for address in addresses:
            try:
                _, connection = await loop.create_connection(
                    _Connection,
                    address,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context else None,
                )
                return connection
            except OSError as exc:
                failure = exc
        raise failure or OSError(f"{target.host} resolved to no address")

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection, _ in idle:
                connection.close()
        self._idle.clear()
        self._idle_count = 0


def _parse_url(url: str) -> Target:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {masked_url(url)!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    host = parts.hostname
    try:
        # A name outside ASCII goes out in its IDNA form, as a browser sends it.
        ascii_host = host if host.isascii() else host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise ValueError(f"host {host!r} has no IDNA form: {exc}") from None
    shown = f"[{ascii_host}]" if ":" in ascii_host else ascii_host
    if parts.port is not None:
        shown = f"{shown}:{parts.port}"
    # Percent-encoded as needed (a space or a non-ASCII letter in the path);
    # what is encoded already stays as it is.
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path = f"{path}?{quote(parts.query, safe=_QUERY_SAFE)}"
    fixed = [(b"Host", shown.encode("ascii"))]
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        fixed.append((b"Authorization", b"Basic " + base64.b64encode(secret.encode())))
    return Target(scheme, ascii_host, port, path.encode("ascii"), tuple(fixed))


_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUERY_SAFE = _PATH_SAFE + "?"

#: Headers this client writes itself; a command's own copies (in any case) are dropped.
OWN = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "idempotency-key",
        "x-schedule-id",
        "x-scheduled-for",
        "x-attempt",
    }
)


def _request(
    target: Target, length: int, headers: dict[str, str], own: dict[str, str]
) -> h11.Request:
    """The request for ``target``: the command's ``headers``, then ``own`` (ours).

    A command header named like one of ours, like the framing or ``Host`` (in
    any case) is dropped: the ``Host`` is the URL's, the one the egress policy
    judged. A command's ``Authorization`` replaces the URL's ``user:password``.
    A name that is not an HTTP token or a value with a line break is refused
    (``ValueError``).
    """
    taken = OWN | {name.lower() for name in own}
    lines: list[tuple[bytes, bytes]] = [target.fixed[0]]
    agent = authorized = False
    for name, value in headers.items():
        lower = name.lower()
        if lower in taken:
            continue
        if not _TOKEN.fullmatch(name) or any(ch in value for ch in "\r\n\x00"):
            # Said without the value: it may be a secret read at delivery.
            raise ValueError(f"invalid request header {name[:80]!r}: not a token, or a line break")
        if lower == "user-agent":
            agent = True
        elif lower == "authorization":
            authorized = True
        lines.append((name.encode("ascii"), value.encode("utf-8")))
    if not authorized:
        lines += target.fixed[1:]  # the URL's user:password, unless a header says otherwise
    lines += [(name.encode("ascii"), value.encode("utf-8")) for name, value in own.items()]
    if not agent:
        lines.append((b"User-Agent", USER_AGENT.encode()))
    lines.append((b"Content-Length", str(length).encode()))
    try:
        return h11.Request(method="POST", target=target.path, headers=lines)
    except h11.LocalProtocolError as exc:
        raise ValueError(f"invalid request header: {exc}") from None
