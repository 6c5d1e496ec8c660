"""bench/kinds_bench.py still runs end to end for every kind and variant (tiny scale, every kind
at once with --together, no timing asserted: figures live in README.md, never in the test
suite)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "bench" / "kinds_bench.py"
sys.path.insert(0, str(BENCH.parent))

from kinds_bench import BENCHED, BLACKBOX_MODULES, KINDS, kind_of  # noqa: E402

from healthcheck.probes.registry import is_kind  # noqa: E402


@pytest.mark.timeout(600)  # eight daemons at once, five with blackbox_exporter and Prometheus
def test_every_kind_reports_cpu_per_check(tmp_path) -> None:
    out = tmp_path / "figures.json"
    argv = ["--endpoints", "6", "--interval", "1", "--warmup", "3", "--window", "4", "--together"]
    done = subprocess.run(
        [sys.executable, str(BENCH), "--json", str(out), *argv],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    built = [name for name in BENCHED if is_kind(kind_of(name))]
    assert set(figures["kinds"]) == set(built)
    assert {"tcp", "grpc", "grpc-keepalive", "websocket", "udp", "starttls", "push"} <= set(built)
    assert set(figures["skipped"]) == set(BENCHED) - set(built)
    assert set(KINDS) <= set(BENCHED)
    blackbox = bool(shutil.which("prometheus-blackbox-exporter") and shutil.which("prometheus"))
    assert figures["blackbox"] == blackbox
    for kind, run in figures["kinds"].items():
        assert run["endpoints"] == 6 and run["checks"] > 0, run
        assert run["cpu_ms_per_check"] > 0 and run["processes"] >= 1, run
        # Real answers from the kind's server: some verdict is not a failure.
        assert run["statuses"].get("healthy", 0) + run["statuses"].get("degraded", 0) > 0, run
        if blackbox and kind in BLACKBOX_MODULES:
            assert run["blackbox_module"] == BLACKBOX_MODULES[kind], run
            assert run["blackbox_probes"] > 0 and run["blackbox_cpu_ms_per_probe"] > 0, run
            assert run["prometheus_cpu_ms_per_probe"] is not None, run
        else:
            assert run["blackbox_module"] is None and run["blackbox_probes"] is None, run
        if kind == "push":  # heartbeats from the job process, each taken and judged
            assert run["heartbeats"] > 0 and run["heartbeats_refused"] == 0, run
            assert run["cpu_ms_per_heartbeat"] > 0, run
            assert run["job_cpu_ms_per_heartbeat"] is not None, run
        else:
            assert run["heartbeats"] is None, run
    assert "checks/s, ours" in done.stdout
