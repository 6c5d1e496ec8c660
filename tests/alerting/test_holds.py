"""F-of-N failure windows and held alerts through a running daemon on a manual clock, with real
receivers on loopback: Apprise json:// webhooks, aiosmtpd, a real Alertmanager.

A dependency storm pages once per channel; a dependant still down when its parent resolves is
paged then; an endpoint's down alert holds its own error-rate alert; the failure window goes on
across a restart.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing

import aiohttp
import pytest
from aiohttp import web
from alertmanager import alerts as alertmanager_alerts
from alertmanager import running_alertmanager
from clock import ManualClock
from in_process import Running
from polling import until

from alerting.engine import AlertEngine
from alerting.evaluator import ENDPOINT_DOWN
from healthcheck.config import parse_config
from healthcheck.result import ErrorClass, ProbeResult, Status
from storage.database_file import DatabaseFile

FAILING = web.AppKey("failing", set)
SCRIPTS = web.AppKey("scripts", dict)
SEEN = web.AppKey("seen", dict)


async def answer(request: web.Request) -> web.Response:
    """500 for a path in FAILING, or whose script says it fails now; else 200."""
    path = request.path
    seen = request.app[SEEN]
    seen[path] = seen.get(path, 0) + 1
    script = request.app[SCRIPTS].get(path)
    failed = path in request.app[FAILING] or (script is not None and script())
    return web.Response(status=500) if failed else web.Response(text="ok")


class Script:
    """Answers check by check, F (fail) or S, round the pattern. A failed check made while
    the event loop lagged is made again at once (healthcheck.prober): a request at the same
    instant of the manual clock is the same check, and gets the same answer."""

    def __init__(self, pattern: str, clock: ManualClock) -> None:
        self.pattern, self.clock = pattern, clock
        self.checks = 0
        self.last: float | None = None

    def __call__(self) -> bool:
        if self.clock.now != self.last:
            self.last = self.clock.now
            self.checks += 1
        return self.pattern[(self.checks - 1) % len(self.pattern)] == "F"


@pytest.fixture
async def fleet():
    app = web.Application()
    app[FAILING], app[SCRIPTS], app[SEEN] = set(), {}, {}
    app.router.add_get("/{name}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", app
    await runner.cleanup()


def daemon_config(db, regions, channels, interval: str = "100ms", **rules):
    # The timeout runs in real time: a check timed out on a busy machine is a failure the
    # receiver never saw (so a scripted answer would be out of step).
    timeout = "900ms" if interval == "1s" else "90ms"
    return parse_config(
        json.dumps(
            {
                "defaults": {"interval": interval, "timeout": timeout, "retries": 0},
                "scheduler": {"workers": 1},
                "storage": {"path": str(db)},
                "exporter": {"listen": "127.0.0.1:0"},
                "alerting": {
                    "channels": channels,
                    "routes": {"critical": list(channels), "warning": list(channels)},
                    "rules": {
                        "error_rate_min_checks": 100_000,  # its own test below
                        "flapping_changes": 1000,  # a 3-of-5 pattern flaps by design
                        **rules,
                    },
                },
                "regions": regions,
            }
        ),
        "test",
        {},
    )


def receivers(webhook, smtp_port: int) -> dict:
    return {
        "slack": f"json://127.0.0.1:{webhook.port}/slack",
        "email": f"mailto://127.0.0.1:{smtp_port}?from=hc@example.com&to=ops@example.com&mode=insecure",
    }


def routed(db, channel: str) -> list[dict]:
    """Every notification routed to `channel`, sent or not, oldest first: all it will get."""
    with closing(sqlite3.connect(db)) as connection:
        rows = connection.execute(
            "SELECT payload FROM outbox WHERE channel = ? ORDER BY id", [channel]
        ).fetchall()
    return [json.loads(payload) for (payload,) in rows]


def titles(db, channel: str = "slack") -> list[str]:
    return [n["title"] for n in routed(db, channel)]


def firing(running: Running) -> set[str]:
    evaluator = running.daemon.evaluator
    assert evaluator is not None
    return {
        f"{rule}:{target}"
        for (rule, target), state in evaluator.alerts.items()
        if state.phase.value == "firing"
    }


async def test_three_of_five_fires_where_the_default_in_a_row_never_does(
    fleet, webhook, smtp, tmp_path
) -> None:
    base, app = fleet
    port, mailbox = smtp
    await webhook.up()
    db = tmp_path / "hc.db"
    regions = {
        "eu": {
            "endpoints": [
                {"name": "win", "url": f"{base}/win", "alerts": {"failure_window": 5}},
                {"name": "row", "url": f"{base}/row"},  # the default: 3 in a row
            ]
        }
    }
    clock = ManualClock()

    # 3 of every 5 checks fail, never 3 in a row.
    app[SCRIPTS].update({"/win": Script("FFSFS", clock), "/row": Script("FFSFS", clock)})
    config = daemon_config(db, regions, receivers(webhook, port), interval="1s")
    running = Running(config, clock)
    try:
        await running.started()
        await clock.advance_until(lambda: "endpoint_down:eu/win" in firing(running), 1.0, 60)
        # 40 checks of the in-a-row endpoint: 24 failures, and still not down.
        await clock.advance_until(lambda: app[SEEN].get("/row", 0) >= 40, 1.0, 120)
        await clock.advance(2.0)  # two evaluations more
        assert firing(running) == {"endpoint_down:eu/win"}
        assert titles(db) == ["[FIRING:critical] endpoint_down eu/win"]
        await until(lambda: webhook.received and mailbox.messages)
        assert [r["body"]["title"] for r in webhook.received] == [
            "[FIRING:critical] endpoint_down eu/win"
        ]
        assert "Subject: [FIRING:critical] endpoint_down eu/win" in mailbox.messages[0]
    finally:
        await running.close()


def storm_regions(base: str, dependants: int) -> dict:
    """eu-west: db, `dependants` apps that depend on it (the region's default), and a status
    page that stays up (a region wholly down would be a regional failure of its own)."""
    return {
        "eu-west": {
            "defaults": {"depends_on": ["eu-west/db"]},
            "endpoints": [
                # Counted down a little later than its dependants: they wait for it (held
                # while its latest check fails), then go in its page.
                {"name": "db", "url": f"{base}/db", "alerts": {"failure_threshold": 5}},
                *({"name": f"app{i:02}", "url": f"{base}/app{i:02}"} for i in range(dependants)),
                {"name": "status", "url": f"{base}/status"},
            ],
        }
    }


async def test_a_dependency_storm_pages_once_per_channel_then_resolves_once(
    fleet, webhook, smtp, tmp_path
) -> None:
    base, app = fleet
    port, mailbox = smtp
    await webhook.up()
    db = tmp_path / "hc.db"
    am_config = "route: {receiver: blackhole, group_wait: 1s}\nreceivers: [{name: blackhole}]\n"
    async with running_alertmanager(tmp_path / "am", am_config) as am:
        channels = {**receivers(webhook, port), "am": {"url": am, "kind": "alertmanager"}}
        clock = ManualClock()
        running = Running(daemon_config(db, storm_regions(base, 20), channels), clock)
        apps = [f"endpoint_down:eu-west/app{i:02}" for i in range(20)]
        try:
            await running.started()
            await clock.advance(1.0)
            app[FAILING].update({"/db", *(f"/app{i:02}" for i in range(20))})
            await clock.advance_until(lambda: len(firing(running)) == 21, 0.5, 30)
            await clock.advance(3.0)  # three evaluations more
            page = "[FIRING:critical] endpoint_down eu-west/db"
            for channel in ("slack", "email", "am"):
                assert titles(db, channel) == [page], channel
            (slack,) = routed(db, "slack")
            assert slack["held"] == sorted(apps)
            assert (
                "Also firing, held behind this alert: 20 (endpoint_down eu-west/app00"
                in (slack["body"])
            )
            await until(lambda: webhook.received and mailbox.messages)
            am_alerts = await alertmanager_alerts(am)
            assert [a["labels"]["endpoint"] for a in am_alerts] == ["db"]
            url = f"http://127.0.0.1:{running.daemon.listening[1]}/api/v1/alerts?state=firing"
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                listed = (await response.json())["alerts"]
            held = {a["target"]: a["suppressed_by"] for a in listed}
            assert held.pop("eu-west/db") is None
            assert held == {f"eu-west/app{i:02}": "endpoint_down:eu-west/db" for i in range(20)}

            app[FAILING].clear()
            await clock.advance_until(lambda: not firing(running), 0.5, 30)
            await clock.advance(3.0)
            resolve = "[RESOLVED:critical] endpoint_down eu-west/db"
            for channel in ("slack", "email", "am"):
                assert titles(db, channel) == [page, resolve], channel
            await until(lambda: len(webhook.received) == 2 and len(mailbox.messages) == 2)
            assert [r["body"]["title"] for r in webhook.received] == [page, resolve]
            await until(lambda: _none_active(am), timeout=30)
        finally:
            await running.close()


def _none_active(am: str):
    async def check() -> bool:
        return not await alertmanager_alerts(am)

    future = asyncio.ensure_future(check())
    return lambda: future.done() and future.result()


async def test_a_held_alert_is_logged_as_held_not_fired(
    fleet, webhook, smtp, tmp_path, caplog
) -> None:
    base, app = fleet
    port, _ = smtp
    await webhook.up()
    db = tmp_path / "hc.db"
    clock = ManualClock()
    running = Running(daemon_config(db, storm_regions(base, 2), receivers(webhook, port)), clock)
    caplog.set_level("INFO", logger="alerting.engine")
    try:
        await running.started()
        app[FAILING].update({"/db", "/app00", "/app01"})
        await clock.advance_until(lambda: len(firing(running)) == 3, 0.5, 30)
        await clock.advance(2.0)
        assert titles(db) == ["[FIRING:critical] endpoint_down eu-west/db"]
        lines = [r.getMessage() for r in caplog.records if r.name == "alerting.engine"]
        assert any(line.startswith("alert endpoint_down eu-west/db fired: ") for line in lines)
        for name in ("app00", "app01"):
            held = f"alert endpoint_down eu-west/{name} held behind endpoint_down:eu-west/db"
            assert any(line.startswith(f"{held} (not sent): ") for line in lines), lines
            assert not any(f"eu-west/{name} fired" in line for line in lines), lines
        events = {r.__dict__.get("event") for r in caplog.records if r.name == "alerting.engine"}
        assert {"alert_fired", "alert_held"} <= events
    finally:
        await running.close()


async def test_a_dependant_still_down_when_its_parent_resolves_is_paged_then(
    fleet, webhook, smtp, tmp_path
) -> None:
    base, app = fleet
    port, _ = smtp
    await webhook.up()
    db = tmp_path / "hc.db"
    clock = ManualClock()
    running = Running(daemon_config(db, storm_regions(base, 3), receivers(webhook, port)), clock)
    try:
        await running.started()
        app[FAILING].update({"/db", "/app00", "/app01", "/app02"})
        await clock.advance_until(lambda: len(firing(running)) == 4, 0.5, 30)
        await clock.advance(2.0)
        assert titles(db) == ["[FIRING:critical] endpoint_down eu-west/db"]
        app[FAILING].difference_update({"/db", "/app00", "/app01"})  # app02 stays down
        await clock.advance_until(
            lambda: firing(running) == {"endpoint_down:eu-west/app02"}, 0.5, 30
        )
        await clock.advance(2.0)
        after = routed(db, "slack")[1:]
        lines = "\n".join(f"{n['title']}\n{n['body']}" for n in after)
        assert "RESOLVED critical endpoint_down eu-west/db" in lines or (
            "[RESOLVED:critical] endpoint_down eu-west/db" in lines
        )
        assert "FIRING critical endpoint_down eu-west/app02" in lines or (
            "[FIRING:critical] endpoint_down eu-west/app02" in lines
        )
        # The two that came back with it were never paged, so no resolve of theirs either.
        assert "app00" not in lines and "app01" not in lines
        await until(lambda: len(webhook.received) == len(routed(db, "slack")))
        assert "eu-west/app02" in json.dumps(webhook.received[-1])
    finally:
        await running.close()


async def test_a_down_endpoint_pages_once_its_error_rate_held_behind_it(
    fleet, webhook, smtp, tmp_path
) -> None:
    base, app = fleet
    port, _ = smtp
    await webhook.up()
    db = tmp_path / "hc.db"
    regions = {
        "eu": {
            "endpoints": [
                {"name": "api", "url": f"{base}/api"},
                {"name": "web", "url": f"{base}/web"},
            ]
        }
    }
    rules = {"error_rate_min_checks": 5, "error_rate_min_failures": 3}
    config = daemon_config(db, regions, receivers(webhook, port), **rules)
    clock = ManualClock()
    running = Running(config, clock)
    try:
        await running.started()
        await clock.advance(1.0)  # some good checks first, for the rate's minimum
        app[FAILING].add("/api")
        both = {"endpoint_down:eu/api", "error_rate:eu/api"}
        await clock.advance_until(lambda: firing(running) >= both, 0.5, 30)
        await clock.advance(3.0)
        (page,) = routed(db, "slack")
        assert page["title"] == "[FIRING:critical] endpoint_down eu/api"
        assert page["held"] == ["error_rate:eu/api"]
        # Back up: the down alert resolves; the error rate of the outage just over still
        # fires for its 5 minutes, and is not paged for it.
        app[FAILING].clear()
        await clock.advance_until(lambda: "endpoint_down:eu/api" not in firing(running), 0.5, 30)
        await clock.advance(5.0)
        assert "error_rate:eu/api" in firing(running)
        assert titles(db) == [
            "[FIRING:critical] endpoint_down eu/api",
            "[RESOLVED:critical] endpoint_down eu/api",
        ]
    finally:
        await running.close()


def failed(clock: ManualClock, ok: bool) -> ProbeResult:
    error = None if ok else ErrorClass.TIMEOUT
    return ProbeResult("eu", "api", "http", ok, 0.01, clock(), error)


async def test_the_failure_window_goes_on_across_a_restart(webhook, tmp_path) -> None:
    await webhook.up()
    config = parse_config(
        json.dumps(
            {
                "alerting": {
                    "channels": {"slack": f"json://127.0.0.1:{webhook.port}/slack"},
                    "routes": {"critical": ["slack"]},
                    "rules": {"failure_threshold": 3, "failure_window": 5},
                },
                "regions": {"eu": {"endpoints": [{"name": "api", "url": "http://x/"}]}},
            }
        ),
        "test",
        {},
    )
    db = tmp_path / "hc.db"
    clock = ManualClock()

    async def engine_running() -> tuple[AlertEngine, asyncio.Task[None]]:
        engine = AlertEngine(
            config.endpoints(), config.alerting, DatabaseFile(str(db)), clock, timeline=clock
        )
        task = asyncio.create_task(engine.run())
        await until(clock.sleeping)  # stored state loaded, waiting for its first tick
        return engine, task

    async def check(engine: AlertEngine, outcomes: str) -> None:
        for c in outcomes:
            engine.observe(failed(clock, c == "S"), Status.UNHEALTHY)
            await clock.advance(1.0)  # one evaluation each

    first, task = await engine_running()
    await check(first, "FSF")  # 2 of 5: not yet
    assert first.firing()["critical"] == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    with closing(sqlite3.connect(db)) as connection:
        stored = connection.execute("SELECT target, outcomes, down FROM alert_window").fetchall()
    assert stored == [("eu/api", "FSF", 0)]

    second, task = await engine_running()
    try:
        await check(second, "S")
        assert second.firing()["critical"] == 0  # FSFS: still 2 failures
        await check(second, "F")  # FSFSF: the third failure of the last five
        assert (ENDPOINT_DOWN, "eu/api") in second.evaluator.alerts
        assert second.firing()["critical"] == 1
        assert titles(db) == ["[FIRING:critical] endpoint_down eu/api"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
