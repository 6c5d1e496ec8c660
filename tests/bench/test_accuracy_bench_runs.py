"""bench/accuracy_bench.py still runs end to end (tiny scale, no timing asserted: figures live
in bench/README.md, never in the test suite). Each of the three windows is 2 s of 6 endpoints
checked every second (2 of them delayed): ~12 checks of ours, ~4 of the delayed ones, to count;
blackbox_exporter and Prometheus run beside the daemon when installed, as their figures are
asserted then."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "accuracy_bench.py"


def test_accuracy_run_reports_every_figure(tmp_path) -> None:
    out = tmp_path / "figures.json"
    blackbox = all(shutil.which(tool) for tool in ("prometheus-blackbox-exporter", "prometheus"))
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--json",
            str(out),
            "--endpoints",
            "4",
            "--delayed",
            "2",
            "--interval",
            "1",
            "--warmup",
            "1",
            "--window",
            "2",
            "--clients",
            "2",
            *([] if blackbox else ["--no-blackbox"]),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads(out.read_text())
    assert run["machine"]["cores"] and run["machine"]["cpu"] and run["machine"]["python"]
    assert run["machine"]["loadavg_start"] and run["machine"]["loadavg_end"]
    assert [w["name"] for w in run["windows"]] == ["quiet", "api_load", "after_load"]
    for window in run["windows"]:
        assert window["machine"]["cpu_busy"] is not None and window["machine"]["loadavg_1m_min_max"]
        ours = window["ours"]
        assert ours["checks"] > 0 and "healthy" in ours["statuses"]
        assert ours["false_verdicts"] >= 0 and ours["over_warning"] >= 0
        assert ours["delayed_error_ms"]["n"] > 0
        assert {"p50", "p99", "max"} <= ours["delayed_error_ms"].keys()
        # The whole process tree: the daemon and at least its helper process.
        assert len(ours["processes"]) >= 2 and ours["cpu_ms_per_check"] is not None
        assert window["server"]["healthcheck"]["n"] > 0
        if blackbox:
            assert {"probes", "failed", "over_warning", "cpu_ms_per_probe"} <= window[
                "blackbox"
            ].keys()
            # The warm-up lasts until Prometheus has probed every target: no window is empty.
            assert window["blackbox"]["probes"] > 0
            assert "p99" in window["blackbox"]["delayed_error_ms"]
    assert "metrics_answered_again_after_s" in run["windows"][1]["ours"]
    clients = run["windows"][1]["api_clients"]
    assert clients["clients"] == 2
    assert clients["/api/v1/results"]["requests"] > 0 and clients["/metrics"]["requests"] > 0
    assert "error (measured - D)" in done.stdout
