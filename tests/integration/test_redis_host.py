"""A redis task whose ``connection.host`` is written ``host:port``, as the service we
replace took it, delivered by a real worker to a real redis-server."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis import asyncio as aioredis

from tests.support import Clients, Worker, send_commands

pytestmark = pytest.mark.integration

CLIENTS = Clients(operation="redis-host", application="exec", group="itest")


async def test_a_host_port_redis_target_receives_the_envelope(
    worker: Worker, redis_url: str
) -> None:
    port = redis_url.rsplit(":", 1)[1].split("/", 1)[0]
    host = f"127.0.0.1:{port}"  # no scheme, no database: redis://127.0.0.1:PORT, database 0
    command = {
        "client": CLIENTS.client("host-port"),
        "type": "now",
        "task": {
            "type": "redis",
            "connection": {"host": host, "topic": "host-port-jobs", "mode": "list"},
            "data": {"via": "host:port"},
        },
    }
    await send_commands(worker, command)
    redis = aioredis.Redis.from_url(redis_url)
    try:
        for _ in range(200):
            if await redis.llen("host-port-jobs"):
                break
            await asyncio.sleep(0.1)
        listed = await redis.lpop("host-port-jobs")
        assert isinstance(listed, bytes), "nothing arrived in 20 s"
        envelope = json.loads(listed)
        assert envelope["data"] == {"via": "host:port"}
        assert envelope["schedule_id"] == CLIENTS.sid("host-port")
        assert envelope["firing_id"].startswith("fir_") and envelope["attempt"] == 1
    finally:
        await redis.aclose()
