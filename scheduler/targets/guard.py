"""Per-target isolation: deliveries in flight per target, and a circuit breaker for each.

A target is what one connection pool serves: a REST origin
(``scheme://host:port``), a Kafka bootstrap list, a Redis URL. Every
delivery first asks its target's :class:`Gate`:

- at most ``limit`` deliveries to one target are in flight, and at most
  ``queue`` more wait for one of them; past that a delivery fails at once
  as retryable (``target busy``), so a target that accepts and never answers
  holds ``limit`` of the worker's delivery slots, never all of them, and its
  backlog waits on the retry topic, not in memory;
- after ``trip_after`` failures in a row that say the target is unreachable
  or hanging (connection errors, timeouts), the circuit opens: for
  ``open_s`` deliveries fail at once (``circuit open``) without touching
  the network; then one delivery is let through as a probe, and its success
  closes the circuit again (its failure opens it for another ``open_s``).

A failure the target answered (an HTTP 500, a Kafka error it returned) is
not a sign that it is down, and does not count towards the breaker.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from scheduler import metrics

_busy = metrics.counter(
    "scheduler_deliveries_target_busy_total",
    "deliveries failed at once: their target had too many in flight and waiting",
)
_short = metrics.counter(
    "scheduler_deliveries_circuit_open_total",
    "deliveries failed at once: their target's circuit was open",
)
_trips = metrics.counter("scheduler_circuit_trips_total", "circuits opened after failures")


class Refused(Exception):
    """The gate let the delivery not through; ``str`` says why.

    ``busy``: the target is healthy but has too much in flight (the delivery
    is put off, not failed); else its circuit is open (a failure).
    """

    def __init__(self, message: str, *, busy: bool) -> None:
        super().__init__(message)
        self.busy = busy


@dataclass
class Limits:
    limit: int = 64
    queue: int = 256
    trip_after: int = 5
    open_s: float = 10.0


class Gate:
    """One target's in-flight limit and circuit breaker."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.in_flight = 0
        self.waiting = 0
        self.failures = 0
        self.open_until = 0.0
        self.probing = False
        self._free = asyncio.Condition()
        self.used_at = time.monotonic()

    async def enter(
        self, *, wait: bool = True, before_wait: Callable[[], None] | None = None
    ) -> bool:
        """Wait for a place (or, without ``wait``, refuse at once if there is none).

        True if this delivery is the circuit's probe. Raises :class:`Refused`.
        """
        self.used_at = time.monotonic()
        probe = False
        if self.open_until:
            if time.monotonic() < self.open_until or self.probing:
                _short.inc()
                raise Refused(
                    f"circuit open after {self.failures} failures in a row; "
                    f"trying again in {max(self.open_until - time.monotonic(), 0):.1f}s",
                    busy=False,
                )
            self.probing = probe = True
        if self.in_flight >= self.limits.limit:
            if not wait or self.waiting >= self.limits.queue:
                if probe:
                    self.probing = False
                _busy.inc()
                raise Refused(
                    f"target busy: {self.in_flight} deliveries in flight and "
                    f"{self.waiting} waiting",
                    busy=True,
                )
            self.waiting += 1
            if before_wait is not None:
                before_wait()
            try:
                async with self._free:
                    await self._free.wait_for(lambda: self.in_flight < self.limits.limit)
            except BaseException:
                if probe:
                    self.probing = False
                raise
            finally:
                self.waiting -= 1
        self.in_flight += 1
        return probe

    async def leave(self, *, probe: bool, down: bool | None) -> None:
        """A delivery is over; ``down``: it failed as if the target were unreachable.

        ``None``: it says nothing of the target (it was cancelled), and counts for
        neither side of the breaker.
        """
        self.in_flight -= 1
        self.used_at = time.monotonic()
        if probe:
            self.probing = False
        if down is None:
            pass
        elif down:
            self.failures += 1
            if probe or self.failures >= self.limits.trip_after:
                if not self.open_until or probe:
                    _trips.inc()
                self.open_until = time.monotonic() + self.limits.open_s
        else:
            self.failures = 0
            self.open_until = 0.0
        async with self._free:
            # All, not one: a waiter woken and then cancelled would swallow a
            # single notification, and the others would sleep on.
            self._free.notify_all()

    @property
    def idle(self) -> bool:
        return self.in_flight == 0 and self.waiting == 0


class Gates:
    """The gates of every target seen lately: at most ``cap``, the least recently used go first."""

    def __init__(self, limits: Limits, cap: int = 10_000) -> None:
        self.limits = limits
        self.cap = cap
        self._gates: OrderedDict[str, Gate] = OrderedDict()

    def of(self, target: str) -> Gate:
        gate = self._gates.get(target)
        if gate is None:
            gate = self._gates[target] = Gate(self.limits)
            if len(self._gates) > self.cap:
                self._evict()
        else:
            self._gates.move_to_end(target)
        return gate

    def peek(self, target: str) -> Gate | None:
        """The target's gate if it has one, without making one."""
        return self._gates.get(target)

    def _evict(self) -> None:
        for target, gate in list(self._gates.items()):
            if len(self._gates) <= self.cap:
                return
            if gate.idle:
                del self._gates[target]

    def __len__(self) -> int:
        return len(self._gates)
