"""After Faust's seek back to the commits, a stream partition with no commit is read from its start.

A pure unit: the seeks are recorded on a stand-in with the attributes
``perform_seek`` reads. What the seek is for (no record lost on a partition
with no commit when a recovery pauses it mid-fetch) is exercised by the
integration tests with two workers.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

import pytest
from faust.types import TP

from scheduler.patches import bulk_fetch, seek_uncommitted

KEYED = TP("schedule-commands-keyed", 0)
FIRINGS = TP("firings", 3)
CHANGELOG = TP("scheduler-schedules-changelog", 0)
COMMANDS = TP("schedule-commands", 1)


class Thread:
    def __init__(self, fails: bool = False) -> None:
        self.to_start: list[TP] = []
        self.fails = fails

    async def seek_to_beginning(self, *tps: TP) -> None:
        if self.fails:
            raise RuntimeError("partition no longer assigned")
        self.to_start.extend(tps)


class Stand:
    """What ``perform_seek`` reads and writes of Faust's consumer."""

    def __init__(self, committed: dict[TP, int | None], *, fails: bool = False) -> None:
        self.committed = committed
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._thread = Thread(fails)
        self.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={CHANGELOG.topic}))

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)


def seek(stand: Stand) -> None:
    asyncio.run(seek_uncommitted.perform_seek(stand))


def test_stream_partitions_with_no_commit_go_back_to_their_start() -> None:
    stand = Stand({KEYED: None, FIRINGS: 0, TP("firings", 4): 17})
    seek(stand)
    assert stand._thread.to_start == [KEYED, FIRINGS]


def test_changelogs_and_diverted_topics_are_left_where_they_are() -> None:
    bulk_fetch.divert(COMMANDS.topic, lambda tp, records, generation: None)
    try:
        stand = Stand({CHANGELOG: None, COMMANDS: None})
        seek(stand)
    finally:
        bulk_fetch._sinks.pop(COMMANDS.topic)
    assert stand._thread.to_start == []


def test_a_failed_seek_is_logged_and_upstreams_bookkeeping_stands(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stand = Stand({FIRINGS: 12, KEYED: None, COMMANDS: 0}, fails=True)
    seek(stand)
    assert "could not seek 2 partitions" in caplog.text
    assert dict(stand._read_offset) == {FIRINGS: 12, KEYED: None, COMMANDS: 0}
    assert dict(stand._committed_offset) == {FIRINGS: 12, COMMANDS: None}
