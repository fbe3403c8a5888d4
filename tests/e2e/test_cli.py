"""The ``scheduler`` command as a user runs it, against real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import SCHEDULER, Clients, Worker, free_port, read_topic, send_commands

pytestmark = pytest.mark.e2e

CLIENTS = Clients(operation="op", application="cli", group="e2e")


def command(key: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"cli-{key}",
        "client": CLIENTS.client(key),
        "type": "cron",
        "schedule": "0 9 * * 1-5",
        "timezone": "Asia/Seoul",
        "task": {"type": "rest", "connection": {"host": "http://127.0.0.1:9/x"}, "data": {}},
    }
    body.update(changes)
    return body


def run(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCHEDULER, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


def wait_for(env: dict[str, str], sid: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        result = run(env, "get", sid, "--json")
        if result.returncode == 0:
            return dict(json.loads(result.stdout))
        if time.monotonic() > deadline:
            raise AssertionError(f"{sid} not found: {result.stderr}")
        time.sleep(0.3)


def test_submit_get_list_from_a_file(worker: Worker, tmp_path: Path) -> None:
    env = worker.env()
    path = tmp_path / "job.json"
    path.write_text(json.dumps(command("file-1")))
    result = run(env, "submit", str(path))
    assert result.returncode == 0, result.stderr
    sid = result.stdout.strip()
    assert sid.startswith("sch_")
    body = wait_for(env, sid)
    assert body["client"]["key"] == "file-1"
    assert body["next_fire_at_local"].endswith("T09:00:00+09:00")
    human = run(env, "get", sid)
    assert human.returncode == 0 and "next_fire_local" in human.stdout and sid in human.stdout
    listed = run(env, "list", "--key", "file-1", "--json")
    assert [item["schedule_id"] for item in json.loads(listed.stdout)] == [sid]
    table = run(env, "list", "--application", "cli")
    assert sid in table.stdout and "SCHEDULE ID" in table.stdout


def test_submit_array_and_json_lines_with_json_output(worker: Worker) -> None:
    env = worker.env()
    array = run(
        env,
        "submit",
        "-",
        "--json",
        stdin=json.dumps([command("arr-1"), command("arr-2", type="delay", schedule=60)]),
    )
    assert array.returncode == 0, array.stderr
    ids = [item["schedule_id"] for item in json.loads(array.stdout)]
    assert len(ids) == 2
    lines = "\n".join(json.dumps(command(f"jl-{n}")) for n in range(3))
    jsonl = run(env, "submit", "-", "--json", stdin=lines)
    assert jsonl.returncode == 0, jsonl.stderr
    assert len(json.loads(jsonl.stdout)) == 3
    for sid in ids:
        wait_for(env, sid)


def test_bad_input_exits_non_zero_names_the_field_and_sends_nothing(worker: Worker) -> None:
    env = worker.env()
    batch = [command("ok-not-sent"), command("bad", schedule="0 25 * * *")]
    result = run(env, "submit", json.dumps(batch))
    assert result.returncode == 2
    assert "command 2: schedule:" in result.stderr and "0 25 * * *" in result.stderr
    assert "nothing was submitted" in result.stderr
    zone = run(env, "submit", json.dumps(command("z", timezone="Europe/Atlantis")))
    assert zone.returncode == 2 and "timezone" in zone.stderr and "Europe/Atlantis" in zone.stderr
    broken = run(env, "submit", "-", stdin='{"client": ')
    assert broken.returncode == 2 and "not valid JSON" in broken.stderr
    missing = run(env, "get", "sch_00000000000000000000000000000000")
    assert missing.returncode == 1 and "no schedule" in missing.stderr
    time.sleep(2)
    listed = json.loads(run(env, "list", "--key", "ok-not-sent", "--json").stdout)
    assert listed == []


async def test_bad_input_sent_straight_to_the_topic_is_rejected(worker: Worker) -> None:
    raw = json.dumps(command("raw-bad", type="cron", schedule="* * * * * * * *")).encode()
    await send_commands(worker, raw)
    found = await read_topic(
        worker.bootstrap,
        worker.topic("schedule-commands-rejected"),
        until=lambda items: any(i["value"]["command"] == raw.decode() for i in items),
    )
    record = next(i["value"] for i in found if i["value"]["command"] == raw.decode())
    assert record["field"] == "schedule" and "* * * * * * * *" in record["detail"]
    assert httpx.get(f"{worker.url}/health").json()["status"] == "ok"


def test_preview_json_across_fall_back(tmp_path: Path) -> None:
    cmd = command("pv", schedule="30 1 * * *", timezone="America/New_York")
    result = run(
        dict(os.environ),
        "preview",
        json.dumps(cmd),
        "--after",
        "2025-11-01T12:00:00Z",
        "--count",
        "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    # 01:30 happens twice on 2025-11-02; it fires once, at the first (EDT, 05:30Z).
    assert json.loads(result.stdout) == [
        "2025-11-02T05:30:00.000Z",
        "2025-11-03T06:30:00.000Z",
        "2025-11-04T06:30:00.000Z",
    ]
    human = run(
        dict(os.environ),
        "preview",
        json.dumps(cmd),
        "--after",
        "2025-11-01T12:00:00Z",
        "--count",
        "1",
    )
    assert "2025-11-02T01:30:00-04:00" in human.stdout


def test_dev_runs_broker_worker_and_web_view(tmp_path: Path) -> None:
    """The README's run command, on free ports, until Ctrl-C."""
    env = dict(os.environ)
    kafka_port, web_port = free_port(), free_port()
    env.update(
        {
            "SCHEDULER_BROKER": f"kafka://127.0.0.1:{kafka_port}",
            "SCHEDULER_WEB_PORT": str(web_port),
            "SCHEDULER_DATA_DIR": str(tmp_path / "data"),
            "SCHEDULER_PARTITIONS": "2",
        }
    )
    log = (tmp_path / "dev.log").open("w")
    proc = subprocess.Popen(
        [SCHEDULER, "dev"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "dev.log").read_text()
            try:
                health = httpx.get(f"http://127.0.0.1:{web_port}/health", timeout=2).json()
                if health["active_partitions"]:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.5)
        submitted = run(env, "submit", json.dumps(command("dev-1", type="delay", schedule=3600)))
        assert submitted.returncode == 0, submitted.stderr
        body = wait_for(env, submitted.stdout.strip(), timeout=60)
        assert body["type"] == "delay" and body["status"] == "active"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{web_port}/health", timeout=2)
    import socket

    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", kafka_port)) != 0, "broker still listening"
