"""CPU per check of two or more versions of the code, run alternately on the same machine.

    .venv/bin/python bench/ab_bench.py --rounds 3 before=956846e after=HEAD \\
        "after-asyncio=HEAD:HEALTHCHECK_EVENT_LOOP=asyncio"

Each variant is `label=REV[:VAR=VALUE,...]`: the tree of git revision REV (`git archive`, so
uncommitted changes are not in it; `.` is the working tree as it is), put first on PYTHONPATH
of one `bench/scale_bench.py daemon` run (nginx targets, storage, metrics scraped, alerting;
CPU of every process of ours), with the environment variables given; `--blackbox`: with
blackbox_exporter and Prometheus probing the same targets in the run, for the ratio. Rounds go
A, B, C, A, B, C, ...: on a shared VM the load drifts, and alternating spreads the drift over
every variant. Prints one line per run and the median per variant.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("healthcheck", "alerting", "storage", "inference_probe")


def tree(rev: str, into: Path) -> Path:
    """The packages of `rev` (or of the working tree for `.`) under `into`."""
    into.mkdir(parents=True)
    if rev == ".":
        for package in PACKAGES:
            shutil.copytree(ROOT / package, into / package)
        return into
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, *PACKAGES], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def run_once(path: Path, env: dict[str, str], args: argparse.Namespace) -> dict:
    out = Path(tempfile.mkstemp(suffix=".json")[1])
    command = [
        sys.executable,
        str(ROOT / "bench" / "scale_bench.py"),
        "--json",
        str(out),
        "daemon",
        "--endpoints",
        str(args.endpoints),
        "--interval",
        str(args.interval),
        "--warmup",
        str(args.warmup),
        "--window",
        str(args.window),
        *([] if args.blackbox else ["--no-blackbox"]),
        "--workers",
        str(args.workers),
    ]
    # Not from the repository root: `python -m healthcheck` would find the working tree first.
    done = subprocess.run(
        command,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "PYTHONPATH": str(path), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    try:
        figures = json.loads(out.read_text() or "{}")
    finally:
        out.unlink()
    if done.returncode != 0 or not figures:
        raise RuntimeError(f"scale_bench failed ({done.returncode}): {done.stderr[-2000:]}")
    return figures


def by_part(run: dict) -> dict[str, float]:
    """CPU per check of the daemon, its probe workers (together), the /metrics render helper."""
    parts: dict[str, float] = {}
    for name, ms in run.get("cpu_by_process", []):
        if name == "daemon":
            part = "daemon"
        elif "multiprocessing-fork" in name or name.startswith("helper"):
            part = "render helper"
        elif "resource_tracker" in name or "tracker" in name:
            part = "tracker"
        else:
            part = "workers"
        parts[part] = parts.get(part, 0.0) + ms
    return parts


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="label=REV[:VAR=VALUE,...]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--blackbox",
        action="store_true",
        help="blackbox_exporter + Prometheus probe the same targets in each run: the ratio",
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hc-ab-"))
    variants: list[tuple[str, Path, dict[str, str]]] = []
    try:
        for spec in args.variants:
            label, _, rest = spec.partition("=")
            rev, _, settings = rest.partition(":")
            env = dict(item.split("=", 1) for item in settings.split(",") if item)
            variants.append((label, tree(rev, work / label), env))
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        ratios: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        for round_ in range(1, args.rounds + 1):
            for label, path, env in variants:
                before = load()
                figures = run_once(path, env, args)
                run = figures.get("daemon", figures)
                ms = run["cpu_ms_per_probe"]
                cpu[label].append(ms)
                versus = ""
                if run.get("ratio_vs_both") is not None:
                    ratios[label].append(run["ratio_vs_both"])
                    versus = (
                        f", blackbox_exporter {run['blackbox_cpu_ms_per_probe']:.3f} + "
                        f"Prometheus {run['prometheus_cpu_ms_per_probe']:.3f} ms per probe, "
                        f"ratio {run['ratio_vs_both']:.3f}"
                    )
                parts = ", ".join(f"{part} {ms:.3f}" for part, ms in by_part(run).items())
                print(
                    f"round {round_} {label:>16}: {ms:.3f} ms CPU per check ({parts}), "
                    f"{run['done_per_s']}/s, lag p99 {run['lag_p99_ms']} ms{versus}, "
                    f"load {before:.1f}",
                    flush=True,
                )
        print()
        for label, values in cpu.items():
            print(
                f"{label:>16}: median {statistics.median(values):.3f} ms "
                f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} runs)"
                + (
                    f"; ratio vs blackbox_exporter + Prometheus median "
                    f"{statistics.median(ratios[label]):.3f}"
                    if ratios[label]
                    else ""
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
