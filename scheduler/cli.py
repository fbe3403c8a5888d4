"""The ``scheduler`` command.

Flags override the ``SCHEDULER_*`` environment, which overrides the
defaults (see ``scheduler.settings``). Commands that talk to a running
service (``get``, ``list``) go through its web view; ``submit`` produces to
``schedule-commands`` directly, after validating every command locally so a
bad file sends nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.domain.errors import BrokerError, InvalidCommand, SchedulerError
from scheduler.replay import REPLAYABLE
from scheduler.settings import Settings, configure

EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 1
#: What ``preview`` reads as a stored schedule's id rather than a command.
SCHEDULE_ID = re.compile(r"sch_[0-9a-f]{32}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.handler(args) or 0)
    except SchedulerError as exc:
        print(f"scheduler: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


# -- settings ---------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    return configure(
        broker=getattr(args, "broker", None),
        web_port=getattr(args, "web_port", None),
        web_host=getattr(args, "web_host", None),
        data_dir=getattr(args, "data_dir", None),
        partitions=getattr(args, "partitions", None),
        app_id=getattr(args, "app_id", None),
        log_level=getattr(args, "log_level", None),
    )


def _web_url(args: argparse.Namespace) -> str:
    if getattr(args, "url", None):
        return str(args.url).rstrip("/")
    return _settings(args).web_url


# -- service commands -------------------------------------------------------


def cmd_broker(args: argparse.Namespace) -> int:
    local_broker = _local_broker()
    settings = _settings(args)
    port = args.port or _broker_port(settings)
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir / "kafka"
    local_broker(port=port, data_dir=data_dir, cache_dir=settings.kafka_cache_dir).run_foreground()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from scheduler import worker

    worker.run(_settings(args))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    """Broker and one worker in the foreground (``--workers N`` for more): the local default."""
    from scheduler import patches, worker

    local_broker = _local_broker()
    patches.check_versions()  # before a broker is started for a worker that would refuse
    settings = _settings(args)
    count = args.workers
    if count < 1 or settings.web_port + count - 1 > 65535:
        raise InvalidCommand(
            "bad_argument",
            f"--workers: from 1 to {65536 - settings.web_port} on web port "
            f"{settings.web_port} (got {count})",
        )
    broker = local_broker(
        port=_broker_port(settings),
        data_dir=settings.data_dir / "kafka",
        cache_dir=settings.kafka_cache_dir,
    )
    print(f"starting Kafka on {broker.bootstrap} (first run fetches its jars) ...", flush=True)
    broker.start()
    others = [_dev_sibling(settings, index) for index in range(1, count)]
    print(f"Kafka ready; {_workers_said(settings, count)}", flush=True)
    try:
        worker.run(settings)
    finally:
        for other in others:
            other.terminate()
        for other in others:
            try:
                other.wait(30)
            except subprocess.TimeoutExpired:
                other.kill()
        broker.stop()
    return 0


def _workers_said(settings: Settings, count: int) -> str:
    """What ``scheduler dev`` says of its workers, and when more of them pay."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if count == 1:
        said = f"1 worker; web view on {settings.web_url}"
    else:
        ports = ", ".join(str(settings.web_port + index) for index in range(1, count))
        said = f"{count} workers; web view on {settings.web_url} (the others on {ports})"
    if cores and cores > count:
        # A worker is one Python process and uses one core at most.
        said += f". This machine has {cores} cores: --workers {cores} runs one on each"
    return said


def _dev_sibling(settings: Settings, index: int) -> subprocess.Popen[bytes]:
    """Worker ``index`` of ``scheduler dev`` (the first runs in this process)."""
    env = dict(os.environ)
    env.update(
        {
            "SCHEDULER_BROKER": settings.broker,
            "SCHEDULER_APP_ID": settings.app_id,
            "SCHEDULER_PARTITIONS": str(settings.partitions),
            "SCHEDULER_WEB_HOST": settings.web_host,
            "SCHEDULER_WEB_PORT": str(settings.web_port + index),
            "SCHEDULER_DATA_DIR": str(settings.data_dir / f"worker-{index + 1}"),
            "SCHEDULER_LOG_LEVEL": settings.log_level,
        }
    )
    command = [sys.executable, "-c", "from scheduler.cli import main; main()", "worker"]
    return subprocess.Popen(command, env=env)


def _local_broker() -> Any:
    """The ``LocalBroker`` class; a clear error where ``scheduler.devtools`` is left out.

    The container image leaves it out; any other missing module is raised as it is.
    """
    try:
        from scheduler.devtools.broker import LocalBroker
    except ModuleNotFoundError as exc:
        if exc.name != "scheduler.devtools" and not (exc.name or "").startswith(
            "scheduler.devtools."
        ):
            raise
        raise BrokerError(
            "the local Kafka broker (`scheduler dev`, `scheduler broker`) is a development "
            "tool, not part of this installation: the container image leaves out "
            "scheduler.devtools. Run `scheduler worker` with SCHEDULER_BROKER set to a Kafka "
            "cluster instead"
        ) from None
    return LocalBroker


def _broker_port(settings: Settings) -> int:
    first = settings.bootstrap_servers.split(",")[0]
    host, _, port = first.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        raise BrokerError(
            f"SCHEDULER_BROKER points at {first}; the local broker only runs on 127.0.0.1"
        )
    return int(port)


# -- client commands --------------------------------------------------------


def read_commands(source: str) -> list[Any]:
    """A file, ``-`` for stdin, or literal JSON: an object, an array or JSON Lines."""
    if source == "-":
        text = sys.stdin.read()
    elif source.lstrip().startswith(("{", "[")):
        text = source
    else:
        path = Path(source)
        if not path.exists():
            raise InvalidCommand("bad_input", f"no such file: {source}")
        text = path.read_text(encoding="utf-8")
    text = text.strip()
    if not text:
        raise InvalidCommand("bad_input", "no command given (empty input)")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None
        items: list[Any] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InvalidCommand(
                    "bad_json", f"line {number} is not valid JSON: {exc.msg} (column {exc.colno})"
                ) from None
        return items
    return whole if isinstance(whole, list) else [whole]


def cmd_submit(args: argparse.Namespace) -> int:
    from scheduler.domain.models import parse_command

    settings = _settings(args)
    items = read_commands(args.source)
    commands = []
    problems = []
    for index, item in enumerate(items, start=1):
        text = json.dumps(item, ensure_ascii=False)
        try:
            command = parse_command(text, max_bytes=settings.max_command_bytes)
        except InvalidCommand as exc:
            where = f"command {index}" if len(items) > 1 else "command"
            problems.append(f"{where}: {exc.detail}")
            continue
        commands.append((command, text.encode("utf-8")))
    if problems:
        for line in problems:
            print(f"scheduler: {line}", file=sys.stderr)
        print("scheduler: nothing was submitted", file=sys.stderr)
        return EXIT_BAD_INPUT
    asyncio.run(_produce(settings, [(c.schedule_id.encode(), text) for c, text in commands]))
    if args.json:
        print(
            json.dumps(
                [{"schedule_id": c.schedule_id, "action": c.action.value} for c, _ in commands]
            )
        )
    else:
        for command, _ in commands:
            print(command.schedule_id)
    return 0


async def _produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    from aiokafka import AIOKafkaProducer

    from scheduler import kafka_auth

    producer = AIOKafkaProducer(
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=30_000,
        **kafka_auth.client_options(settings),
    )
    try:
        await kafka_auth.explained(settings, producer.start())
    except BrokerError:
        await producer.stop()
        raise
    try:
        topic = settings.topic("schedule-commands")
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _http(method: str, url: str, **kwargs: Any) -> Any:
    import httpx

    from scheduler.settings import current

    tokens = current().web_token_list()
    if tokens:
        kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {tokens[0]}"}
    try:
        return httpx.request(method, url, timeout=30.0, **kwargs)
    except httpx.HTTPError as exc:
        raise BrokerError(f"cannot reach the scheduler web view at {url}: {exc}") from None


def _lookup(url: str, **params: Any) -> tuple[dict[str, Any], int | None]:
    """A web view lookup's body, and the exit code to stop with if it failed (said on stderr)."""
    response = _http("GET", url, params=params or None)
    body = response.json()
    if response.status_code == 404:
        print(f"scheduler: {body.get('detail', 'not found')}", file=sys.stderr)
        return body, EXIT_NOT_FOUND
    if response.status_code >= 400:
        print(f"scheduler: {body}", file=sys.stderr)
        return body, EXIT_BAD_INPUT
    return body, None


def cmd_get(args: argparse.Namespace) -> int:
    body, failed = _lookup(f"{_web_url(args)}/schedules/{args.schedule_id}")
    if failed is not None:
        return failed
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
    else:
        _print_schedule(body)
    return 0


def _print_schedule(item: dict[str, Any]) -> None:
    client = item["client"]
    rows = [
        ("schedule_id", item["schedule_id"]),
        ("name", item.get("name") or ""),
        ("client", _client_label(client)),
        ("type", f"{item['type']} {item.get('schedule') or ''}".strip()),
        ("timezone", item["timezone"]),
        ("task", f"{item['task']['type']} -> {_where(item['task']['connection'])}"),
        ("status", item["status"]),
        ("next_fire_at", item.get("next_fire_at") or "-"),
        ("next_fire_local", item.get("next_fire_at_local") or "-"),
        ("fire_count", str(item.get("fire_count", 0))),
        ("updated_at", item["updated_at"]),
    ]
    for name, value in rows:
        print(f"{name:16} {value}")


def _where(connection: dict[str, Any]) -> str:
    cluster = connection.get("cluster")
    return f"cluster {cluster}" if cluster else str(connection.get("host"))


def _client_label(client: dict[str, str]) -> str:
    return "/".join(client[k] for k in ("operation", "application", "group", "key", "type"))


def _get_items(args: argparse.Namespace, path: str, field: str, **params: str) -> Any:
    """GET a list from the web view; print it as JSON with ``--json``.

    Returns the list, or an exit code when the request failed or ``--json``
    already printed it.
    """
    response = _http("GET", f"{_web_url(args)}{path}", params=params)
    if response.status_code >= 400:
        print(f"scheduler: {response.text}", file=sys.stderr)
        return EXIT_BAD_INPUT
    items = response.json()[field]
    if args.json:
        print(json.dumps(items, indent=2, ensure_ascii=False))
        return 0
    return items


def cmd_list(args: argparse.Namespace) -> int:
    from scheduler.domain.state import FILTERS

    params = {name: getattr(args, name) for name in FILTERS if getattr(args, name, None)}
    items = _get_items(args, "/schedules", "schedules", limit=str(args.limit), **params)
    if isinstance(items, int):
        return items
    print(f"{'SCHEDULE ID':36}  {'STATUS':9}  {'TYPE':11}  {'NEXT FIRE (UTC)':24}  CLIENT")
    for item in items:
        label = _client_label(item["client"])
        print(
            f"{item['schedule_id']:36}  {item['status']:9}  {item['type'] or '-':11}  "
            f"{item.get('next_fire_at') or '-':24}  {label}"
        )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    path = f"/schedules/{args.schedule_id}/history"
    events = _get_items(args, path, "events", limit=str(args.limit))
    if isinstance(events, int):
        return events
    if not events:
        print(
            f"scheduler: no history for {args.schedule_id} (is task.history_check on?)",
            file=sys.stderr,
        )
        return EXIT_NOT_FOUND
    for item in events:
        details = "  ".join(
            f"{name}={value}"
            for name, value in item.items()
            if name not in ("event", "schedule_id", "at")
        )
        print(f"{item['at']}  {item['event']:10}  {details}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from scheduler.domain.models import parse_command
    from scheduler.domain.preview import check_count, preview, shown
    from scheduler.domain.timefmt import parse_utc

    check_count(args.count)
    if SCHEDULE_ID.fullmatch(args.source.strip()):
        # A stored schedule: its owner answers, from the record the timers use.
        body, failed = _lookup(
            f"{_web_url(args)}/schedules/{args.source.strip()}/preview", count=args.count
        )
        if failed is not None:
            return failed
    else:
        items = read_commands(args.source)
        if len(items) != 1:
            raise InvalidCommand("bad_input", f"preview takes one command, got {len(items)}")
        command = parse_command(json.dumps(items[0]))
        try:
            after = parse_utc(args.after) if args.after else datetime.now(UTC)
        except ValueError:
            raise InvalidCommand(
                "bad_input", f"--after: not an ISO-8601 instant: {args.after!r}"
            ) from None
        body = shown(command, preview(command, after, args.count))
    if args.json:
        print(json.dumps(body["fire_times"]))
        return 0
    if body.get("status") not in (None, "active"):
        print(f"{body['schedule_id']} is {body['status']}: it fires nothing until resumed")
    for item in body["instants"]:
        late = f"  delivered {item['delivered_at']}" if "delivered_at" in item else ""
        print(f"{item['utc']}  {item['local']}{late}")
    return 0


# -- parser -----------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from scheduler import patches
    from scheduler.domain.timefmt import parse_utc
    from scheduler.replay import replay

    patches.check_versions()  # replay reaches into aiokafka (scheduler.patches.private)
    settings = _settings(args)
    if args.beginning == (args.since is not None):
        raise InvalidCommand(
            "bad_input", "replay: give exactly one of --since ISO or --from-beginning"
        )
    try:
        since = None if args.beginning else parse_utc(args.since)
    except ValueError:
        raise InvalidCommand(
            "bad_input", f"--since: not an ISO-8601 instant: {args.since!r}"
        ) from None
    moves = asyncio.run(replay(settings, args.topic, since, dry_run=args.dry_run, wait=args.wait))
    if args.json:
        rows = [
            {
                "partition": m.partition,
                "committed": m.committed,
                "target": m.target,
                "records": m.records,
            }
            for m in moves
        ]
        print(
            json.dumps(
                {
                    "topic": settings.topic(args.topic),
                    "group": settings.app_id,
                    "dry_run": args.dry_run,
                    "partitions": rows,
                }
            )
        )
        return 0
    verb = "would move" if args.dry_run else "moved"
    print(f"group {settings.app_id}, topic {settings.topic(args.topic)}: {verb} offsets")
    for m in moves:
        before = "none" if m.committed is None else str(m.committed)
        again = "" if m.records is None else f" ({m.records} records again)"
        print(f"  partition {m.partition}: {before} -> {m.target}{again}")
    if not args.dry_run:
        print("start the workers: they read from the new offsets")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scheduler", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(metavar="COMMAND")

    def add(name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    def service_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--broker", help="Kafka bootstrap (env SCHEDULER_BROKER)")
        p.add_argument("--web-port", type=int, help="web view port (env SCHEDULER_WEB_PORT)")
        p.add_argument("--web-host", help="web view bind address (env SCHEDULER_WEB_HOST)")
        p.add_argument("--data-dir", help="local table cache (env SCHEDULER_DATA_DIR)")
        p.add_argument("--partitions", type=int, help="partitions (env SCHEDULER_PARTITIONS)")
        p.add_argument("--app-id", help="consumer group (env SCHEDULER_APP_ID)")
        p.add_argument("--log-level", help="info, debug, warning (env SCHEDULER_LOG_LEVEL)")

    p = add(
        "dev", cmd_dev, "run a local Kafka broker and a worker (or --workers N) in the foreground"
    )
    service_flags(p)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="workers to run, one per core at most pays (default 1)",
    )
    p = add("worker", cmd_worker, "run a worker (command agent, timers, executors, web view)")
    service_flags(p)
    p = add("broker", cmd_broker, "run a local single-node Kafka (KRaft) in the foreground")
    p.add_argument("--port", type=int, help="listener port (default: from SCHEDULER_BROKER)")
    p.add_argument("--data-dir", help="broker data (default: $SCHEDULER_DATA_DIR/kafka)")

    p = add("submit", cmd_submit, "validate commands and produce them to schedule-commands")
    p.add_argument("source", help="a file, - for stdin, or JSON text (object, array, JSON Lines)")
    p.add_argument("--broker", help="Kafka bootstrap (env SCHEDULER_BROKER)")
    p.add_argument("--json", action="store_true", help="print a JSON array of schedule ids")

    for name, handler, help in (
        ("get", cmd_get, "show one schedule: spec, status and next fire instant"),
        ("list", cmd_list, "list schedules, filtered on client fields"),
        ("history", cmd_history, "show a schedule's recent history, newest first"),
    ):
        p = add(name, handler, help)
        if name == "get":
            p.add_argument("schedule_id")
        elif name == "history":
            p.add_argument("schedule_id")
            p.add_argument("--limit", type=int, default=50)
        else:
            for field in ("operation", "application", "group", "key", "type", "status", "name"):
                p.add_argument(f"--{field}", help=f"only schedules with this {field}")
            p.add_argument("--limit", type=int, default=1000)
        p.add_argument("--url", help="web view URL (default http://127.0.0.1:$SCHEDULER_WEB_PORT)")
        p.add_argument("--web-port", type=int, help="web view port (env SCHEDULER_WEB_PORT)")
        p.add_argument("--json", action="store_true", help="print JSON")

    p = add(
        "preview",
        cmd_preview,
        "print the next fire instants of a command (without sending it) or a stored schedule",
    )
    p.add_argument("source", help="a schedule id, a file, - for stdin, or JSON text")
    p.add_argument("--after", help="ISO-8601 instant (default now); a command's instants after it")
    p.add_argument("--count", type=int, default=10, help="at most 1000")
    p.add_argument("--json", action="store_true", help="print only a JSON array of UTC instants")
    p.add_argument("--url", help="web view URL, for a schedule id (default as for get)")
    p.add_argument("--web-port", type=int, help="web view port (env SCHEDULER_WEB_PORT)")

    p = add(
        "replay", cmd_replay, "move the workers' group offsets back on a topic (workers stopped)"
    )
    p.add_argument("topic", choices=REPLAYABLE)
    p.add_argument("--since", help="ISO-8601 instant: read again every record from it on")
    p.add_argument("--from-beginning", dest="beginning", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the offsets, commit nothing")
    p.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the group to empty"
    )
    p.add_argument("--broker", help="Kafka bootstrap (env SCHEDULER_BROKER)")
    p.add_argument("--app-id", help="consumer group (env SCHEDULER_APP_ID)")
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


if __name__ == "__main__":
    raise SystemExit(main())
