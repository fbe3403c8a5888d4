"""The fault suite's short forms (``faults/``): each must lose nothing and invent nothing.

The long forms and their report: ``python -m faults.run`` (faults/REPORT.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.run import SHORT
from faults.scenarios import broker_outage, kill_rotation

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
