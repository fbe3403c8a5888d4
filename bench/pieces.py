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
- ``lookup``: the batch's multi-get in a RocksDB opened with the
  ``schedules`` table's options (every key new, as in the workload);
- ``store``: one write batch with the record and its due-index entry;
- ``records``: both changelog records appended to Kafka record batches and
  the batches built (what the outbox hands to aiokafka).

Not in it: handing the records to the broker, Faust's consumer, and the
agent's own glue (coroutines, the outbox, the event loop's turns). The sum
is a lower bound of what this Python code spends per command, whatever
consumes the topic.

Run by ``bench.ours`` as ``python -m bench.pieces``; prints one JSON object,
µs of CPU (this thread's) per command for each step, the median of the rounds.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import rocksdict
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.stores.rocksdb import RocksDBOptions

from bench.ours import NEVER_URL, PARTITIONS, command, iso, task
from scheduler import clock, ids, state
from scheduler.models import parse_command
from scheduler.streams.timers import index_key
from scheduler.tables import schedules

BATCH = 1_000
ROUNDS = 30
STEPS = ("parse", "schedule_id", "partition", "apply", "encode", "lookup", "store", "records")


def _commands(round_: int) -> list[bytes]:
    """A batch of new far-future one-shots, as the registration workload sends them."""
    first = math.ceil(time.time()) + 86_400
    never = task("http", NEVER_URL, "")
    return [
        json.dumps(command(f"pieces{round_}", i, "date", iso(first + i), never)).encode()
        for i in range(BATCH)
    ]


def measure(rounds: int = ROUNDS) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp(prefix="pieces-"))
    db = RocksDBOptions(**schedules.options).open(where / "db")
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
            partitions = [(ids.murmur2(key) & 0x7FFFFFFF) % PARTITIONS for key in keys]
            spent["partition"].append(cpu() - began)
            assert len(partitions) == BATCH

            began = cpu()
            records = [state.apply(None, c, accepted_at) for c in commands]
            spent["apply"].append(cpu() - began)

            began = cpu()
            values = [record.to_bytes() for record in records if record is not None]
            spent["encode"].append(cpu() - began)

            began = cpu()
            found = db.get(keys)
            spent["lookup"].append(cpu() - began)
            if any(value is not None for value in found):
                raise RuntimeError("a new schedule's key was found in RocksDB")

            entries = [
                index_key(clock.to_us(record.next_fire_at), sid)
                for record, sid in zip(records, sids, strict=True)
                if record is not None and record.next_fire_at is not None
            ]
            began = cpu()
            batch = rocksdict.WriteBatch(raw_mode=True)
            for key, value, entry in zip(keys, values, entries, strict=True):
                batch.put(key, value)
                batch.put(entry, b"1")
            db.write(batch)
            spent["store"].append(cpu() - began)

            began = cpu()
            changelog, index = BatchBuilder(1 << 20, 0), BatchBuilder(1 << 20, 0)
            for key, value, entry in zip(keys, values, entries, strict=True):
                changelog.append(timestamp=None, key=key, value=value)
                index.append(timestamp=None, key=entry, value=b"1")
            changelog._build()
            index._build()
            spent["records"].append(cpu() - began)
    finally:
        db.close()
        shutil.rmtree(where, ignore_errors=True)
    out: dict[str, Any] = {
        step: round(sorted(times)[len(times) // 2] / BATCH * 1e6, 2)
        for step, times in spent.items()
    }
    out["sum"] = round(sum(out[step] for step in STEPS), 2)
    out["batch"] = BATCH
    out["rounds"] = rounds
    return out


if __name__ == "__main__":
    print(json.dumps(measure()), flush=True)
