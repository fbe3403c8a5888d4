"""rq-scheduler as a peer: the job RQ workers run, and the scheduler process.

rq-scheduler keeps scheduled jobs in a Redis sorted set scored by their
instant (whole seconds: it converts with ``calendar.timegm``), and its
``rqscheduler`` loop moves the due ones to an RQ queue every ``interval``
seconds; RQ workers run them. ``StampingScheduler`` only copies each job's
score (its instant) into ``job.meta`` as it moves it, so that the job can
send the instant it was scheduled for: for a repeating job rq-scheduler
computes the next instant from the time it moved the job, not from the
previous instant, and nothing else records it.

    python -m bench.rq_peer --url redis://127.0.0.1:P/0 --interval 1 --name N
"""

from __future__ import annotations

import argparse
import json
import logging
import urllib.request
from typing import Any

from redis import Redis
from rq import get_current_job
from rq_scheduler import Scheduler


def deliver(url: str, schedule_id: str, scheduled_for: float | None = None) -> None:
    """The job: POST the instant it was scheduled for to the HTTP target."""
    job = get_current_job()
    stamped = job.meta.get("scheduled_for") if job is not None else None
    when = stamped if stamped is not None else scheduled_for
    body = json.dumps(
        {"schedule_id": schedule_id, "firing_id": f"{schedule_id}|{when}", "scheduled_for": when}
    ).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


class StampingScheduler(Scheduler):  # type: ignore[misc]
    def enqueue_job(self, job: Any) -> Any:
        score = self.connection.zscore(self.scheduled_jobs_key, job.id)
        if score is not None:
            job.meta["scheduled_for"] = float(score)
        return super().enqueue_job(job)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    scheduler = StampingScheduler(
        connection=Redis.from_url(args.url), interval=args.interval, name=args.name
    )
    scheduler.run()


if __name__ == "__main__":
    main()
