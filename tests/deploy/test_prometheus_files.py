"""The Prometheus config, rules and Grafana dashboard under deploy/, checked with real promtool."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from tools import require

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "healthcheck.rules.yml"
RULE_TESTS = PROMETHEUS / "tests" / "healthcheck.rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "healthcheck-dashboard.json"
MONITORS = ROOT / "deploy" / "kubernetes" / "servicemonitor.yaml"


def _histogram(name: str) -> set[str]:
    return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}


# What the daemon's exporter exposes (the metrics contract); keep in step with exporter.py.
EXPORTED_METRICS = {
    "healthcheck_probe_success",
    *_histogram("healthcheck_probe_duration_seconds"),
    "healthcheck_probe_http_status_code",
    "healthcheck_tls_cert_expiry_timestamp_seconds",
    "healthcheck_probe_phase_duration_seconds",
    "healthcheck_checks_total",
    "healthcheck_check_errors_total",
    "healthcheck_endpoint_status",
    "healthcheck_region_status",
    "healthcheck_region_regional_failure",
    "healthcheck_uptime_ratio",
    "healthcheck_region_uptime_ratio",
    "healthcheck_sla_target_ratio",
    *_histogram("healthcheck_inference_duration_seconds"),
    "healthcheck_inference_max_abs_error",
    "healthcheck_inference_provider_info",
    "healthcheck_gpu_temperature_celsius",
    "healthcheck_gpu_utilization_ratio",
    "healthcheck_gpu_memory_used_bytes",
    "healthcheck_gpu_memory_total_bytes",
    "healthcheck_alerts_firing",
    "healthcheck_notifications_total",
    *_histogram("healthcheck_schedule_lag_seconds"),
    "healthcheck_probes_in_flight",
    "healthcheck_storage_queue_depth",
    "healthcheck_storage_dropped_results_total",
    "healthcheck_storage_written_results_total",
    "healthcheck_storage_file_replaced_total",
    "healthcheck_storage_writable",
    "healthcheck_endpoints_configured",
    "healthcheck_build_info",
    "healthcheck_up",
    "healthcheck_scheduler_heartbeat_age_seconds",
    "healthcheck_config_last_reload_successful",
    "healthcheck_config_last_reload_success_timestamp_seconds",
    "healthcheck_notifications_pending",
}
RECORDING_RULES = {
    "endpoint:healthcheck_probe_duration_seconds:p95_5m",
    "region:healthcheck_probe_duration_seconds:p95_5m",
    "endpoint:healthcheck_checks:failure_ratio_5m",
    "region_error:healthcheck_check_errors:rate5m",
    "endpoint:healthcheck_inference_duration_seconds:p95_5m",
    "instance:healthcheck_schedule_lag_seconds:p99_5m",
}
KNOWN_NAMES = EXPORTED_METRICS | RECORDING_RULES
REQUIRED_ALERTS = {
    "HealthcheckEndpointDown",
    "HealthcheckRegionalFailure",
    "HealthcheckHighLatencyP95",
    "HealthcheckUptimeBelowSLA",
    "HealthcheckUptimeCritical",
    "HealthcheckTLSCertExpiringSoon",
    "HealthcheckCanaryFailing",
    "HealthcheckCanaryWrongOutput",
    "HealthcheckDaemonAbsent",
    "HealthcheckScheduleLagHigh",
    "HealthcheckStorageDown",
    "HealthcheckStorageDropping",
}
DASHBOARD_ROWS = {"Global overview", "Per-region performance", "Error tracking", "Canary inference"}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
# A whole metric name, recording-rule colons included; healthcheck_[a-z_]+ alone would let
# `endpoint:healthcheck_...:p95_5m` through unchecked.
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# Grafana's variables, replaced by values PromQL parses, for promtool to check dashboard exprs.
_GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$region": ".*",
    "$endpoint": ".*",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    return require("promtool", package="prometheus")


def run_promtool(promtool: str, *args: str | Path) -> str:
    done = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(map(str, args))} failed:\n{output}"
    return output


def metric_names(expr: str) -> set[str]:
    """Every metric or recording-rule name in a PromQL expression that mentions healthcheck."""
    return {name for name in _NAME.findall(_STRING.sub('""', expr)) if "healthcheck" in name}


def load_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]) -> list[dict]:
    """Panels at top level and inside collapsed rows."""
    found = []
    for panel in panels:
        found.append(panel)
        found.extend(all_panels(panel.get("panels", [])))
    return found


def dashboard_exprs() -> list[tuple[str, str]]:
    """(where, expr) for every panel target and every query variable."""
    dashboard = load_dashboard()
    exprs = [
        (f"panel {panel['title']!r} target {target['refId']}", target["expr"])
        for panel in all_panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append((f"variable {variable['name']}", variable["query"]["query"]))
    return exprs


@pytest.mark.parametrize(
    "args",
    [
        ("check", "config", CONFIG),
        ("check", "rules", RULES),
        ("test", "rules", RULE_TESTS),
        ("check", "rules", PROMETHEUS / "multi-vantage.rules.yml"),
        ("test", "rules", PROMETHEUS / "tests" / "multi-vantage.rules.test.yml"),
    ],
    ids=["check-config", "check-rules", "test-rules", "check-vantages", "test-vantages"],
)
def test_promtool_accepts(promtool, args):
    run_promtool(promtool, *args)


def test_dashboard_exprs_parse_as_promql(promtool, tmp_path):
    exprs = [expr for _, expr in dashboard_exprs() if not expr.startswith("label_values(")]
    for variable, value in sorted(_GRAFANA_VARIABLES.items(), key=lambda kv: -len(kv[0])):
        exprs = [expr.replace(variable, value) for expr in exprs]
    rules = [{"record": f"dashboard:expr_{n}", "expr": expr} for n, expr in enumerate(exprs)]
    rule_file = tmp_path / "dashboard.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    run_promtool(promtool, "check", "rules", rule_file)


def test_config_scrapes_the_daemon_and_loads_the_rules():
    config = yaml.safe_load(CONFIG.read_text())

    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "healthcheck"]
    targets = [t for static in job["static_configs"] for t in static["targets"]]
    assert config["global"]["scrape_interval"] == "15s"
    assert targets == ["127.0.0.1:9115"]
    assert config["rule_files"] == ["healthcheck.rules.yml"]
    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["127.0.0.1:9093"]


def test_rules_record_exactly_the_known_recording_rules():
    recorded = {rule["record"] for rule in load_rules() if "record" in rule}

    assert recorded == RECORDING_RULES


def test_every_alert_has_a_severity_and_annotations():
    alerts = [rule for rule in load_rules() if "alert" in rule]

    assert {rule["alert"] for rule in alerts} >= REQUIRED_ALERTS
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]
        assert "{{" in rule["annotations"]["summary"], f"{rule['alert']} summary names no label"


def test_rules_use_only_known_metric_names():
    unknown = {
        rule.get("alert") or rule["record"]: sorted(metric_names(rule["expr"]) - KNOWN_NAMES)
        for rule in load_rules()
    }

    assert {name: names for name, names in unknown.items() if names} == {}


def test_dashboard_exprs_use_only_known_metric_names():
    exprs = dashboard_exprs()
    unknown = {where: sorted(metric_names(expr) - KNOWN_NAMES) for where, expr in exprs}

    assert len(exprs) > 20
    assert all(metric_names(expr) for _, expr in exprs)
    assert {where: names for where, names in unknown.items() if names} == {}


def test_dashboard_shape():
    dashboard = load_dashboard()
    panels = all_panels(dashboard["panels"])
    rows = {panel["title"] for panel in panels if panel["type"] == "row"}
    datasources = {
        json.dumps(item["datasource"], sort_keys=True)
        for panel in panels
        if panel["type"] != "row"
        for item in (panel, *panel["targets"])
    }
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}

    assert dashboard["schemaVersion"] >= 36
    assert datasources == {'{"type": "prometheus", "uid": "${datasource}"}'}
    assert {"region", "endpoint"} <= variables
    assert rows >= DASHBOARD_ROWS
    assert {panel["type"] for panel in panels} <= {"row", "timeseries", "stat", "table"}
    assert len({panel["id"] for panel in panels}) == len(panels)


def test_dashboard_picks_its_prometheus_from_the_usual_datasource_variable():
    """After an import through the UI the data source dropdown still switches every panel:
    each refers to the `datasource` variable, and no import input pins them to one uid."""
    dashboard = load_dashboard()
    text = DASHBOARD.read_text()
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]

    assert (variable["name"], variable["query"]) == ("datasource", "prometheus")
    assert "__inputs" not in dashboard and "DS_PROMETHEUS" not in text
    for panel in all_panels(dashboard["panels"]):
        for item in (panel, *panel.get("targets", [])):
            if panel["type"] != "row" or "datasource" in item:
                assert item["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    for query in [v for v in dashboard["templating"]["list"] if v["type"] == "query"]:
        assert query["datasource"]["uid"] == "${datasource}"


def test_the_endpoints_table_joins_its_queries_on_kind_too():
    """Every endpoint metric carries region, endpoint and kind; the table keeps all three."""
    (table,) = [
        panel
        for panel in all_panels(load_dashboard()["panels"])
        if panel["title"] == "Endpoints" and panel["type"] == "table"
    ]
    for target in table["targets"]:
        assert target["expr"].split("(", 1)[0].endswith("by "), target["expr"]
        assert target["expr"].split("(")[1].startswith("region, endpoint, kind)")


def test_the_kubernetes_monitors_honor_our_endpoint_label():
    """A ServiceMonitor's own `endpoint` target label would rename ours `exported_endpoint`:
    every scrape endpoint of the shipped ServiceMonitor and PodMonitor keeps ours."""
    documents = list(yaml.safe_load_all(MONITORS.read_text()))
    kinds = {document["kind"]: document for document in documents}

    assert set(kinds) == {"ServiceMonitor", "PodMonitor"}
    scraped = [
        *kinds["ServiceMonitor"]["spec"]["endpoints"],
        *kinds["PodMonitor"]["spec"]["podMetricsEndpoints"],
    ]
    assert all(document["apiVersion"] == "monitoring.coreos.com/v1" for document in documents)
    assert scraped and all(e["honorLabels"] is True and e["path"] == "/metrics" for e in scraped)


@pytest.mark.parametrize(
    "rules", [RULES, PROMETHEUS / "multi-vantage.rules.yml"], ids=["rules", "vantages"]
)
def test_every_alert_summary_is_one_line_and_has_a_description(rules):
    """Pagers and chat titles show the summary alone: one line; the detail is the description."""
    groups = yaml.safe_load(rules.read_text())["groups"]
    for rule in [rule for group in groups for rule in group["rules"] if "alert" in rule]:
        annotations = rule["annotations"]
        assert "\n" not in annotations["summary"].strip(), rule["alert"]
        assert annotations["description"].strip(), rule["alert"]
