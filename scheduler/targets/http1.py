"""A small HTTP/1.1 client for the REST delivery hot path: POST over kept-alive connections.

Why not aiohttp's client here: it spends more CPU per POST on its own
machinery than everything else a firing costs, so a worker could not deliver
2,000 REST firings a second (measured in bench/, see bench/RESULTS.md). A
delivery needs little of what it offers: one POST
with a body and headers, the status back, the body read and dropped.

What this client does:

- one request at a time per connection, connections kept alive and reused
  per origin (scheme, host, port); ``http`` and ``https`` (the system's
  default certificate checks);
- the response body is read to its end (``Content-Length``, chunked, or up
  to the close) and dropped; interim ``1xx`` responses are skipped;
- ``user:password@`` in the URL becomes basic authentication, as aiohttp did;
- redirects are not followed: a 3xx is returned like any other status;
- a kept-alive connection the server had already closed when it was reused
  (no byte of a response came back) is retried once on a new connection,
  as browsers do; any other failure is the caller's.

Header names and values with a line break are refused (``ValueError``):
they would let a command's headers inject lines into the request.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from scheduler.targets.egress import Policy, resolve

#: Idle connections kept per origin.
MAX_IDLE = 256
#: Idle connections kept in all, over every origin.
MAX_IDLE_TOTAL = 1_024
#: Seconds an idle connection is kept before it is closed.
IDLE_S = 60.0
USER_AGENT = "kafka-scheduler"


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's requests go, and the fixed part of their head."""

    scheme: str
    host: str
    port: int
    head: bytes
    """``POST <path> HTTP/1.1`` and the ``Host`` (and ``Authorization``) lines."""


class StaleConnection(ConnectionError):
    """A reused connection closed before any byte of the response: safe to retry once."""


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection and the response it is reading, if any."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, str, bool]] | None = None
        self._closed = False
        self._got_bytes = False
        self._state = "idle"
        self._status = 0
        self._reason = ""
        self._keep = True
        self._left = 0  # body bytes still to read (Content-Length or current chunk)
        self.reused = False

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self._closed = True  # bytes nobody asked for: do not reuse
            if self.transport is not None:
                self.transport.close()
            return
        self._got_bytes = True
        self._buffer += data
        try:
            self._parse()
        except ValueError as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))

    def eof_received(self) -> bool | None:
        if self._waiter is not None and self._state == "body_to_close":
            self._finish(keep=False)
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._waiter is not None and not self._waiter.done():
            if self._state == "body_to_close":
                self._finish(keep=False)
            elif self.reused and not self._got_bytes:
                self._fail(StaleConnection("connection closed by the server before a response"))
            else:
                reason = f": {exc}" if exc else ""
                self._fail(ConnectionError(f"connection closed mid-response{reason}"))

    # -- requests ------------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        return not self._closed and self.transport is not None and not self.transport.is_closing()

    def send(self, request: bytes) -> asyncio.Future[tuple[int, str, bool]]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._buffer.clear()
        self._got_bytes = False
        self._state = "head"
        self.transport.write(request)
        return self._waiter

    def close(self) -> None:
        self._closed = True
        if self.transport is not None:
            self.transport.close()

    # -- parsing -------------------------------------------------------------------------

    def _parse(self) -> None:
        while self._waiter is not None:
            if self._state == "head":
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > 65_536:
                        raise ValueError("response head over 64 KiB")
                    return
                head = bytes(self._buffer[:end]).decode("latin-1")
                del self._buffer[: end + 4]
                self._read_head(head)
            elif self._state == "body":
                if self._skip_left():
                    return
                self._finish(self._keep)
            elif self._state == "chunk_size":
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    return
                line = bytes(self._buffer[:end]).split(b";", 1)[0].strip()
                del self._buffer[: end + 2]
                self._left = int(line, 16)
                self._state = "chunk" if self._left else "trailer"
            elif self._state == "chunk":
                if self._skip_left():
                    return
                self._state = "chunk_end"
            elif self._state == "chunk_end":
                if len(self._buffer) < 2:
                    return
                del self._buffer[:2]
                self._state = "chunk_size"
            elif self._state == "trailer":
                end = self._buffer.find(b"\r\n")
                if end < 0:
                    return
                del self._buffer[: end + 2]
                if end == 0:
                    self._finish(self._keep)
            else:  # body_to_close: everything until the server closes
                self._buffer.clear()
                return

    def _skip_left(self) -> int:
        """Drop what has come of the ``_left`` body bytes; how many are still to come."""
        take = min(self._left, len(self._buffer))
        del self._buffer[:take]
        self._left -= take
        return self._left

    def _read_head(self, head: str) -> None:
        status_line, _, rest = head.partition("\r\n")
        version, _, tail = status_line.partition(" ")
        code, _, reason = tail.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ValueError(f"bad status line {status_line[:80]!r}")
        status = int(code)
        fields: dict[str, str] = {}
        for line in rest.split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        if 100 <= status < 200 and status != 101:
            return  # interim (100 Continue, 103 Early Hints): the real one follows
        connection = fields.get("connection", "").lower()
        self._status, self._reason = status, reason
        self._keep = "close" not in connection and (
            version == "HTTP/1.1" or "keep-alive" in connection
        )
        if status in (204, 304):
            self._finish(self._keep)
        elif "chunked" in fields.get("transfer-encoding", "").lower():
            self._state = "chunk_size"
        elif "content-length" in fields:
            self._left = int(fields["content-length"])
            self._state = "body"
            if not self._left:
                self._finish(self._keep)
        else:
            self._state = "body_to_close"
            self._keep = False

    def _finish(self, keep: bool) -> None:
        waiter, self._waiter = self._waiter, None
        self._state = "idle"
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
        self, url: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, str]:
        """POST ``body``; the status and reason of the response, its body read and dropped."""
        target = self.target(url)
        request = _request(target, body, headers)
        async with asyncio.timeout(timeout):
            try:
                return await self._exchange(target, request, reuse=True)
            except StaleConnection:
                return await self._exchange(target, request, reuse=False)

    async def _exchange(self, target: Target, request: bytes, *, reuse: bool) -> tuple[int, str]:
        origin = (target.scheme, target.host, target.port)
        connection = self._take_idle(origin) if reuse else None
        if connection is None:
            connection = await self._connect(target)
        else:
            connection.reused = True
        try:
            status, reason, keep = await connection.send(request)
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
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    host = parts.hostname
    shown = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        shown = f"{shown}:{parts.port}"
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    lines = [f"POST {path} HTTP/1.1", f"Host: {shown}"]
    if parts.username is not None:
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        lines.append("Authorization: Basic " + base64.b64encode(secret.encode()).decode())
    head = "\r\n".join(lines) + "\r\n"
    _check(head.replace("\r\n", ""))
    return Target(scheme, host, port, head.encode("latin-1", errors="strict"))


#: Headers this client writes itself: a command's own copies are dropped.
_FRAMING = frozenset({"content-length", "transfer-encoding"})


def _request(target: Target, body: bytes, headers: dict[str, str]) -> bytes:
    lines = []
    head = target.head
    agent = True
    for name, value in headers.items():
        _check(name)
        _check(value)
        lower = name.lower()
        if lower in _FRAMING:
            continue
        if lower == "host":
            # The command's own Host wins over the URL's.
            kept = (line for line in head.split(b"\r\n") if not line.startswith(b"Host:"))
            head = b"\r\n".join(kept)
        elif lower == "user-agent":
            agent = False
        lines.append(f"{name}: {value}\r\n")
    if agent:
        lines.append(f"User-Agent: {USER_AGENT}\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n\r\n")
    return head + "".join(lines).encode("utf-8") + body


def _check(text: str) -> None:
    if "\r" in text or "\n" in text:
        raise ValueError(f"line break in an HTTP header: {text[:80]!r}")
