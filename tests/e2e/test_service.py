"""The daemon as systemd runs it: sd_notify on a real socket, SIGHUP reloads, SIGTERM, watchdog."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import time
from collections.abc import Callable

import aiohttp
import yaml
from polling import until

from healthcheck.cli import DUPLICATE_SIGNAL_WINDOW
from healthcheck.config import load_config
from healthcheck.daemon import Daemon, open_writer
from healthcheck.front import HttpFront
from healthcheck.self_health import STALL_AFTER
from healthcheck.systemd_notify import Notifier


class NotifySocket:
    """A real unix datagram socket, as systemd's; collects what the daemon says."""

    def __init__(self, path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []

    def read(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def count(self, key: str) -> int:
        return sum(1 for m in self.read() if key in m)

    def close(self) -> None:
        self.sock.close()


async def until_in_flight(port: int, wanted: Callable[[int], bool], timeout: float = 20) -> None:
    """Until the daemon's count of checks in flight (/api/v1/self) is as `wanted`."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"http://127.0.0.1:{port}/api/v1/self") as response:
                checks = (await response.json())["scheduler"]["in_flight"]
            if wanted(checks):
                return
            assert asyncio.get_running_loop().time() < deadline, f"{checks} checks in flight"
            await asyncio.sleep(0.02)


async def until_scraped(url: str, line: str, timeout: float = 20) -> str:
    """The first /metrics body that has this `line`."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url) as response:
                metrics = await response.text()
            if line in metrics.splitlines():
                return metrics
            assert asyncio.get_running_loop().time() < deadline, f"no {line!r} in {metrics}"
            await asyncio.sleep(0.1)


def write_config(path, fleet, endpoints: list[dict], **extra) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "defaults": {"interval": "200ms", "timeout": "150ms", "retries": 0},
                "exporter": {"listen": "127.0.0.1:0"},
                "storage": {"path": str(path.with_name("hc.db"))},
                "regions": {"r": {"endpoints": endpoints}},
                **extra,
            }
        )
    )


async def test_notify_reload_good_and_bad_then_stop(
    start_daemon, follow_log, fleet, tmp_path
) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    config = tmp_path / "regions.yaml"
    write_config(config, fleet, [{"name": "a", "url": f"{fleet.http}/ok"}])
    env = {**os.environ, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"}
    process = await start_daemon(config, env=env)
    log = follow_log(process)
    try:
        await until(lambda: notify.count("READY") == 1)
        await until(lambda: notify.count("WATCHDOG") >= 3)  # every 0.5 s while the scheduler runs
        statuses = [m["STATUS"] for m in notify.read() if "STATUS" in m]
        assert any("1 endpoints" in s for s in statuses)

        # A good new config: one endpoint added, the first left as it was.
        write_config(
            config,
            fleet,
            [{"name": "a", "url": f"{fleet.http}/ok"}, {"name": "b", "url": f"{fleet.http}/slow"}],
        )
        process.send_signal(signal.SIGHUP)
        await until(lambda: log.events("config_reloaded"))
        reloaded = log.events("config_reloaded")[0]
        assert (reloaded["added"], reloaded["removed"], reloaded["changed"]) == (1, 0, 0)
        await until(lambda: fleet.hits.count("/slow") >= 2)
        changes = [(e["endpoint"], e["previous"]) for e in log.events("status_change")]
        assert changes.count(("a", "unknown")) == 1  # "a" carried on: not seen as new again
        assert notify.count("RELOADING") == 1

        # A bad one: rejected, logged, the running config carries on.
        config.write_text("regions: {r: {endpoints: [{name: a, url: 'gopher://x'}]}}")
        process.send_signal(signal.SIGHUP)
        await until(lambda: log.events("config_reload_failed"))
        failed = log.events("config_reload_failed")[0]
        assert "regions.r.endpoints[0].url" in failed["error"]
        hits = fleet.hits.count("/slow")
        await until(lambda: fleet.hits.count("/slow") >= hits + 2)  # still checking "b"
        url = f"http://127.0.0.1:{log.port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            metrics = await response.text()
        assert "healthcheck_config_last_reload_successful 0.0" in metrics
        assert any("last reload rejected" in m.get("STATUS", "") for m in notify.read())

        # Good again: "b" removed, "a" changed (a condition added); "b" stops being checked.
        write_config(
            config,
            fleet,
            [{"name": "a", "url": f"{fleet.http}/ok", "conditions": ["[STATUS] == 200"]}],
        )
        process.send_signal(signal.SIGHUP)
        await until(lambda: len(log.events("config_reloaded")) == 2)
        second = log.events("config_reloaded")[1]
        assert (second["added"], second["removed"], second["changed"]) == (0, 1, 1)
        # A check of "b" in flight at the reload may still land: wait until none is (no new
        # one starts once "b" is gone), then until one of "a" came after it, so that the
        # request of the last one of "b" has been read too.
        await until_in_flight(log.port, lambda checks: checks == 0)
        seen = fleet.hits.count("/ok")
        await until(lambda: fleet.hits.count("/ok") > seen)
        hits = fleet.hits.count("/slow")
        # Three rounds of "a" (same interval as "b" had): "b" would have been checked.
        seen = fleet.hits.count("/ok")
        await until(lambda: fleet.hits.count("/ok") >= seen + 3)
        assert fleet.hits.count("/slow") == hits
        # A body rendered since the reload (one up to a second old may be shared): the series
        # of "b" went with it.
        metrics = await until_scraped(url, "healthcheck_config_last_reload_successful 1.0")
        assert 'endpoint="b"' not in metrics

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
        assert notify.count("STOPPING") == 1
    finally:
        if process.returncode is None:
            process.kill()
        await log.closed()
        notify.close()
    assert log.other == []  # every line JSON: no traceback


async def test_sigterm_during_probing_loses_no_result(
    start_daemon, follow_log, fleet, tmp_path
) -> None:
    config = tmp_path / "regions.yaml"
    endpoints = [{"name": f"slow{i}", "url": f"{fleet.http}/slow"} for i in range(10)]
    write_config(config, fleet, endpoints)
    config.write_text(
        config.read_text()
        .replace("interval: 200ms", "interval: 400ms")
        .replace("timeout: 150ms", "timeout: 350ms")
    )
    process = await start_daemon(config)
    log = follow_log(process)
    await until(lambda: len(log.events("status_change")) >= 5)
    await until_in_flight(log.port, lambda checks: checks > 0)  # mid-flight: they take 200 ms
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 20) == 0
    await log.closed()
    stopped = log.events("stopped")[0]
    # Every check is accounted for: stored, or (on a machine busy enough to starve the prober of
    # CPU) a prober fault, which is completed but never stored as a verdict on the target.
    assert stopped["dispatched"] == stopped["completed"] > 0
    assert stopped["completed"] == stopped["stored"] + stopped["prober_faults"]
    assert stopped["stored"] > 0
    assert stopped["dropped"] == 0
    with sqlite3.connect(tmp_path / "hc.db") as db:
        assert db.execute("SELECT COUNT(*) FROM results").fetchone()[0] == stopped["stored"]


async def test_the_watchdog_stops_when_the_scheduler_is_wedged(fleet, tmp_path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    config_path = tmp_path / "regions.yaml"
    write_config(config_path, fleet, [{"name": "a", "url": f"{fleet.http}/ok"}])
    config = load_config(config_path)
    notifier = Notifier({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"})
    daemon = Daemon(config, open_writer(config.storage), notifier=notifier, front=HttpFront)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await until(lambda: notify.count("WATCHDOG") >= 3)
        host, port = daemon.listening
        base = f"http://{host}:{port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 200
            async with session.get(f"{base}/metrics") as response:
                assert "healthcheck_up 1.0" in await response.text()
        # Wedge it: the dispatcher stops making progress (as a hung await would).
        dispatcher = next(t for t in asyncio.all_tasks() if t.get_name() == "dispatcher")
        dispatcher.cancel()
        # Past the stale-heartbeat bound: from here on every watchdog round finds it stale.
        await until(lambda: (daemon.health.heartbeat_age() or 0.0) > STALL_AFTER)
        before, rounds = notify.count("WATCHDOG"), notify.count("STATUS")
        await until(lambda: notify.count("STATUS") >= rounds + 5)  # five watchdog rounds
        assert notify.count("WATCHDOG") == before  # silence: systemd would restart us
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 503
                assert "scheduler not running" in (await response.json())["reasons"]
            async with session.get(f"{base}/metrics") as response:
                assert "healthcheck_up 0.0" in await response.text()
    finally:
        stop.set()
        await task
        notify.close()


async def test_a_second_sigterm_exits_at_once(start_daemon, follow_log, fleet, tmp_path) -> None:
    """The first SIGTERM waits for checks in flight (up to 5 s); a second does not wait."""
    config = tmp_path / "regions.yaml"
    hanging = [{"name": f"hang{i}", "url": f"{fleet.http}/hang"} for i in range(10)]
    # Spread over 10 s: the first starts within a second. The longest stop_grace (10 s): a
    # first SIGTERM taken late by a busy daemon still leaves it waiting when the second comes.
    write_config(config, fleet, hanging, scheduler={"stop_grace": "10s"})
    config.write_text(
        config.read_text()
        .replace("timeout: 150ms", "timeout: 10s")
        .replace("interval: 200ms", "interval: 10s")
    )
    process = await start_daemon(config)
    log = follow_log(process)
    try:
        await until(lambda: "/hang" in fleet.hits)  # a check is now in flight, and will not end
        process.send_signal(signal.SIGTERM)
        await until(lambda: log.events("stopping"))  # taken: its duplicate window starts
        taken = time.monotonic()  # ...before this, on the clock the daemon's window is on
        await until(lambda: time.monotonic() > taken + DUPLICATE_SIGNAL_WINDOW)
        assert process.returncode is None  # still waiting for the check in flight
        process.send_signal(signal.SIGTERM)
        # 130, not the 0 of a stop after the grace: the second one did not wait for it.
        assert await asyncio.wait_for(process.wait(), 20) == 130
    finally:
        if process.returncode is None:  # never leave a daemon behind a failed test
            process.kill()
            await process.wait()
    await log.closed()
    assert log.events("forced_exit")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if int(stat.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_kill_9_leaves_no_reader_process_behind(start_daemon, fleet, tmp_path) -> None:
    """The helper (uptime reads, /metrics renders) runs in a process of its own; a daemon
    killed outright takes it along (it holds the only other end of the helper's pipe),
    instead of leaving an orphan."""
    config = tmp_path / "regions.yaml"
    write_config(config, fleet, [{"name": "api", "url": f"{fleet.http}/ok"}])
    process = await start_daemon(config)
    await until(lambda: children_of(process.pid))
    readers = children_of(process.pid)
    process.kill()
    await process.wait()
    await until(lambda: not any(alive(pid) for pid in readers), timeout=10)
