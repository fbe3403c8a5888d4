"""A command's own steps, each timed alone: where registration's CPU goes.

The registration workload measures what a worker spends per command (all of
it) and what Faust's consumer alone spends per record (``bench/floor.py``).
This times, in one process and with nothing else running in it, each step
the command agent takes for a new schedule, on the same commands, a thousand
at a time as a batch takes them:

- ``parse``: decode and validate the command (``parse_command``: pydantic);
- ``schedule_id``: the id from the client tuple (SHA-256);
- ``partition``: the partition murmur2 gives that id;
- ``apply``: the first instant and the new record (``state.apply``);
- ``encode``: the record's JSON (``ScheduleRecord.to_bytes``);
- ``lookup``: the batch's multi-get, one per partition, in RocksDBs opened
  with the ``schedules`` table's options (every key new, as in the workload);
- ``store``: the due-index entry's key, then one write batch per table and
  partition (the record in ``schedules``, the entry in ``due_index``), as
  ``tables.flush`` writes them;
- ``records``: both changelog records appended to a Kafka record batch per
  topic and partition, and the batches built (what the outbox hands to
  aiokafka);
- ``lane``: the compiled lane's call for the batch's records, one call per
  partition (``scheduler_fastlane.take_batch``): what it does replaces the
  first five steps for every command it takes, as it takes all of these.
  ``sum`` is the lane's path (``lane``, ``lookup``, ``store``, ``records``),
  ``python_sum`` the Python path's eight steps.

Not in it: handing the records to the broker, Faust's consumer, and the
agent's own glue: coroutines, the outbox's and the staged writes'
bookkeeping, offering the instant to the partition's timer, the metrics,
the event loop's turns. The sum is a lower bound of what this Python code
spends per command, whatever consumes the topic.

Run by ``bench.ours`` as ``python -m bench.pieces``; prints one JSON object,
µs of CPU (this thread's) per command for each step, the median of the rounds.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import rocksdict
import scheduler_fastlane
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.stores.rocksdb import RocksDBOptions

from bench.ours import _far_future_commands
from scheduler import clock
from scheduler.app import settings
from scheduler.domain import state
from scheduler.domain.models import parse_command
from scheduler.streams.accept import owner_partition
from scheduler.streams.timers import index_key
from scheduler.tables import due_index, schedules

BATCH = 1_000
ROUNDS = 30
#: Bytes a Kafka record batch may hold here: room for a whole batch of records.
RECORD_BATCH = 16 * 1024 * 1024
PYTHON_STEPS = ("parse", "schedule_id", "partition", "apply", "encode")
STEPS = (*PYTHON_STEPS, "lookup", "store", "records", "lane")
LANE_STEPS = ("lane", "lookup", "store", "records")


def _commands(round_: int) -> list[bytes]:
    """A batch of new far-future one-shots, as the registration workload sends them."""
    return [json.dumps(body).encode() for body in _far_future_commands(BATCH, f"pieces{round_}")]


def measure(rounds: int = ROUNDS) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp(prefix="pieces-"))
    # One RocksDB per table and partition, with the tables' own options, as a worker has.
    dbs = {
        (table.name, partition): RocksDBOptions(**table.options).open(
            where / f"{table.name}-{partition}"
        )
        for table in (schedules, due_index)
        for partition in range(settings.partitions)
    }
    spent: dict[str, list[float]] = {step: [] for step in STEPS}
    cpu = time.thread_time
    accepted_at = datetime.now(UTC)
    try:
        for round_ in range(rounds):
            raw = _commands(round_)

            began = cpu()
            commands = [parse_command(text) for text in raw]
            spent["parse"].append(cpu() - began)

            began = cpu()
            sids = [c.schedule_id for c in commands]  # computed once, kept by the command
            spent["schedule_id"].append(cpu() - began)
            keys = [sid.encode() for sid in sids]

            began = cpu()
            partitions = [owner_partition(key) for key in keys]
            spent["partition"].append(cpu() - began)

            began = cpu()
            records = [state.apply(None, c, accepted_at) for c in commands]
            spent["apply"].append(cpu() - began)
            timed = [r for r in records if r is not None and r.next_fire_at is not None]
            if len(timed) != BATCH:
                raise RuntimeError("a command of the batch gave no timed schedule")

            began = cpu()
            values = [record.to_bytes() for record in timed]
            spent["encode"].append(cpu() - began)

            began = cpu()
            by_partition: dict[int, list[bytes]] = {}
            for key, partition in zip(keys, partitions, strict=True):
                by_partition.setdefault(partition, []).append(key)
            found = [
                value
                for partition, wanted in by_partition.items()
                for value in dbs[(schedules.name, partition)].get(wanted)
            ]
            spent["lookup"].append(cpu() - began)
            if any(value is not None for value in found):
                raise RuntimeError("a new schedule's key was found in RocksDB")

            began = cpu()
            batches: dict[tuple[str, int], Any] = {}
            entries = []
            for key, value, record, partition in zip(keys, values, timed, partitions, strict=True):
                entry = index_key(clock.to_us(record.next_fire_at), record.schedule_id)  # type: ignore[arg-type]
                entries.append(entry)
                for name, k, v in ((schedules.name, key, value), (due_index.name, entry, b"1")):
                    batch = batches.get((name, partition))
                    if batch is None:
                        batch = batches[(name, partition)] = rocksdict.WriteBatch(raw_mode=True)
                    batch.put(k, v)
            for where_to, batch in batches.items():
                dbs[where_to].write(batch)
            spent["store"].append(cpu() - began)

            began = cpu()
            builders: dict[tuple[str, int], BatchBuilder] = {}
            for key, value, entry, partition in zip(keys, values, entries, partitions, strict=True):
                for name, k, v in ((schedules.name, key, value), (due_index.name, entry, b"1")):
                    builder = builders.get((name, partition))
                    if builder is None:
                        builder = builders[(name, partition)] = BatchBuilder(RECORD_BATCH, 0)
                    if builder.append(timestamp=None, key=k, value=v) is None:
                        raise RuntimeError(
                            "a Kafka record batch filled up: make RECORD_BATCH larger"
                        )
            for builder in builders.values():
                builder._build()
            spent["records"].append(cpu() - began)
            if sum(b.record_count() for b in builders.values()) != 2 * BATCH:
                raise RuntimeError("not every changelog record reached a record batch")

            stamp_ms = int(accepted_at.timestamp() * 1000)
            fetched: dict[int, list[Any]] = {}
            for key, text, partition in zip(keys, raw, partitions, strict=True):
                record = SimpleNamespace(key=key, value=text, timestamp=stamp_ms)
                fetched.setdefault(partition, []).append(record)
            began = cpu()
            taken = [
                scheduler_fastlane.take_batch(
                    records_, partition, settings.partitions, settings.max_command_bytes
                )[0]
                for partition, records_ in fetched.items()
            ]
            spent["lane"].append(cpu() - began)
            if sum(one is not None for part in taken for one in part) != BATCH:
                raise RuntimeError("the compiled lane declined a command of the batch")
    finally:
        for db in dbs.values():
            db.close()
        shutil.rmtree(where, ignore_errors=True)
    out: dict[str, Any] = {
        step: round(sorted(times)[len(times) // 2] / BATCH * 1e6, 2)
        for step, times in spent.items()
    }
    out["sum"] = round(sum(out[step] for step in LANE_STEPS), 2)
    out["python_sum"] = round(sum(out[step] for step in STEPS if step != "lane"), 2)
    out["batch"] = BATCH
    out["rounds"] = rounds
    return out


if __name__ == "__main__":
    print(json.dumps(measure()), flush=True)
