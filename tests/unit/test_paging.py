"""Merging the workers' parts of a schedules page: nothing skipped, nothing twice."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.paging import merge


def worker_part(ids: list[str], after: str | None, limit: int, budget: int) -> dict[str, Any]:
    """What one worker answers: matches past ``after``, up to ``limit``, reading at most
    ``budget`` records (here every record is a match only if it ends in an even digit)."""
    found: list[dict[str, str]] = []
    for scanned, sid in enumerate(sorted(i for i in ids if after is None or i > after), start=1):
        last = sid
        if int(sid[-1]) % 2 == 0:
            found.append({"schedule_id": sid})
            if len(found) >= limit:
                return {"schedules": found, "next": last}
        if scanned >= budget:
            return {"schedules": found, "next": last}
    return {"schedules": found, "next": None}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 10**6), min_size=0, max_size=300, unique=True),
    st.integers(1, 4),
    st.integers(1, 30),
    st.integers(1, 50),
    st.randoms(use_true_random=False),
)
def test_paging_through_every_worker_returns_each_match_once_in_order(
    numbers: list[int], workers: int, limit: int, budget: int, rng: random.Random
) -> None:
    ids = [f"sch_{n:08d}" for n in numbers]
    owned: list[list[str]] = [[] for _ in range(workers)]
    for sid in ids:
        owned[rng.randrange(workers)].append(sid)
    seen: list[str] = []
    after = None
    for _ in range(len(ids) + 2):
        page = merge([worker_part(part, after, limit, budget) for part in owned], limit)
        assert len(page["schedules"]) <= limit
        seen += [item["schedule_id"] for item in page["schedules"]]
        after = page["next"]
        if after is None:
            break
    else:
        raise AssertionError("paging did not end")
    assert seen == sorted(i for i in ids if int(i[-1]) % 2 == 0)


def test_a_worker_that_stopped_early_bounds_the_page() -> None:
    pages = [
        {"schedules": [{"schedule_id": "sch_2"}], "next": "sch_3"},  # budget spent at sch_3
        {"schedules": [{"schedule_id": "sch_4"}, {"schedule_id": "sch_6"}], "next": None},
    ]
    assert merge(pages, 10) == {"schedules": [{"schedule_id": "sch_2"}], "next": "sch_3"}
