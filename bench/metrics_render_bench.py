"""Time one /metrics snapshot, its pickling and its render at N endpoints (default 10,000).

    .venv/bin/python bench/metrics_render_bench.py [--endpoints 10000] [--rounds 3] \\
        [--accept openmetrics|text]

Half the endpoints are http, the rest tcp; every one has a last result, a tenth failed. Each
round renders twice, alternately: every sample through prometheus_client's encoder (the
reference) and with the per-endpoint label sets encoded once (what the daemon does; its first
round encodes them, the next ones reuse them), and checks the two bodies are the same bytes.
"""

from __future__ import annotations

import argparse
import json
import pickle
import time

from healthcheck.config import parse_config
from healthcheck.exporter import Metrics, render
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.status import StatusBoard

NEWLINE = b"\n"
# What Prometheus 2.x asks for: OpenMetrics
ACCEPT = {
    "openmetrics": "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
    "text": None,
}


def build(count: int) -> Metrics:
    endpoints = [
        {"name": f"e{i}", "url": f"http://127.0.0.1:1/{i}"}
        if i % 2
        else {"name": f"e{i}", "kind": "tcp", "address": "127.0.0.1:1"}
        for i in range(count)
    ]
    document = {"regions": {f"r{r}": {"endpoints": endpoints[r::10]} for r in range(10)}}
    config = parse_config(json.dumps(document), "bench")
    board = StatusBoard(config.endpoints())
    metrics = Metrics(config, board)
    now = time.time()
    for endpoint in config.endpoints():
        failed = hash(endpoint.name) % 10 == 0
        result = ProbeResult(
            endpoint.region,
            endpoint.name,
            endpoint.kind,
            not failed,
            0.01,
            now,
            error=ErrorClass.TIMEOUT if failed else None,
            http_status=200 if endpoint.kind == "http" else None,
        )
        status = board.record(result)
        if status is not None:
            metrics.observe(result, status)
    return metrics


def strip(body: bytes) -> list[bytes]:
    """Without the process_* readings, which move between two renders."""
    return [line for line in body.splitlines() if b"process_" not in line]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accept", choices=sorted(ACCEPT), default="openmetrics")
    args = parser.parse_args()
    accept = ACCEPT[args.accept]
    metrics = build(args.endpoints)
    for _ in range(args.rounds):
        began = time.perf_counter()
        scrape = metrics.snapshot()
        snapped = time.perf_counter()
        pickled = pickle.dumps(scrape)
        pickled_at = time.perf_counter()
        reference, _ = render(scrape, accept, encoded=False)
        rendered = time.perf_counter()
        body, _ = render(scrape, accept)
        encoded = time.perf_counter()
        same = strip(body) == strip(reference)
        lines = body.count(NEWLINE)
        print(
            f"snapshot {1000 * (snapped - began):.0f} ms,"
            f" pickle {1000 * (pickled_at - snapped):.0f} ms ({len(pickled) / 1e6:.1f} MB),"
            f" render {rendered - pickled_at:.3f} s -> {encoded - rendered:.3f} s encoded"
            f" ({1e6 * (rendered - pickled_at) / lines:.1f}"
            f" -> {1e6 * (encoded - rendered) / lines:.1f} us a line; {lines} lines,"
            f" {len(body) / 1e6:.1f} MB, same bytes: {same})"
        )


if __name__ == "__main__":
    main()
