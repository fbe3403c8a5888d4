"""Failure classification and the retry decision: pure values, pinned."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.partitioner import murmur2 as kafkas_murmur2

from scheduler.domain.models import Task
from scheduler.domain.retry import (
    ERROR_CHARS,
    ERRORS_KEPT,
    MAX_WAIT_S,
    Outcome,
    Result,
    RetryPolicy,
    Verdict,
    attempt_error,
    classify_http,
    delivery_headers,
    kept_errors,
    redis_envelope,
    shorten,
)
from scheduler.targets.executors import kafka_record

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCESS),
        (204, Outcome.SUCCESS),
        (299, Outcome.SUCCESS),
        (301, Outcome.PERMANENT),
        (400, Outcome.PERMANENT),
        (404, Outcome.PERMANENT),
        (408, Outcome.RETRYABLE),
        (409, Outcome.PERMANENT),
        (429, Outcome.RETRYABLE),
        (500, Outcome.RETRYABLE),
        (503, Outcome.RETRYABLE),
        (599, Outcome.RETRYABLE),
    ],
)
def test_http_status_classification(status: int, outcome: Outcome) -> None:
    assert classify_http(status) is outcome


def policy(**task: object) -> RetryPolicy:
    base = {"type": "rest", "connection": {"host": "http://x/"}, "failed_policy": "retry"}
    return RetryPolicy.of(Task.model_validate({**base, **task}))


FAIL = Result(Outcome.RETRYABLE, "HTTP 503")


def test_success_is_done() -> None:
    assert policy().decide(1, Result(Outcome.SUCCESS), T0, T0).verdict is Verdict.DONE


def test_permanent_failure_is_dead_at_once() -> None:
    decision = policy().decide(1, Result(Outcome.PERMANENT, "HTTP 400"), T0, T0)
    assert decision.verdict is Verdict.DEAD and decision.reason == "permanent failure"


def test_no_retry_policy_sends_retryable_failures_to_dead() -> None:
    task = {"type": "rest", "connection": {"host": "http://x/"}}
    decision = RetryPolicy.of(Task.model_validate(task)).decide(1, FAIL, T0, T0)
    assert decision.verdict is Verdict.DEAD
    assert decision.reason == "failed_policy is none: no retries"


def test_retry_waits_retry_wait_then_gives_up_after_max_retries() -> None:
    p = policy(retry_wait=60, max_retries=3)
    now = T0 + timedelta(seconds=5)
    for attempt in (1, 2, 3):
        decision = p.decide(attempt, FAIL, T0, now)
        assert decision.verdict is Verdict.RETRY
        assert decision.not_before == now + timedelta(seconds=60)
    last = p.decide(4, FAIL, T0, now)
    assert last.verdict is Verdict.DEAD and last.reason == "gave up after 4 attempts"


def test_exponential_backoff_with_a_cap() -> None:
    p = policy(retry_wait=10, retry_backoff=2, retry_max_wait=50, max_retries=10)
    assert [p.delay(n) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 50, 50]


def test_a_backoff_never_waits_past_a_week_nor_overflows() -> None:
    p = policy(retry_wait=7 * 86400, retry_backoff=10, max_retries=1000)
    assert p.delay(2) == MAX_WAIT_S
    assert p.delay(1000) == MAX_WAIT_S  # 10**999 overflows a float
    decision = p.decide(1000, FAIL, T0, T0)
    assert decision.verdict is Verdict.RETRY
    assert decision.not_before == T0 + timedelta(seconds=MAX_WAIT_S)


@pytest.mark.parametrize(
    ("field", "value"),
    [("retry_max_age", 1e300), ("retry_max_wait", 8 * 86400), ("retry_wait", 1e300)],
)
def test_retry_settings_out_of_bounds_are_refused_naming_the_field(
    field: str, value: float
) -> None:
    task = {"type": "rest", "connection": {"host": "http://x/"}, field: value}
    with pytest.raises(ValueError, match=field):
        Task.model_validate(task)


def test_error_texts_are_cut_and_only_the_first_and_latest_errors_kept() -> None:
    long = "x" * 100_000
    entry = attempt_error(1, T0, Result(Outcome.RETRYABLE, long))
    assert len(entry["error"]) < ERROR_CHARS + 40
    assert entry["error"].endswith(f"({100_000 - ERROR_CHARS} more characters)")
    assert shorten("short") == "short" and shorten(None) is None
    errors = [{"attempt": n} for n in range(1, 31)]
    kept = kept_errors(errors)
    assert len(kept) == ERRORS_KEPT
    assert [e["attempt"] for e in kept] == [1, *range(31 - ERRORS_KEPT + 1, 31)]
    assert kept_errors(errors[:3]) == errors[:3]


def test_max_age_stops_retries_that_would_land_too_late() -> None:
    p = policy(retry_wait=30, retry_max_age=60, max_retries=10)
    assert p.decide(1, FAIL, T0, T0 + timedelta(seconds=20)).verdict is Verdict.RETRY
    late = p.decide(2, FAIL, T0, T0 + timedelta(seconds=40))
    assert late.verdict is Verdict.DEAD
    assert late.reason == "next retry would pass retry_max_age of 60s"


def test_headers_and_envelope_carry_the_firing_identity() -> None:
    firing = {
        "firing_id": "fir_1",
        "schedule_id": "sch_1",
        "scheduled_for": "2030-01-01T00:00:00.000000Z",
        "attempt": 2,
        "task": {"data": {"a": 1}},
    }
    assert delivery_headers(firing) == {
        "Idempotency-Key": "fir_1",
        "X-Schedule-Id": "sch_1",
        "X-Scheduled-For": "2030-01-01T00:00:00.000000Z",
        "X-Attempt": "2",
    }
    assert redis_envelope(firing) == {
        "firing_id": "fir_1",
        "schedule_id": "sch_1",
        "scheduled_for": "2030-01-01T00:00:00.000000Z",
        "attempt": 2,
        "data": {"a": 1},
    }


@pytest.mark.parametrize(
    "data",
    [{"msg": "안녕, café", "n": [1, 2.5, None, True]}, "plain text", None, ["ü"]],
)
def test_a_prebuilt_kafka_record_carries_the_data_as_json_dumps_writes_it(data: object) -> None:
    firing = {
        "firing_id": "fir_1",
        "schedule_id": "sch_한국",
        "scheduled_for": "2030-01-01T00:00:00.000000Z",
        "attempt": 1,
        "task": {
            "type": "kafka",
            "connection": {"host": "127.0.0.1:9092", "topic": "out"},
            "data": data,
            "timeout": 10.0,
        },
    }
    record = kafka_record(firing)
    assert record.value == json.dumps(data, ensure_ascii=False).encode("utf-8")
    assert record.key == "sch_한국".encode()
    assert record.key_hash == kafkas_murmur2(record.key) & 0x7FFFFFFF
    assert dict(record.headers)["Idempotency-Key"] == b"fir_1"
