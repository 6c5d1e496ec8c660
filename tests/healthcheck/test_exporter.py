"""The exporter's records and their rendering, in this process and in the helper process."""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from healthcheck.config import parse_config
from healthcheck.exporter import Metrics, render
from healthcheck.offload import Offload
from healthcheck.readings import Readings
from healthcheck.result import ErrorClass, Phases, ProbeResult
from healthcheck.status import StatusBoard
from storage.rollup import Tally
from storage.uptime import Target, UptimeReport


@pytest.fixture
def metrics() -> Metrics:
    document = {
        "regions": {
            "us": {"endpoints": [{"name": "api", "url": "http://127.0.0.1:1/"}]},
            "eu": {"endpoints": [{"name": "api", "url": "http://127.0.0.1:2/"}]},
        }
    }
    config = parse_config(json.dumps(document), "test")
    board = StatusBoard(config.endpoints())
    metrics = Metrics(config, board)
    now = time.time()
    results = [
        ProbeResult("us", "api", "http", True, 0.001, now, http_status=200),  # on a bound
        ProbeResult("us", "api", "http", True, 0.0011, now + 1, http_status=200),
        ProbeResult("us", "api", "http", False, 40.0, now + 2, error=ErrorClass.TIMEOUT),
        ProbeResult("eu", "api", "http", False, 0.2, now, ErrorClass.HTTP_STATUS, http_status=503),
    ]
    for result in results:
        metrics.observe(result, board.record(result) or board.latest[result.target_id][1])
    metrics.observe_lag(0.003)
    return metrics


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def test_histograms_counters_and_last_checks(metrics: Metrics) -> None:
    found = samples(render(metrics.snapshot(), None)[0].decode())
    us = {"region": "us", "endpoint": "api", "kind": "http"}
    duration = "healthcheck_probe_duration_seconds"
    assert value(found, f"{duration}_bucket", **us, le="0.001") == 1  # le means <=
    assert value(found, f"{duration}_bucket", **us, le="0.0025") == 2
    assert value(found, f"{duration}_bucket", **us, le="30.0") == 2
    assert value(found, f"{duration}_bucket", **us, le="+Inf") == 3
    assert value(found, f"{duration}_count", **us) == 3
    assert value(found, f"{duration}_sum", **us) == pytest.approx(40.0021)
    assert value(found, "healthcheck_checks_total", **us, result="success") == 2
    assert value(found, "healthcheck_checks_total", **us, result="failure") == 1
    assert value(found, "healthcheck_check_errors_total", **us, error="timeout") == 1
    assert value(found, "healthcheck_check_errors_total", **us, error="dns") == 0
    assert value(found, "healthcheck_probe_success", **us) == 0
    eu = {"region": "eu", "endpoint": "api", "kind": "http"}
    assert value(found, "healthcheck_probe_http_status_code", **eu) == 503
    assert value(found, "healthcheck_region_regional_failure", region="eu") == 1
    assert value(found, "healthcheck_schedule_lag_seconds_bucket", le="0.005") == 1
    assert value(found, "healthcheck_schedule_lag_seconds_bucket", le="0.001") == 0


def healthcheck_lines(body: bytes) -> list[bytes]:
    return [line for line in body.splitlines() if b"process_" not in line]


def test_the_helper_process_renders_the_same_text(metrics: Metrics) -> None:
    helper = Offload("test helper")
    try:
        snapshot = metrics.snapshot()
        here = render(snapshot, None)
        there = helper.call(render, snapshot, None)
        openmetrics = helper.call(render, snapshot, "application/openmetrics-text")
    finally:
        helper.close()
    # the same, but for the process_* readings of this process, which move between renders
    assert healthcheck_lines(here[0]) == healthcheck_lines(there[0])
    assert b"process_resident_memory_bytes" in there[0]
    assert openmetrics[1].startswith("application/openmetrics-text")
    assert openmetrics[0].rstrip().endswith(b"# EOF")


def test_a_reload_keeps_counts_of_kept_endpoints_and_drops_removed_ones(metrics: Metrics) -> None:
    document = {"regions": {"us": {"endpoints": [{"name": "api", "url": "http://127.0.0.1:1/"}]}}}
    metrics.update(parse_config(json.dumps(document), "test"))
    found = samples(render(metrics.snapshot(), None)[0].decode())
    us = {"region": "us", "endpoint": "api", "kind": "http"}
    assert value(found, "healthcheck_checks_total", **us, result="success") == 2
    assert not [key for key in found if ("region", "eu") in key[1]]


def test_stored_uptime_of_a_removed_endpoint_goes_with_its_series(metrics: Metrics) -> None:
    """The database keeps a removed endpoint's results; /metrics no longer shows its uptime."""
    report = UptimeReport(
        {1: Target(1, "us", "api", "http"), 2: Target(2, "eu", "api", "http")},
        {1: {"24h": Tally(checks=4, successes=3)}, 2: {"24h": Tally(checks=2, successes=1)}},
        {"us": {"24h": Tally(checks=4, successes=3)}, "eu": {"24h": Tally(checks=2, successes=1)}},
    )
    metrics.readings = lambda: Readings(uptime=report)
    found = samples(render(metrics.snapshot(), None)[0].decode())
    assert (
        value(
            found,
            "healthcheck_uptime_ratio",
            region="eu",
            endpoint="api",
            kind="http",
            window="24h",
        )
        == 0.5
    )
    document = {"regions": {"us": {"endpoints": [{"name": "api", "url": "http://127.0.0.1:1/"}]}}}
    metrics.update(parse_config(json.dumps(document), "test"))
    found = samples(render(metrics.snapshot(), None)[0].decode())
    us = {"region": "us", "endpoint": "api", "kind": "http"}
    assert value(found, "healthcheck_uptime_ratio", **us, window="24h") == 0.75
    assert value(found, "healthcheck_region_uptime_ratio", region="us", window="24h") == 0.75
    assert not [key for key in found if ("region", "eu") in key[1]]


def test_notifications_count_timeouts_apart_from_refusals(metrics: Metrics) -> None:
    """A timeout may have reached the receiver; a refusal did not: they are told apart."""
    metrics.readings = lambda: Readings(notifications={"slack": (5, 1, 2, 3)})
    found = samples(render(metrics.snapshot(), None)[0].decode())
    total = "healthcheck_notifications_total"
    assert value(found, total, channel="slack", result="sent") == 5
    assert value(found, total, channel="slack", result="failed") == 1
    assert value(found, total, channel="slack", result="timeout") == 2
    assert value(found, "healthcheck_notifications_pending", channel="slack") == 3


def test_alert_evaluations_are_a_counter_only_while_alerting_runs(metrics: Metrics) -> None:
    metrics.readings = lambda: Readings(alert_evaluations=7)
    found = samples(render(metrics.snapshot(), None)[0].decode())
    assert value(found, "healthcheck_alert_evaluations_total") == 7
    metrics.readings = lambda: Readings()  # alerting off: no series, rather than a flat 0
    found = samples(render(metrics.snapshot(), None)[0].decode())
    assert not any(name == "healthcheck_alert_evaluations_total" for name, _ in found)


def error_series(found: dict) -> dict[tuple[str, str], set[str]]:
    """(endpoint, kind) -> the error classes with a healthcheck_check_errors_total series."""
    seen: dict[tuple[str, str], set[str]] = {}
    for name, labels in found:
        if name == "healthcheck_check_errors_total":
            named = dict(labels)
            seen.setdefault((named["endpoint"], named["kind"]), set()).add(named["error"])
    return seen


def test_every_error_class_a_kind_can_produce_starts_at_zero() -> None:
    """increase() sees the first error only if the series was there, at 0, before it."""
    document = {
        "regions": {
            "us": {
                "endpoints": [
                    {"name": "web", "url": "http://127.0.0.1:1/"},
                    {"name": "db", "kind": "tcp", "address": "127.0.0.1:1"},
                    {"name": "cert", "kind": "tls", "address": "127.0.0.1:1"},
                    {"name": "name", "kind": "dns", "hostname": "localhost"},
                    {"name": "gpu", "kind": "onnx", "model": "builtin:gemm"},
                    {
                        "name": "triton",
                        "kind": "inference",
                        "url": "http://127.0.0.1:1",
                        "model_name": "m",
                        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}],
                        "expected": [{"name": "y", "data": [1.0]}],
                    },
                ]
            }
        }
    }
    config = parse_config(json.dumps(document), "test")
    metrics = Metrics(config, StatusBoard(config.endpoints()))
    found = samples(render(metrics.snapshot(), None)[0].decode())
    assert all(
        count == 0 for (name, _), count in found.items() if name.startswith("healthcheck_check_")
    )
    seen = error_series(found)
    network = {
        "timeout",
        "connection_refused",
        "connection_reset",
        "dns",
        "tls",
        "network",
        "internal",
        "condition_failed",
    }
    for plain in (("db", "tcp"), ("cert", "tls"), ("name", "dns")):
        assert seen[plain] == network
    assert seen["web", "http"] == network | {"http_status", "body_too_large", "invalid_response"}
    # rpc_status: the Open Inference Protocol over gRPC (protocol: grpc) answering an error
    assert seen["triton", "inference"] == seen["web", "http"] | {
        "not_ready",
        "wrong_output",
        "rpc_status",
    }
    assert seen["gpu", "onnx"] == {
        "timeout",
        "internal",
        "wrong_output",
        "gpu_error",
        "gpu_unavailable",
        "condition_failed",
    }
    assert not any("prober" in classes for classes in seen.values())  # never a verdict
    for endpoint in ("web", "db"):
        for result in ("success", "failure"):
            labels = {"region": "us", "endpoint": endpoint, "result": result}
            kind = "http" if endpoint == "web" else "tcp"
            assert value(found, "healthcheck_checks_total", **labels, kind=kind) == 0


def test_an_error_class_the_kind_did_not_declare_is_still_counted(metrics: Metrics) -> None:
    # a class nobody in this process declared (a kind it has not imported): counted by name
    result = ProbeResult("us", "api", "http", False, 0.1, time.time(), ErrorClass("from_afar"))
    metrics.observe(result, metrics.board.record(result) or metrics.board.latest["us/api"][1])
    found = samples(render(metrics.snapshot(), None)[0].decode())
    us = {"region": "us", "endpoint": "api", "kind": "http"}
    assert value(found, "healthcheck_check_errors_total", **us, error="from_afar") == 1
    assert value(found, "healthcheck_check_errors_total", **us, error="timeout") == 1


def test_every_endpoint_series_carries_region_endpoint_and_kind(metrics: Metrics) -> None:
    """As the README promises: status code, certificate expiry, phases and uptime too."""
    now = time.time()
    result = ProbeResult(
        "us",
        "api",
        "http",
        True,
        0.01,
        now + 3,
        http_status=200,
        cert_expiry=now + 86400,
        phases=Phases(dns=0.001, connect=0.002, first_byte=0.005, total=0.01),
    )
    metrics.observe(result, metrics.board.record(result) or metrics.board.latest["us/api"][1])
    report = UptimeReport(
        {1: Target(1, "us", "api", "http")}, {1: {"24h": Tally(checks=4, successes=3)}}
    )
    metrics.readings = lambda: Readings(uptime=report)
    found = samples(render(metrics.snapshot(), None)[0].decode())
    us = {"region": "us", "endpoint": "api", "kind": "http"}

    assert value(found, "healthcheck_probe_http_status_code", **us) == 200
    assert value(found, "healthcheck_tls_cert_expiry_timestamp_seconds", **us) == now + 86400
    assert value(found, "healthcheck_probe_phase_duration_seconds", **us, phase="dns") == 0.001
    assert value(found, "healthcheck_uptime_ratio", **us, window="24h") == 0.75
    without = {name for name, labels in found if "endpoint" in dict(labels)} - {
        name for name, labels in found if "kind" in dict(labels)
    }
    assert without == set()


def test_metric_labels_go_on_every_endpoint_series_and_no_other_label_does() -> None:
    """exporter.metric_labels: the listed labels on each per-endpoint family (empty where an
    endpoint has none), rendered the same in the helper process; unlisted labels never."""
    document = {
        "exporter": {"metric_labels": ["team"], "blackbox_names": True},
        "defaults": {"labels": {"tier": "1"}},
        "regions": {
            "eu": {
                "defaults": {"labels": {"team": "payments"}},
                "endpoints": [{"name": "api", "url": "http://127.0.0.1:1/"}],
            },
            "us": {"endpoints": [{"name": "api", "url": "http://127.0.0.1:2/"}]},
        },
    }
    config = parse_config(json.dumps(document), "test")
    board = StatusBoard(config.endpoints())
    metrics = Metrics(config, board)
    now = time.time()
    for region in ("eu", "us"):
        result = ProbeResult(region, "api", "http", False, 0.2, now, ErrorClass.TIMEOUT)
        metrics.observe(result, board.record(result) or board.latest[result.target_id][1])
    report = UptimeReport(
        {1: Target(1, "eu", "api", "http")}, {1: {"24h": Tally(checks=4, successes=3)}}
    )
    metrics.readings = lambda: Readings(uptime=report)
    helper = Offload("test helper")
    try:
        there = helper.call(render, metrics.snapshot(), None)[0].decode()
    finally:
        helper.close()
    found = samples(there)
    eu = {"region": "eu", "endpoint": "api", "kind": "http", "team": "payments"}
    us = {"region": "us", "endpoint": "api", "kind": "http", "team": ""}
    assert value(found, "healthcheck_probe_success", **eu) == 0
    assert value(found, "healthcheck_probe_success", **us) == 0
    assert value(found, "healthcheck_check_errors_total", **eu, error="timeout") == 1
    assert value(found, "healthcheck_uptime_ratio", **eu, window="24h") == 0.75
    assert value(found, "probe_success", **eu) == 0
    per_endpoint = {name for name, labels in found if "endpoint" in dict(labels)}
    assert per_endpoint and all(
        "team" in dict(labels) for name, labels in found if name in per_endpoint
    )
    assert "tier" not in there
    assert healthcheck_lines(there.encode()) == healthcheck_lines(
        render(metrics.snapshot(), None)[0]
    )
