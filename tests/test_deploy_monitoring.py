"""deploy/monitoring: the alert rules pass promtool, every PromQL expression of the Grafana dashboard parses,
and both name only metrics that trainserve exports (so a renamed metric cannot leave a silent alert)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest
import yaml

from tests.test_deploy_k8s import DEPLOY

MONITORING = DEPLOY / "monitoring"
# Grafana's variables, as promtool cannot read them.
GRAFANA = {"$__rate_interval": "2m", "$__interval": "1m", "$__range": "1h"}


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is installed by .ci/run (Debian's prometheus package)"
    return found


def check_rules(path) -> None:
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def exported_metrics() -> set[str]:
    """Every metric family the API and the workers export, by the names Prometheus stores."""
    from service.observability.metrics import Metrics
    from service.observability.worker_metrics import _Metrics
    from service.serving.rollouts import RolloutRouter

    empty = SimpleNamespace(models=SimpleNamespace(hits=0, misses=0, loads=0, load_seconds=0.0),
                            batcher=SimpleNamespace(pass_sizes=[0] * 8, requests=0),
                            reconciler=SimpleNamespace(jobs_by_status={}, queue_depths={}, resent=0,
                                                       oldest_queued_seconds=0.0, silent_jobs=0,
                                                       live_quality={}, drift={}),
                            events=SimpleNamespace(watchers=0, polls=0), rollouts=RolloutRouter(None))
    api = Metrics(empty)
    api.observe("GET", "/healthz", 200, 0.001)
    names = {family.name for family in api.registry.collect()}
    worker = _Metrics()
    for metric in (worker.started, worker.finished, worker.epoch_seconds, worker.samples,
                   worker.checkpoint_seconds, worker.running):
        names |= {family.name for family in metric.collect()}
    stored = set()
    for name in names:  # counters are stored with _total; histograms as _bucket, _count and _sum
        stored |= {name, f"{name}_total", f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return stored


def used_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\btrainserve_[a-z_]+", expr))


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((MONITORING / "alerts.yaml").read_text())["groups"]
            for rule in group["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_alert_rules_pass_promtool():
    check_rules(MONITORING / "alerts.yaml")


def test_the_alerts_cover_what_an_operator_is_woken_for():
    rules = alert_rules()
    assert {"TrainserveErrorRateHigh", "TrainservePredictLatencyHigh", "TrainserveQueueStuck",
            "TrainserveJobsFailing", "TrainserveWorkerSilent", "TrainserveRolloutRolledBack",
            "TrainserveModelDrift"} <= {r["alert"] for r in rules}
    for rule in rules:
        assert rule.get("for") and rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_dashboard_query_parses(tmp_path):
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    rules = []
    for i, (_, expr) in enumerate(exprs):
        for variable, value in GRAFANA.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"trainserve:dashboard_query_{i}", "expr": expr})
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check_rules(tmp_path / "dashboard.yaml")


def test_the_dashboard_shows_requests_latency_queues_jobs_and_epoch_speed():
    titles = " | ".join(title.lower() for title, _ in dashboard_exprs())
    for wanted in ("requests", "latency", "queue depth", "jobs by status", "epoch speed"):
        assert wanted in titles, wanted


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_only_exported_metrics_are_queried(source):
    exprs = [r["expr"] for r in alert_rules()] if source == "alerts" else [e for _, e in dashboard_exprs()]
    unknown = set().union(*(used_metrics(e) for e in exprs)) - exported_metrics()
    assert not unknown, f"{source} query metrics trainserve does not export: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", ["aks-cpu", "aks-gpu"])
def test_the_aks_overlays_scrape_the_port_every_trainserve_pod_serves(overlay):
    from tests.test_deploy_k8s import render

    objects = render(overlay)
    settings = next(o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(
        "trainserve-settings"))["data"]
    ports = {"api": int(settings["TRAINSERVE_API_METRICS_PORT"]), "worker": int(settings["TRAINSERVE_WORKER_METRICS_PORT"])}
    monitors = [o for o in objects if o["kind"] == "PodMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"trainserve-api", "trainserve-workers"}
    assert all(e["port"] == "metrics" for m in monitors for e in m["spec"]["podMetricsEndpoints"])
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        component = deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        if component in ("postgres", "redis"):
            continue
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        declared = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert declared.get("metrics") == ports["api" if component == "api" else "worker"], deployment["metadata"]
