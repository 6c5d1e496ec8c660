"""Storage through the real daemon: kill -9 mid-write, restart, outage and recovery, status."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest
import yaml
from alert_ticks import EVALUATE_EVERY, quiet_for
from polling import until

FIRING = "[FIRING:critical] endpoint_down eu/api"


def daemon_config(tmp_path: Path, fleet, db: Path, endpoints: int = 20) -> Path:
    config = tmp_path / "regions.yaml"
    ok = [{"name": f"ok{i}", "url": f"{fleet.http}/ok"} for i in range(endpoints)]
    config.write_text(
        yaml.safe_dump(
            {
                "defaults": {"interval": "100ms", "timeout": "90ms", "retries": 0},
                "storage": {"path": str(db)},
                "exporter": {"listen": "127.0.0.1:0"},
                "regions": {
                    "r": {"endpoints": [*ok, {"name": "bad", "url": f"{fleet.http}/fail"}]}
                },
            }
        )
    )
    return config


def rows(db: Path) -> int:
    try:
        with sqlite3.connect(db) as connection:
            return connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.Error:
        return 0


async def test_kill_9_during_writes_then_restart(run_cli, start_daemon, fleet, tmp_path) -> None:
    db = tmp_path / "state" / "healthcheck.db"
    config = daemon_config(tmp_path, fleet, db)
    process = await start_daemon(config)
    try:
        await until(lambda: rows(db) >= 300)
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        before = connection.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        rolled = connection.execute("SELECT SUM(checks) FROM rollup_hour").fetchone()[0]
        assert rolled == before  # rollups committed with their rows, even at kill -9
    assert os.stat(db).st_mode & 0o777 == 0o600

    done = await run_cli("status", "--config", str(config), "--format", "json")
    assert done.code == 0, done.stderr
    status = json.loads(done.stdout)
    endpoints = {e["endpoint"]: e for e in status["regions"]["r"]["endpoints"]}
    assert endpoints["ok0"]["uptime"]["24h"] == 1.0
    assert endpoints["bad"]["uptime"]["24h"] == 0.0
    assert endpoints["bad"]["last_error"]["error"] == "http_status"
    first_24h = endpoints["ok0"]["checks"]["24h"]

    process = await start_daemon(config)  # a restart carries on in the same file
    await until(lambda: rows(db) >= before + 100)
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 15) == 0
    done = await run_cli("status", "--config", str(config), "--format", "json")
    again = {e["endpoint"]: e for e in json.loads(done.stdout)["regions"]["r"]["endpoints"]}
    assert again["ok0"]["checks"]["24h"] > first_24h
    table = await run_cli("status", "--config", str(config))
    assert table.code == 0 and "UP 24h" in table.stdout and "100.00%" in table.stdout


@contextmanager
def switchable_read_only(directory: Path):
    """Yield set_read_only(bool) for `directory`: a bind mount as root, file modes otherwise."""
    directory.mkdir(parents=True)
    if os.geteuid() != 0:
        yield lambda read_only: directory.chmod(0o555 if read_only else 0o755)
        directory.chmod(0o755)
        return
    probe = subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True)
    if probe.returncode != 0:
        reason = f"root here cannot bind-mount to make a read-only directory: {probe.stderr!r}"
        pytest.skip(reason)

    def set_read_only(read_only: bool) -> None:
        option = "remount,bind,ro" if read_only else "remount,bind,rw"
        subprocess.run(["mount", "-o", option, str(directory)], check=True)

    try:
        yield set_read_only
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


async def test_read_only_storage_keeps_probing_then_catches_up(
    start_daemon, follow_log, fleet, tmp_path
) -> None:
    state = tmp_path / "state"
    db = state / "healthcheck.db"
    with switchable_read_only(state) as set_read_only:
        set_read_only(True)
        process = await start_daemon(daemon_config(tmp_path, fleet, db, endpoints=3))
        log = follow_log(process)
        try:
            await until(lambda: log.events("storage_failed"))
            hits = len(fleet.hits)
            await until(lambda: len(fleet.hits) >= hits + 20)  # still probing while down
            assert not db.exists()
            set_read_only(False)
            await until(lambda: log.events("storage_recovered"))
            await until(lambda: rows(db) >= 20)
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 15) == 0
        finally:
            if process.returncode is None:
                process.kill()
            await log.closed()
    assert log.other == []  # every line JSON: no traceback
    failed = log.events("storage_failed")[0]
    assert str(db) in failed["msg"]
    with sqlite3.connect(db) as connection:
        first = connection.execute("SELECT MIN(ts) FROM results").fetchone()[0]
    recovered = log.events("storage_recovered")[0]
    # Results from the outage were kept and written once the directory came back.
    assert first < datetime.fromisoformat(recovered["ts"]).timestamp()


def alert_config(tmp_path: Path, fleet, webhook, db: Path, evaluate_every: str = "1s") -> Path:
    """eu/api fails while "api" is in fleet.down and pages the webhook; eu/web stays up."""
    config = tmp_path / "regions.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "defaults": {"interval": "200ms", "timeout": "150ms", "retries": 0},
                "storage": {"path": str(db)},
                "exporter": {"listen": "127.0.0.1:0"},
                "alerting": {
                    "channels": {"slack": f"json://127.0.0.1:{webhook.port}/slack"},
                    "evaluate_every": evaluate_every,
                    "rules": {
                        "failure_threshold": 3,
                        "success_threshold": 2,
                        "error_rate_min_checks": 100_000,
                    },
                },
                "regions": {
                    "eu": {
                        "endpoints": [
                            {"name": "api", "url": f"{fleet.http}/switch/api"},
                            {"name": "web", "url": f"{fleet.http}/ok"},
                        ]
                    }
                },
            }
        )
    )
    return config


class Readiness:
    """/readyz asked over and over: every answer (status, reasons) in order."""

    def __init__(self, port: int) -> None:
        self.seen: list[tuple[int, list[str]]] = []
        self._task = asyncio.create_task(self._ask(port))

    async def _ask(self, port: int) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        body = await response.json()
                        self.seen.append((response.status, body.get("reasons", [])))
                except aiohttp.ClientError:
                    pass  # the daemon is stopping
                await asyncio.sleep(0.02)

    def ready_again(self) -> bool:
        codes = [code for code, _ in self.seen]
        return 503 in codes and codes[-1] == 200 and codes.index(503) < len(codes) - 1

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def firing_alerts(db: Path) -> list[tuple[str, str, bool]]:
    """The firing alerts stored; none while a new file has no alert tables yet (the writer
    makes the file, the alert engine writes its state at its next evaluation)."""
    try:
        with sqlite3.connect(db) as connection:
            rows = connection.execute(
                "SELECT rule, target, labels FROM alert_state WHERE state = 'firing'"
            ).fetchall()
    except sqlite3.OperationalError:
        return []
    return [(rule, target, json.loads(labels)["notified"]) for rule, target, labels in rows]


def unsent(db: Path) -> int:
    """Outbox rows not yet accepted by their channel."""
    with sqlite3.connect(db) as connection:
        return connection.execute("SELECT COUNT(*) FROM outbox WHERE sent IS NULL").fetchone()[0]


def results_since(db: Path, since: float) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
            query = "SELECT COUNT(*) FROM results WHERE ts > ?"
            return connection.execute(query, [since]).fetchone()[0]
    except sqlite3.Error:
        return 0


async def test_a_removed_database_is_noticed_and_created_anew_with_the_alert_state(
    start_daemon, follow_log, fleet, webhook, tmp_path
) -> None:
    """`rm` of the database under a firing alert: not ready, logged once, a new file with the
    results since and the alert state, so a restart neither forgets the alert nor re-pages."""
    await webhook.up()
    db = tmp_path / "state" / "hc.db"
    config = alert_config(tmp_path, fleet, webhook, db)
    fleet.down.add("api")
    process = await start_daemon(config)
    log = follow_log(process)
    readiness = None
    try:
        await until(lambda: [r["body"]["title"] for r in webhook.received] == [FIRING])
        await until(lambda: log.events("listening"))
        readiness = Readiness(log.port)
        await until(lambda: readiness.seen and readiness.seen[-1][0] == 200)
        removed_at = time.time()
        db.unlink()
        await until(lambda: readiness.ready_again(), timeout=40)
        await until(lambda: firing_alerts(db) == [("endpoint_down", "eu/api", True)])
        await until(lambda: results_since(db, removed_at) >= 10)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{log.port}/metrics") as response,
        ):
            metrics = await response.text()
        assert "\nhealthcheck_storage_file_replaced_total 1.0\n" in metrics
        assert "\nhealthcheck_storage_writable 1.0\n" in metrics
        evaluations = re.search(r"\nhealthcheck_alert_evaluations_total (\d+)\.0\n", metrics)
        assert evaluations is not None and int(evaluations.group(1)) > 0
        await readiness.stop()
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if readiness is not None:
            await readiness.stop()
        if process.returncode is None:
            process.kill()
        await log.closed()
    assert log.other == []
    assert len(log.events("storage_replaced")) == 1
    assert "removed" in log.events("storage_replaced")[0]["msg"]
    reasons = [reason for code, found in readiness.seen if code == 503 for reason in found]
    # Not ready for the storage while the file was gone: the writer says "removed", or, when
    # the alert outbox had already opened (created) the new file first, "replaced".
    assert any(
        reason.startswith("storage not writable: the database file was")
        and ("removed" in reason or "replaced" in reason)
        for reason in reasons
    ), reasons
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # A restart on the new file: still firing, no new page, at the test cadence. The first
    # daemon keeps the 1 s tick: the alert engine may create the new file at its next
    # evaluation, which would shorten the not-ready window asserted above.
    config = alert_config(tmp_path, fleet, webhook, db, EVALUATE_EVERY)
    again = await start_daemon(config)
    log = follow_log(again)
    try:
        await until(lambda: log.events("listening"))
        # A page again would have come by now: 3 more failed checks (the threshold), then 3
        # evaluations of them (the 2 s this waited at the 1 s tick held 2), then the outbox
        # delivered.
        seen = fleet.hits.count("/switch/api")
        await until(lambda: fleet.hits.count("/switch/api") >= seen + 3)
        await quiet_for(log.port, 3, lambda: unsent(db) == 0)
        assert [r["body"]["title"] for r in webhook.received] == [FIRING]
        again.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(again.wait(), 20) == 0
    finally:
        if again.returncode is None:
            again.kill()
        await log.closed()
    assert log.other == []


async def test_status_percentiles_stay_within_the_stored_latencies(run_cli, tmp_path) -> None:
    """12 stored checks of one endpoint, the slowest 56.2 ms: `healthcheck status` never says
    its p95 was slower (interpolating in the (50, 100] ms bucket said 70-94 ms)."""
    from storage_timeline import check

    from storage.schema import connect
    from storage.writer import write_batch

    db = tmp_path / "hc.db"
    latencies = [8.1, 9.4, 11.0, 12.5, 14.2, 18.0, 22.3, 31.7, 44.0, 51.3, 53.8, 56.2]
    now = time.time()
    database = connect(str(db))
    with database.conn:
        database.execute("BEGIN IMMEDIATE")
        checks = [check(now - 120 + i, latency_ms=ms) for i, ms in enumerate(latencies)]
        write_batch(database, checks, {})
    database.conn.close()
    config = tmp_path / "regions.yaml"
    document = {
        "storage": {"path": str(db)},
        "regions": {"eu": {"endpoints": [{"name": "api", "url": "http://127.0.0.1:9/"}]}},
    }
    config.write_text(yaml.safe_dump(document))
    done = await run_cli("status", "--config", str(config), "--format", "json")
    assert done.code == 0, done.stderr
    (api,) = json.loads(done.stdout)["regions"]["eu"]["endpoints"]
    assert api["checks"]["24h"] == 12
    assert api["p95_ms"]["24h"] == 56.2 and api["p95_ms"]["1h"] == 56.2
    table = await run_cli("status", "--config", str(config))
    assert table.code == 0 and "56ms" in table.stdout and "90ms" not in table.stdout
