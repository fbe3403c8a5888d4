"""One page of ``GET /schedules`` from the pages of every worker.

Each worker reads its own partitions in schedule id order from the page's
``after`` and stops when its part of the page is full or its scan budget is
spent; it then says where (``next``). This module merges the parts. Pure, so
the rule that keeps paging from skipping anything is tested on its own.
"""

from __future__ import annotations

from typing import Any

__all__ = ["merge", "uncovered"]


def merge(pages: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    """One page from the workers' pages (``{"schedules": [...], "next": id | None}``).

    A worker that stopped early said where: nothing past the earliest such
    point may be answered, or the next page, starting past it, would skip
    what that worker has not read yet.
    """
    stops = [page["next"] for page in pages if page.get("next")]
    bound = min(stops) if stops else None
    items = sorted(
        (item for page in pages for item in page["schedules"]),
        key=lambda item: item["schedule_id"],
    )
    if bound is not None:
        items = [item for item in items if item["schedule_id"] <= bound]
    if len(items) >= limit:
        items = items[:limit]
        return {"schedules": items, "next": items[-1]["schedule_id"]}
    return {"schedules": items, "next": bound}


def uncovered(pages: list[dict[str, Any]], partitions: int) -> list[int]:
    """The partitions no worker's part covered (none is ready for them: a rebalance
    or a recovery). Unknown (an older worker's part says nothing) counts as covered."""
    if not all("partitions" in page for page in pages):
        return []
    covered = {p for page in pages for p in page["partitions"]}
    return [p for p in range(partitions) if p not in covered]
