"""Memory of each process of a running daemon, probe side first: `healthcheck run` on N
loopback endpoints (nginx, or an aiohttp farm), no scraper and no API client, sampled every
5 s: the most RSS, PSS (/proc/PID/smaps_rollup) and VmHWM of each process by its role (daemon,
zygote, each worker, the helper, a multiprocessing tracker if one runs).

    .venv/bin/python bench/probe_memory_bench.py --endpoints 20000 --seconds 90

Run from the root of the tree to measure: `python -m healthcheck` finds that tree's package.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_bench  # the farm, the config and the roles, as the scale bench has them


def status_mb(pid: int) -> dict[str, int]:
    figures = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                figures[line.split(":")[0]] = int(line.split()[1]) // 1024
    rss, pss = scale_bench.memory(pid)
    figures["RSS"], figures["PSS"] = rss >> 20, pss >> 20
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoints", type=int, default=20000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="hc-memory-"))
    most: dict[str, dict[str, int]] = {}
    with scale_bench.target_farm(workdir) as (farm, ports, _):
        urls = scale_bench.target_urls(ports, args.endpoints)
        listen = scale_bench.free_port()
        config = scale_bench.daemon_config(
            urls, args.interval, workdir, listen, None, workers=args.workers
        )
        with open(workdir / "daemon.log", "w") as log:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "healthcheck", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=scale_bench.raise_nofile,
            )
        began = time.monotonic()
        try:
            while time.monotonic() - began < args.seconds:
                time.sleep(5)
                for pid, role in scale_bench.roles(daemon.pid).items():
                    try:
                        figures = status_mb(pid)
                    except OSError:
                        continue
                    kept = most.setdefault(role, figures)
                    for key, value in figures.items():
                        kept[key] = max(kept[key], value)
        finally:
            daemon.terminate()
            daemon.wait(30)
    print(f"{args.endpoints} endpoints every {args.interval:g}s, {args.workers} workers ({farm}):")
    for role, figures in most.items():
        rss, pss, hwm = figures["RSS"], figures["PSS"], figures["VmHWM"]
        print(f"  {role:28s} RSS {rss:4d}  PSS {pss:4d}  HWM {hwm:4d} MB")
    rss, pss = (sum(f[key] for f in most.values()) for key in ("RSS", "PSS"))
    print(f"  {'sum':28s} RSS {rss:4d}  PSS {pss:4d}")
    if args.json:
        Path(args.json).write_text(json.dumps(most, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
