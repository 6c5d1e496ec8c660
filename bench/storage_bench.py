"""Storage benchmark: writer throughput, cost of the rolling-uptime reads, database size per day.

    .venv/bin/python bench/storage_bench.py [--endpoints 1000] [--out results.json]

Everything is written in a temporary directory that is removed at exit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlite_utils

from healthcheck.result import ErrorClass, ProbeResult, Status
from storage.rollup import bucket_of
from storage.schema import BUCKET_COLUMNS, connect
from storage.uptime import WINDOWS, StorageReader, daily_history
from storage.writer import HOURLY_KEPT, Retention, StorageWriter, write_batch

DAY, HOUR, INTERVAL, BATCH, RUNS = 86400, 3600, 10, 1000, 7
NOW = 20_000 * DAY + 10 * HOUR + 1800  # 10:30 UTC: window edges fall mid-hour, as in tests
RAW_KEPT, ROLLUPS_KEPT = Retention().raw, Retention().rollups
ROW_KINDS = {"raw": "results", "hourly rollup": "rollup_hour", "daily rollup": "rollup_day"}
Check = tuple[ProbeResult, Status]
Query = Callable[[StorageReader], object]
QUERIES: dict[str, Query] = {
    "uptime(now): 1h, 24h, 7d, 30d": lambda reader: reader.uptime(NOW),
    **{
        f"  window(now - {name}, now)": lambda reader, width=width: reader.window(NOW - width, NOW)
        for name, width in WINDOWS.items()
    },
    "daily_history(90 days)": lambda reader: daily_history(reader, 90, NOW),
}


def check(endpoint: int, ts: float, rng: random.Random) -> Check:
    """One check as the scheduler hands it to the writer: 20-120 ms, 1% time out."""
    ok = rng.random() >= 0.01
    result = ProbeResult(
        f"region-{endpoint % 5}",
        f"endpoint-{endpoint:05d}",
        "http",
        ok,
        rng.uniform(0.02, 0.12) if ok else 5.0,
        ts,
        error=None if ok else ErrorClass.TIMEOUT,
        error_text=None if ok else "no answer within 5s",
        http_status=200 if ok else None,
    )
    return result, Status.HEALTHY if ok else Status.UNHEALTHY


def checks(endpoints: int, start: float, seconds: float) -> list[Check]:
    """Every endpoint checked every INTERVAL s from `start`, spread evenly over each round."""
    rng = random.Random(start)
    return [
        check(e, start + k * INTERVAL + e * INTERVAL / endpoints, rng)
        for k in range(int(seconds // INTERVAL))
        for e in range(endpoints)
    ]


def timed(
    query: Query, readers: dict[int, StorageReader], runs: int = RUNS, warm: bool = True
) -> dict[int, float]:
    """Median seconds per database, the runs alternating between them so noise hits both."""
    # A shared VM's speed drifts by up to 2x within a minute: back-to-back blocks would not compare.
    if warm:
        for reader in readers.values():
            query(reader)
    times: dict[int, list[float]] = {count: [] for count in readers}
    for _ in range(runs):
        for count, reader in readers.items():
            began = time.perf_counter()
            query(reader)
            times[count].append(time.perf_counter() - began)
    return {count: statistics.median(samples) for count, samples in times.items()}


def bench_writer(directory: Path, endpoints: int, total: int) -> dict[str, float]:
    """The real writer thread fed from this thread as fast as `submit` goes."""
    path = str(directory / "writer.db")
    connect(path).conn.close()  # schema created outside the timing
    seconds = max(total // endpoints, 1) * INTERVAL
    batch = checks(endpoints, NOW - seconds, seconds)
    writer = StorageWriter(path, max_queue=len(batch) + 1, clock=lambda: NOW)
    writer.start()
    began = time.perf_counter()
    for result, status in batch:
        writer.submit(result, status)
    submitted, depth = time.perf_counter(), writer.queue_depth
    writer.close(timeout=600)
    ended = time.perf_counter()
    return {
        "results": len(batch),
        "per_s": len(batch) / (ended - began),
        "seconds": ended - began,
        "submit_seconds": submitted - began,
        "queue_depth_after_submit": depth,
        "written": writer.stats.written,
        "dropped": writer.stats.dropped,
        "max_queue": len(batch) + 1,
    }


def table_bytes(db: sqlite_utils.Database) -> dict[str, int]:
    """Bytes of the file's pages per table, its indexes included (SQLite's dbstat)."""
    owner = dict(db.execute("SELECT name, tbl_name FROM sqlite_master").fetchall())
    sizes: dict[str, int] = {}
    for name, size in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
        sizes[owner.get(name, name)] = sizes.get(owner.get(name, name), 0) + size
    return sizes


def file_size(db: sqlite_utils.Database, path: Path) -> int:
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.stat().st_size


def bytes_written() -> float:
    """Bytes this process has passed to write() so far: SQLite's WAL and checkpoints (Linux)."""
    io = Path("/proc/self/io")
    fields = dict(f.split(": ") for f in io.read_text().splitlines()) if io.exists() else {}
    return float(fields.get("wchar", "nan"))


def bench_hour(directory: Path, endpoints: int) -> dict[str, Any]:
    """A real hour (9:00-10:00) written by `write_batch` in batches of 1000; size per row."""
    path = directory / "hour.db"
    db = connect(path)
    empty = file_size(db, path)
    hour = checks(endpoints, bucket_of(NOW, HOUR) - HOUR, HOUR)
    ids: dict[tuple[str, str], int] = {}
    times, written = [], bytes_written()
    for first in range(0, len(hour), BATCH):
        began = time.perf_counter()
        with db.conn:
            db.execute("BEGIN IMMEDIATE")
            write_batch(db, hour[first : first + BATCH], ids)
        times.append(time.perf_counter() - began)
    written = bytes_written() - written
    grown = file_size(db, path) - empty
    sizes = table_bytes(db)
    per_row = {  # bytes of each table and its indexes per row
        name: sizes[table] / db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        for name, table in ROW_KINDS.items()
    }
    db.conn.close()
    rate = endpoints / INTERVAL  # raw rows per second
    rollups = {  # bytes per endpoint after a day, and in the steady state
        "day": 24 * per_row["hourly rollup"] + per_row["daily rollup"],
        "steady": HOURLY_KEPT / HOUR * per_row["hourly rollup"]
        + ROLLUPS_KEPT / DAY * per_row["daily rollup"],
    }
    return {
        "batch_results_per_s": len(hour) / sum(times),
        "batch_ms_median": statistics.median(times) * 1000,
        "batch_ms_max": max(times) * 1000,
        "hour_results": len(hour),
        "hour_growth_bytes": grown,
        "disk_writes_per_result": written / len(hour),
        "bytes_per_row": per_row,
        "day_bytes_extrapolated": rate * DAY * per_row["raw"] + endpoints * rollups["day"],
        "steady_raw_rows": rate * RAW_KEPT,
        "steady_bytes": rate * RAW_KEPT * per_row["raw"] + endpoints * rollups["steady"],
    }


def rollup_values(checks: int) -> str:
    """SQL literals for one rollup row of `checks` checks shaped like `check`'s latencies."""
    timeouts, fast = checks // 100, checks * 3 // 10
    histogram = dict.fromkeys(BUCKET_COLUMNS, 0) | {
        "le_50": fast,
        "le_100": checks - timeouts - 2 * fast,
        "le_200": fast,
        "le_5000": timeouts,
    }
    values = [checks, checks - timeouts, 0, checks * 110.0, 20.0, 5000.0, *histogram.values()]
    return ", ".join(map(str, values))


def insert_rollups(
    connection: sqlite3.Connection, table: str, width: int, first: int, last: int | None = None
) -> None:
    """One row per endpoint and bucket from `first` to `last` (default: the bucket of NOW)."""
    columns = ("target_id", "bucket", "checks", "successes", "degraded", "latency_sum_ms")
    columns += ("latency_min_ms", "latency_max_ms", *BUCKET_COLUMNS)
    connection.execute(
        "WITH RECURSIVE b(bucket) AS "
        "(SELECT ? UNION ALL SELECT bucket + ? FROM b WHERE bucket < ?) "
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"SELECT t.id, b.bucket, {rollup_values(width // INTERVAL)} FROM b CROSS JOIN targets t",
        [first, width, bucket_of(NOW, width) if last is None else last],
    )


def build_history(path: Path, endpoints: int) -> None:
    """30 days of rollups (hourly kept 35 days) and 48 h of raw rows, as the writer leaves them."""
    db = connect(path)
    connection = db.conn
    connection.execute("PRAGMA journal_mode = OFF")  # a bulk load; WAL again before reading
    connection.execute("PRAGMA cache_size = -500000")
    connection.executemany(
        "INSERT INTO targets VALUES (?, ?, ?, 'http')",
        [(e, f"region-{e % 5}", f"endpoint-{e:05d}") for e in range(1, endpoints + 1)],
    )
    insert_rollups(connection, "rollup_hour", HOUR, bucket_of(NOW, HOUR) - HOURLY_KEPT)
    insert_rollups(connection, "rollup_day", DAY, bucket_of(NOW, DAY) - 29 * DAY)
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'results' AND sql IS NOT NULL "
        "AND type = 'index'"
    ).fetchall()
    for name, _ in indexes:  # building the indexes after the rows is 2x faster to load
        connection.execute(f"DROP INDEX {name}")
    connection.execute(
        "WITH RECURSIVE k(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM k WHERE n < ?) "
        "INSERT INTO results (target_id, ts, ok, status, latency_ms, http_status, error, "
        "error_text, attempts) SELECT t.id, ? + k.n * ? + t.id * ? / ?, (k.n + t.id) % 100 > 0, "
        "iif((k.n + t.id) % 100 > 0, 'healthy', 'unhealthy'), 20 + (k.n * 7 + t.id) % 100, "
        "iif((k.n + t.id) % 100 > 0, 200, NULL), iif((k.n + t.id) % 100 > 0, NULL, 'timeout'), "
        "iif((k.n + t.id) % 100 > 0, NULL, 'no answer within 5s'), 1 FROM k CROSS JOIN targets t",
        [RAW_KEPT // INTERVAL - 1, NOW - RAW_KEPT, INTERVAL, INTERVAL, endpoints],
    )
    for _, sql in indexes:
        connection.execute(sql)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.close()
    os.sync()  # no write-back of the load while the reads are timed


def bench_reads(directory: Path, counts: tuple[int, ...]) -> dict[str, dict[int, float]]:
    """The reads behind the API's uptime snapshot and `healthcheck status`, per endpoint count."""
    readers, figures = {}, {}
    for count in counts:
        began = time.perf_counter()
        build_history(directory / f"history-{count}.db", count)
        figures.setdefault("build_seconds", {})[count] = time.perf_counter() - began
        readers[count] = StorageReader(str(directory / f"history-{count}.db"))
    for label, query in QUERIES.items():
        figures[label] = timed(query, readers)
    # tens of seconds at 1000 endpoints: one run, no warm-up
    figures["latest(), one cold run"] = timed(StorageReader.latest, readers, runs=1, warm=False)
    today = bucket_of(NOW, DAY)
    for reader in readers.values():  # all 400 days of daily rollups the default retention keeps
        insert_rollups(reader.db.conn, "rollup_day", DAY, today - 399 * DAY, today - 30 * DAY)
    label = "window(now - 30d, now), 400 d of daily rollups kept"
    figures[label] = timed(lambda reader: reader.window(NOW - WINDOWS["30d"], NOW), readers)
    for reader in readers.values():
        reader.close()
    return figures


def machine() -> dict[str, object]:
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    models = [t for t in text.splitlines() if t.startswith("model name")]
    return {
        "nproc": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu": models[0].split(":", 1)[1].strip() if models else platform.machine(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(terse=True),
    }


def line(label: str, *values: str) -> None:
    print(f"  {label:<58}" + "".join(f"{value:>16}" for value in values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--results", type=int, default=200_000, help="through the writer")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    n, small = args.endpoints, max(args.endpoints // 10, 1)
    host = machine()
    print("machine: " + ", ".join(f"{key} {value}" for key, value in host.items()))
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as temp:
        reads = bench_reads(Path(temp), (n, small))
        w = bench_writer(Path(temp), n, args.results)
        h = bench_hour(Path(temp), n)

    print(f"\n1. Writes: {n} endpoints, checks in time order")
    line(f"StorageWriter: {w['results']:,} x submit(), then close()", f"{w['per_s']:,.0f}/s")
    print(
        f"     {w['seconds']:.1f} s from first submit to close() returning; submit loop "
        f"{w['submit_seconds']:.1f} s, queue depth then {w['queue_depth_after_submit']:,}\n"
        f"     written {w['written']:,}, dropped {w['dropped']:,} "
        f"(max_queue {w['max_queue']:,}, so nothing could drop)"
    )
    line(f"write_batch() + commit alone, batches of {BATCH}", f"{h['batch_results_per_s']:,.0f}/s")
    print(
        f"     per batch: median {h['batch_ms_median']:.1f} ms, max {h['batch_ms_max']:.1f} ms\n"
        f"     bytes passed to write() per result, WAL + checkpoints: "
        f"{h['disk_writes_per_result']:,.0f} (a row: {h['bytes_per_row']['raw']:.0f} in the file)"
    )

    print(f"\n2. Reads, ms, median of {RUNS} warm runs: 30 d of rollups, 48 h of raw rows;")
    print(
        "   now = 10:30 UTC, so the 1h and 24h windows each read 30 min of raw rows at their edge"
    )
    line("", f"{n} endpoints", f"{small} endpoints", "ratio")
    for key, seconds in reads.items():
        if key != "build_seconds":
            big, little = seconds[n], seconds[small]
            line(key, f"{big * 1000:,.1f}", f"{little * 1000:,.1f}", f"{big / little:.1f}x")
    built = reads["build_seconds"][n]
    print(f"     (building the {n}-endpoint file, not timed above: {built:.0f} s)")

    rate, mb = n / INTERVAL, 1e6
    print(f"\n3. Size: {n} endpoints every {INTERVAL} s = {rate:,.0f} results/s")
    hour = f"MEASURED: 1 h = {h['hour_results']:,} results via write_batch, file growth"
    line(hour, f"{h['hour_growth_bytes'] / mb:,.1f} MB")
    for kind, size in h["bytes_per_row"].items():
        line(f"bytes per {kind} row, its table's indexes included", f"{size:.1f}")
    day = f"EXTRAPOLATED from that hour: 1 day = {rate * DAY / mb:.2f} M raw rows, all kept"
    line(day, f"{h['day_bytes_extrapolated'] / mb:,.0f} MB")
    steady = f"steady-state bound: raw kept {RAW_KEPT / HOUR:.0f} h x {rate:,.0f}/s"
    print(f"  {steady} = {h['steady_raw_rows'] / mb:.2f} M rows")
    kept = f"{HOURLY_KEPT // DAY} d hourly + {ROLLUPS_KEPT / DAY:.0f} d daily rollups"
    line(f"  + {kept}", f"{h['steady_bytes'] / mb:,.0f} MB")
    if args.out:
        report = {"machine": host, "endpoints": n, "writer": w, "hour": h, "reads": reads}
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nfigures written to {args.out}")


if __name__ == "__main__":
    main()
