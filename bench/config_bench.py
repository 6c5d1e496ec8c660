"""Configuration benchmark: `check-config` at scale, and what a burst of SIGHUPs costs.

    .venv/bin/python bench/config_bench.py                         # 100,000 and 10,000 endpoints
    .venv/bin/python bench/config_bench.py --endpoints 20000 --reload-endpoints 2000 --sighups 20
    .venv/bin/python bench/config_bench.py --baseline /tmp/base    # and the same runs on another
                                                                    # checkout, in the same run

Every figure is of real processes: `python -m healthcheck check-config` (wall, CPU and peak RSS
from wait4), next to PyYAML's own C loader reading the same file (the floor: parsing alone) and
the start-up of the CLI (imports). Then the real `healthcheck run` on a configuration of
`--reload-endpoints` endpoints gets `--sighups` SIGHUPs 20 ms apart while the file changes under
it; figures: SIGHUPs sent, reloads logged, daemon CPU from the first SIGHUP until the newest file
is in force and no reload has been logged for three times what the first took, and for at least
`--settle` seconds (default 5; the test suite's smoke run asks for less). `--baseline DIR`
runs the same against the package in DIR (e.g. `git archive a79c2e6 | tar -x -C /tmp/base`),
put first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

CLK_TCK = os.sysconf("SC_CLK_TCK")
REGION_SIZE = 2000
RUN = [sys.executable, "-m", "healthcheck", "run"]


def write_config(path: Path, endpoints: int, storage: Path | None = None, extra: int = 0) -> None:
    """`endpoints` endpoints in regions of 2,000: a quarter each HTTP (headers, conditions), TCP,
    TLS (a condition) and DNS; all on addresses nothing is checked against within a day."""
    regions: dict[str, Any] = {}
    for index in range(endpoints + extra):
        region = regions.setdefault(f"region-{index // REGION_SIZE}", {"endpoints": []})
        kind = index % 4
        name = f"e{index}"
        if kind == 0:
            endpoint: dict[str, Any] = {
                "name": name,
                "url": f"http://127.0.0.1:9/health/{index}",
                "headers": {"X-Check": "synthetic"},
                "conditions": ["[STATUS] == 200", "[RESPONSE_TIME] < 300"],
            }
        elif kind == 1:
            endpoint = {"name": name, "kind": "tcp", "address": "127.0.0.1:9"}
        elif kind == 2:
            endpoint = {
                "name": name,
                "kind": "tls",
                "address": "127.0.0.1:9",
                "conditions": ["[CERTIFICATE_EXPIRATION] > 336h"],
            }
        else:
            endpoint = {"name": name, "kind": "dns", "hostname": f"h{index}.invalid"}
        region["endpoints"].append(endpoint)
    document: dict[str, Any] = {
        "defaults": {
            "interval": "24h",  # the longest allowed: the daemon runs, but hardly probes
            "timeout": "1s",
            "retries": 0,
            "latency": {"warning": "100ms", "critical": "500ms"},
        },
        "regions": regions,
    }
    if storage is not None:
        document["storage"] = {"path": str(storage)}
        document["exporter"] = {"listen": "127.0.0.1:0"}
    path.write_text(yaml.safe_dump(document, sort_keys=False))


def env_for(package: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if package is not None:
        env["PYTHONPATH"] = f"{package}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def measured(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall seconds, CPU seconds and peak RSS of one process, from wait4. Its output goes to a
    file: check-config lists every endpoint, more than a pipe holds."""
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir()
        )
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        output.seek(0)
        said = output.read(1000).decode(errors="replace").splitlines() or [""]
    return {
        "exit": os.waitstatus_to_exitcode(status),
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "said": said[0][:160],
    }


def check_config_figures(config: Path, package: Path | None) -> dict[str, Any]:
    env = env_for(package)
    check = [sys.executable, "-m", "healthcheck", "check-config", "--config", str(config)]
    return {
        "check_config": measured(check, env),
        "cli_start_up": measured([sys.executable, "-c", "import healthcheck.cli"], env),
    }


def parse_floor(config: Path) -> dict[str, Any]:
    code = f"import yaml; yaml.load(open({str(config)!r}), Loader=yaml.CSafeLoader)"
    return measured([sys.executable, "-c", code], env_for(None))


# -- the SIGHUP burst ----------------------------------------------------------------------------
class Daemon:
    """`healthcheck run` with its JSON log read in a thread."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [*RUN, "--config", str(config), "--log-format", "json"],
            env=env,
            cwd=config.parent,  # not a checkout: `-m healthcheck` must find the one asked for
            stderr=subprocess.PIPE,
        )
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:  # type: ignore[union-attr]
            try:
                self.events.append(json.loads(line))
            except ValueError:
                continue

    def count(self, event: str) -> int:
        return sum(1 for entry in list(self.events) if entry.get("event") == event)

    def wait_for(self, event: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in list(self.events):
                if entry.get("event") == event:
                    return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited ({self.process.returncode})")
            time.sleep(0.05)
        raise TimeoutError(event)

    def cpu_s(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def endpoints(self, port: int) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/self", timeout=60) as answer:
            return json.load(answer)["endpoints"]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def sighup_figures(
    endpoints: int, sighups: int, package: Path | None, scratch: Path, settle: float = 5.0
) -> dict:
    config = scratch / "reload.yaml"
    write_config(config, endpoints, scratch / "reload.db")
    daemon = Daemon(config, env_for(package))
    try:
        port = daemon.wait_for("listening")["port"]
        before = daemon.cpu_s()
        started = time.perf_counter()
        for sent in range(sighups):
            if sent == sighups - 1:  # the newest file: one endpoint more
                write_config(config, endpoints, scratch / "reload.db", extra=1)
            daemon.process.send_signal(signal.SIGHUP)
            time.sleep(0.02)  # apart, so the kernel does not merge them into one
        first = None
        last, quiet_since = -1, time.perf_counter()
        while True:  # until the newest is in force and no reload is logged for 3 reloads' time
            reloads = daemon.count("config_reloaded")
            if reloads != last:
                last, quiet_since = reloads, time.perf_counter()
                if reloads and first is None:
                    first = quiet_since - started  # one reload's duration, about
            quiet_for = time.perf_counter() - quiet_since
            quiet = first is not None and quiet_for > max(settle, 3 * first)
            if quiet and daemon.endpoints(port) == endpoints + 1:
                break
            time.sleep(0.2)
        settled = time.perf_counter() - started - quiet_for
        return {
            "endpoints": endpoints,
            "sighups_sent": sighups,
            "reloads_logged": daemon.count("config_reloaded"),
            "daemon_cpu_s": round(daemon.cpu_s() - before, 2),
            "until_last_reload_s": round(settled, 2),
        }
    finally:
        daemon.stop()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--reload-endpoints", type=int, default=10_000)
    parser.add_argument("--sighups", type=int, default=20)
    parser.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds without a reload before the burst counts as over (and 3x the first's)",
    )
    parser.add_argument("--baseline", type=Path, help="another checkout's root, run the same")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--write-config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_config:
        write_config(args.write_config, args.endpoints)
        return

    figures: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPUs ({cpu_model()}), Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f} at start",
    }
    with tempfile.TemporaryDirectory(prefix="config-bench-") as scratch:
        root = Path(scratch)
        config = root / "regions.yaml"
        # Written by a child: a parent grown by 100,000 endpoints' worth of yaml.safe_dump
        # would count in its children's peak RSS (fork copies it before exec).
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--write-config",
                str(config),
                "--endpoints",
                str(args.endpoints),
            ],
            check=True,
        )
        figures["file_mb"] = round(config.stat().st_size / 1e6, 1)
        figures["pyyaml_c_loader_alone"] = parse_floor(config)
        runs = {"this": None, **({"baseline": args.baseline} if args.baseline else {})}
        for name, package in runs.items():
            figures[name] = check_config_figures(config, package)
            figures[name]["sighup_burst"] = sighup_figures(
                args.reload_endpoints, args.sighups, package, root, args.settle
            )
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
