"""Peak memory of the daemon's helper process (healthcheck/offload.py) at N endpoints.

    .venv/bin/python bench/helper_memory_bench.py [--endpoints 20000] [--db PATH] \\
        [--rounds 2] [--trace] [--json out.json]

Builds (once; kept at --db and reused when it is there) a database as the daemon's writer
leaves it after a few hours: 30 days of daily rollups, 48 h of hourly ones, and raw rows every
10 s for the last 90 minutes, for N http endpoints in 10 regions named as in
bench/scale_bench.py. Then, as the daemon does, it starts the real `Offload` (a spawned helper
process) and calls in it: `read_uptime` (the rolling windows) and a gzipped OpenMetrics render
of a Scrape made by the real `Metrics` from a `StatusBoard` holding a few results per endpoint
and that uptime snapshot. Before each call the helper's peak RSS is reset
(/proc/PID/clear_refs), so each line shows that call's own peak (VmHWM) and the RSS it leaves
(VmRSS), and its CPU seconds (time.process_time in the helper). The daemon's side is shown too:
the Scrape's pickle size and what unpickling the uptime snapshot allocates (tracemalloc).
`--trace` runs each call once more under tracemalloc in the helper and prints the traced peak
and the lines holding the most at the end of the call.

Top-level imports are the standard library only: the spawned helper imports this module as
its __main__ (as it imports `healthcheck/__main__.py`'s package, skipped, under
`python -m healthcheck`), so nothing here may add to what it holds.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

DAY, HOUR, INTERVAL = 86400, 3600, 10
NOW = 20_000 * DAY + 10 * HOUR + 1800  # 10:30 UTC: window edges fall mid-hour
REGIONS = 10
RAW_SECONDS = 90 * 60
HOURLY_KEPT = 48 * HOUR
ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


# ---- run in the helper (module level: pickled by reference) ----


def status() -> dict[str, int]:
    """The helper's VmHWM and VmRSS (kB) now."""
    found = {}
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, value = line.split(":")
                found[name] = int(value.split()[0])
    return found


def reset_peak() -> dict[str, int]:
    """Peak RSS back to RSS now (Linux: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as out:
        out.write("5")
    return status()


def timed(function: Any, *args: Any) -> tuple[float, Any]:
    """Run a call, return its CPU seconds and its answer (pickled back as the real one is)."""
    began = time.process_time()
    answer = function(*args)
    return time.process_time() - began, answer


def traced(function: Any, *args: Any) -> dict[str, Any]:
    """A call under tracemalloc: traced peak, and the lines holding most just before return."""
    tracemalloc.start(1)
    answer = function(*args)
    snapshot = tracemalloc.take_snapshot()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del answer
    top = snapshot.statistics("lineno")[:8]
    return {"peak_mb": peak / 1e6, "held": [f"{s.size / 1e6:7.2f} MB {s.traceback}" for s in top]}


def modules() -> list[str]:
    return sorted(sys.modules)


# ---- the daemon's side ----


def build_database(path: Path, endpoints: int) -> None:
    from storage.rollup import bucket_of
    from storage.schema import BUCKET_COLUMNS, connect

    db = connect(str(path))
    connection = db.conn
    connection.execute("PRAGMA journal_mode = OFF")
    connection.execute("PRAGMA cache_size = -500000")
    per_region = endpoints // REGIONS
    connection.executemany(
        "INSERT INTO targets VALUES (?, ?, ?, 'http')",
        [(e + 1, f"r{e // per_region}", f"e{e}") for e in range(endpoints)],
    )
    columns = ("target_id", "bucket", "checks", "successes", "degraded", "latency_sum_ms")
    columns += ("latency_min_ms", "latency_max_ms", *BUCKET_COLUMNS)

    def rollups(table: str, width: int, first: int) -> None:
        checks = width // INTERVAL
        timeouts, fast = checks // 100, checks * 3 // 10
        histogram = dict.fromkeys(BUCKET_COLUMNS, 0) | {
            "le_50": fast,
            "le_100": checks - timeouts - 2 * fast,
            "le_200": fast,
            "le_5000": timeouts,
        }
        values = [checks, checks - timeouts, 0, checks * 110.0, 20.0, 5000.0, *histogram.values()]
        connection.execute(
            "WITH RECURSIVE b(bucket) AS "
            "(SELECT ? UNION ALL SELECT bucket + ? FROM b WHERE bucket < ?) "
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT t.id, b.bucket, {', '.join(map(str, values))} FROM b CROSS JOIN targets t",
            [first, width, bucket_of(NOW, width)],
        )

    rollups("rollup_hour", HOUR, bucket_of(NOW, HOUR) - HOURLY_KEPT)
    rollups("rollup_day", DAY, bucket_of(NOW, DAY) - 29 * DAY)
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'results' AND sql IS NOT NULL "
        "AND type = 'index'"
    ).fetchall()
    for name, _ in indexes:
        connection.execute(f"DROP INDEX {name}")
    connection.execute(
        "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < ?) "
        "INSERT INTO results (target_id, ts, ok, status, latency_ms, http_status, error, "
        "error_text, attempts) SELECT t.id, ? + k.n * ? + t.id * ? / ?, (k.n + t.id) % 100 > 0, "
        "iif((k.n + t.id) % 100 > 0, 'healthy', 'unhealthy'), 20 + (k.n * 7 + t.id) % 100, "
        "iif((k.n + t.id) % 100 > 0, 200, NULL), iif((k.n + t.id) % 100 > 0, NULL, 'timeout'), "
        "iif((k.n + t.id) % 100 > 0, NULL, 'no answer within 5s'), 1 FROM k CROSS JOIN targets t",
        [RAW_SECONDS // INTERVAL - 1, NOW - RAW_SECONDS, INTERVAL, INTERVAL, endpoints],
    )
    for _, sql in indexes:
        connection.execute(sql)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.close()


def build_metrics(endpoints: int, snapshot: Any) -> Any:
    """Metrics over a StatusBoard with 5 results per endpoint (a tenth failing), as the daemon
    fills them, and the uptime snapshot as its readings."""
    from healthcheck.config import parse_config
    from healthcheck.exporter import Metrics
    from healthcheck.readings import Readings
    from healthcheck.result import ErrorClass, Phases, ProbeResult
    from healthcheck.status import StatusBoard

    per_region = endpoints // REGIONS
    regions: dict[str, dict[str, list[dict[str, str]]]] = {}
    for i in range(endpoints):
        regions.setdefault(f"r{i // per_region}", {"endpoints": []})["endpoints"].append(
            {"name": f"e{i}", "url": f"http://127.0.0.1:{8000 + i % 64}/{i}"}
        )
    config = parse_config(json.dumps({"regions": regions}), "bench")
    board = StatusBoard(config.endpoints())
    readings = Readings(uptime=snapshot.report, in_flight=0, dispatched=0)
    metrics = Metrics(config, board, readings=lambda: readings)
    for n in range(5):
        for i, endpoint in enumerate(config.endpoints()):
            failed = (i + n) % 10 == 0
            latency = 0.02 + (i % 97) / 1000
            result = ProbeResult(
                endpoint.region,
                endpoint.name,
                endpoint.kind,
                not failed,
                latency,
                NOW - (5 - n) * INTERVAL,
                error=ErrorClass.TIMEOUT if failed else None,
                http_status=None if failed else 200,
                phases=Phases(0.001, 0.002, None, latency - 0.001, latency),
            )
            state = board.record(result)
            if state is not None:
                metrics.observe(result, state)
    return metrics


def proc_status(pid: int) -> dict[str, int]:
    found = {}
    with open(f"/proc/{pid}/status") as lines:
        for line in lines:
            if line.startswith(("VmHWM:", "VmRSS:")):
                name, value = line.split(":")
                found[name] = int(value.split()[0])
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoints", type=int, default=20_000)
    parser.add_argument("--db", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    db = args.db or Path(f"/tmp/helper_memory_bench-{args.endpoints}.db")
    if not db.exists():
        began = time.perf_counter()
        build_database(db, args.endpoints)
        print(f"built {db} in {time.perf_counter() - began:.0f} s", flush=True)

    from healthcheck.exporter import render
    from healthcheck.offload import Offload
    from healthcheck.uptime_cache import read_uptime

    helper = Offload("bench helper")
    figures: dict[str, Any] = {"endpoints": args.endpoints, "calls": []}
    try:
        helper.call(os.getpid)
        pid = helper.pid
        assert pid is not None
        started = proc_status(pid)
        print(f"helper started: RSS {started['VmRSS'] / 1024:.0f} MB", flush=True)
        figures["started_rss_mb"] = started["VmRSS"] / 1024

        def measured(label: str, function: Any, *call: Any) -> Any:
            helper.call(reset_peak)
            cpu, answer = helper.call(timed, function, *call)
            size = len(pickle.dumps(answer))
            after = helper.call(status)  # the helper trims its heap after each call
            line = {
                "call": label,
                "peak_mb": after["VmHWM"] / 1024,
                "rss_after_mb": after["VmRSS"] / 1024,
                "cpu_s": cpu,
                "answer_mb": size / 1e6,
            }
            figures["calls"].append(line)
            print(
                f"{label:<22} peak {line['peak_mb']:6.1f} MB  after {line['rss_after_mb']:6.1f} MB"
                f"  cpu {cpu:6.2f} s  answer {size / 1e6:6.2f} MB",
                flush=True,
            )
            return line

        snapshot = helper.call(read_uptime, str(db), 48 * 3600.0, float(NOW))
        tracemalloc.start()
        pickled = pickle.dumps(snapshot)
        held = tracemalloc.get_traced_memory()[0]
        again = pickle.loads(pickled)
        daemon_uptime = tracemalloc.get_traced_memory()[0] - held
        del again
        tracemalloc.stop()
        metrics = build_metrics(args.endpoints, snapshot)
        gc.collect()
        tracemalloc.start()
        scrape = metrics.snapshot()
        daemon_scrape = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        scrape_pickle = len(pickle.dumps(scrape))
        print(
            f"daemon side: uptime snapshot {len(pickled) / 1e6:.1f} MB pickled,"
            f" {daemon_uptime / 1e6:.1f} MB unpickled; scrape {daemon_scrape / 1e6:.1f} MB"
            f" built, {scrape_pickle / 1e6:.1f} MB pickled",
            flush=True,
        )
        figures["daemon"] = {
            "uptime_pickle_mb": len(pickled) / 1e6,
            "uptime_unpickled_mb": daemon_uptime / 1e6,
            "scrape_mb": daemon_scrape / 1e6,
            "scrape_pickle_mb": scrape_pickle / 1e6,
        }
        del scrape
        for round_ in range(args.rounds):
            measured(f"read_uptime #{round_ + 1}", read_uptime, str(db), 48 * 3600.0, float(NOW))
            measured(f"render gzip #{round_ + 1}", render, metrics.snapshot(), ACCEPT, True)
        measured("render text plain", render, metrics.snapshot(), None, False)
        figures["peak_mb"] = proc_status(pid)["VmHWM"] / 1024
        if args.trace:
            for label, function, call in (
                ("read_uptime", read_uptime, (str(db), 48 * 3600.0, float(NOW))),
                ("render gzip", render, (metrics.snapshot(), ACCEPT, True)),
            ):
                found = helper.call(traced, function, *call)
                print(f"traced {label}: peak {found['peak_mb']:.1f} MB; held at the end:")
                for held_line in found["held"]:
                    print("   ", held_line)
        loaded = helper.call(modules)
        print(f"helper modules: {len(loaded)}", flush=True)
        figures["helper_modules"] = len(loaded)
    finally:
        helper.close()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
