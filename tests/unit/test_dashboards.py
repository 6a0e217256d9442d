"""The Grafana dashboards (infra/grafana/, one per flow, and energy) are importable as they
are and name only metrics that exist: ours (jobs/metrics.py), the Flink reporter's that
jobs/metrics.py declares, and the recording rules of infra/prometheus/rules. Renaming a metric
fails here.
Their queries run against a live Prometheus in tests/integration/test_monitoring.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from jobs.metrics import (
    DASHBOARDS_DIR,
    LATENCY_BUCKETS_S,
    METRIC_NAME,
    dashboard_queries,
    exported_names,
)
from udfs.config import PROJECT_ROOT

FLOWS = ("ingest", "job", "trading", "lake", "energy")
RULES = PROJECT_ROOT / "infra" / "prometheus" / "rules" / "bookstream.rules.yml"


def _rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def _recorded() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


def test_one_dashboard_per_flow() -> None:
    assert sorted(p.stem for p in DASHBOARDS_DIR.glob("*.json")) == sorted(FLOWS)


@pytest.mark.parametrize("flow", FLOWS)
def test_dashboard_is_importable_with_a_prometheus_datasource_variable(flow: str) -> None:
    doc = json.loads((DASHBOARDS_DIR / f"{flow}.json").read_text())
    assert doc["uid"] == f"bookstream-{flow}" and doc["title"] and doc["schemaVersion"] >= 36
    assert "id" not in doc  # an import creates a new dashboard, it overwrites none by id
    (var,) = doc["templating"]["list"]
    assert (var["type"], var["query"], var["name"]) == ("datasource", "prometheus", "datasource")
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)) and ids
    for panel in doc["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].count("(") == target["expr"].count(")")


@pytest.mark.parametrize("flow", FLOWS)
def test_every_panel_names_only_metrics_that_exist(flow: str) -> None:
    known = exported_names() | _recorded() | {"ALERTS"}
    for title, expr in dashboard_queries(DASHBOARDS_DIR / f"{flow}.json"):
        names = METRIC_NAME.findall(expr)
        assert names or "ALERTS" in expr, (title, expr)
        unknown = set(names) - known
        assert not unknown, f"{flow}: panel {title!r} queries {unknown}, which nothing exports"


def test_alert_rules_name_only_metrics_that_exist() -> None:
    known = exported_names() | _recorded()
    for rule in _rules():
        unknown = set(METRIC_NAME.findall(rule["expr"])) - known
        assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_the_latency_slo_bound_is_a_bucket_of_the_histogram() -> None:
    bounds = {
        float(le)
        for rule in _rules()
        for le in re.findall(
            r'bookstream_tick_to_order_seconds_bucket\{le="([^"]+)"\}', rule["expr"]
        )
    }
    assert bounds == {0.01}
    assert bounds <= set(LATENCY_BUCKETS_S)


def test_a_renamed_metric_is_caught(tmp_path: Path) -> None:
    doc = json.loads((DASHBOARDS_DIR / "trading.json").read_text())
    doc["panels"][0]["targets"][0]["expr"] = "rate(bookstream_exec_reports_total[5m])"
    path = tmp_path / "trading.json"
    path.write_text(json.dumps(doc))
    (_, expr), *_ = dashboard_queries(path)
    assert set(METRIC_NAME.findall(expr)) - exported_names() == {"bookstream_exec_reports_total"}
