"""Faust's table manager starts without its one-second grace.

Upstream: the table manager sleeps 1 s when it starts, a grace for tables
declared late, before it subscribes to their changelogs.

Ours: it subscribes at once.

Why: every table here is declared when ``scheduler.tables`` is imported,
before the worker starts, so the second only delayed every start.
"""

from __future__ import annotations

from typing import Any

from faust.tables.manager import TableManager

REPLACES = ("faust.tables.manager:TableManager.on_start",)
USES = (
    "faust.tables.manager:TableManager._update_channels",
    "faust.tables.manager:TableManager.recovery",
)


async def on_start(self: Any) -> None:
    if not self.should_stop:
        await self._update_channels()
        await self.recovery.start()


def install() -> None:
    TableManager.on_start = on_start  # type: ignore[method-assign]
