"""CPU of one HTTP check in-process (Prober.check on the lean path), trees A/B alternated.

    .venv/bin/python bench/check_cpu_bench.py --rounds 4 before=DIR after=.

Each tree (`.`: this working tree; else a directory holding the packages, e.g. from
`git archive REV healthcheck alerting storage inference_probe | tar -x -C DIR`) runs in a
process of its own on the daemon's event loop (uvloop): 200 loopback endpoints checked
together (10 at a time) `--batches` times; the process's CPU time per check of each batch after
the first five. A loopback server in another process answers (its CPU is not counted). On a
shared machine other work only ever adds CPU time to a batch, so the minimum (and the lower
quartile) of the batches is the figure to compare; rounds go A, B, A, B, ... to spread any
drift. Scheduler, worker outbox and the daemon are not in it (bench/worker_bench.py,
bench/ab_bench.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker_bench import PORTS, SERVER  # noqa: E402

ENDPOINTS = 200
TOGETHER = 10

CHILD = r"""
import asyncio, json, statistics, sys, time
from healthcheck import event_loop
from healthcheck.config import load_config
from healthcheck.prober import Prober
from healthcheck.secrets import Redactor

endpoints = list(load_config(sys.argv[1]).endpoints())
batches, together = int(sys.argv[2]), int(sys.argv[3])

async def main():
    async with Prober(Redactor(frozenset())) as prober:
        room = asyncio.Semaphore(together)

        async def one(endpoint):
            async with room:
                result = await prober.check(endpoint)
                assert result.ok, result.error_text

        per = []
        for _ in range(batches):
            began = time.process_time()
            await asyncio.gather(*(one(e) for e in endpoints))
            per.append((time.process_time() - began) / len(endpoints) * 1e6)
        per = sorted(per[5:])
        print(json.dumps({"min": per[0], "p25": per[len(per) // 4],
                          "median": statistics.median(per)}))

event_loop.run(main())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="label=DIR (DIR `.`: this working tree)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    trees = [
        (label, ROOT if path == "." else Path(path))
        for label, _, path in (spec.partition("=") for spec in args.trees)
    ]
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, "http", str(PORTS)], stdout=subprocess.PIPE, text=True
    )
    figures: dict[str, list[float]] = {label: [] for label, _ in trees}
    try:
        assert server.stdout is not None
        ports = [int(p) for p in server.stdout.readline().split()]
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "regions.yaml"
            endpoints = [
                {"name": f"e{i}", "url": f"http://127.0.0.1:{ports[i % len(ports)]}/"}
                for i in range(ENDPOINTS)
            ]
            config.write_text(
                json.dumps(
                    {
                        "defaults": {"interval": "5s", "timeout": "2s", "retries": 0},
                        "regions": {"r": {"endpoints": endpoints}},
                    }
                )
            )
            for round_ in range(1, args.rounds + 1):
                for label, tree in trees:
                    done = subprocess.run(
                        [
                            sys.executable,
                            "-c",
                            CHILD,
                            str(config),
                            str(args.batches),
                            str(TOGETHER),
                        ],
                        env={**os.environ, "PYTHONPATH": str(tree)},
                        cwd=tmp,
                        capture_output=True,
                        text=True,
                        check=True,
                        timeout=600,
                    )
                    run = json.loads(done.stdout)
                    figures[label].append(run["min"])
                    print(
                        f"round {round_} {label:>10}: min {run['min']:.1f}, "
                        f"p25 {run['p25']:.1f}, median {run['median']:.1f} us CPU per check",
                        flush=True,
                    )
    finally:
        server.kill()
    for label, values in figures.items():
        print(f"{label:>10}: median of the minimums {statistics.median(values):.1f} us per check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
