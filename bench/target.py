"""The HTTP target every system delivers to, in its own process.

Lateness is measured here, not by the system under test: each request is
recorded with its arrival time (``time.time()`` when the handler starts)
beside the instant it was scheduled for and its identity. Our service sends
the instant in ``X-Scheduled-For`` and the identity in ``Idempotency-Key`` /
``X-Schedule-Id``; the peers send ``{"scheduled_for", "firing_id",
"schedule_id"}`` in the JSON body.

    POST /hook/{run}     a delivery, recorded under ``run``; answers 200
    GET  /count/{run}    {"count": n}
    GET  /dump/{run}     {"records": [[arrival, scheduled, firing_id, schedule_id], ...]}
    DELETE /runs/{run}   forget a run

The Kafka target (``bench.kafka_target``) serves the same read endpoints.

    python -m bench.target --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench import procs

Record = tuple[float, str, str, str]
"""(arrival epoch seconds, scheduled instant as sent, firing id, schedule id)."""


def epoch(text: str | float) -> float:
    """Seconds since the epoch of an ISO-8601 instant (``Z`` or an offset) or a number."""
    if isinstance(text, int | float):
        return float(text)
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Recorder:
    """Deliveries per run; parsing is left to the dump so that recording stays cheap."""

    def __init__(self) -> None:
        self.runs: dict[str, list[Record]] = {}

    def add(self, run: str, record: Record) -> None:
        found = self.runs.get(run)
        if found is None:
            found = self.runs[run] = []
        found.append(record)

    def count(self, run: str) -> int:
        return len(self.runs.get(run, ()))

    def records(self, run: str) -> list[Record]:
        return self.runs.get(run, [])

    def routes(self, app: web.Application) -> None:
        async def count(request: web.Request) -> web.Response:
            return web.json_response({"count": self.count(request.match_info["run"])})

        async def dump(request: web.Request) -> web.Response:
            records = self.records(request.match_info["run"])
            rows = []
            for arrival, scheduled, firing, schedule in records:
                try:
                    when = epoch(scheduled)
                except (ValueError, TypeError):
                    when = float("nan")
                rows.append([arrival, when, firing, schedule])
            return web.json_response({"records": rows}, dumps=json.dumps)

        async def forget(request: web.Request) -> web.Response:
            self.runs.pop(request.match_info["run"], None)
            return web.json_response({"ok": True})

        app.router.add_get("/count/{run}", count)
        app.router.add_get("/dump/{run}", dump)
        app.router.add_delete("/runs/{run}", forget)


def http_app(recorder: Recorder) -> web.Application:
    async def hook(request: web.Request) -> web.Response:
        arrival = time.time()
        headers = request.headers
        scheduled = headers.get("X-Scheduled-For")
        body = await request.read()
        if scheduled is not None:
            firing = headers.get("Idempotency-Key", "")
            schedule = headers.get("X-Schedule-Id", "")
        else:
            data = json.loads(body)
            scheduled = data["scheduled_for"]
            firing = str(data.get("firing_id", ""))
            schedule = str(data.get("schedule_id", ""))
        recorder.add(request.match_info["run"], (arrival, scheduled, firing, schedule))
        return web.Response(text="ok")

    app = web.Application(client_max_size=1024**2)
    app.router.add_post("/hook/{run}", hook)
    recorder.routes(app)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(
        http_app(Recorder()),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        backlog=4096,
    )


class Control:
    """The bench's side of a target process: start it, read what it recorded."""

    def __init__(self, port: int) -> None:
        self.port = port

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _get(self, path: str, timeout: float = 120) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(self.base + path, timeout=aiohttp.ClientTimeout(total=timeout)) as resp,
        ):
            resp.raise_for_status()
            return await resp.json()

    async def count(self, run: str) -> int:
        return int((await self._get(f"/count/{run}", 10))["count"])

    async def dump(self, run: str) -> list[tuple[float, float, str, str]]:
        rows = (await self._get(f"/dump/{run}"))["records"]
        return [(float(a), float(s), str(f), str(k)) for a, s, f, k in rows]

    async def forget(self, run: str) -> None:
        async with aiohttp.ClientSession() as session, session.delete(f"{self.base}/runs/{run}"):
            pass

    async def wait_count(self, run: str, count: int, timeout: float) -> int:
        """Wait until ``count`` deliveries of ``run`` arrived, or ``timeout``; the count seen."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            seen = await self.count(run)
            if seen >= count:
                return seen
            await asyncio.sleep(0.25)
        return seen


class HttpTarget(Control):
    """``python -m bench.target`` in its own process group."""

    def __init__(self, log: Path) -> None:
        super().__init__(procs.free_port())
        self.proc = procs.spawn(
            [procs.PYTHON, "-m", "bench.target", "--port", str(self.port)], log=log
        )
        procs.wait_port(self.port, self.proc, 30, "HTTP target")

    def url(self, run: str) -> str:
        return f"{self.base}/hook/{run}"

    def stop(self) -> None:
        procs.kill(self.proc)


if __name__ == "__main__":
    main()
