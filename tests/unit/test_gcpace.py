"""Young collections paced by the clock while firings are taken (scheduler.gcpace)."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from scheduler import gcpace


@pytest.fixture
def collections(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The generation of each collection started meanwhile, by anyone."""
    monkeypatch.setattr(gcpace, "_next", 0.0)
    monkeypatch.setattr(gcpace, "_young", 0)
    monkeypatch.setattr(gcpace, "_full", time.monotonic() + 3600)
    seen: list[int] = []

    def note(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(note)
    try:
        yield seen
    finally:
        gc.callbacks.remove(note)


def test_at_most_one_collection_per_interval(
    collections: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An interval no run can outlast: with the real 0.1 s, a process descheduled
    # under load took longer than that for the 1,000 calls, and this failed.
    monkeypatch.setattr(gcpace, "YOUNG_EVERY_S", 3600.0)
    gc.disable()  # only the paced ones
    try:
        for _ in range(1_000):
            gcpace.pace()
    finally:
        gc.enable()
    assert collections == [0]


def test_the_interval_passing_allows_the_next_and_every_few_is_generation_1(
    collections: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcpace, "YOUNG_EVERY_S", 0.01)
    # gcpace's clock, moved by hand: with the real one and a real sleep, a
    # process descheduled between the two calls saw its "too soon" call collect.
    now = [time.monotonic()]
    monkeypatch.setattr(gcpace, "time", SimpleNamespace(monotonic=lambda: now[0]))
    gc.disable()
    try:
        for _ in range(2 * gcpace.MIDDLE_EVERY):
            gcpace.pace()
            now[0] += 0.009
            gcpace.pace()  # too soon: nothing
            now[0] += 0.003
    finally:
        gc.enable()
    expected = ([0] * (gcpace.MIDDLE_EVERY - 1) + [1]) * 2
    assert collections == expected


def test_a_full_collection_once_its_time_has_come(
    collections: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcpace, "_full", time.monotonic() - 1)
    monkeypatch.setattr(gcpace, "YOUNG_EVERY_S", 0.01)
    gc.disable()
    try:
        gcpace.pace()
        time.sleep(0.012)
        gcpace.pace()
    finally:
        gc.enable()
    assert collections == [2, 0]
    assert gcpace._full > time.monotonic() + gcpace.FULL_EVERY_S - 1


def test_trim_hands_back_freed_heap_only_after_growth() -> None:
    gcpace.trim()  # whatever came before: a baseline
    assert gcpace.trim() is False  # no growth since: nothing done
    # A burst: 64 MiB of buffers (malloc's, not Python's small-object arenas),
    # every 16th kept, so the heap's top stays in use and only trimming frees
    # the pages in between.
    burst = [bytearray(2048) for _ in range(32_768)]
    kept = burst[::16]
    grown = gcpace.resident()
    del burst
    assert gcpace.trim() is True
    assert gcpace.resident() < grown - 32 * 2**20, (grown, gcpace.resident())
    assert len(kept) == 2048
