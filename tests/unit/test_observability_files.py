"""The Grafana dashboard and the Prometheus alert rules, against what a worker serves.

Every PromQL expression in ``deploy/prometheus/alerts.yaml`` and
``deploy/grafana/scheduler-dashboard.json`` is parsed by a real PromQL parser
(``promql-parser``, the Rust parser GreptimeDB uses), and each metric it
selects must be a series the worker's registry serves: a counter as
``_total``, a histogram as ``_bucket``, ``_sum`` and ``_count``. A label
matched for equality must be one of the metric's labels, with a value it
takes. So a renamed metric, a misspelt label or a broken expression fails
here, not on an operator's screen.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from scheduler import metrics

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "scheduler-dashboard.json"

#: Series Prometheus makes itself for every target it scrapes.
SCRAPE_SERIES = {"up"}
#: Labels Prometheus attaches to every series it scrapes.
TARGET_LABELS = {"instance", "job"}


def _modules_that_register_metrics() -> list[str]:
    """Every module of the package that declares a metric, found by reading the source."""
    uses = re.compile(r"\bmetrics\.(counter|gauge|Reading|Total|REGISTRY)\b")
    found = []
    for path in sorted((REPO / "scheduler").rglob("*.py")):
        if uses.search(path.read_text(encoding="utf-8")):
            module = path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
            found.append(module.removesuffix(".__init__"))
    return found


@pytest.fixture(scope="module")
def served() -> dict[str, dict[str, set[str]]]:
    """What a worker serves: series name -> label -> the values seen (none if no sample yet)."""
    for module in _modules_that_register_metrics():
        importlib.import_module(module)
    body, _ = metrics.render(None)
    series: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(body.decode()):
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count"),
        }.get(family.type, ("",))
        for suffix in suffixes:
            series.setdefault(family.name + suffix, {})
        for sample in family.samples:
            labels = series.setdefault(sample.name, {})
            for label, value in sample.labels.items():
                labels.setdefault(label, set()).add(value)
    return series


def _selectors(expr: str) -> list[Any]:
    found: list[Any] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
        return True

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


def problems(expr: str, served: dict[str, dict[str, set[str]]]) -> list[str]:
    """What in ``expr`` does not match the served series; empty when all is well."""
    out = []
    for selector in _selectors(expr):
        name = selector.name
        if not name:
            out.append(f"a selector without a metric name: {selector}")
            continue
        if name in SCRAPE_SERIES:
            continue
        if name not in served:
            out.append(f"{name}: not served")
            continue
        labels = served[name]
        for matcher in selector.matchers.matchers:
            if matcher.name in TARGET_LABELS:
                continue
            if labels and matcher.name not in labels:
                out.append(f"{name}: no label {matcher.name!r} (it has {sorted(labels)})")
            elif (
                matcher.op == promql_parser.MatchOp.Equal
                and matcher.name in labels
                and matcher.value not in labels[matcher.name]
            ):
                out.append(f"{name}: {matcher.name} is never {matcher.value!r}")
    return out


def _alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


#: Grafana's own variables, as a query would be sent with them filled in.
_GRAFANA_RANGES = re.compile(r"\$__(rate_interval|interval|range)\b")
_GRAFANA_VARIABLES = re.compile(r"\$\{?\w+\}?")


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    panels = list(document["panels"])
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", ()))  # those of a collapsed row
        for target in panel.get("targets", ()):
            expr = _GRAFANA_RANGES.sub("5m", target["expr"])
            yield panel["title"], _GRAFANA_VARIABLES.sub(".*", expr)


def test_every_alert_rule_is_complete_and_parses() -> None:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    assert document["groups"], "no rule group"
    names = set()
    for group in document["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"] not in names, f"{rule['alert']} twice"
            names.add(rule["alert"])
            assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            if "for" in rule:
                promql_parser.parse_duration(rule["for"])
            promql_parser.parse(rule["expr"])


def test_every_metric_the_alert_rules_use_is_served(served: dict[str, Any]) -> None:
    found = {rule["alert"]: problems(rule["expr"], served) for rule in _alert_rules()}
    assert {alert: listed for alert, listed in found.items() if listed} == {}


def test_the_alert_rules_cover_lateness_dead_letters_lag_and_idle_workers() -> None:
    used = {s.name for rule in _alert_rules() for s in _selectors(rule["expr"])}
    assert {
        "scheduler_delivery_lateness_seconds_bucket",
        "scheduler_dead_letters_total",
        "scheduler_consumer_lag",
        "scheduler_partitions_owned",
        "up",
    } <= used


def test_every_metric_the_dashboard_uses_is_served(served: dict[str, Any]) -> None:
    exprs = list(_dashboard_exprs())
    assert len(exprs) >= 10
    found = {f"{title}: {expr}": problems(expr, served) for title, expr in exprs}
    assert {query: listed for query, listed in found.items() if listed} == {}


def test_the_dashboard_shows_what_an_operator_looks_at() -> None:
    used = {s.name for _, expr in _dashboard_exprs() for s in _selectors(expr)}
    assert {
        "scheduler_delivery_lateness_seconds_bucket",
        "scheduler_deliveries_total",
        "scheduler_dead_letters_total",
        "scheduler_retries_pending",
        "scheduler_consumer_lag",
        "scheduler_schedules",
        "scheduler_partitions_owned",
    } <= used
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))


def test_the_check_catches_an_unknown_name_a_wrong_label_and_a_wrong_value(
    served: dict[str, Any],
) -> None:
    assert problems("rate(scheduler_no_such_thing_total[5m])", served) == [
        "scheduler_no_such_thing_total: not served"
    ]
    # A counter is served with its _total suffix only.
    assert problems("scheduler_deliveries", served) == ["scheduler_deliveries: not served"]
    assert problems('scheduler_deliveries_total{kind="rest"}', served) == [
        "scheduler_deliveries_total: no label 'kind' (it has ['outcome', 'task_type'])"
    ]
    assert problems('scheduler_delivery_lateness_seconds_count{attempt="frist"}', served) == [
        "scheduler_delivery_lateness_seconds_count: attempt is never 'frist'"
    ]
    assert problems('{__name__="scheduler_schedules"}', served) == [
        'a selector without a metric name: {__name__="scheduler_schedules"}'
    ]
    with pytest.raises(ValueError):
        problems("rate(scheduler_deliveries_total[5m)", served)
