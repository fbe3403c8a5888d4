"""APScheduler 3 as a peer, in its own process: AsyncIOScheduler delivering HTTP POSTs.

Job store: ``MemoryJobStore`` or ``SQLAlchemyJobStore`` on a SQLite file.
Jobs are added through APScheduler's public ``add_job``, in the process
(APScheduler is a library, so this is its "registration"); a small aiohttp
control server lets the bench ask for them:

    POST /add   {"kind": "date"|"interval", "count", "prefix", "url", "at", "spread",
                 "start", "step", "interval", "cap", "paused"}  ->  {"added", "seconds"}
    GET  /jobs  {"count": number of jobs in the store}

Delivery: APScheduler hands an executor each due job with the list of
instants it is run for (``run_times``). ``StampingExecutor`` posts one
request per instant, with the instant in the body, through one pooled
aiohttp session (as our service does), at most 256 at a time. Job
defaults are chosen to match our service: ``misfire_grace_time`` 3600 s
(APScheduler's default of 1 s would drop late firings instead of delivering
them late) and ``coalesce`` on (our ``fire_once``).

    python -m bench.aps_peer --store memory|sqlite [--db PATH] --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from apscheduler.executors.base import BaseExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

IN_FLIGHT = 256


def fire(url: str) -> None:
    """The function jobs name (and the SQLite store pickles); StampingExecutor delivers."""


class Deliverer:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.failures = 0

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=IN_FLIGHT, limit_per_host=IN_FLIGHT)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def post(self, url: str, job_id: str, run_time: datetime) -> None:
        when = run_time.astimezone(UTC).isoformat(timespec="microseconds")
        body = {"schedule_id": job_id, "firing_id": f"{job_id}|{when}", "scheduled_for": when}
        async with self._slots:
            try:
                async with self.session().post(
                    url, data=json.dumps(body), headers={"Content-Type": "application/json"}
                ) as response:
                    await response.read()
            except (aiohttp.ClientError, OSError):
                self.failures += 1


class StampingExecutor(BaseExecutor):
    """Runs a job by posting once per instant it is due for, with that instant."""

    def __init__(self, deliverer: Deliverer) -> None:
        super().__init__()
        self.deliverer = deliverer

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._loop = scheduler._eventloop

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        for run_time in run_times:
            task = self._loop.create_task(self.deliverer.post(job.args[0], job.id, run_time))
            self.deliverer.tasks.add(task)
            task.add_done_callback(self.deliverer.tasks.discard)
        # submit_job counts the instance after this returns: settle it on the next turn.
        self._loop.call_soon(self._run_job_success, job.id, [])


def scheduler_for(store: str, db: str | None, deliverer: Deliverer) -> AsyncIOScheduler:
    jobstore: Any = (
        MemoryJobStore() if store == "memory" else SQLAlchemyJobStore(url=f"sqlite:///{db}")
    )
    return AsyncIOScheduler(
        jobstores={"default": jobstore},
        executors={"default": StampingExecutor(deliverer)},
        job_defaults={"misfire_grace_time": 3600, "coalesce": True, "max_instances": 1000},
        timezone=UTC,
    )


def control(scheduler: AsyncIOScheduler) -> web.Application:
    async def add(request: web.Request) -> web.Response:
        spec = await request.json()
        count, prefix, url = int(spec["count"]), spec["prefix"], spec["url"]
        cap = float(spec.get("cap") or 1e9)
        paused = bool(spec.get("paused"))
        if paused:
            # Every add_job to a running scheduler wakes it to process the due jobs; a
            # bulk load of jobs that are already firing is done paused, then resumed once.
            scheduler.pause()
        started = time.monotonic()
        added = 0
        for index in range(count):
            trigger: Any
            if spec["kind"] == "date":
                at = float(spec["at"]) + index * float(spec.get("spread", 0))
                trigger = DateTrigger(run_date=datetime.fromtimestamp(at, UTC))
            else:
                start = float(spec["start"]) + index * float(spec.get("step", 0))
                trigger = IntervalTrigger(
                    seconds=float(spec["interval"]), start_date=datetime.fromtimestamp(start, UTC)
                )
            scheduler.add_job(fire, trigger, args=(url,), id=f"{prefix}{index}")
            added += 1
            if added % 500 == 0:
                await asyncio.sleep(0)  # let due jobs and the queued wake-ups run
                if time.monotonic() - started > cap:
                    break
        seconds = time.monotonic() - started
        if paused:
            scheduler.resume()
        return web.json_response({"added": added, "seconds": seconds})

    async def jobs(request: web.Request) -> web.Response:
        return web.json_response({"count": len(scheduler.get_jobs())})

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_post("/add", add)
    app.router.add_get("/jobs", jobs)
    return app


async def serve(store: str, db: str | None, port: int) -> None:
    deliverer = Deliverer()
    scheduler = scheduler_for(store, db, deliverer)
    scheduler.start()
    runner = web.AppRunner(control(scheduler), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", choices=("memory", "sqlite"), required=True)
    parser.add_argument("--db")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.store, args.db, args.port))


if __name__ == "__main__":
    main()
