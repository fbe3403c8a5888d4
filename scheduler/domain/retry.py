"""What a delivery attempt means, and what happens after one fails.

Pure: classification of outcomes, the retry decision, and the exact shape
of what each kind of target receives. The I/O lives in
``scheduler.targets.executors``; the Kafka plumbing in ``scheduler.streams.delivery``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from scheduler.domain.models import FailedPolicy, Task
from scheduler.domain.timefmt import format_utc


class Outcome(StrEnum):
    SUCCESS = "success"
    RETRYABLE = "retryable"
    PERMANENT = "permanent"


#: Statuses that say "not now" rather than "never" (besides every 5xx).
_RETRYABLE_STATUSES = frozenset({408, 429})


def classify_http(status: int) -> Outcome:
    """2xx succeeds; a timeout-like 408/429 or any 5xx may work later; the rest never will."""
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status in _RETRYABLE_STATUSES or 500 <= status < 600:
        return Outcome.RETRYABLE
    return Outcome.PERMANENT


@dataclass(frozen=True, slots=True)
class Result:
    """One attempt's outcome; ``error`` is a short readable reason when it failed."""

    outcome: Outcome
    error: str | None = None
    unreachable: bool = False
    """The target did not answer at all (refused, reset, timed out): counts for its breaker."""
    deferred: bool = False
    """Not attempted: the target had too much in flight. Put off, not counted as an attempt."""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


class Verdict(StrEnum):
    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    not_before: datetime | None = None
    reason: str | None = None


#: The longest one retry may wait, whatever the backoff (a week, as ``retry_wait``).
MAX_WAIT_S = 7 * 86400.0

#: A failed attempt's error text is cut to this many characters in the record.
ERROR_CHARS = 512

#: The failed attempts a retry or dead-letter record lists: the first and the
#: latest ones. All of them would grow with every attempt, past what the
#: broker takes as one record after a few dozen long error texts.
ERRORS_KEPT = 10


#: The delay tiers a pending retry waits in, in seconds: each a topic
#: ``firings-retry-{d}s`` whose records are read ``d`` after they were written
#: (``scheduler.streams.retries``). A retry waiting ``w`` goes to the longest
#: tier not over ``w``, and again from there, until less than the shortest is left.
TIERS_S = (5, 30, 120, 600, 3_600, 21_600, 86_400)


def tier_for(seconds: float) -> int | None:
    """The longest tier not over ``seconds``; None when it is shorter than every tier."""
    chosen = None
    for tier in TIERS_S:
        if tier <= seconds:
            chosen = tier
    return chosen


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The task's retry settings as one value with one decision function."""

    enabled: bool
    wait: float
    max_retries: int
    backoff: float = 1.0
    max_wait: float | None = None
    max_age: float | None = None

    @classmethod
    def of(cls, task: Task) -> RetryPolicy:
        return cls(
            enabled=task.failed_policy is FailedPolicy.RETRY,
            wait=task.retry_wait,
            max_retries=task.max_retries,
            backoff=task.retry_backoff,
            max_wait=task.retry_max_wait,
            max_age=task.retry_max_age,
        )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        Never more than ``max_wait``, nor than :data:`MAX_WAIT_S` without one:
        a backoff of 10 reaches a float's limit after ~300 attempts, and a
        wait past a datetime's range cannot be written down at all.
        """
        cap = min(self.max_wait, MAX_WAIT_S) if self.max_wait is not None else MAX_WAIT_S
        try:
            seconds = self.wait * self.backoff ** (attempt - 1)
        except OverflowError:
            return cap
        return min(seconds, cap)

    def decide(
        self, attempt: int, result: Result, scheduled_for: datetime, now: datetime
    ) -> Decision:
        if result.ok:
            return Decision(Verdict.DONE)
        if result.outcome is Outcome.PERMANENT:
            return Decision(Verdict.DEAD, reason="permanent failure")
        if not self.enabled:
            return Decision(Verdict.DEAD, reason="failed_policy is none: no retries")
        if attempt > self.max_retries:
            return Decision(Verdict.DEAD, reason=f"gave up after {attempt} attempts")
        not_before = now + timedelta(seconds=self.delay(attempt))
        if self.max_age is not None and not_before > scheduled_for + timedelta(
            seconds=self.max_age
        ):
            return Decision(
                Verdict.DEAD, reason=f"next retry would pass retry_max_age of {self.max_age:g}s"
            )
        return Decision(Verdict.RETRY, not_before=not_before)


def attempt_error(attempt: int, at: datetime, result: Result) -> dict[str, Any]:
    return {
        "attempt": attempt,
        "at": format_utc(at),
        "outcome": result.outcome.value,
        "error": shorten(result.error),
    }


def shorten(text: str | None, limit: int = ERROR_CHARS) -> str | None:
    """``text`` cut to ``limit`` characters, saying how much was cut."""
    if text is None or len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def kept_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first error and the latest ones, :data:`ERRORS_KEPT` in all."""
    if len(errors) <= ERRORS_KEPT:
        return errors
    return [errors[0], *errors[-(ERRORS_KEPT - 1) :]]


def delivery_headers(firing: dict[str, Any]) -> dict[str, str]:
    """The four names every REST request and Kafka record carries."""
    return {
        "Idempotency-Key": firing["firing_id"],
        "X-Schedule-Id": firing["schedule_id"],
        "X-Scheduled-For": firing["scheduled_for"],
        "X-Attempt": str(firing["attempt"]),
    }


def redis_envelope(firing: dict[str, Any]) -> dict[str, Any]:
    return {
        "firing_id": firing["firing_id"],
        "schedule_id": firing["schedule_id"],
        "scheduled_for": firing["scheduled_for"],
        "attempt": firing["attempt"],
        "data": (firing.get("task") or {}).get("data"),
    }
