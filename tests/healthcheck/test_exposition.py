"""/metrics with the per-endpoint label sets encoded once and kept between renders: the same
bytes as prometheus_client's encoder writing every sample, in each format it negotiates, and
what a render keeps follows the scrapes (a changed value, a reload)."""

from __future__ import annotations

import gzip
import json
import time
import tracemalloc

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from healthcheck import exposition
from healthcheck.config import parse_config
from healthcheck.exporter import Metrics, render
from healthcheck.offload import Offload
from healthcheck.readings import Readings
from healthcheck.result import ErrorClass, Phases, ProbeResult
from healthcheck.status import StatusBoard
from storage.rollup import Tally
from storage.uptime import Target, UptimeReport

TEXT = None  # no Accept header: text 0.0.4
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
# What Prometheus 2.x sends: OpenMetrics is what it gets from us
PROMETHEUS = (
    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;"
    "version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)
FORMATS = [
    TEXT,
    OPENMETRICS,
    PROMETHEUS,
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
]
# An operator's label value with every character the format escapes, some it does not, and
# the private-use marker the label sets are cut at (healthcheck/exposition.py)
AWKWARD = 'pay"ments\\eu\nteam ü \ue000mark\ue000'


def build(blackbox: bool = True) -> Metrics:
    document = {
        "exporter": {"metric_labels": ["team"], "blackbox_names": blackbox},
        "regions": {
            "eu": {
                "defaults": {"labels": {"team": AWKWARD}},
                "endpoints": [
                    {"name": "api", "url": "http://127.0.0.1:1/"},
                    {"name": "db", "kind": "tcp", "address": "127.0.0.1:2"},
                    {"name": "conv", "kind": "onnx", "model": "builtin:conv"},
                ],
            },
            "us": {"endpoints": [{"name": "api", "url": "http://127.0.0.1:3/"}]},
        },
    }
    config = parse_config(json.dumps(document), "test")
    board = StatusBoard(config.endpoints())
    metrics = Metrics(config, board)
    now = time.time()
    results = [
        ProbeResult(
            "eu",
            "api",
            "http",
            True,
            0.0123,
            now,
            http_status=200,
            cert_expiry=now + 86400.5,
            phases=Phases(dns=0.001, connect=0.002, first_byte=None, total=0.0123),
        ),
        ProbeResult("eu", "db", "tcp", False, 5.0, now, error=ErrorClass.TIMEOUT),
        ProbeResult("eu", "conv", "onnx", True, 0.2, now, details=(("inference_ms", 12.5),)),
        ProbeResult("us", "api", "http", False, 1e-7, now, ErrorClass.HTTP_STATUS, http_status=503),
    ]
    for result in results:
        observe(metrics, result)
    for lag in (0.0005, 0.02, 3.0):
        metrics.observe_lag(lag)
    report = UptimeReport(
        {1: Target(1, "eu", "api", "http"), 2: Target(2, "us", "api", "http")},
        {1: {"24h": Tally(checks=4, successes=3)}, 2: {"30d": Tally(checks=3, successes=1)}},
    )
    metrics.readings = lambda: Readings(uptime=report)
    return metrics


def observe(metrics: Metrics, result: ProbeResult) -> None:
    board = metrics.board
    metrics.observe(result, board.record(result) or board.latest[result.target_id][1])


def ours(body: bytes) -> bytes:
    """The body without the process_* readings, which move between two renders."""
    return b"\n".join(line for line in body.splitlines() if b"process_" not in line)


def families(body: bytes) -> dict[tuple[str, frozenset], float]:
    text = body.decode()
    parse = openmetrics_families if body.rstrip().endswith(b"# EOF") else None
    found = parse(text) if parse is not None else text_string_to_metric_families(text)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in found
        for sample in family.samples
    }


@pytest.mark.parametrize("accept", FORMATS)
def test_the_same_bytes_as_prometheus_client_writing_every_sample(accept: str | None) -> None:
    metrics = build()
    scrape = metrics.snapshot()
    reference, reference_type = render(scrape, accept, encoded=False)
    first, content_type = render(scrape, accept)  # label sets encoded now
    again, _ = render(scrape, accept)  # and taken from the last render
    assert content_type == reference_type
    assert ours(first) == ours(reference)
    assert ours(again) == ours(reference)
    if accept is not None and "escaping=" in accept:
        return  # names rewritten (dots: doubled underscores), which the parsers refuse
    # the kinds' histograms, phases, blackbox names: in the body, which parses in its format
    found = families(again)
    eu = {"region": "eu", "endpoint": "api", "kind": "http", "team": AWKWARD}
    assert (
        found[
            ("healthcheck_probe_phase_duration_seconds", frozenset({**eu, "phase": "dns"}.items()))
        ]
        == 0.001
    )
    assert found[("probe_ssl_earliest_cert_expiry", frozenset(eu.items()))] > 0
    conv = {"region": "eu", "endpoint": "conv", "kind": "onnx", "team": AWKWARD}
    assert found[("healthcheck_inference_duration_seconds_count", frozenset(conv.items()))] == 1


def test_a_value_that_changes_is_seen_on_the_next_scrape_in_both_formats() -> None:
    metrics = build()
    eu = {"region": "eu", "endpoint": "db", "kind": "tcp", "team": AWKWARD}
    checks = ("healthcheck_checks_total", frozenset({**eu, "result": "failure"}.items()))
    success = ("healthcheck_probe_success", frozenset(eu.items()))
    for accept in (TEXT, OPENMETRICS):
        found = families(render(metrics.snapshot(), accept)[0])
        assert (found[checks], found[success]) == (1, 0)
    later = time.time() + 10
    observe(metrics, ProbeResult("eu", "db", "tcp", False, 5.0, later, error=ErrorClass.TIMEOUT))
    observe(metrics, ProbeResult("eu", "db", "tcp", True, 0.003, later + 1))
    for accept in (TEXT, OPENMETRICS):
        scrape = metrics.snapshot()
        body = render(scrape, accept)[0]
        found = families(body)
        assert (found[checks], found[success]) == (2, 1)
        bucket = frozenset({**eu, "le": "0.005"}.items())
        assert found[("healthcheck_probe_duration_seconds_bucket", bucket)] == 1
        assert ours(body) == ours(render(scrape, accept, encoded=False)[0])


def test_a_removed_endpoint_goes_with_its_series_and_its_kept_label_sets() -> None:
    metrics = build(blackbox=False)
    for accept in (TEXT, OPENMETRICS):
        assert b'region="us"' in render(metrics.snapshot(), accept)[0]
    document = {
        "exporter": {"metric_labels": ["team"]},
        "regions": {"eu": {"endpoints": [{"name": "api", "url": "http://127.0.0.1:1/"}]}},
    }
    metrics.update(parse_config(json.dumps(document), "test"))
    for accept in (TEXT, OPENMETRICS):
        scrape = metrics.snapshot()
        body, content_type = render(scrape, accept)
        assert b'region="us"' not in body
        assert b'endpoint="db"' not in body
        assert ours(body) == ours(render(scrape, accept, encoded=False)[0])
        # what the next render of this format starts from: label sets' shapes, escaped
        # values in use; nothing per endpoint, and no longer the awkward team (it went)
        kept = exposition._KNOWN[content_type]
        assert kept.templates and all("api" not in str(key) for key in kept.templates)
        assert not {"eu", "us", "api", "db", AWKWARD} & {value for _, value in kept.values}


def test_the_helper_process_keeps_its_label_sets_and_writes_the_same_bytes() -> None:
    metrics = build()
    helper = Offload("test helper")
    try:
        for accept in (TEXT, PROMETHEUS):
            scrape = metrics.snapshot()
            reference = render(scrape, accept, encoded=False)[0]
            for _ in range(2):  # the second from what the helper kept
                body = helper.call(render, scrape, accept, True)[0]
                assert ours(gzip.decompress(body)) == ours(reference)
    finally:
        helper.close()


def test_a_gzipped_render_holds_a_chunk_of_its_text_not_its_families(monkeypatch) -> None:
    """Each per-endpoint family is written as gzip takes its chunks: at 1,000 endpoints the
    body is ~3 MB of text, and a render that held its biggest families before compressing them
    (the duration histograms: half of it) needed all of that at its peak, now a quarter."""
    monkeypatch.setattr(exposition, "CHUNK_LINES", 256)  # chunks of ~25 kB here
    document = {
        "regions": {
            f"r{r}": {
                "endpoints": [
                    {"name": f"e{i}", "url": f"http://127.0.0.1:1/{i}"} for i in range(r, 1000, 10)
                ]
            }
            for r in range(10)
        }
    }
    config = parse_config(json.dumps(document), "test")
    board = StatusBoard(config.endpoints())
    metrics = Metrics(config, board)
    for endpoint in config.endpoints():
        observe(
            metrics,
            ProbeResult(endpoint.region, endpoint.name, "http", True, 0.02, time.time(), None),
        )
    scrape = metrics.snapshot()
    text, _ = render(scrape, PROMETHEUS)
    render(scrape, PROMETHEUS, gzipped=True)  # the label sets encoded and kept, as in the daemon
    tracemalloc.start()
    try:
        held = tracemalloc.get_traced_memory()[0]
        body, _ = render(scrape, PROMETHEUS, gzipped=True)
        peak = tracemalloc.get_traced_memory()[1] - held
    finally:
        tracemalloc.stop()
    assert ours(gzip.decompress(body)) == ours(text)
    assert len(text) > 3_000_000
    assert peak < len(text) / 3, (peak, len(text))
