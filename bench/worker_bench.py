"""CPU of one probe worker process per check, nothing else counted.

The script plays the daemon: it starts `python -m healthcheck.probe_worker FD` on a socketpair,
hands it N endpoints (INIT, as WorkerPool does) and reads its batches; a loopback server in a
process of its own answers the checks. Over a window after a warm-up it reads the worker's CPU
(user + system, /proc/PID/stat) and divides it by the results the worker sent in that window.
`--kind tcp` keeps aiohttp out of the way (a connect and a close), so what is left is asyncio's
socket work and our own frames: scheduler, prober, probe, result, loop lag, outbox. `--kind
null` leaves only our frames: tcp endpoints whose attempt (NullProbe, below, put in the worker's
registry in place of the tcp kind) waits one turn of the loop and is judged, with no socket.

    .venv/bin/python bench/worker_bench.py [--kind null|tcp|http] [--endpoints 1000] [--interval 5]
        [--window 20] [--conditions] [--rounds 3] [--baseline DIR] [--profile out.prof]

`--baseline DIR`: the package in DIR (e.g. `git archive REV | tar -x -C DIR`) is measured too,
round after round in turn with this tree. `--profile`: one cProfile run (CPU time) of this
tree's worker; `--py-spy`: py-spy's raw stacks of one (wall time outside the loop's waits).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if "PYTHONPATH" not in os.environ:  # the worker of a tree under test has its own
    sys.path.insert(0, str(ROOT))

from healthcheck import worker_wire as wire  # noqa: E402
from healthcheck.conditions import ConditionContext  # noqa: E402
from healthcheck.config import load_config  # noqa: E402
from healthcheck.probe_worker import Init  # noqa: E402
from healthcheck.probes.tcp import TcpProbe  # noqa: E402
from healthcheck.result import ProbeResult  # noqa: E402
from healthcheck.targets import Endpoint  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


class NullProbe(TcpProbe):
    """A tcp check without the socket: one turn of the loop, then judged as connected."""

    async def attempt(self, target: Endpoint) -> ProbeResult:
        started = time.perf_counter()
        timestamp = self.clock()
        await asyncio.sleep(0)
        return self.judged(
            target, ConditionContext(connected=True, ip="127.0.0.1"), started, timestamp
        )


PORTS = 8

SERVER = r"""
import asyncio, sys
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
async def answer(reader, writer):
    try:
        if sys.argv[1] == "http":
            await reader.readuntil(b"\r\n\r\n")
            writer.write(RESPONSE)
            await writer.drain()
    except Exception:
        pass
    writer.close()
async def main():
    servers = [await asyncio.start_server(answer, "127.0.0.1", 0, backlog=4096)
               for _ in range(int(sys.argv[2]))]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def config_file(
    workdir: Path, kind: str, ports: list[int], count: int, interval: float, conditions: bool
) -> Path:
    endpoints: list[dict[str, object]] = []
    for i in range(count):
        port = ports[i % len(ports)]
        if kind == "tcp":
            endpoints.append({"name": f"e{i}", "kind": "tcp", "address": f"127.0.0.1:{port}"})
        else:
            endpoints.append({"name": f"e{i}", "url": f"http://127.0.0.1:{port}/"})
    if conditions:  # two a check, as a configuration commonly has
        first = "[CONNECTED] == true" if kind == "tcp" else "[STATUS] == 200"
        for endpoint in endpoints:
            endpoint["conditions"] = [first, "[RESPONSE_TIME] < 500"]
    document = {
        "defaults": {"interval": f"{interval}s", "timeout": "2s", "retries": 0},
        "scheduler": {"max_concurrency": 2000, "rate_limit": 20000, "jitter": 0.1},
        "regions": {"r": {"endpoints": endpoints}},
    }
    path = workdir / "regions.yaml"
    path.write_text(json.dumps(document))
    return path


async def measure(
    tree: Path,
    config: Path,
    warmup: float,
    window: float,
    profile: str | None,
    spy: str | None = None,
    null: bool = False,
) -> dict[str, float]:
    loaded = load_config(config)
    endpoints = list(loaded.endpoints())
    parent, child = socket.socketpair()
    argv = [sys.executable]
    argv += [__file__, "worker", str(child.fileno()), "null" if null else "-", profile or "-"]
    env = dict(os.environ, PYTHONPATH=str(tree))
    process = await asyncio.create_subprocess_exec(
        *argv, pass_fds=[child.fileno()], env=env, cwd=str(tree)
    )
    child.close()
    reader, writer = await asyncio.open_connection(sock=parent, limit=1 << 20)
    init = Init(0, endpoints, frozenset(), loaded.scheduler, None, 30, None)
    writer.write(wire.pack_control(wire.INIT, init))
    counts = {"results": 0, "failed": 0}

    async def read() -> None:
        while (message := await wire.read_frame(reader)) is not None:
            kind, payload = message
            if kind == wire.BATCH:
                for event in wire.unpack_batch(payload)[0]:
                    if isinstance(event, tuple):
                        counts["results"] += 1
                        counts["failed"] += not event[3]

    reading = asyncio.create_task(read())
    await asyncio.sleep(warmup)
    cpu0, done0, failed0, t0 = cpu_seconds(process.pid), counts["results"], counts["failed"], 0.0
    t0 = time.monotonic()
    sampler = None
    if spy:  # py-spy's collapsed stacks of the worker over the window (pip install py-spy)
        sampler = await asyncio.create_subprocess_exec(
            *("py-spy", "record", "--nonblocking", "-r", "1000", "-f", "raw"),
            *("-d", str(int(window)), "-o", spy, "-p", str(process.pid)),
            stdout=asyncio.subprocess.DEVNULL,
        )
    await asyncio.sleep(window)
    cpu1, done1, failed1 = cpu_seconds(process.pid), counts["results"], counts["failed"]
    elapsed = time.monotonic() - t0
    if sampler is not None:
        await sampler.wait()
    writer.write(wire.pack_control(wire.STOP, 1.0))
    await asyncio.wait_for(reading, 30)
    await asyncio.wait_for(process.wait(), 30)
    writer.close()
    checks = done1 - done0
    return {
        "checks": checks,
        "failed": failed1 - failed0,
        "checks_per_s": checks / elapsed,
        "cpu_ms_per_check": (cpu1 - cpu0) / checks * 1000 if checks else float("nan"),
    }


def worker(fd: str, null: str, profile: str) -> int:
    """A probe worker (healthcheck.probe_worker.main); with `null`, NullProbe checks its tcp
    endpoints; with a `profile` path, cProfile on CPU time (not wall) writes there at its end."""
    import cProfile

    from healthcheck.probe_worker import main as worker_main
    from healthcheck.probes import registry

    if null == "null":
        sys.path.insert(0, str(Path(__file__).parent))
        registry.KINDS["tcp"] = "worker_bench:NullProbe"
    if profile == "-":
        return worker_main([fd])
    profiler = cProfile.Profile(time.process_time)
    try:
        return profiler.runcall(worker_main, [fd])
    finally:
        profiler.dump_stats(profile)


def main() -> int:
    if sys.argv[1:2] == ["worker"]:
        return worker(*sys.argv[2:5])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("null", "tcp", "http"), default="null")
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--conditions", action="store_true", help="two conditions an endpoint")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--profile", help="cProfile the worker into this file (one run)")
    parser.add_argument("--py-spy", help="py-spy's raw stacks of the worker into this file")
    args = parser.parse_args()
    null = args.kind == "null"
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, "tcp" if null else args.kind, str(PORTS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ports = [int(p) for p in server.stdout.readline().split()]
        with tempfile.TemporaryDirectory() as tmp:
            kind = "tcp" if null else args.kind
            config = config_file(
                Path(tmp), kind, ports, args.endpoints, args.interval, args.conditions
            )
            if args.profile or args.py_spy:
                figures = asyncio.run(
                    measure(
                        ROOT, config, *(args.warmup, args.window, args.profile, args.py_spy, null)
                    )
                )
                print(json.dumps({"tree": "this", **figures}), flush=True)
                return 0
            trees = [("this", ROOT)] + ([("baseline", args.baseline)] if args.baseline else [])
            results: dict[str, list[float]] = {name: [] for name, _ in trees}
            for _ in range(args.rounds):
                for name, tree in trees:
                    figures = asyncio.run(
                        measure(tree, config, args.warmup, args.window, None, None, null)
                    )
                    results[name].append(figures["cpu_ms_per_check"])
                    print(json.dumps({"tree": name, **figures}), flush=True)
            for name, values in results.items():
                values.sort()
                print(f"{name}: median {values[len(values) // 2]:.3f} ms per check, runs", values)
    finally:
        server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
