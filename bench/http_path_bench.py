"""CPU per HTTP check, the lean path against aiohttp's session, on asyncio's loop and uvloop.

Each variant is a child process that runs HttpProbe.run (the real probe: budget, result,
conditions none) against nginx on loopback (bench/scale_bench.py's farm), a fresh connection
per check, `--concurrency` at a time, and reports its own CPU (user + system) per check; the
variants run in turn, round after round, so a shared machine's drifting load falls on all.

    .venv/bin/python bench/http_path_bench.py --rounds 3 --checks 3000
    .venv/bin/python bench/http_path_bench.py --rounds 3 --checks 1000 --https

`--https`: an aiohttp server with a trustme certificate (ECDSA) in a process of its own
instead of nginx, the probe pinned to its CA (`tls.ca_file`), a TLS handshake per check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

VARIANTS = ("session:asyncio", "lean:asyncio", "session:uvloop", "lean:uvloop")


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _checks(
    url: str, lean: bool, checks: int, concurrency: int, ca_file: str | None = None
) -> dict[str, float]:
    from healthcheck.probes.http import HttpProbe, HttpSettings
    from healthcheck.schema import TlsOptions
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
        settings=HttpSettings(url=url, tls=TlsOptions(ca_file=ca_file)),
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


def _child(variant: str, url: str, checks: int, concurrency: int, ca_file: str | None) -> None:
    path, loop = variant.split(":")
    if loop == "uvloop":
        import uvloop

        uvloop.install()
    figures = asyncio.run(_checks(url, path == "lean", checks, concurrency, ca_file))
    print(json.dumps(figures))


def _serve_https(cert_file: str, key_file: str, port_file: str) -> None:
    """An aiohttp server answering {"status":"UP"} over TLS; writes its port to port_file."""
    import ssl

    from aiohttp import web

    async def up(_request: web.Request) -> web.Response:
        return web.json_response({"status": "UP"})

    async def serve() -> int:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        application = web.Application()
        application.router.add_get("/", up)
        runner = web.AppRunner(application, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context, backlog=1024)
        await site.start()
        port: int = runner.addresses[0][1]
        return port

    with asyncio.Runner() as loop:
        Path(port_file).write_text(str(loop.run(serve())))
        loop.get_loop().run_forever()


@contextlib.contextmanager
def _https_target(workdir: Path) -> Iterator[tuple[str, str]]:
    """(url, ca_file) of an aiohttp TLS server in a child process."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file, cert_file, key_file = (str(workdir / n) for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(ca_file)
    cert.cert_chain_pems[0].write_to_path(cert_file)
    cert.private_key_pem.write_to_path(key_file)
    port_file = workdir / "port"
    code = "import sys; from bench.http_path_bench import _serve_https; _serve_https(*sys.argv[1:])"
    argv = [sys.executable, "-c", code, cert_file, key_file, str(port_file)]
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(argv, cwd=root)
    try:
        for _ in range(300):
            if port_file.exists() and port_file.read_text():
                break
            time.sleep(0.1)
        yield f"https://127.0.0.1:{port_file.read_text()}/", ca_file
    finally:
        server.terminate()
        server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--checks", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--https", action="store_true", help="an aiohttp TLS server instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.url, args.checks, args.concurrency, args.ca_file)
        return 0
    from bench.scale_bench import target_farm

    variants = args.variants.split(",")
    figures: dict[str, list[float]] = {variant: [] for variant in variants}
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ca_file = None
        if args.https:
            url, ca_file = stack.enter_context(_https_target(workdir))
            what = "aiohttp over TLS"
        else:
            what, ports, _ = stack.enter_context(target_farm(workdir))
            url = f"http://127.0.0.1:{ports[0]}/"
        print(f"targets: {what}; {args.checks} checks per run, {args.concurrency} at a time")
        for round_ in range(args.rounds):
            for variant in variants:
                argv = [sys.executable, __file__, "--child", variant, "--url", url]
                argv += ["--checks", str(args.checks), "--concurrency", str(args.concurrency)]
                argv += ["--ca-file", ca_file] if ca_file else []
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
