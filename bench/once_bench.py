"""`healthcheck --once` over many healthy loopback endpoints against its floor: a bare aiohttp
script that GETs the same URLs with the same concurrency and fresh connections.

    .venv/bin/python bench/once_bench.py                       # 1,000 endpoints, 5 rounds
    .venv/bin/python bench/once_bench.py --endpoints 200 --rounds 1 --json once.json

Targets: nginx on 16 loopback ports (bench/scale_bench.py's farm; two aiohttp processes when
nginx is missing), answering `{"status":"UP"}` at once. Each round, back to back:

- `healthcheck --once --format json` on a config of the endpoints with default settings
  (latency warning 100 ms, critical 500 ms, `max_concurrency` 500): wall time of the process,
  verdicts, exit status, latency p50/p99 from its JSON, how many checks noted `loop_lag_ms`,
  and the most checks it ran at a time (its DEBUG `once_round` log line);
- the floor: `python floor.py` (interpreter start and `import aiohttp` included), a semaphore
  of that same concurrency, one `ClientSession` with `force_close=True`, each request timed
  with `perf_counter` from before `session.get` to the end of its body;
- the floor again at 500 at a time, what `--once` fired before it was paced (its latency shows
  what that concurrency does to any client's figures on this machine).

`--baseline DIR` also runs `--once` from the package in DIR (e.g. `git archive 47b0765 | tar -x
-C /tmp/base`, the commit before the pace) in each round, for its verdicts beside ours.

Figures are medians over the rounds; every process is real, the machine named in the output.
An unmeasured `--once` first warms the page cache and the farm; `--no-warm-up` leaves it out
(the test suite's smoke run, which asserts no figure's size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from scale_bench import raise_nofile, target_farm, target_urls

OLD_CONCURRENCY = 500  # the --once of before: max_concurrency's default, all at once

FLOOR = """
import asyncio, json, sys, time
import aiohttp

async def main(urls, concurrency):
    cap = asyncio.Semaphore(concurrency)
    latencies = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True),
                                     cookie_jar=aiohttp.DummyCookieJar()) as session:
        async def one(url):
            async with cap:
                began = time.perf_counter()
                async with session.get(url) as response:
                    await response.read()
                    assert response.status == 200, response.status
                latencies.append(time.perf_counter() - began)
        await asyncio.gather(*(one(url) for url in urls))
    print(json.dumps(latencies))

asyncio.run(main(open(sys.argv[1]).read().split(), int(sys.argv[2])))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{model}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
        f"{platform.python_version()}, load average {load}"
    )


def run_once(config: Path, tree: Path | None = None) -> dict:
    """One `--once` run; from the package in `tree` (first on the path, and the working
    directory: `python -m` puts that first) when given."""
    env = {**os.environ, "NO_COLOR": "1"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    began = time.perf_counter()
    done = subprocess.run(
        [
            *[sys.executable, "-m", "healthcheck", "--once", "--config", str(config)],
            *["--format", "json", "--log-level", "DEBUG", "--log-format", "text"],
        ],
        capture_output=True,
        text=True,
        preexec_fn=raise_nofile,
        env=env,
        cwd=tree,
        check=False,
    )
    wall = time.perf_counter() - began
    if done.returncode not in (0, 1, 2):
        raise SystemExit(f"--once exited {done.returncode}: {done.stderr[-2000:]}")
    results = json.loads(done.stdout)["results"]
    latencies = [r["latency_ms"] for r in results]
    peak = re.search(r"up to (\d+) at a time; (\d+) made again", done.stderr)
    return {
        "wall_s": wall,
        "exit": done.returncode,
        "statuses": dict(Counter(r["status"] for r in results)),
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "loop_lag_noted": sum("loop_lag_ms" in r["details"] for r in results),
        "peak_concurrency": int(peak.group(1)) if peak else None,
        "made_again": int(peak.group(2)) if peak else None,
    }


def run_floor(script: Path, urls: Path, concurrency: int) -> dict:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(script), str(urls), str(concurrency)],
        capture_output=True,
        text=True,
        preexec_fn=raise_nofile,
        check=False,
    )
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"floor exited {done.returncode}: {done.stderr[-2000:]}")
    latencies = [seconds * 1000 for seconds in json.loads(done.stdout)]
    return {
        "wall_s": wall,
        "concurrency": concurrency,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
    }


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-nginx", action="store_true", help="serve with aiohttp instead")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--baseline", type=Path, help="a checkout of the package to compare")
    parser.add_argument(
        "--no-warm-up", action="store_true", help="no unmeasured --once before the rounds"
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="once-bench-"))
    with target_farm(workdir, prefer_nginx=not args.no_nginx) as (farm, ports, _):
        urls = target_urls(ports, args.endpoints)
        regions: dict[str, dict] = {}
        for i, url in enumerate(urls):
            region = regions.setdefault(f"r{i // 100}", {"endpoints": []})
            region["endpoints"].append({"name": f"e{i}", "url": url})
        config = workdir / "regions.yaml"
        config.write_text(json.dumps({"regions": regions}))  # JSON is YAML; defaults as shipped
        url_file = workdir / "urls.txt"
        url_file.write_text("\n".join(urls))
        script = workdir / "floor.py"
        script.write_text(FLOOR)

        if not args.no_warm_up:
            run_once(config)  # warm the page cache and the farm
        ours: list[dict] = []
        floors: list[dict] = []
        olds: list[dict] = []
        bases: list[dict] = []
        for _ in range(args.rounds):
            if args.baseline:
                bases.append(run_once(config, args.baseline.resolve()))
            ours.append(run_once(config))
            floors.append(run_floor(script, url_file, ours[-1]["peak_concurrency"] or 1))
            olds.append(run_floor(script, url_file, OLD_CONCURRENCY))

    figures = {
        "machine": machine(),
        "farm": farm,
        "endpoints": args.endpoints,
        "rounds": args.rounds,
        "once": ours,
        "floor_same_concurrency": floors,
        "floor_at_500": olds,
        "baseline": bases,
        "wall_ratio": median_of(ours, "wall_s") / median_of(floors, "wall_s"),
    }
    print(f"{figures['machine']}; targets: {farm}; median of {args.rounds} rounds")
    print(f"{'':34} {'wall s':>7} {'p50 ms':>7} {'p99 ms':>7}  verdicts / concurrency")

    def verdicts(runs: list[dict]) -> str:
        seen: Counter[str] = Counter()
        for run in runs:
            seen.update(run["statuses"])
        exits = Counter(run["exit"] for run in runs)
        return f"{dict(seen)} over all rounds, exit {dict(exits)}"

    rows = [
        (
            f"healthcheck --once ({args.endpoints})",
            ours,
            f"{verdicts(ours)}; up to "
            f"{min(r['peak_concurrency'] or 0 for r in ours)}-"
            f"{max(r['peak_concurrency'] or 0 for r in ours)} at a time; loop_lag noted "
            f"{sum(r['loop_lag_noted'] for r in ours)}, made again "
            f"{sum(r['made_again'] or 0 for r in ours)}",
        ),
        ("floor, same concurrency", floors, "bare aiohttp, fresh connections"),
        (f"floor, {OLD_CONCURRENCY} at a time", olds, "what --once fired before"),
    ]
    if bases:
        rows.append((f"baseline --once ({args.baseline})", bases, verdicts(bases)))
    for name, runs, note in rows:
        print(
            f"{name:34} {median_of(runs, 'wall_s'):7.2f} {median_of(runs, 'p50_ms'):7.2f} "
            f"{median_of(runs, 'p99_ms'):7.2f}  {note}"
        )
    print(f"wall ratio --once / floor (same concurrency): {figures['wall_ratio']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
