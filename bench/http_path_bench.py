"""CPU per HTTP check, the lean path against aiohttp's session, on asyncio's loop and uvloop.

Each variant is a child process that runs HttpProbe.run (the real probe: budget, result,
conditions none) against nginx on loopback (bench/scale_bench.py's farm), a fresh connection
per check, `--concurrency` at a time, and reports its own CPU (user + system) per check; the
variants run in turn, round after round, so a shared machine's drifting load falls on all.

    .venv/bin/python bench/http_path_bench.py --rounds 3 --checks 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("session:asyncio", "lean:asyncio", "session:uvloop", "lean:uvloop")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _checks(url: str, lean: bool, checks: int, concurrency: int) -> dict[str, float]:
    from healthcheck.probes.http import HttpProbe, HttpSettings
    from healthcheck.targets import Endpoint

    probe = HttpProbe()
    probe.lean = lean
    await probe.start()
    target = Endpoint(
        region="bench",
        name="nginx",
        kind="http",
        interval=60.0,
        timeout=10.0,
        retries=0,
        latency_warning=None,
        latency_critical=None,
        conditions=(),
        settings=HttpSettings(url=url),
    )
    gate = asyncio.Semaphore(concurrency)

    async def one() -> bool:
        async with gate:
            return (await probe.run(target)).ok

    for _ in range(200):  # warm: imports, contexts, the first connections
        await one()
    cpu, wall = _cpu(), time.perf_counter()
    results = await asyncio.gather(*(one() for _ in range(checks)))
    cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    await probe.close()
    if not all(results):
        raise SystemExit(f"{results.count(False)} checks failed")
    return {"cpu_ms": 1000 * cpu / checks, "wall_ms": 1000 * wall / checks}


def _child(variant: str, url: str, checks: int, concurrency: int) -> None:
    path, loop = variant.split(":")
    if loop == "uvloop":
        import uvloop

        uvloop.install()
    print(json.dumps(asyncio.run(_checks(url, path == "lean", checks, concurrency))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.url, args.checks, args.concurrency)
        return 0
    from bench.scale_bench import target_farm

    variants = args.variants.split(",")
    figures: dict[str, list[float]] = {variant: [] for variant in variants}
    with tempfile.TemporaryDirectory() as workdir, target_farm(Path(workdir)) as (what, ports, _):
        url = f"http://127.0.0.1:{ports[0]}/"
        print(f"targets: {what}; {args.checks} checks per run, {args.concurrency} at a time")
        for round_ in range(args.rounds):
            for variant in variants:
                argv = [sys.executable, __file__, "--child", variant, "--url", url]
                argv += ["--checks", str(args.checks), "--concurrency", str(args.concurrency)]
                out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
                run = json.loads(out.strip().splitlines()[-1])
                figures[variant].append(run["cpu_ms"])
                print(f"round {round_ + 1} {variant}: {run['cpu_ms']:.3f} ms CPU/check")
    print("\n| variant | CPU per check, median | runs |\n|---|---|---|")
    for variant, runs in figures.items():
        span = f"{min(runs):.3f}-{max(runs):.3f}"
        print(f"| {variant} | {statistics.median(runs):.3f} ms | {span} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
