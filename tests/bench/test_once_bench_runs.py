"""bench/once_bench.py still runs end to end (tiny scale, no timing asserted: figures live in
bench/README.md, never in the test suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[2] / "bench" / "once_bench.py"


def test_once_bench_reports_every_figure(tmp_path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            *[sys.executable, str(BENCH), "--endpoints", "40", "--rounds", "1", "--no-warm-up"],
            *["--json", str(out)],
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wall ratio" in done.stdout
    figures = json.loads(out.read_text())
    assert figures["endpoints"] == 40 and figures["machine"]
    [ours] = figures["once"]
    assert sum(ours["statuses"].values()) == 40
    assert ours["peak_concurrency"] >= 1
    for floor in (*figures["floor_same_concurrency"], *figures["floor_at_500"]):
        assert floor["wall_s"] > 0 and floor["p50_ms"] > 0
    assert figures["wall_ratio"] > 0
