"""The worker without Faust's terminal spinner.

Upstream: when it sets up the root logger, Faust's worker starts a terminal
spinner, and lowers the root logger to DEBUG so that it spins on every
record.

Ours: no spinner, so the root logger keeps the configured level.

Why: headless, every debug line on the hot path built a log record for the
spinner.
"""

from __future__ import annotations

import logging

import faust

REPLACES = ("faust.worker:Worker.on_setup_root_logger",)
USES = ("faust.worker:Worker.spinner",)


class Worker(faust.Worker):
    """The Faust worker ``scheduler worker`` runs."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None


def install() -> None:
    """Nothing to install: ``scheduler.worker`` runs this class."""
