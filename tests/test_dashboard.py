"""The Grafana dashboard and its provisioning: every PromQL query uses families a live
gears node exports (scraped from a real 1-shard cluster), and every family is on it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from gears.node.metrics import FAMILIES
from test_metrics import metrics_urls, scrape_families

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "grafana"
DASHBOARD = DEPLOY / "dashboards" / "gears-fabric.json"
METRIC_NAME = re.compile(r"\b(gears_[a-z0-9_]+)\b")


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in _panels(dashboard["panels"]) for t in p.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def _exported(url: str) -> set[str]:
    """Every series name a node's families stand for (histograms: ``_bucket/_sum/_count``)."""
    names: set[str] = set()
    for name, kind in scrape_families(url).items():
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names


def test_every_dashboard_query_uses_families_a_live_node_exports(cluster1):
    dashboard = json.loads(DASHBOARD.read_text())
    used = {name for query in _queries(dashboard) for name in METRIC_NAME.findall(query)}
    exported = _exported(next(iter(metrics_urls(cluster1).values())))
    assert used, "the dashboard has no gears queries"
    assert used <= exported, f"not exported by a live node: {sorted(used - exported)}"
    families_used = {name for name in FAMILIES if any(u == name or u.startswith(name + "_") for u in used)}
    assert families_used == set(FAMILIES), f"families missing from the dashboard: {sorted(set(FAMILIES) - families_used)}"


def test_dashboard_panels_cover_the_issue_list_and_use_the_provisioned_datasource():
    dashboard = json.loads(DASHBOARD.read_text())
    datasources = yaml.safe_load((DEPLOY / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [(d["name"], d["url"]) for d in datasources] == [("Prometheus", "http://prometheus:9090")]
    uid = datasources[0]["uid"]
    panels = [p for p in _panels(dashboard["panels"]) if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == uid and all(t["datasource"]["uid"] == uid for t in p["targets"]) for p in panels)
    titles = " | ".join(p["title"].lower() for p in panels)
    for needed in ("commands/s", "latency", "executions", "failures", "registration lag", "worker memory",
                   "worker restarts", "model runs/s", "batch sizes", "queue depth"):
        assert needed in titles, needed
    providers = yaml.safe_load((DEPLOY / "provisioning" / "dashboards" / "gears-fabric.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
