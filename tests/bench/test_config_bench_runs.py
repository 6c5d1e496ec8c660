"""bench/config_bench.py still runs end to end (tiny scale, no timing asserted: figures live in
bench/README.md, never in the test suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "config_bench.py"
# --settle: the burst is over once the newest file is in force and no reload came for 3x what
# the first took (and 0.5 s), not the bench's 5 s: reloads counted stay within 1..sighups.
SMALL = ("--endpoints", "200", "--reload-endpoints", "40", "--sighups", "3", "--settle", "0.5")


def test_config_bench_reports_every_figure(tmp_path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), *SMALL, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    run = figures["this"]
    assert run["check_config"]["exit"] == 0
    assert "200 endpoints" in run["check_config"]["said"]
    burst = run["sighup_burst"]
    assert burst["sighups_sent"] == 3 and 1 <= burst["reloads_logged"] <= 3
    assert figures["pyyaml_c_loader_alone"]["exit"] == 0
