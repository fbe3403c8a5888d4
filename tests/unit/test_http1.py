"""The REST delivery client against real local servers: aiohttp's, and raw sockets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from scheduler.targets.http1 import HttpClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def aiohttp_server() -> AsyncIterator[tuple[str, list[dict[str, object]]]]:
    """A real aiohttp server on a free port; it records each request and its client port."""
    seen: list[dict[str, object]] = []

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen.append(
            {
                "path": request.path_qs,
                "headers": dict(request.headers),
                "body": await request.read(),
                "port": peer[1] if peer else None,
            }
        )
        status = int(request.query.get("status", "200"))
        return web.Response(status=status, text="x" * 3000)

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def raw_server(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await reader.readexactly(length)


async def test_posts_body_and_headers_and_reuses_the_connection(
    aiohttp_server: tuple[str, list[dict[str, object]]],
) -> None:
    url, seen = aiohttp_server
    client = HttpClient()
    try:
        headers = {"Content-Type": "application/json", "idempotency-key": "theirs", "X-Team": "a"}
        own = {"Idempotency-Key": "fir_1"}
        first = await client.post(f"{url}/run?x=1", b'{"job": 1}', headers, 5, own=own)
        second = await client.post(f"{url}/run?x=2", b'{"job": 2}', headers, 5, own=own)
        failed = await client.post(f"{url}/run?status=503", b"{}", headers, 5, own=own)
    finally:
        await client.close()
    assert first == (200, "OK") and second == (200, "OK")
    assert failed == (503, "Service Unavailable")
    assert [s["path"] for s in seen] == ["/run?x=1", "/run?x=2", "/run?status=503"]
    assert seen[0]["body"] == b'{"job": 1}'
    sent = seen[0]["headers"]
    assert isinstance(sent, dict)
    # Ours wins: the command's own copy (in another case) is not sent beside it.
    assert sent["Idempotency-Key"] == "fir_1" and sent["X-Team"] == "a"
    assert [k for k in sent if k.lower() == "idempotency-key"] == ["Idempotency-Key"]
    assert sent["Host"] == url.removeprefix("http://")
    assert sent["User-Agent"] == "kafka-scheduler"
    # Kept alive: all three went over one connection (one client port).
    assert len({s["port"] for s in seen}) == 1


async def test_reads_chunked_and_close_delimited_bodies_and_skips_interim_responses() -> None:
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
        b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 500 Broken\r\n\r\nno length: read to the close",
    ]
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while answers:
            await read_request(reader)
            answer = answers.pop(0)
            writer.write(answer)
            await writer.drain()
            if answer.startswith(b"HTTP/1.0"):
                writer.close()
                return

    server, url = await raw_server(handler)
    client = HttpClient()
    try:
        assert await client.post(url, b"{}", {}, 5) == (201, "Created")
        assert await client.post(url, b"{}", {}, 5) == (202, "Accepted")
        assert await client.post(url, b"{}", {}, 5) == (500, "Broken")
    finally:
        await client.close()
        server.close()
    assert connections == 1


async def test_an_idle_connection_closed_by_the_server_is_replaced() -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        await read_request(reader)
        requests += 1
        # Answer as if keeping the connection alive, then close it anyway.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server, url = await raw_server(handler)
    client = HttpClient()
    try:
        assert await client.post(url, b"{}", {}, 5) == (200, "OK")
        await asyncio.sleep(0.1)
        assert await client.post(url, b"{}", {}, 5) == (200, "OK")
    finally:
        await client.close()
        server.close()
    assert requests == 2


async def test_a_hanging_server_times_out_and_a_refused_one_is_an_os_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    server, url = await raw_server(handler)
    client = HttpClient()
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(TimeoutError):
            await client.post(url, b"{}", {}, 0.3)
        assert asyncio.get_running_loop().time() - started < 2
        server.close()
        await server.wait_closed()
        with pytest.raises(OSError):
            await client.post(url, b"{}", {}, 5)
    finally:
        await client.close()


async def test_basic_auth_from_the_url_and_the_urls_host_over_a_commands_own() -> None:
    """The Host is the URL's, the one the egress policy judged: a command's own
    is dropped (behind a shared ingress it would reach another service)."""
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    server, url = await raw_server(handler)
    client = HttpClient()
    try:
        with_user = url.replace("http://", "http://al%40ice:s3cret@")
        assert await client.post(with_user, b"{}", {"Host": "api.example"}, 5) == (
            204,
            "No Content",
        )
    finally:
        await client.close()
        server.close()
    head = heads[0].decode()
    assert "Authorization: Basic " + base64.b64encode(b"al@ice:s3cret").decode() in head
    assert f"Host: {url.removeprefix('http://')}\r\n" in head and head.count("Host:") == 1


async def test_refuses_header_injection_and_non_http_urls() -> None:
    client = HttpClient()
    with pytest.raises(ValueError, match="invalid request header"):
        await client.post("http://127.0.0.1:9/x", b"{}", {"X-A": "1\r\nX-Evil: 2"}, 1)
    # A name that is not an HTTP token (a trailing space would dodge a framing filter).
    with pytest.raises(ValueError, match="invalid request header"):
        await client.post("http://127.0.0.1:9/x", b"{}", {"Transfer-Encoding ": "chunked"}, 1)
    with pytest.raises(ValueError, match="not an http"):
        await client.post("ftp://127.0.0.1/x", b"{}", {}, 1)


async def answered(answer: bytes, url_path: str = "/x") -> tuple[object, list[bytes], int]:
    """POST once to a raw server that answers ``answer``; the outcome, what it got, and
    how many connections it saw for a second POST (1: the first was reused)."""
    heads: list[bytes] = []
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                heads.append(await read_request(reader))
                writer.write(answer if len(heads) == 1 else b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server, url = await raw_server(handler)
    client = HttpClient()
    try:
        try:
            outcome: object = await client.post(url + url_path, b"{}", {}, 5)
        except Exception as exc:
            outcome = exc
        await client.post(url + "/again", b"{}", {}, 5)
    finally:
        await client.close()
        server.close()
    return outcome, heads, connections


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 2000000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
    ],
)
async def test_a_malformed_response_fails_and_its_connection_is_never_reused(
    answer: bytes,
) -> None:
    outcome, _, connections = await answered(answer)
    assert isinstance(outcome, ConnectionError), outcome
    assert "malformed HTTP response" in str(outcome)
    assert connections == 2  # the second POST had to open a new connection


async def test_an_endless_chunk_size_line_fails_fast_instead_of_being_scanned_again() -> None:
    """16 MiB of chunk-size digits with no line end: refused once past the head limit,
    not kept whole and searched again on every read."""
    started = asyncio.get_running_loop().time()
    outcome, _, _ = await answered(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * (16 * 2**20)
    )
    assert isinstance(outcome, ConnectionError), outcome
    assert asyncio.get_running_loop().time() - started < 2.0


async def test_the_path_is_percent_encoded_and_a_non_ascii_host_goes_out_as_idna() -> None:
    _, heads, _ = await answered(
        b"HTTP/1.1 204 No Content\r\n\r\n", url_path="/a b/caf\u00e9?q=x y"
    )
    assert heads[0].startswith(b"POST /a%20b/caf%C3%A9?q=x%20y HTTP/1.1\r\n"), heads[0][:80]
    from scheduler.targets.http1 import _parse_url

    target = _parse_url("http://b\u00fccher.example/x")
    assert target.fixed[0] == (b"Host", b"xn--bcher-kva.example")
