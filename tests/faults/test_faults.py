"""The fault suite's short forms (``faults/``): each must lose nothing and invent nothing.

The long forms and their report: ``python -m faults.run`` (faults/REPORT.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.run import SHORT
from faults.scenarios import (
    Outcome,
    black_hole,
    broker_outage,
    empty_data_dir,
    kill_rotation,
    pending_retries,
    targets_down,
)

pytestmark = pytest.mark.integration


async def test_kill_9_rotation_loses_no_instant(tmp_path: Path) -> None:
    outcome = await kill_rotation(tmp_path, **SHORT["kill-rotation"])
    verdict = outcome.verdict
    assert len(outcome.faults) >= 2, outcome.faults
    assert verdict.expected > 0
    assert verdict.missing == 0, verdict
    assert verdict.wrong == 0, verdict
    assert verdict.delivered == verdict.expected


async def test_broker_down_15_s_loses_no_instant_and_workers_stay_up(tmp_path: Path) -> None:
    outcome = await broker_outage(tmp_path, **SHORT["broker-outage"])
    verdict = outcome.verdict
    assert verdict.expected > 0
    assert verdict.missing == 0, verdict
    assert verdict.wrong == 0, verdict
    assert outcome.recovered is not None
    assert outcome.recovered["workers_alive_at_end"] == outcome.recovered["workers"], outcome


def lost_nothing(outcome: Outcome) -> None:
    verdict = outcome.verdict
    assert verdict.expected > 0
    assert verdict.missing == 0, verdict
    assert verdict.wrong == 0, verdict
    assert verdict.delivered == verdict.expected
    assert outcome.recovered is not None
    assert outcome.recovered["workers_alive_at_end"] == outcome.recovered["workers"], outcome


async def test_rest_redis_and_kafka_targets_down_and_back_lose_no_instant(tmp_path: Path) -> None:
    outcome = await targets_down(tmp_path, **SHORT["targets-down"])
    assert len(outcome.faults) == 6, outcome.faults
    # The REST target did refuse requests while it was down: the outage was real.
    assert "requests refused)" in outcome.faults[1] and "(0 requests" not in outcome.faults[1]
    lost_nothing(outcome)


async def test_a_black_hole_target_does_not_stop_the_healthy_ones(tmp_path: Path) -> None:
    outcome = await black_hole(tmp_path, **SHORT["black-hole"])
    assert outcome.recovered is not None
    # The black hole was fed: firings were sent to it and held there.
    assert outcome.recovered["black_holed_requests"] >= SHORT["black-hole"]["holes"]
    lost_nothing(outcome)


async def test_a_worker_restarted_on_an_empty_data_dir_loses_no_instant(tmp_path: Path) -> None:
    outcome = await empty_data_dir(tmp_path, **SHORT["empty-data-dir"])
    assert outcome.faults and "data directory deleted" in outcome.faults[0]
    lost_nothing(outcome)


async def test_thousands_of_pending_retries_all_arrive_once_the_target_is_back(
    tmp_path: Path,
) -> None:
    size = SHORT["pending-retries"]
    outcome = await pending_retries(tmp_path, **size)
    assert outcome.recovered is not None
    assert outcome.recovered["retried_expected"] == size["failing"], outcome.recovered
    assert outcome.recovered["retried_missing"] == 0, outcome.recovered
    assert outcome.recovered["retried_delivered"] == size["failing"], outcome.recovered
    lost_nothing(outcome)
