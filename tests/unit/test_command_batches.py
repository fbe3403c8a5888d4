"""The command path's parts that need no broker: the batch judgement, the backlog, the diversion.

``admit_batch`` must decide every command of a batch exactly as
``admit_raw`` (the edge's judgement) decides it alone: the property test
feeds both the generated commands of ``test_admission``, valid and broken,
and things that are no command at all. The backlog and the diversion are
driven with a stand-in consumer; what they do with a real broker is in
``tests/integration/test_command_batches.py``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.admission import admit_batch, admit_raw
from scheduler.domain.errors import InvalidCommand
from scheduler.domain.models import Command
from scheduler.patches import bulk_fetch
from scheduler.streams import bulk
from tests.unit.test_admission import RULES, VALID, decision, items, mangled


def batch_decision(judged: Command | InvalidCommand) -> tuple[str, Any]:
    """What ``admit_batch`` said of one command, in ``decision``'s terms."""
    if isinstance(judged, InvalidCommand):
        return ("refused", (judged.error, judged.field, judged.detail))
    return ("accepted", judged.json_bytes)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(items, items, mangled(), st.binary(max_size=40)), max_size=12))
def test_a_batch_is_judged_command_by_command_as_the_edge_judges_each(raws: list[bytes]) -> None:
    judged = admit_batch(raws, RULES)
    assert len(judged) == len(raws)
    assert [batch_decision(one) for one in judged] == [decision(admit_raw, raw) for raw in raws]


def test_a_batch_with_a_refused_command_keeps_the_others() -> None:
    good = json.dumps(VALID).encode()
    judged = admit_batch([good, b"{", good, b"[]"], RULES)
    assert [type(one).__name__ for one in judged] == [
        "Command",
        "InvalidCommand",
        "Command",
        "InvalidCommand",
    ]
    assert judged[1].error == "bad_json"  # type: ignore[union-attr]


# --- the backlog ------------------------------------------------------------------------------


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    calls: dict[str, list[Any]] = {"pause": [], "resume": []}
    monkeypatch.setattr(bulk, "pause_fetching", lambda consumer, tp: calls["pause"].append(tp))
    monkeypatch.setattr(bulk, "resume_fetching", lambda consumer, tp: calls["resume"].append(tp))
    return calls


def records(partition: int, first: int, count: int, size: int = 200) -> list[Any]:
    return [
        SimpleNamespace(offset=offset, value=b"x" * size) for offset in range(first, first + count)
    ]


def test_the_backlog_hands_records_over_in_fetch_order_and_splits_a_list(
    paused: dict[str, list[Any]],
) -> None:
    backlog = bulk.Backlog()
    a, b = TopicPartition("c", 0), TopicPartition("c", 1)
    backlog.add(a, records(0, 0, 3), 7)
    backlog.add(b, records(1, 10, 4), 7)
    backlog.add(a, [], 7)  # an empty fetch adds nothing
    first = backlog.take(5)
    assert [(tp, [r.offset for r in got], gen) for tp, got, gen in first] == [
        (a, [0, 1, 2], 7),
        (b, [10, 11], 7),
    ]
    assert backlog.count == 2 and backlog.ready.is_set()
    rest = backlog.take(5)
    assert [(tp, [r.offset for r in got]) for tp, got, _ in rest] == [(b, [12, 13])]
    assert backlog.count == 0 and not backlog.ready.is_set()
    assert backlog.peak == 7
    assert paused == {"pause": [], "resume": []}


def test_the_backlog_pauses_what_brings_more_past_its_bound_and_resumes_when_drained(
    paused: dict[str, list[Any]],
) -> None:
    backlog = bulk.Backlog()
    tps = [TopicPartition("c", partition) for partition in range(4)]
    per_fetch = 500
    offsets = dict.fromkeys(tps, 0)
    # Fetch after fetch, as the consumer's loop would, never taking anything.
    while len(paused["pause"]) < len(tps):
        for tp in tps:
            if tp in backlog.paused:
                continue  # the client no longer fetches it
            backlog.add(tp, records(tp.partition, offsets[tp], per_fetch), 1)
            offsets[tp] += per_fetch
    assert set(paused["pause"]) == set(tps) and len(paused["pause"]) == len(tps)
    # Held at most the bound plus one fetch per partition.
    assert bulk.BACKLOG_MAX <= backlog.peak <= bulk.BACKLOG_MAX + len(tps) * per_fetch
    while backlog.count > bulk.BACKLOG_RESUME:
        backlog.take(bulk.BATCH_MAX)
        if backlog.count > bulk.BACKLOG_RESUME:
            backlog.resume_if_low()
            assert paused["resume"] == []
    backlog.resume_if_low()
    assert set(paused["resume"]) == set(tps) and not backlog.paused


def test_the_backlog_is_bounded_in_bytes_too(paused: dict[str, list[Any]]) -> None:
    backlog = bulk.Backlog()
    tp = TopicPartition("c", 0)
    big = 256 * 1024  # SCHEDULER_MAX_COMMAND_BYTES's default
    offset = 0
    while not paused["pause"]:
        backlog.add(tp, records(0, offset, 10, size=big), 1)
        offset += 10
    assert backlog.count < bulk.BACKLOG_MAX
    assert bulk.BACKLOG_MAX_BYTES <= backlog.bytes < bulk.BACKLOG_MAX_BYTES + 10 * big
    backlog.take(backlog.count - 10)
    assert backlog.bytes == 10 * big
    backlog.resume_if_low()
    assert paused["resume"] == [tp]


def test_dropping_the_backlog_forgets_everything(paused: dict[str, list[Any]]) -> None:
    backlog = bulk.Backlog()
    backlog.add(TopicPartition("c", 0), records(0, 0, 10), 1)
    backlog.drop()
    assert backlog.count == 0 and backlog.bytes == 0
    assert not backlog.parts and not backlog.ready.is_set()
    assert backlog.take(10) == []


# --- the diversion and the watermark -----------------------------------------------------------


class _Consumer:
    """What the diversion reads of Faust's consumer."""

    def __init__(self, fetched: dict[Any, list[Any]], *, rebalance: bool = False) -> None:
        self.app = SimpleNamespace(consumer_generation_id=3)
        self.flow_active = True
        self.should_stop = False
        self.fetched = fetched
        self.rebalance = rebalance
        self._acked: dict[Any, list[int]] = {}
        self._committed_offset: dict[Any, int | None] = {}

    def _should_commit(self, tp: Any, offset: int) -> bool:
        committed = self._committed_offset.get(tp)
        return committed is None or offset > committed


async def _fetch(self: _Consumer, active_partitions: Any, timeout: float) -> Any:
    if self.rebalance:
        self.app.consumer_generation_id += 1
    return dict(self.fetched)


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, list[Any], int]]:
    got: list[tuple[Any, list[Any], int]] = []
    monkeypatch.setattr(bulk_fetch, "_getmany", _fetch)
    monkeypatch.setattr(bulk_fetch, "_sinks", {"cmds": lambda tp, r, gen: got.append((tp, r, gen))})
    return got


CMD, OTHER = TopicPartition("cmds", 0), TopicPartition("firings", 0)


async def test_a_diverted_topics_records_go_to_its_sink_and_no_further(sink: list[Any]) -> None:
    consumer = _Consumer({CMD: records(0, 5, 3), OTHER: records(0, 0, 2)})
    left = await bulk_fetch._getmany_diverting(consumer, active_partitions={CMD, OTHER}, timeout=1)
    assert list(left) == [OTHER]
    assert [(tp, [r.offset for r in got], gen) for tp, got, gen in sink] == [(CMD, [5, 6, 7], 3)]


async def test_a_fetch_that_waited_through_a_rebalance_belongs_to_the_new_generation(
    sink: list[Any],
) -> None:
    consumer = _Consumer({CMD: records(0, 5, 3)}, rebalance=True)
    await bulk_fetch._getmany_diverting(consumer, active_partitions={CMD}, timeout=1)
    assert [gen for _, _, gen in sink] == [4]  # as Faust stamps its own messages


async def test_records_fetched_as_the_worker_stops_are_dropped(sink: list[Any]) -> None:
    consumer = _Consumer({CMD: records(0, 5, 3)})
    consumer.should_stop = True
    left = await bulk_fetch._getmany_diverting(consumer, active_partitions={CMD}, timeout=1)
    assert left == {} and sink == []


async def test_records_of_a_partition_paused_while_they_were_fetched_are_kept(
    sink: list[Any],
) -> None:
    # Faust changes its set of active partitions in place (a new assignment
    # pauses the stream partitions until its recovery ends) while the
    # consumer's thread fetches with it: records fetched while the partition
    # was active come back after it no longer is. Dropped, they were lost (the
    # position had passed them, and a partition with no commit is not sought
    # back); the ownership check is the generation, which the command path
    # makes before it handles anything.
    consumer = _Consumer({CMD: records(0, 5, 3)})
    left = await bulk_fetch._getmany_diverting(consumer, active_partitions={OTHER}, timeout=1)
    assert left == {}
    assert [(tp, [r.offset for r in taken], gen) for tp, taken, gen in sink] == [
        (CMD, [5, 6, 7], 3)
    ]


async def test_records_fetched_while_the_flow_is_stopped_are_kept_for_when_it_runs(
    sink: list[Any],
) -> None:
    # Dropped, they were lost for good on a partition with no commit (nothing
    # seeks it back); the command path waits for the flow before it handles them.
    consumer = _Consumer({CMD: records(0, 5, 3)})
    consumer.flow_active = False
    left = await bulk_fetch._getmany_diverting(consumer, active_partitions={CMD}, timeout=1)
    assert left == {}
    assert [(tp, [r.offset for r in taken]) for tp, taken, _ in sink] == [(CMD, [5, 6, 7])]


def test_a_partition_is_committed_to_its_watermark_and_never_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Faust's own rule (with commit_floor's) finds nothing acknowledged here.
    monkeypatch.setattr(bulk_fetch, "_filter_committable_offsets", lambda consumer, tps: {})
    consumer = _Consumer({})
    tp = TopicPartition("cmds-watermark", 0)
    try:
        assert tp not in bulk_fetch._filter_committable_with_watermarks(consumer, [tp])
        bulk_fetch.done(consumer, tp, 120)
        assert tp in consumer._acked  # so that a commit looks at it
        bulk_fetch.done(consumer, tp, 80)  # an older batch read again after a rebalance
        assert bulk_fetch._filter_committable_with_watermarks(consumer, [tp])[tp] == 120
        consumer._committed_offset[tp] = 120
        assert tp not in bulk_fetch._filter_committable_with_watermarks(consumer, [tp])
        bulk_fetch.forget([tp])
        bulk_fetch.done(consumer, tp, 100)  # the partition came back, read from its commit
        assert tp not in bulk_fetch._filter_committable_with_watermarks(consumer, [tp])
    finally:
        bulk_fetch.forget([tp])


# --- how many workers `scheduler dev` runs -------------------------------------------------------


def test_dev_says_how_many_workers_it_runs_and_when_more_would_pay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from scheduler.cli import _workers_said
    from scheduler.settings import Settings

    settings = Settings(web_port=7000)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    one = _workers_said(settings, 1)
    assert one.startswith("1 worker; web view on http://127.0.0.1:7000")
    assert "--workers 2 runs one on each" in one
    two = _workers_said(settings, 2)
    assert "2 workers" in two and "7001" in two and "--workers" not in two


# --- a rejection always fits on the broker ----------------------------------------------------


@pytest.mark.parametrize("raw", [b"\x01" * 200_000, b'"' * 600_000, b"\xff" * 400_000])
def test_a_rejection_fits_on_the_broker_whatever_the_command_held(raw: bytes) -> None:
    from scheduler.streams.rejects import REJECTION_MAX_BYTES, rejection

    body = rejection(InvalidCommand("bad_json", "command is not valid JSON"), raw)
    assert REJECTION_MAX_BYTES * 0.7 < len(body) <= REJECTION_MAX_BYTES
    found = json.loads(body)
    assert found["command_truncated"] is True and found["command_bytes"] == len(raw)
    assert raw.decode("utf-8", errors="replace").startswith(found["command"])


def test_a_rejection_keeps_a_text_that_fits_whole_and_masks_before_it_cuts() -> None:
    from scheduler.streams.rejects import rejection

    command = {
        "client": {"operation": "o", "application": "a", "group": "g", "key": "k", "type": "t"},
        "task": {
            "type": "rest",
            "connection": {"host": "http://u:hunter2@h/x", "headers": {"Authorization": "s3"}},
            "data": "x",
        },
    }
    for blob, cut in (("y" * 300_000, False), ("\x01" * 300_000, True)):
        command["task"]["data"] = blob  # type: ignore[index]
        raw = json.dumps(command).encode()
        body = json.loads(rejection(InvalidCommand("too_large", "big"), raw))
        assert "hunter2" not in body["command"] and '"s3"' not in body["command"]
        assert body.get("command_truncated", False) is cut
    short = json.loads(rejection(InvalidCommand("bad_json", "x"), b"{"))
    assert short["command"] == "{" and "command_truncated" not in short


@pytest.mark.parametrize(
    ("state", "handles"),
    [
        ({}, True),
        ({"flow_active": False}, False),
        ({"rebalancing": True}, False),
        # A recovery resumes the flow to read the changelogs, tables not yet restored.
        ({"in_recovery": True}, False),
        ({"rebalancing": True, "in_recovery": True}, False),
    ],
)
def test_commands_wait_for_the_flow_and_for_a_rebalance_and_its_recovery_to_end(
    monkeypatch: pytest.MonkeyPatch, state: dict[str, bool], handles: bool
) -> None:
    consumer = SimpleNamespace(flow_active=state.get("flow_active", True))
    fake = SimpleNamespace(
        consumer=consumer,
        rebalancing=state.get("rebalancing", False),
        in_recovery=state.get("in_recovery", False),
    )
    monkeypatch.setattr(bulk, "app", fake)
    assert bulk._flowing() is handles
