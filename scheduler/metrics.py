"""Counters and gauges in the Prometheus text format, without a dependency.

Hot paths count here instead of logging per event: a log line per firing
costs more than the firing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Counter:
    name: str
    help: str = ""
    value: float = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


@dataclass
class Gauge:
    name: str
    help: str = ""
    read: Callable[[], float] = field(default=lambda: 0.0)


_counters: dict[str, Counter] = {}
_gauges: dict[str, Gauge] = {}


def counter(name: str, help: str = "") -> Counter:
    found = _counters.get(name)
    if found is None:
        found = _counters[name] = Counter(name, help)
    return found


def gauge(name: str, read: Callable[[], float], help: str = "") -> Gauge:
    _gauges[name] = Gauge(name, help, read)
    return _gauges[name]


def render() -> str:
    lines: list[str] = []
    for c in sorted(_counters.values(), key=lambda item: item.name):
        if c.help:
            lines.append(f"# HELP {c.name} {c.help}")
        lines.append(f"# TYPE {c.name} counter")
        lines.append(f"{c.name} {c.value:g}")
    for g in sorted(_gauges.values(), key=lambda item: item.name):
        if g.help:
            lines.append(f"# HELP {g.name} {g.help}")
        lines.append(f"# TYPE {g.name} gauge")
        try:
            value = float(g.read())
        except Exception:  # a gauge must never break the scrape
            value = float("nan")
        lines.append(f"{g.name} {value:g}")
    return "\n".join(lines) + "\n"
