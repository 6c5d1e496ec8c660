"""A prober starved of CPU gives no verdict about a healthy target: the real daemon, pinned to
one core with busy processes that outrank it, checking a loopback server with a short timeout.

The starvation is the test's own (once up, the daemon and its workers go to nice 19 and share
their core with a busy loop at nice 0: they get a few percent of it), so it holds on an idle
machine as on a busy one. Before
the fix, the same run stored tens to hundreds of `timeout` failures against the healthy
endpoints; the assertions are on verdicts only: no failure stored, uptime 1.0, no unhealthy
status, and the starved checks told as the prober's own fault."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from polling import until

BUSY_LOOPS = 1
NICE = 19
ENDPOINTS = 5


def rows(db: Path, where: str = "1") -> int:
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute(f"SELECT COUNT(*) FROM results WHERE {where}").fetchone()[0]
    except sqlite3.Error:
        return 0


def pinned(core: int, own_group: bool = False):
    """A preexec_fn: the child on `core`, in a process group of its own if asked (not with
    process_group=0: uvloop's subprocess_exec, the tests' loop by default, does not take it)."""

    def setup() -> None:
        if own_group:
            os.setpgid(0, 0)
        os.sched_setaffinity(0, {core})

    return setup


@pytest.mark.timeout(300)  # a busy machine, then a starved daemon
@pytest.mark.parametrize("workers", [1, 2])
async def test_a_starved_prober_gives_no_verdict_about_a_healthy_target(
    run_cli, follow_log, fleet, tmp_path, workers
) -> None:
    db = tmp_path / "healthcheck.db"
    config = tmp_path / "regions.yaml"
    endpoints = [{"name": f"ok{i}", "url": f"{fleet.http}/ok"} for i in range(ENDPOINTS)]
    config.write_text(
        yaml.safe_dump(
            {
                "defaults": {"interval": "200ms", "timeout": "150ms", "retries": 0},
                "storage": {"path": str(db)},
                "scheduler": {"workers": workers},
                "exporter": {"listen": "127.0.0.1:0"},
                "regions": {"r": {"endpoints": endpoints}},
            }
        )
    )
    core = min(os.sched_getaffinity(0))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "healthcheck", "run", "--config", str(config), "--log-format", "json"),
        stderr=asyncio.subprocess.PIPE,
        # Its own process group, workers included, to renice (not its own session: an
        # autogroup would get its own share of the core whatever its nice).
        preexec_fn=pinned(core, own_group=True),
    )
    log = follow_log(process)
    busy: list[subprocess.Popen[bytes]] = []
    try:
        await until(lambda: rows(db) >= 2 * ENDPOINTS, timeout=120)  # up and storing
        os.setpriority(os.PRIO_PGRP, process.pid, NICE)
        busy = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pinned(core))
            for _ in range(BUSY_LOOPS)
        ]
        starved_from = len(fleet.hits)
        await until(lambda: len(fleet.hits) >= starved_from + 100, timeout=60)  # starved checks
        assert rows(db, "NOT ok") == 0  # no failure stored against a healthy target
        # and the starvation was real: some checks timed out while the prober could not run
        # (prober faults), or, a prober quick enough to make them all in time (uvloop and the
        # lean HTTP path are), took tens of ms for an answer loopback gives in one
        await until(
            lambda: log.events("prober_fault") or rows(db, "ok AND latency_ms >= 30"), timeout=60
        )
    finally:
        for loop in busy:
            loop.kill()
            loop.wait()
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 30) == 0

    for fault in log.events("prober_fault"):
        assert "the prober was starved of CPU for" in fault["msg"], fault
        assert "ms of a 150 ms timeout" in fault["msg"], fault
    assert not [e for e in log.events("status_change") if e["status"] != "healthy"]
    done = await run_cli("status", "--config", str(config), "--format", "json")
    assert done.code == 0, done.stderr
    status = json.loads(done.stdout)["regions"]["r"]["endpoints"]
    assert {e["endpoint"]: e["uptime"]["24h"] for e in status} == {
        f"ok{i}": 1.0 for i in range(ENDPOINTS)
    }
