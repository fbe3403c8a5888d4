"""The metrics registry, its labels, and the counts kept for it, without a broker.

Importing ``scheduler.streams.*`` declares the Faust app, topics and tables
but connects to nothing. Values are read back through the registry
(``get_sample_value``) or the exposition parsed by ``prometheus_client``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from rocksdict import Options, Rdict

from scheduler import clock, metrics, tables
from scheduler.domain import state
from scheduler.domain.models import parse_command
from scheduler.domain.retry import Outcome, Result, RetryPolicy
from scheduler.domain.timefmt import format_utc
from scheduler.streams import census, delivery, records, rejects
from tests.commands import example

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def value(name: str, **labels: str) -> float:
    found = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if found is None else found


def families() -> dict[str, Any]:
    body, _ = metrics.render(None)
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


@pytest.fixture
def registered() -> Iterator[list[Any]]:
    """Collectors a test adds to the registry, taken out again after it."""
    added: list[Any] = []
    yield added
    for collector in added:
        metrics.REGISTRY.unregister(collector)


# --- the registry ---------------------------------------------------------------------------


def test_a_counter_is_served_with_its_total_suffix_and_no_created_series(
    registered: list[Any],
) -> None:
    made = metrics.counter("scheduler_test_things_total", "things")
    registered.append(made)
    made.inc(3)
    body = metrics.render(None)[0].decode()
    assert "scheduler_test_things_total 3.0" in body.splitlines()
    assert "scheduler_test_things_created" not in body
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.counter("scheduler_test_things_total", "the same name again")


def test_a_gauge_is_read_at_each_scrape_and_a_failing_reader_gives_nan(
    registered: list[Any],
) -> None:
    level = [2.0]
    registered.append(metrics.gauge("scheduler_test_level", lambda: level[0], "a level"))
    assert value("scheduler_test_level") == 2.0
    level[0] = 5.0
    assert value("scheduler_test_level") == 5.0

    def broken() -> float:
        raise RuntimeError("gone")

    registered.append(metrics.gauge("scheduler_test_broken", broken, "never readable"))
    assert math.isnan(value("scheduler_test_broken"))
    assert "scheduler_test_level" in families()  # the rest of the scrape is there


def test_a_reading_serves_what_its_reader_returns_now_and_nothing_before_it_is_bound(
    registered: list[Any],
) -> None:
    reading = metrics.Reading("scheduler_test_lag", "per topic", ("topic",))
    registered.append(reading)
    family = families()["scheduler_test_lag"]
    assert family.type == "gauge" and family.samples == []

    now: dict[tuple[str, ...], float] = {("firings",): 7, ("schedule-commands",): 1}
    reading.bind(lambda: now)
    assert value("scheduler_test_lag", topic="firings") == 7
    assert value("scheduler_test_lag", topic="schedule-commands") == 1
    del now[("firings",)]  # the partition went to another worker: so does its series
    samples = families()["scheduler_test_lag"].samples
    assert [(s.labels, s.value) for s in samples] == [({"topic": "schedule-commands"}, 1.0)]

    def broken() -> dict[tuple[str, ...], float]:
        raise RuntimeError("no consumer")

    reading.bind(broken)
    assert families()["scheduler_test_lag"].samples == []


def test_a_total_sums_the_matching_series_of_a_labelled_counter(registered: list[Any]) -> None:
    source = Counter(
        "scheduler_test_calls", "calls", ["kind", "outcome"], registry=metrics.REGISTRY
    )
    registered.append(source)
    registered.append(
        metrics.Total(
            "scheduler_test_failed_total", "failed", source, {"outcome": {"retryable", "permanent"}}
        )
    )
    registered.append(metrics.Total("scheduler_test_all_total", "all", source, {}))
    source.labels("rest", "success").inc(5)
    source.labels("rest", "retryable").inc(2)
    source.labels("kafka", "permanent").inc(1)
    assert value("scheduler_test_failed_total") == 3
    assert value("scheduler_test_all_total") == 8
    with pytest.raises(ValueError, match="Duplicated"):
        metrics.Total("scheduler_test_all_total", "again", source, {})


def test_openmetrics_is_served_to_a_scraper_that_asks_for_it() -> None:
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    body, content_type = metrics.render("*/*")
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert b"# TYPE scheduler_delivery_lateness_seconds histogram" in body


def test_the_labelled_metrics_have_their_series_from_the_start() -> None:
    """Bound at import: rate() has a zero to start from, and the hot path no lookup."""
    served = families()
    kinds = {s.labels["task_type"] for s in served["scheduler_deliveries"].samples}
    assert kinds == {"rest", "kafka", "redis", "other"}
    outcomes = {s.labels["outcome"] for s in served["scheduler_deliveries"].samples}
    assert outcomes == {"success", "retryable", "permanent", "deferred"}
    buckets = {
        (s.labels["task_type"], s.labels["attempt"])
        for s in served["scheduler_delivery_lateness_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets == {(k, a) for k in kinds for a in ("first", "retry")}
    reasons = {s.labels["reason"] for s in served["scheduler_dead_letters"].samples}
    assert reasons == set(delivery.DEAD_REASONS)
    commands = {
        (s.labels["outcome"], s.labels["error"]) for s in served["scheduler_commands"].samples
    }
    assert commands == {("accepted", "")} | {
        ("rejected", error) for error in (*rejects.ERRORS, "other")
    }


# --- delivery: lateness, outcomes, dead letters ------------------------------------------------


def firing(scheduled_for: datetime, **more: Any) -> dict[str, Any]:
    return {
        "firing_id": "fir_test",
        "schedule_id": "sch_test",
        "scheduled_for": format_utc(scheduled_for, micros=True),
        "attempt": 1,
        "task": {"type": "rest"},
        **more,
    }


def lateness_count(kind: str, attempt: str) -> float:
    return value("scheduler_delivery_lateness_seconds_count", task_type=kind, attempt=attempt)


def lateness_sum(kind: str, attempt: str) -> float:
    return value("scheduler_delivery_lateness_seconds_sum", task_type=kind, attempt=attempt)


def test_a_success_is_counted_with_its_lateness_from_scheduled_for() -> None:
    count, total = lateness_count("rest", "first"), lateness_sum("rest", "first")
    succeeded = value("scheduler_deliveries_total", task_type="rest", outcome="success")
    old = value("scheduler_deliveries_succeeded_total")
    now = clock.from_us(clock.now_us())
    delivery._delivered(firing(now - timedelta(seconds=3)), 1, "rest")
    assert lateness_count("rest", "first") == count + 1
    assert 3 <= lateness_sum("rest", "first") - total < 4
    assert value("scheduler_deliveries_total", task_type="rest", outcome="success") == succeeded + 1
    assert value("scheduler_deliveries_succeeded_total") == old + 1


def test_a_jittered_firing_is_late_from_its_deliver_at_and_a_retry_is_labelled_so() -> None:
    count, total = lateness_count("redis", "retry"), lateness_sum("redis", "retry")
    now = clock.from_us(clock.now_us())
    jittered = firing(
        now - timedelta(seconds=50),
        deliver_at=format_utc(now - timedelta(seconds=2), micros=True),
        attempt=2,
    )
    delivery._delivered(jittered, 2, "redis")
    assert lateness_count("redis", "retry") == count + 1
    assert 2 <= lateness_sum("redis", "retry") - total < 3


def test_a_task_type_label_is_one_of_the_few() -> None:
    assert delivery.task_type({"type": "kafka"}) == "kafka"
    assert delivery.task_type({"type": "smtp"}) == "other"
    assert delivery.task_type(None) == "other"


RETRY = RetryPolicy(enabled=True, wait=1, max_retries=3)


@pytest.mark.parametrize(
    ("result", "policy", "attempt", "reason"),
    [
        (Result(Outcome.PERMANENT, "HTTP 400 Bad Request"), RETRY, 1, "permanent"),
        (Result(Outcome.PERMANENT, "egress_denied: 10.0.0.1"), RETRY, 1, "egress_denied"),
        (Result(Outcome.PERMANENT, "secret_missing: token"), RETRY, 1, "secret_missing"),
        (Result(Outcome.PERMANENT, "unknown_cluster: eu"), RETRY, 1, "unknown_cluster"),
        (Result(Outcome.PERMANENT, "max_age: looks like a code"), RETRY, 1, "permanent"),
        (Result(Outcome.RETRYABLE, "HTTP 503"), replace(RETRY, enabled=False), 1, "no_retries"),
        (Result(Outcome.RETRYABLE, "HTTP 503"), RETRY, 4, "retries_exhausted"),
        (Result(Outcome.RETRYABLE, "HTTP 503"), replace(RETRY, max_age=1), 2, "max_age"),
    ],
)
def test_a_dead_letter_is_classed_as_the_policy_gave_up(
    result: Result, policy: RetryPolicy, attempt: int, reason: str
) -> None:
    assert delivery.dead_reason(result, policy, attempt) == reason
    decision = policy.decide(attempt, result, T0, T0 + timedelta(seconds=30))
    assert decision.verdict.value == "dead"  # every case above is one the policy buries


class _Message:
    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.value = b"{}"


async def test_a_batch_of_kafka_deliveries_observes_the_lateness_of_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batched path concludes many firings at once and observes every one."""
    now_us = clock.now_us()
    dues = [now_us - 10_000, now_us - 1_000_000, now_us - 20_000_000]  # 10 ms, 1 s, 20 s ago
    batch = [(f"fir_{i}", _Message(i), False, object(), due) for i, due in enumerate(dues)]
    acked: list[int] = []

    async def deliver_kafka(records: list[Any], prebuilt: Any) -> list[Result]:
        return [Result(Outcome.SUCCESS)] * len(records)

    monkeypatch.setattr(delivery, "executors", SimpleNamespace(deliver_kafka=deliver_kafka))
    monkeypatch.setattr(delivery, "_ack", lambda message: acked.append(message.offset))
    count, total = lateness_count("kafka", "first"), lateness_sum("kafka", "first")
    under_2s = value(
        "scheduler_delivery_lateness_seconds_bucket", task_type="kafka", attempt="first", le="2.5"
    )
    succeeded = value("scheduler_deliveries_total", task_type="kafka", outcome="success")
    await delivery.slots().acquire()  # as _start_many does before it
    await delivery._settle_kafka(batch)  # type: ignore[arg-type]
    assert acked == [0, 1, 2]
    assert lateness_count("kafka", "first") == count + 3
    assert 21.01 <= lateness_sum("kafka", "first") - total < 22
    assert (
        value("scheduler_delivery_lateness_seconds_bucket", task_type="kafka", attempt="first",
              le="2.5")
        == under_2s + 2
    )  # fmt: skip
    assert value("scheduler_deliveries_total", task_type="kafka", outcome="success") == (
        succeeded + 3
    )


# --- schedules by status -----------------------------------------------------------------------

CLIENT = {"operation": "op", "application": "app", "group": "g", "key": "k", "type": "t"}


def record(n: int, status: state.Status) -> state.ScheduleRecord:
    body = example(
        type="delay-recur", schedule="10", timezone="UTC", client={**CLIENT, "key": f"k{n}"}
    )
    made = state.apply(None, parse_command(body), T0)
    assert made is not None
    return replace(made, status=status)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rdict]:
    """A real RocksDB as Faust opens it, standing in for partition 0 of ``schedules``."""
    opened = Rdict(str(tmp_path / "schedules-0"), options=Options(raw_mode=True))
    monkeypatch.setattr(census, "partition_db", lambda table, partition: opened)
    census._counts.clear()
    yield opened
    for partition in list(census._counts):
        census._drop(partition)
    opened.close()


def put(db: Rdict, made: state.ScheduleRecord) -> None:
    db[made.schedule_id.encode()] = made.to_bytes()


def recount(db: Rdict) -> dict[str, int]:
    found = dict.fromkeys(census.STATUSES, 0)
    for key, stored in db.items():
        if key.startswith(b"sch_"):
            found[state.ScheduleRecord.from_bytes(stored).status.value] += 1
    return found


def served_counts() -> dict[str, float]:
    return {status: value("scheduler_schedules", status=status) for status in census.STATUSES}


def test_a_status_is_read_from_the_record_bytes_as_decoding_would() -> None:
    for status in state.Status:
        stored = record(1, status).to_bytes()
        assert census.status_of(stored) == status.value
        assert state.ScheduleRecord.from_bytes(stored).status is status


async def test_a_partition_is_counted_in_slices_and_changes_during_the_count_add_up(
    db: Rdict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(census, "SLICE", 4)
    made = [record(n, state.Status.ACTIVE if n % 3 else state.Status.PAUSED) for n in range(30)]
    for each in made:
        put(db, each)
    db[b"__faust\x00offset__"] = b"12"  # Faust's own key in the same DB: not a schedule
    census.reconcile({0})
    assert served_counts() == dict.fromkeys(census.STATUSES, 0)  # not served before it is done

    # While it reads: every record's key order is unknown to us, so change some
    # of each half, as records.store would (the write, and the change reported).
    by_key = sorted(made, key=lambda r: r.schedule_id)
    await asyncio.sleep(0)
    changes = [
        (by_key[0], replace(by_key[0], status=state.Status.COMPLETED)),
        (by_key[-1], replace(by_key[-1], status=state.Status.COMPLETED)),
        (by_key[15], None),
    ]
    for before, after in changes:
        if after is None:
            del db[before.schedule_id.encode()]
        else:
            put(db, after)
        census.changed(0, before.status, after.status if after else None)
        await asyncio.sleep(0)
    added = record(99, state.Status.ACTIVE)
    put(db, added)
    census.changed(0, None, added.status)
    while not census._counts[0].done:
        await asyncio.sleep(0)
    assert served_counts() == recount(db)
    assert sum(served_counts().values()) == 30
    assert served_counts()["completed"] == 2


@pytest.fixture
def ten(db: Rdict, monkeypatch: pytest.MonkeyPatch) -> Rdict:
    """``db`` holding 10 active records, counted 2 a slice."""
    monkeypatch.setattr(census, "SLICE", 2)
    for n in range(10):
        put(db, record(n, state.Status.ACTIVE))
    return db


async def until_done(count: census._Count) -> int:
    """Turns of the loop until ``count`` is done (a hang fails in 5 s)."""
    turns = 0
    async with asyncio.timeout(5):
        while not count.done:
            await asyncio.sleep(0)
            turns += 1
    return turns


async def test_partitions_are_counted_one_after_another(ten: Rdict) -> None:
    # One RocksDB stands in for both partitions: each count reads all 10 records.
    census.reconcile({0, 1})
    first, second = census._counts[0], census._counts[1]
    assert second.waiting and second.iterator is None  # no snapshot held while it waits
    turns = 0
    async with asyncio.timeout(5):
        while not first.done:
            assert second.by_status["active"] == 0, "the second count read while the first did"
            await asyncio.sleep(0)
            turns += 1
    assert turns >= 4  # the first count took several turns, the second read in none of them
    await until_done(second)
    assert first.by_status["active"] == second.by_status["active"] == 10


async def test_a_count_waiting_for_its_turn_reads_the_changes_made_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(census, "SLICE", 2)
    dbs = {
        p: Rdict(str(tmp_path / f"schedules-{p}"), options=Options(raw_mode=True)) for p in (0, 1)
    }
    monkeypatch.setattr(census, "partition_db", lambda table, partition: dbs[partition])
    census._counts.clear()
    try:
        made = {p: [record(10 * p + n, state.Status.ACTIVE) for n in range(8)] for p in (0, 1)}
        for p, each in made.items():
            for one in each:
                put(dbs[p], one)
        census.reconcile({0, 1})
        assert census._counts[1].waiting
        # While partition 1 waits: a record paused, one deleted, one added, each
        # written and reported as records.store does.
        paused = replace(made[1][0], status=state.Status.PAUSED)
        put(dbs[1], paused)
        census.changed(1, "active", "paused")
        del dbs[1][made[1][1].schedule_id.encode()]
        census.changed(1, "active", None)
        added = record(99, state.Status.ACTIVE)
        put(dbs[1], added)
        census.changed(1, None, "active")
        await until_done(census._counts[0])
        await until_done(census._counts[1])
        assert census._counts[1].by_status == {"active": 7, "paused": 1, "completed": 0}
        assert served_counts() == {"active": 15, "paused": 1, "completed": 0}
    finally:
        for partition in list(census._counts):
            census._drop(partition)
        for one in dbs.values():
            one.close()


async def test_a_dropped_count_lets_the_next_one_read(ten: Rdict) -> None:
    census.reconcile({0, 1})
    second = census._counts[1]
    await asyncio.sleep(0)
    census.reconcile({1})  # partition 0 moved away mid-count
    await until_done(second)
    assert served_counts()["active"] == 10


async def test_a_count_sleeps_four_times_as_long_as_each_slice_took(
    ten: Rdict, monkeypatch: pytest.MonkeyPatch
) -> None:
    tally = census.tally
    turn = 0
    sliced_at: list[int] = []  # the turn of the loop each slice ran in

    def slow_tally(iterator: Any, by_status: dict[str, int], limit: int) -> bool:
        sliced_at.append(turn)
        time.sleep(0.01)  # each slice takes 10 ms
        return tally(iterator, by_status, limit)

    monkeypatch.setattr(census, "tally", slow_tally)
    loop = asyncio.get_running_loop()
    started = loop.time()
    census.reconcile({0})
    count = census._counts[0]
    async with asyncio.timeout(5):
        while not count.done:
            await asyncio.sleep(0)
            turn += 1
    took = loop.time() - started
    # Six slices (the sixth finds the end), and a sleep of about 40 ms after each of the first five.
    assert len(sliced_at) == 6
    assert took >= 6 * 0.01 + 5 * 0.04 * 0.9
    assert len(set(sliced_at)) == len(sliced_at), "two slices ran in one turn of the loop"
    assert count.by_status["active"] == 10


async def test_a_rebalance_drops_the_counts_and_lets_go_of_the_snapshot(
    db: Rdict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(census, "SLICE", 2)
    for n in range(10):
        put(db, record(n, state.Status.ACTIVE))
    census.reconcile({0})
    count = census._counts[0]
    await census._on_revoked(None, set())
    assert census._counts == {} and count.iterator is None
    await asyncio.sleep(0)
    assert count.task is not None and count.task.cancelled()
    census.changed(0, None, state.Status.ACTIVE)  # not counted here: ignored
    assert served_counts()["active"] == 0


def test_records_store_reports_each_change_of_status(monkeypatch: pytest.MonkeyPatch) -> None:
    census._counts.clear()
    census._counts[0] = census._Count(None)  # counted, done
    monkeypatch.setattr(records, "index", lambda *args: None)  # the due-index is not ours here
    sent: list[Any] = []
    outbox = SimpleNamespace(add=lambda *args: sent.append(args))
    first = record(1, state.Status.ACTIVE)
    key = first.schedule_id.encode()
    try:
        records.store(key, 0, None, first, outbox)  # type: ignore[arg-type]
        assert census._counts[0].by_status == {"active": 1, "paused": 0, "completed": 0}
        records.store(key, 0, first, replace(first, fire_count=1), outbox)  # type: ignore[arg-type]
        paused = replace(first, status=state.Status.PAUSED)
        records.store(key, 0, first, paused, outbox)  # type: ignore[arg-type]
        assert census._counts[0].by_status == {"active": 0, "paused": 1, "completed": 0}
        records.store(key, 0, paused, None, outbox)  # type: ignore[arg-type]
        assert census._counts[0].by_status == {"active": 0, "paused": 0, "completed": 0}
        written = [args for args in sent if args[0].endswith("-schedules-changelog")]
        assert len(written) == 4  # each one stored all the same
    finally:
        census._counts.clear()
        tables._staged.clear()


# --- what the consumer knows ---------------------------------------------------------------


class _Consumer:
    """Faust's consumer as the readings see it: highwaters and committed offsets."""

    def __init__(self, highwaters: dict[Any, int | None], committed: dict[Any, int | None]):
        self._highwaters = highwaters
        self._committed_offset = committed

    def highwater(self, tp: Any) -> int | None:
        if tp not in self._highwaters:
            raise AssertionError("Partition is not assigned")  # as aiokafka says it
        return self._highwaters[tp]


def test_lag_partitions_and_retries_pending_are_read_from_the_assignment_and_the_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from faust.types import TP

    from scheduler.app import settings
    from scheduler.streams import consumption

    def tp(name: str, partition: int) -> TP:
        return TP(settings.topic(name), partition)

    changelog = consumption.name_of(consumption.schedules.changelog_topic)
    actives = {
        tp("firings", 0),  # 10 written, 4 settled
        tp("firings", 1),  # nothing committed yet: from 0
        tp("schedule-commands", 0),  # nothing fetched yet: no highwater
        tp("schedule-commands-keyed", 0),  # not assigned to the Kafka consumer yet
        tp("firings-retry", 0),
        tp("firings-retry-600s", 0),
        tp("schedule-commands-keyed", 1),
        TP(changelog, 0),  # a changelog: recovery keeps its own offsets
    }
    highwaters = {
        tp("firings", 0): 10,
        tp("firings", 1): 3,
        tp("schedule-commands", 0): None,
        tp("firings-retry", 0): 7,
        tp("firings-retry-600s", 0): 5,
        tp("schedule-commands-keyed", 1): 2,
        TP(changelog, 0): 100,
    }
    # Faust's is a defaultdict: a lookup with [] would add the partition to it.
    committed: dict[Any, int | None] = defaultdict(lambda: None)
    committed.update(
        {tp("firings", 0): 4, tp("firings-retry", 0): 5, tp("firings-retry-600s", 0): 2}
    )
    assignor = SimpleNamespace(
        assigned_actives=lambda: actives,
        assigned_standbys=lambda: {TP(changelog, 2), TP(changelog, 3)},
    )
    monkeypatch.setattr(
        consumption,
        "app",
        SimpleNamespace(assignor=assignor, consumer=_Consumer(highwaters, committed)),
    )
    assert consumption.lag() == {
        "firings": 6 + 3,
        "firings-retry": 2,
        "firings-retry-600s": 3,
        "schedule-commands-keyed": 2,
    }
    assert value("scheduler_consumer_lag", topic="firings") == 9
    assert value("scheduler_retries_pending") == 5
    assert value("scheduler_partitions_owned", role="active") == 2  # keyed partitions 0 and 1
    assert value("scheduler_partitions_owned", role="standby") == 2
    assert set(committed) == {tp("firings", 0), tp("firings-retry", 0), tp("firings-retry-600s", 0)}
