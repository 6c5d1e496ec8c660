"""CLI start-up benchmark: what `check-config` and a one-endpoint `--once` cost a user, next to
the floor of importing the two libraries they cannot do without.

    .venv/bin/python bench/cli_bench.py                      # 9 rounds
    .venv/bin/python bench/cli_bench.py --rounds 15 --baseline /tmp/base

Every figure is a real process, wall time and CPU (user + system, from wait4), the median of
`--rounds` rounds; the commands of one round run back to back, rounds interleave them so that a
busy moment of a shared machine falls on all of them alike:

- floor: `python -c "import yaml, aiohttp"`
- `healthcheck check-config --config regions.yaml` (the documented example)
- `healthcheck --once --config one.yaml`, one HTTP endpoint on a loopback server of this script

`--baseline DIR` runs the two CLI commands also against the package in DIR (e.g.
`git archive 07dd6d6 | tar -x -C /tmp/base`), put first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEALTHCHECK = str(Path(sys.executable).parent / "healthcheck")


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "UP"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def timed(argv: list[str], env: dict[str, str], expect: int) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `argv`, which must exit with `expect`."""
    began = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    code = os.waitstatus_to_exitcode(status)
    if code != expect:
        raise SystemExit(f"{argv} exited {code}: {process.stderr.read().decode()}")
    process.stderr.close()
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--baseline", help="a checkout of the package to compare, same run")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    folder = Path(tempfile.mkdtemp(prefix="cli-bench-"))
    one = folder / "one.yaml"
    one.write_text(
        json.dumps(
            {
                # a busy shared machine is no verdict about the loopback server
                "defaults": {"latency": {"warning": "5s", "critical": "10s"}},
                "regions": {
                    "local": {
                        "endpoints": [
                            {"name": "api", "url": f"http://127.0.0.1:{server.server_port}/"}
                        ]
                    }
                },
            }
        )
    )
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("PYTHONPATH", None)
    commands: dict[str, tuple[list[str], dict[str, str], int]] = {
        "floor: python -c 'import yaml, aiohttp'": (
            [sys.executable, "-c", "import yaml, aiohttp"],
            env,
            0,
        ),
    }
    trees = [("now", env)]
    if args.baseline:
        trees.insert(0, ("baseline", {**env, "PYTHONPATH": str(Path(args.baseline).resolve())}))
    for tree, tree_env in trees:
        commands[f"{tree}: healthcheck check-config (regions.yaml)"] = (
            [HEALTHCHECK, "check-config", "--config", str(ROOT / "regions.yaml")],
            tree_env,
            0,
        )
        commands[f"{tree}: healthcheck --once (one endpoint)"] = (
            [HEALTHCHECK, "--once", "--config", str(one)],
            tree_env,
            0,
        )

    for argv, command_env, expect in commands.values():  # warm the page cache, check each runs
        timed(argv, command_env, expect)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, (argv, command_env, expect) in commands.items():
            wall, cpu = timed(argv, command_env, expect)
            walls[name].append(wall)
            cpus[name].append(cpu)
    server.shutdown()
    one.unlink()
    folder.rmdir()

    floor = statistics.median(next(iter(walls.values())))
    print(
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{platform.machine()}; median of {args.rounds} rounds"
    )
    print(f"{'command':52} {'wall ms':>8} {'cpu ms':>8} {'x floor':>8}")
    for name in commands:
        wall = statistics.median(walls[name])
        cpu = statistics.median(cpus[name])
        print(f"{name:52} {wall * 1000:8.0f} {cpu * 1000:8.0f} {wall / floor:8.2f}")


if __name__ == "__main__":
    main()
