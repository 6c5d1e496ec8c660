"""bench/scale_bench.py still runs end to end (tiny scale, no timing asserted: figures live in
bench/README.md, never in the test suite). A 1 s warm-up (the first checks spread over the
first second) and a 2 s window of 20 endpoints every second: ~40 checks to count, two samples of
memory, fds and tasks; then the switched-off endpoint's detection, which takes what the interval
makes it take."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "scale_bench.py"


def test_daemon_run_reports_every_figure(tmp_path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--json",
            str(out),
            "--aiohttp-farm",
            "daemon",
            "--endpoints",
            "20",
            "--interval",
            "1",
            "--warmup",
            "1",
            "--window",
            "2",
            "--no-blackbox",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads(out.read_text())["daemon"]
    assert run["farm"] == "aiohttp x2" and run["endpoints"] == 20
    assert run["done_per_s"] > 10 and run["missed"] == 0 and run["stored"] > 0
    assert run["cpu_ms_per_probe"] > 0 and run["pss_mb"] and run["fds"] and run["tasks"]
    assert run["lag_p99_ms"] is not None and run["lag_max_ms"] is not None
    # Memory of every process of ours, each named: RSS (shared pages in each) and PSS.
    names = [name for name, _rss, _pss in run["memory_by_process"]]
    assert "daemon" in names and run["rss_mb"] and max(run["rss_mb"]) >= max(run["pss_mb"])
    # The switched-off endpoint was noticed and notified (how fast is a figure, not a test).
    assert run["detection_s"] is not None and run["detection_bound_s"] == 5
    assert "CPU per probe: healthcheck" in done.stdout
