"""The worker's metrics: one ``prometheus_client`` registry, served at ``GET /metrics``.

Hot paths count here instead of logging per event: a log line per firing
costs more than the firing. A metric with labels has its children bound once
(``.labels(...)`` at import, kept in a dict or a name), so the hot path pays
for an increment, not for a label lookup (which costs four times as much).

Two kinds of value are not counted as they happen but read when Prometheus
scrapes: what a module holds (held firings, timers, schedules by status: a
:func:`gauge`, or a :class:`Reading` when it has labels) and what only the
consumer knows (lag, partitions). The module that owns the state binds the
reader; until it does, the metric is declared (its ``# HELP`` and ``# TYPE``
lines are served) with no value.

Faust's own Prometheus sensor is not used: everything served here is ours,
named ``scheduler_*``, plus the process's CPU, memory and garbage collector
(``process_*``, ``python_gc_*``). ``docs/operations.md`` lists them all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

log = logging.getLogger(__name__)

#: Every metric of the service, and nothing else's (not the library's global registry).
REGISTRY = CollectorRegistry()

# A ``_created`` series per counter and histogram (when the process started,
# in effect) doubles what a scrape carries for nothing an alert uses.
disable_created_metrics()  # type: ignore[no-untyped-call]
ProcessCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)


def counter(name: str, help: str = "") -> Counter:
    """An unlabelled counter; ``name`` ends in ``_total`` as it is served."""
    return Counter(name, help, registry=REGISTRY)


def gauge(name: str, read: Callable[[], float], help: str = "") -> Gauge:
    """A gauge whose value is ``read()`` at each scrape (NaN if that fails)."""
    made = Gauge(name, help, registry=REGISTRY)
    made.set_function(lambda: _safely(name, read))
    return made


def _safely(name: str, read: Callable[[], float]) -> float:
    # A broken reader must not take the whole scrape down with it.
    try:
        return float(read())
    except Exception:
        log.debug("cannot read %s", name, exc_info=True)
        return math.nan


#: What a reading returns: a value per tuple of label values (in ``labels`` order).
Values = Mapping[tuple[str, ...], float]


class Reading:
    """A gauge with labels whose values are read at each scrape.

    ``bind`` gives it the reader; the reader returns every current series,
    so a label value that is gone (a partition moved away) is gone from the
    next scrape too, which a labelled ``Gauge`` set from outside would keep.
    """

    def __init__(self, name: str, help: str, labels: tuple[str, ...] = ()) -> None:
        self.name = name
        self.help = help
        self.labels = labels
        self._read: Callable[[], Values] | None = None
        REGISTRY.register(self)

    def bind(self, read: Callable[[], Values]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        if self._read is None:
            return [family]
        try:
            values = self._read()
        except Exception:
            log.debug("cannot read %s", self.name, exc_info=True)
            return [family]
        for labels, value in sorted(values.items()):
            family.add_metric(list(labels), float(value))
        return [family]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(self.name, self.help, labels=list(self.labels))


class Total:
    """A counter served as the sum of some series of a labelled counter.

    The counters from before the labelled ones (``scheduler_deliveries_succeeded_total``
    and the like) are still read by dashboards and by ``bench/``; summing
    at the scrape keeps them without a second increment on the hot path.
    ``where`` keeps the series whose label has one of the values given.
    """

    def __init__(self, name: str, help: str, source: Counter, where: Mapping[str, set[str]]):
        self.name = name
        self.help = help
        self._source = source
        self._where = where
        REGISTRY.register(self)

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.name, self.help)]

    def collect(self) -> Iterable[Metric]:
        total = 0.0
        for family in self._source.collect():
            for sample in family.samples:
                if sample.name.endswith("_total") and all(
                    sample.labels.get(label) in values for label, values in self._where.items()
                ):
                    total += sample.value
        return [CounterMetricFamily(self.name, self.help, value=total)]


def render(accept: str | None) -> tuple[bytes, str]:
    """The registry in the format the scraper asks for (``Accept``), and its content type.

    Prometheus' text format unless the scraper prefers OpenMetrics.
    """
    encode, content_type = choose_encoder(accept or "")
    return encode(REGISTRY), content_type
