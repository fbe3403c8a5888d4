"""Every adjustment of faust-streaming, mode and aiokafka internals, fenced here.

Each module adjusts one thing. Its docstring says what upstream does, what we
change and why; ``REPLACES`` names what it replaces and ``USES`` the private
names it reads or calls, as ``module:Qualified.name``. The measurements
behind each are in ``bench/RESULTS.md`` and the commits that made them;
``docs/internals.md`` has the table. Nothing outside this package touches
a library's private names (``tests/unit/test_patches.py`` checks that, and
that every name listed here still exists upstream).

:func:`install` applies them all, once, and only on the versions they were
written for (:data:`WRITTEN_FOR`): on any other it refuses, naming the
package, the versions and what to do, rather than run with an adjustment
that may silently no longer hold.
"""

from __future__ import annotations

import importlib
from importlib import metadata as distributions
from types import ModuleType

from scheduler.domain.errors import SchedulerError

#: The exact versions every adjustment here was written for and tested on.
#: pyproject.toml pins the same ones.
WRITTEN_FOR = {
    "faust-streaming": "0.15.3",
    "mode-streaming": "0.7.1",
    "aiokafka": "0.14.0",
}

#: One module per thing adjusted, in the order they are installed.
MODULES = (
    "monitor",
    "supervisor",
    "producer_buffer",
    "consumer",
    "topic_metadata",
    "accumulator",
    "consumer_thread",
    "inline_delivery",
    "wake_fetch",
    "livelock",
    "table_manager",
    "recovery",
    "changelog_feed",
    "spinner",
    "batching",
    "produce_guard",
    "commit_floor",
    "bulk_fetch",
    "broker_guard",
    "private",
)


class UntestedVersion(SchedulerError):
    """An installed library is not the version the adjustments were written for."""


def version_problems(installed: dict[str, str] | None = None) -> list[str]:
    """What differs from :data:`WRITTEN_FOR`, one readable line each (none: all is well)."""
    problems = []
    for package, wanted in WRITTEN_FOR.items():
        if installed is not None:
            found = installed.get(package)
        else:
            try:
                found = distributions.version(package)
            except distributions.PackageNotFoundError:
                found = None
        if found != wanted:
            problems.append(f"{package} {found or 'is missing'}, written for {wanted}")
    return problems


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Raise :class:`UntestedVersion` unless every adjusted library is at its version."""
    problems = version_problems(installed)
    if not problems:
        return
    pins = " ".join(f"'{package}=={version}'" for package, version in WRITTEN_FOR.items())
    raise UntestedVersion(
        "the scheduler adjusts internals of faust-streaming, mode-streaming and aiokafka "
        f"and refuses to start on versions it was not written for: {'; '.join(problems)}. "
        f"Either install the versions it was written for (pip install {pins}), or, to "
        "upgrade on purpose, set WRITTEN_FOR in scheduler/patches/__init__.py and the pins "
        "in pyproject.toml to the new versions, run pytest tests/unit/test_patches.py (it "
        "names every private name that moved) and review each module of scheduler/patches/ "
        "against the new version (docs/internals.md)."
    )


def modules() -> list[ModuleType]:
    return [importlib.import_module(f"{__name__}.{name}") for name in MODULES]


_installed = False


def install() -> None:
    """Check the versions, then apply every adjustment (once; later calls do nothing)."""
    global _installed
    if _installed:
        return
    check_versions()
    for module in modules():
        module.install()
    _installed = True
