"""The next fire instants of a command, as ``scheduler preview`` and ``POST /preview`` show them."""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler.domain.models import Command, ScheduleType
from scheduler.domain.triggers import fire_times


def preview(command: Command, after: datetime, count: int) -> list[datetime]:
    """The first ``count`` instants after ``after``, as if accepted at ``after``.

    Relative types (delay, delay-recur, now) count from ``after``. A ``now``
    command fires at its acceptance, which is ``after`` itself, so it is the
    one type whose preview includes ``after``.
    """
    start = after - timedelta(microseconds=1) if command.type is ScheduleType.NOW else after
    return fire_times(command.trigger(after), start, count)
