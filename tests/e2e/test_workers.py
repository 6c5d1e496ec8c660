"""Probe workers (`scheduler.workers`), on the real daemon: every endpoint checked from worker
processes, a worker killed with -9 restarted without a false verdict, reload handing workers
their new endpoints, one worker in-process, and no worker left behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from polling import until

from healthcheck.config import parse_config
from healthcheck.scheduler import spread_offset
from healthcheck.workers import owner

TOKEN = "tok-worker-secret-5150"
# Generous: a busy one-core machine starts the daemon, its zygote and workers before any check.
START = 120.0


HANG = {"interval": "60s", "timeout": "60s"}


def soon_started(candidates: list[str]) -> str:
    """The name among `candidates` whose first check comes soonest in its interval (each
    endpoint starts at a stable offset in its interval, up to 60 s here)."""
    document = {
        "regions": {
            "r": {"endpoints": [HANG | {"name": n, "url": "http://x/"} for n in candidates]}
        }
    }
    config = parse_config(yaml.safe_dump(document), "test")
    return min(config.endpoints(), key=spread_offset).name


def endpoints_of(config: Path) -> list:
    return list(parse_config(config.read_text(), str(config), {"TOKEN": TOKEN}).endpoints())


def write_config(
    path: Path,
    fleet,
    webhook_port: int | None,
    workers: int,
    names: list[str],
    hang: str | None = None,
    **scheduler: Any,
) -> None:
    endpoints: list[dict[str, Any]] = [
        {"name": name, "url": f"{fleet.http}/ok", "headers": {"X-Token": "${TOKEN}"}}
        for name in names
    ]
    if hang:
        # Always in flight: its one check waits 60 s on a server that never answers.
        endpoints.append(HANG | {"name": hang, "url": f"{fleet.http}/hang"})
    document: dict[str, Any] = {
        # Limits a busy machine cannot cross on loopback: workers are under test, not latency.
        # With 1 s, a worker's checks once timed out while another started beside it at a load
        # of 12 on two cores; with 2 s, a check of /ok did with a busy loop on the one core of
        # `taskset -c 0`, the fleet starved in the test's own process; 4 s doubles that room at a
        # few seconds' cost (10 s took the file from 50 s to 170 s). The interval is no
        # shorter than the timeout may be; each endpoint's first check comes within one.
        "defaults": {
            "interval": "4s",
            "timeout": "4s",
            "retries": 0,
            "latency": {"warning": "3900ms", "critical": "4s"},
        },
        "scheduler": {"workers": workers, **scheduler},
        "storage": {"path": str(path.parent / "hc.db")},
        "exporter": {"listen": "127.0.0.1:0"},
        "regions": {"r": {"endpoints": endpoints}},
    }
    if webhook_port is not None:
        document["alerting"] = {
            "channels": {"slack": f"json://127.0.0.1:{webhook_port}/slack"},
            "rules": {"failure_threshold": 1, "error_rate_min_checks": 100_000},
        }
    path.write_text(yaml.safe_dump(document))


async def get_json(port: int, path: str) -> Any:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        assert response.status == 200, await response.text()
        return await response.json()


async def get_text(port: int, path: str) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        assert response.status == 200
        return await response.text()


def stored(db: Path) -> dict[str, int]:
    """Results stored per endpoint name."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if "results" not in tables:
            return {}
        rows = connection.execute(
            "SELECT t.endpoint, COUNT(*) FROM results r JOIN targets t ON t.id = r.target_id "
            "GROUP BY t.endpoint"
        ).fetchall()
    return dict(rows)


def restart_counts(metrics: str) -> dict[str, float]:
    """healthcheck_probe_worker_restarts_total by its reason label, from a /metrics body."""
    counts = {}
    for line in metrics.splitlines():
        if line.startswith("healthcheck_probe_worker_restarts_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('reason="')[1].split('"')[0]] = float(value)
    return counts


def children(pid: int) -> set[int]:
    """The live child processes of `pid`, from /proc."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.add(int(entry))
    return found


def grandchildren(pid: int) -> set[int]:
    """The live children of `pid`'s children: the workers the daemon's zygote forked."""
    return {grandchild for child in children(pid) for grandchild in children(child)}


def cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Running:
    """The daemon, its log, and its workers as /api/v1/self reports them."""

    def __init__(self, process: asyncio.subprocess.Process, log) -> None:
        self.process, self.log = process, log
        self.workers: list[dict] = []

    async def self_report(self) -> dict:
        report = await get_json(self.log.port, "/api/v1/self")
        self.workers = report["scheduler"]["workers"] or []
        return report

    async def until_workers_run(self, restarts: int = 0) -> None:
        """Every worker has a pid and beats, with `restarts` restarts among them."""
        deadline = asyncio.get_running_loop().time() + START
        while True:
            await self.self_report()
            if (
                self.workers
                and all(w["pid"] and w["heartbeat_age_seconds"] is not None for w in self.workers)
                and sum(w["restarts"] for w in self.workers) == restarts
            ):
                return
            assert asyncio.get_running_loop().time() < deadline, self.workers
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.process.wait(), 60) == 0


async def start(
    start_daemon, follow_log, config: Path, env: dict[str, str] | None = None
) -> Running:
    process = await start_daemon(config, env={**(env or os.environ), "TOKEN": TOKEN})
    log = follow_log(process)
    await until(lambda: log.events("listening") or process.returncode is not None, START)
    assert process.returncode is None, log.other
    return Running(process, log)


async def test_two_workers_check_every_endpoint_and_leave_nothing_behind(
    start_daemon, follow_log, fleet, tmp_path
) -> None:
    names = [f"e{i}" for i in range(8)]
    config = tmp_path / "regions.yaml"
    write_config(config, fleet, None, 2, names)
    daemon = await start(start_daemon, follow_log, config)
    try:
        await daemon.until_workers_run()
        pids = {w["pid"] for w in daemon.workers}
        assert len(pids) == 2 and pids <= grandchildren(daemon.process.pid)
        zygotes = {z for z in children(daemon.process.pid) if children(z) & pids}
        for pid in pids:  # endpoints and secrets reach a worker over its socket only
            assert TOKEN.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        endpoints = endpoints_of(config)
        assert [w["endpoints"] for w in daemon.workers] == [
            sum(1 for e in endpoints if owner(e, 2) == k) for k in (0, 1)
        ]
        await until(lambda: set(stored(tmp_path / "hc.db")) == set(names), START)
        metrics = await get_text(daemon.log.port, "/metrics")
        success = [
            line for line in metrics.splitlines() if line.startswith("healthcheck_probe_success{")
        ]
        for name in names:
            assert [line for line in success if f'endpoint="{name}"' in line and "1.0" in line]
        report = await daemon.self_report()
        assert report["scheduler"]["dispatched"] >= len(names)
        assert report["scheduler"]["completed"] >= len(names)
        # The daemon's own numbers are the workers' together.
        assert report["scheduler"]["lag_seconds"]["p50"] is not None
        assert report["scheduler"]["heartbeat_age_seconds"] is not None
        own = {
            line.split()[0]: float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith(
                (
                    "healthcheck_checks_dispatched_total ",
                    "healthcheck_schedule_lag_seconds_count ",
                    "healthcheck_scheduler_heartbeat_age_seconds ",
                )
            )
        }
        assert own["healthcheck_checks_dispatched_total"] >= len(names), own
        assert own["healthcheck_schedule_lag_seconds_count"] >= len(names), own
        assert own["healthcheck_scheduler_heartbeat_age_seconds"] < 60, own
        await daemon.stop()
    finally:
        if daemon.process.returncode is None:
            daemon.process.kill()
    await daemon.log.closed()
    await until(lambda: not any(alive(pid) for pid in pids | zygotes))
    assert daemon.log.other == []
    assert TOKEN not in str(daemon.log.entries)
    changes = daemon.log.events("status_change")
    assert sorted(e["endpoint"] for e in changes) == names
    assert [e["msg"] for e in changes if e["status"] != "healthy"] == [], [
        (e["ts"], e.get("event"), e["msg"]) for e in daemon.log.entries
    ]
    assert daemon.log.events("probe_worker_died") == []


async def test_a_worker_killed_with_9_is_restarted_and_judges_nobody(
    start_daemon, follow_log, fleet, webhook, tmp_path
) -> None:
    """The worker holding a hanging check is killed: the check it lost is the prober's fault
    (the daemon's own health says so); no endpoint turns unhealthy, none is paged."""
    await webhook.up()
    names = [f"e{i}" for i in range(6)]
    config = tmp_path / "regions.yaml"
    hang = soon_started([f"hang{i}" for i in range(300)])  # first checked ~0.3 s in
    # The hanging check is in flight again at the stop: 1 s to drain it, not the default 5 s.
    write_config(config, fleet, webhook.port, 2, names, hang, stop_grace="1s")
    daemon = await start(start_daemon, follow_log, config)
    try:
        await daemon.until_workers_run()
        await until(lambda: "/hang" in fleet.hits, START)  # its check is in flight
        slot = next(owner(e, 2) for e in endpoints_of(config) if e.name == hang)
        deadline = asyncio.get_running_loop().time() + START
        while not (await daemon.self_report() and daemon.workers[slot]["in_flight"]):
            assert asyncio.get_running_loop().time() < deadline, daemon.workers
            await asyncio.sleep(0.05)  # and the daemon knows it is
        victim = daemon.workers[slot]["pid"]
        await until(lambda: victim in grandchildren(daemon.process.pid))
        os.kill(victim, signal.SIGKILL)
        await until(lambda: daemon.log.events("probe_worker_died"), START)
        await daemon.until_workers_run(restarts=1)
        assert victim not in {w["pid"] for w in daemon.workers}
        # Checks go on from the new worker: every endpoint is checked again after the restart.
        before = stored(tmp_path / "hc.db")
        await until(
            lambda: all(stored(tmp_path / "hc.db").get(n, 0) > before.get(n, 0) for n in names),
            START,
        )
        metrics = await get_text(daemon.log.port, "/metrics")
        faults = [line for line in metrics.splitlines() if line.startswith("healthcheck_prober_f")]
        assert faults and float(faults[0].split()[-1]) >= 1, faults
        restarts = restart_counts(metrics)
        assert restarts["killed"] == 1 and sum(restarts.values()) == 1, restarts
        assert "healthcheck_probe_results_dropped_total 0.0" in metrics.splitlines()
        await daemon.stop()
    finally:
        if daemon.process.returncode is None:
            daemon.process.kill()
    await daemon.log.closed()
    died = daemon.log.events("probe_worker_died")
    # The hanging check, and any other of that worker's checks that were in flight then.
    assert [e["worker"] for e in died] == [slot + 1]
    assert died[0]["lost"] >= 1
    assert daemon.log.events("prober_fault")
    changes = daemon.log.events("status_change")
    assert {e["endpoint"] for e in changes} == set(names)  # the hanging one was never judged
    assert [e["msg"] for e in changes if e["status"] != "healthy"] == [], [
        (e["ts"], e.get("event"), e["msg"]) for e in daemon.log.entries
    ]
    assert hang not in stored(tmp_path / "hc.db")
    titles = [r["body"]["title"] for r in webhook.received]
    assert not [t for t in titles if "daemon_health" not in t], titles
    assert daemon.log.other == []


async def test_reload_hands_workers_their_new_endpoints(
    start_daemon, follow_log, fleet, tmp_path
) -> None:
    config = tmp_path / "regions.yaml"
    write_config(config, fleet, None, 2, ["a", "b", "c"])
    daemon = await start(start_daemon, follow_log, config)
    try:
        await daemon.until_workers_run()
        await until(lambda: set(stored(tmp_path / "hc.db")) == {"a", "b", "c"}, START)
        write_config(config, fleet, None, 2, ["b", "c", "d", "e"])
        daemon.process.send_signal(signal.SIGHUP)
        await until(lambda: daemon.log.events("config_reloaded"), START)
        await until(lambda: {"d", "e"} <= set(stored(tmp_path / "hc.db")), START)
        await daemon.self_report()
        assert sum(w["endpoints"] for w in daemon.workers) == 4
        assert sum(w["restarts"] for w in daemon.workers) == 0
        await daemon.stop()
    finally:
        if daemon.process.returncode is None:
            daemon.process.kill()
    await daemon.log.closed()
    reloaded = daemon.log.events("config_reloaded")
    assert [(e["added"], e["removed"]) for e in reloaded] == [(2, 1)]
    assert daemon.log.other == []


async def test_one_worker_checks_in_the_daemons_own_process(
    start_daemon, follow_log, fleet, tmp_path
) -> None:
    config = tmp_path / "regions.yaml"
    write_config(config, fleet, None, 1, ["a", "b"])
    daemon = await start(start_daemon, follow_log, config)
    try:
        await until(lambda: set(stored(tmp_path / "hc.db")) == {"a", "b"}, START)
        report = await daemon.self_report()
        assert report["scheduler"]["workers"] is None
        assert report["scheduler"]["running"] is True
        # Nor a zygote for workers: no child runs the daemon's own command line (forked).
        own = Path(f"/proc/{daemon.process.pid}/cmdline").read_bytes()
        forked = [c for c in children(daemon.process.pid) if cmdline(c) == own]
        assert forked == [], forked
        await daemon.stop()
    finally:
        if daemon.process.returncode is None:
            daemon.process.kill()
    await daemon.log.closed()
    assert daemon.log.other == []


async def test_a_wedged_worker_is_killed_and_restarted(
    start_daemon, follow_log, fleet, tmp_path
) -> None:
    """A worker that stops waking (SIGSTOP here, a hung loop in life) is replaced."""
    names = [f"e{i}" for i in range(6)]
    config = tmp_path / "regions.yaml"
    # Wedged after 4 s, not the default 10 s: a healthy worker sends a batch every second.
    write_config(config, fleet, None, 2, names, wedged_after="4s")
    daemon = await start(start_daemon, follow_log, config)
    try:
        await daemon.until_workers_run()
        frozen = daemon.workers[0]["pid"]
        os.kill(frozen, signal.SIGSTOP)
        await until(lambda: daemon.log.events("probe_worker_wedged"), START)
        await daemon.until_workers_run(restarts=1)
        assert frozen not in {w["pid"] for w in daemon.workers}
        restarts = restart_counts(await get_text(daemon.log.port, "/metrics"))
        assert restarts["wedged"] == 1 and sum(restarts.values()) == 1, restarts
        before = stored(tmp_path / "hc.db")
        await until(
            lambda: all(stored(tmp_path / "hc.db").get(n, 0) > before.get(n, 0) for n in names),
            START,
        )
        await daemon.stop()
    finally:
        if daemon.process.returncode is None:
            daemon.process.kill()
    await daemon.log.closed()
    assert not alive(frozen)
    assert [e["worker"] for e in daemon.log.events("probe_worker_died")] == [1]
    assert all(e["status"] == "healthy" for e in daemon.log.events("status_change"))
    assert daemon.log.other == []


async def test_workers_end_with_a_daemon_killed_with_9(
    start_daemon, follow_log, fleet, tmp_path
) -> None:
    """No orphans: a daemon that dies without draining its workers takes them with it, and
    its helper process (uptime reads, /metrics renders) ends too."""
    config = tmp_path / "regions.yaml"
    write_config(config, fleet, None, 2, ["a", "b"])
    daemon = await start(start_daemon, follow_log, config)
    helpers: set[int] = set()
    try:
        await daemon.until_workers_run()
        pids = {w["pid"] for w in daemon.workers}
        zygotes = {z for z in children(daemon.process.pid) if children(z) & pids}
        assert len(zygotes) == 1, (zygotes, pids)
        await get_text(daemon.log.port, "/metrics")  # rendered by the helper: it runs
        helpers = children(daemon.process.pid) - zygotes
        assert len(helpers) == 1, (helpers, zygotes)
    finally:
        daemon.process.kill()
        await daemon.process.wait()
    await until(lambda: not any(alive(pid) for pid in pids | zygotes | helpers), START)


def nice(pid: int) -> int:
    """Process `pid`'s nice value (field 19 of /proc/PID/stat)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.parametrize("yielding", [7, 0])
async def test_the_control_plane_yields_the_cpu_to_its_workers(
    start_daemon, follow_log, fleet, tmp_path, yielding
) -> None:
    """The daemon's own process runs `control_plane_nice` nicer than the workers it forks, and
    a zygote killed and started again (as its own interpreter, by the niced daemon) forks
    workers at their nice again: API clients and scrapes never outrank the probes."""
    config = tmp_path / "regions.yaml"
    write_config(config, fleet, None, 2, ["a", "b"], control_plane_nice=yielding)
    ours = os.getpriority(os.PRIO_PROCESS, 0)  # the daemon starts at the test's nice
    daemon = await start(start_daemon, follow_log, config)
    try:
        report = await daemon.self_report()
        assert nice(daemon.process.pid) == report["process"]["nice"] == min(19, ours + yielding)
        await daemon.until_workers_run()
        pids = {w["pid"] for w in daemon.workers}
        assert {nice(pid) for pid in pids} == {ours}
        (zygote,) = {z for z in children(daemon.process.pid) if children(z) & pids}
        assert nice(zygote) == ours
        os.kill(zygote, signal.SIGKILL)  # its workers die with it and are restarted
        deadline = asyncio.get_running_loop().time() + START
        while True:  # both workers again, neither of them an old one
            await daemon.self_report()
            restarted = {w["pid"] for w in daemon.workers}
            beating = all(w["heartbeat_age_seconds"] is not None for w in daemon.workers)
            if None not in restarted and len(restarted) == 2 and beating and not restarted & pids:
                break
            assert asyncio.get_running_loop().time() < deadline, daemon.workers
            await asyncio.sleep(0.1)
        # Lowering a nice again takes privilege (root, CAP_SYS_NICE): else they keep the daemon's.
        again = ours if os.geteuid() == 0 else min(19, ours + yielding)
        assert {nice(pid) for pid in restarted} == {again}
        await daemon.stop()
    finally:
        if daemon.process.returncode is None:
            daemon.process.kill()
    await daemon.log.closed()


def loaded(pid: int, module: str) -> bool:
    """Whether process `pid` has `module`'s extension (a shared object under it) mapped."""
    return f"/{module}/" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("default", "uvloop"),
        ("asyncio", "asyncio"),
        ("uvloop", "uvloop"),
        ("auto", "uvloop"),
        ("auto-without-uvloop", "asyncio"),
    ],
)
async def test_the_daemon_and_its_workers_run_on_the_chosen_event_loop(
    start_daemon, follow_log, fleet, tmp_path, setting, expected
) -> None:
    """uvloop by default (`auto`) and with HEALTHCHECK_EVENT_LOOP=uvloop; asyncio's own with
    =asyncio, and with `auto` on a platform where uvloop does not import (here a uvloop module
    that raises ImportError, first on the path). The daemon says which in its `started`
    line and /api/v1/self; its workers, forked from the zygote, load uvloop only when they run
    on it; checks go on either way."""
    env = {k: v for k, v in os.environ.items() if k != "HEALTHCHECK_EVENT_LOOP"}
    if setting != "default":
        env["HEALTHCHECK_EVENT_LOOP"] = setting.removesuffix("-without-uvloop")
    if setting == "auto-without-uvloop":
        shadow = tmp_path / "no_uvloop"
        shadow.mkdir()
        (shadow / "uvloop.py").write_text("raise ImportError('no uvloop on this platform')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow), env.get("PYTHONPATH")]))
    names = ["a", "b", "c"]
    config = tmp_path / "regions.yaml"
    write_config(config, fleet, None, 2, names)
    daemon = await start(start_daemon, follow_log, config, env)
    try:
        await daemon.until_workers_run()
        await until(lambda: set(stored(tmp_path / "hc.db")) == set(names), START)
        report = await daemon.self_report()
        assert report["process"]["event_loop"] == expected
        assert [e["event_loop"] for e in daemon.log.events("started")] == [expected]
        pids = [w["pid"] for w in daemon.workers]
        assert len(pids) == 2
        assert [loaded(pid, "uvloop") for pid in pids] == [expected == "uvloop"] * 2
        await daemon.stop()
    finally:
        if daemon.process.returncode is None:
            daemon.process.kill()
    await daemon.log.closed()
    assert daemon.log.other == []
