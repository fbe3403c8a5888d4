"""Which HTTP client for the REST executor: ours, aiohttp or httpx, measured here.

Runs a local aiohttp server in its own process and, from this process,
sends the same number of JSON POSTs with each client at the same
concurrency, through one pooled session each, and counts this process's
CPU time per POST (the server's is not counted). Writes the table to
``bench/results/http_clients.md``.

    .venv/bin/python bench/http_clients.py [--requests 5000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import httpx

RESULTS = Path(__file__).parent / "results" / "http_clients.md"
BODY = json.dumps({"instanceName": "bench", "variables": {"n": 1}}).encode()


def serve(port: int) -> None:
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def with_aiohttp(url: str, total: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate, session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
                assert response.status == 200

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return time.perf_counter() - start


async def with_http1(url: str, total: int, concurrency: int) -> float:
    from scheduler.targets.http1 import HttpClient

    client = HttpClient()
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            status, _ = await client.post(url, BODY, HEADERS, 10)
            assert status == 200

    try:
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return time.perf_counter() - start
    finally:
        await client.close()


async def with_httpx(url: str, total: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                response = await client.post(url, content=BODY, headers=HEADERS)
                assert response.status_code == 200

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return time.perf_counter() - start


HEADERS = {"Content-Type": "application/json", "Idempotency-Key": "fir_bench", "X-Attempt": "1"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port,), daemon=True)
    server.start()
    deadline = time.monotonic() + 10
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/hook"
    rows = []
    try:
        clients = (
            ("scheduler.targets.http1", with_http1),
            ("aiohttp", with_aiohttp),
            ("httpx", with_httpx),
        )
        for name, run in clients:
            asyncio.run(run(url, 200, args.concurrency))  # warm up
            cpu = time.process_time()
            seconds = asyncio.run(run(url, args.requests, args.concurrency))
            cpu_us = (time.process_time() - cpu) / args.requests * 1e6
            rows.append((name, args.requests, seconds, args.requests / seconds, cpu_us))
            rate = args.requests / seconds
            print(f"{name:16} {args.requests} POSTs in {seconds:.2f}s: {rate:,.0f}/s", end="")
            print(f", {cpu_us:.0f} µs CPU each")
    finally:
        server.terminate()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# REST executor client: scheduler.targets.http1 vs aiohttp vs httpx",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({os.cpu_count()} cores, Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, httpx {httpx.__version__}); "
        f"local aiohttp server in another process, {args.concurrency} requests in flight.",
        "",
        "Command: `.venv/bin/python bench/http_clients.py`",
        "",
        "| client | POSTs | seconds | POST/s | client CPU per POST |",
        "|---|---:|---:|---:|---:|",
        *(f"| {n} | {r} | {s:.2f} | {rate:,.0f} | {cpu:.0f} µs |" for n, r, s, rate, cpu in rows),
        "",
    ]
    RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
