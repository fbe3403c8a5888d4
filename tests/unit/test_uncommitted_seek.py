"""Which partitions Faust's seek back sends to their start (``patches.consumer``, (3)).

The consumer and its thread are stand-ins with the members the seek uses;
what the seeks do on a real broker is in
``tests/integration/test_uncommitted_seek.py``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer as FaustConsumer
from faust.types import TP

import scheduler.app  # noqa: F401  (installs the adjustments)
from scheduler.patches import bulk_fetch
from scheduler.patches import consumer as patch

FIRINGS_0 = TP("firings", 0)
FIRINGS_1 = TP("firings", 1)
COMMANDS_0 = TP("schedule-commands", 0)
CHANGELOG_0 = TP("app-schedules-changelog", 0)


class _Thread:
    """Faust's consumer thread: runs the call, here on the same loop."""

    def __init__(self) -> None:
        self.reset: list[Any] = []

    async def call_thread(self, method: Any, *args: Any) -> Any:
        return await method(*args)

    def _ensure_consumer(self) -> _Thread:
        return self

    async def seek_to_start(self, *partitions: Any) -> list[Any]:
        self.reset.extend(partitions)
        return list(partitions)


class _Consumer:
    perform_seek = patch.perform_seek

    def __init__(self, committed: dict[Any, int | None]) -> None:
        self.committed = committed
        self._read_offset: dict[Any, int | None] = {}
        self._committed_offset: dict[Any, int | None] = {}
        self._thread = _Thread()
        self.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={CHANGELOG_0.topic}))

    async def seek_to_committed(self) -> dict[Any, int | None]:
        return self.committed


def test_faust_seeks_back_through_ours() -> None:
    assert FaustConsumer.perform_seek is patch.perform_seek


async def test_only_stream_partitions_without_a_commit_go_to_their_start() -> None:
    consumer = _Consumer({FIRINGS_0: None, FIRINGS_1: 7, COMMANDS_0: 0, CHANGELOG_0: None})
    await consumer.perform_seek()
    assert consumer._thread.reset == [FIRINGS_0]


async def test_a_diverted_topic_is_left_alone(monkeypatch: Any) -> None:
    monkeypatch.setitem(bulk_fetch._sinks, "diverted-commands", lambda *_: None)
    diverted = TP("diverted-commands", 0)
    consumer = _Consumer({FIRINGS_0: None, diverted: None})
    await consumer.perform_seek()
    assert consumer._thread.reset == [FIRINGS_0]


async def test_the_offsets_faust_keeps_are_set_as_upstream_sets_them() -> None:
    consumer = _Consumer({FIRINGS_0: None, FIRINGS_1: 7, COMMANDS_0: 0, CHANGELOG_0: None})
    await consumer.perform_seek()
    # Read from: any offset where there is no commit, else the commit.
    assert consumer._read_offset == {
        FIRINGS_0: None,
        FIRINGS_1: 7,
        COMMANDS_0: 0,
        CHANGELOG_0: None,
    }
    # Committed: upstream keeps 0 as None (nothing processed yet).
    assert consumer._committed_offset == {FIRINGS_1: 7, COMMANDS_0: None}


async def test_with_every_partition_committed_nothing_is_reset() -> None:
    consumer = _Consumer({FIRINGS_0: 3, FIRINGS_1: 7})
    await consumer.perform_seek()
    assert consumer._thread.reset == []
