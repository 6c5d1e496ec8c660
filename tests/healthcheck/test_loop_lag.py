"""The prober's own lateness is no verdict: a check made while its loop was blocked says so
(`details.loop_lag_ms`), is judged without it, and is made again once, never forever.

These are the checks timed in the loop transport's callbacks (https, other kinds, and plain
HTTP started in a sparse scheduler turn: each test here runs in one, `_sparse_turn`); a plain
HTTP check timed at the socket has no lag in its latency at all (the last tests here, and
tests/healthcheck/probes/test_http_lean.py).

The loop is blocked on purpose, deterministically: the target (a threaded stdlib server, which
keeps answering whatever our loop does) puts a `time.sleep` on the prober's loop as it receives
the request, and answers once the loop is in it. The check's response then waits for that sleep
to end.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiohttp import web

from healthcheck.config import parse_config
from healthcheck.loop_lag import DETAIL, LONGEST, lag_of
from healthcheck.once import check_all
from healthcheck.prober import Prober
from healthcheck.probes.base import TURN, Turn
from healthcheck.report import Report
from healthcheck.result import Status
from healthcheck.status import classify

# Seconds the prober's loop is blocked for, and the latency warning the judged checks get: far
# apart, so a busy machine's own delays (hundreds of ms) cannot decide a verdict either way.
BLOCK = 1.0
WARNING = {"warning": "500ms", "critical": "60s"}


class BlockingTarget:
    """Answers every GET after `delay` seconds of its own; before answering the first `blocks`
    of them (or all, for None), blocks the prober's loop for BLOCK seconds. /fail* answer 500,
    others 200 the first time and 203 after, so a result tells which request it saw."""

    def __init__(self, blocks: int | None, delay: float = 0.0) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.blocks = blocks
        self.delay = delay
        self.hits: list[str] = []
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                target.hits.append(self.path)
                time.sleep(target.delay)  # the target's own time, in its own thread
                if target.blocks is None or len(target.hits) <= target.blocks:
                    assert target.loop is not None
                    blocked = threading.Event()

                    def block() -> None:
                        blocked.set()
                        time.sleep(BLOCK)

                    target.loop.call_soon_threadsafe(block)
                    # Answer once the loop is blocked: the answer waits in the socket for it
                    # (a check timed at the read is not charged a block that came after).
                    assert blocked.wait(60)
                # 200 to the first request, 203 to later ones: which look a result is
                code = (
                    500 if self.path.startswith("/fail") else 200 if len(target.hits) == 1 else 203
                )
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def blocking_target() -> Iterator[type[BlockingTarget]]:
    started: list[BlockingTarget] = []

    def start(blocks: int | None, delay: float = 0.0) -> BlockingTarget:
        target = BlockingTarget(blocks, delay)
        target.loop = asyncio.get_running_loop()
        threading.Thread(target=target.server.serve_forever, daemon=True).start()
        started.append(target)
        return target

    yield start  # type: ignore[misc]
    for target in started:
        target.server.shutdown()
        target.server.server_close()


def _sparse_turn() -> None:
    """The running test's checks as a scheduler's turn that started one check starts them:
    timed in the loop transport's callbacks, not at the socket (probes.base CROWDED)."""
    TURN.set(Turn(started=1))


def one_endpoint(url: str, **defaults: object):
    """A config of one endpoint, the shipped defaults (latency warning 100 ms) unless given."""
    document = {
        "defaults": {"retries": 0, **defaults},
        "regions": {"r": {"endpoints": [{"name": "api", "url": url}]}},
    }
    return parse_config(json.dumps(document), "test", {})


async def test_a_check_made_while_its_loop_was_blocked_records_the_lag_and_stays_healthy(
    blocking_target,
) -> None:
    _sparse_turn()
    target = blocking_target(blocks=None)
    config = one_endpoint(f"{target.url}/ok", latency=WARNING)
    endpoint = next(iter(config.endpoints()))
    async with Prober() as prober:
        result = await prober.check(endpoint)
    assert result.ok, result.error_text
    assert result.latency >= BLOCK  # what the check measured, our sleep included
    lag_ms = dict(result.details)[DETAIL]
    # The lag is read by a timer whose gap grows to LONGEST while the loop keeps time
    assert isinstance(lag_ms, float) and lag_ms >= (BLOCK - LONGEST) * 1000
    assert classify(result, endpoint) is Status.HEALTHY  # our lateness is not the target's
    report = Report(config, [result])
    assert report.exit_code == 0
    assert report.as_json()["results"][0]["details"][DETAIL] == lag_ms


async def test_a_slow_target_is_still_degraded_with_the_lag_taken_off(blocking_target) -> None:
    """The target takes 1 s of its own, then our loop is blocked 1 s: only the lag is
    forgiven, and 1 s is over the 0.5 s warning."""
    _sparse_turn()
    target = blocking_target(blocks=None, delay=1.0)
    # critical far off: a busy core may stretch the target's 1 s, never shrink it
    config = one_endpoint(f"{target.url}/ok", latency=WARNING)
    endpoint = next(iter(config.endpoints()))
    async with Prober() as prober:
        result = await prober.check(endpoint)
    assert result.ok and lag_of(result) >= BLOCK - LONGEST
    assert classify(result, endpoint) is Status.DEGRADED
    row = Report(config, [result]).as_json()["results"][0]
    assert row["status"] == "degraded"
    detail = row["error_detail"]
    assert "our prober could not run" in detail and "over warning 500ms" in detail


async def test_a_failure_while_the_loop_was_late_is_made_once_more_and_not_forever(
    blocking_target,
) -> None:
    _sparse_turn()
    target = blocking_target(blocks=None)  # every request blocks our loop, every answer fails
    endpoint = next(iter(one_endpoint(f"{target.url}/fail").endpoints()))
    async with Prober() as prober:
        result = await prober.check(endpoint)
    assert not result.ok and result.http_status == 500
    assert lag_of(result) > 0
    assert len(target.hits) == 2  # the check, and one more: its verdict stands
    assert result.attempts == 2  # and the result says so


async def test_a_lagged_success_is_not_made_again_by_the_daemons_prober(blocking_target) -> None:
    _sparse_turn()
    target = blocking_target(blocks=1)
    endpoint = next(iter(one_endpoint(f"{target.url}/ok").endpoints()))
    async with Prober() as prober:
        result = await prober.check(endpoint)
    assert result.ok and lag_of(result) > 0
    assert len(target.hits) == 1  # its lag is taken off when judged; no second request


async def test_once_makes_a_lagged_check_again_before_judging(blocking_target) -> None:
    _sparse_turn()
    target = blocking_target(blocks=1)  # only the first request blocks our loop
    config = one_endpoint(f"{target.url}/ok")
    async with Prober(recheck_lagged=False) as prober:
        results = await check_all(list(config.endpoints()), prober, config.scheduler)
    assert len(target.hits) == 2  # made again: its first latency was over the warning
    [result] = results
    assert result.ok and result.http_status == 203  # the second look is the one reported
    assert Report(config, results).exit_code == 0


async def test_a_check_timed_at_the_socket_has_no_lag_in_it_to_forgive(blocking_target) -> None:
    """Not in a sparse turn: the answer, sent while the loop is blocked, is timed as it reached
    the socket. Its latency is the target's (a few ms, not the block), nothing is noted to take
    off, and the verdict is healthy without a second look."""
    target = blocking_target(blocks=None)
    config = one_endpoint(f"{target.url}/ok", latency=WARNING)
    endpoint = next(iter(config.endpoints()))
    async with Prober() as prober:
        began = time.perf_counter()
        result = await prober.check(endpoint)
        took = time.perf_counter() - began
    assert result.ok, result.error_text
    assert took >= BLOCK  # the block fell inside the check
    assert result.latency < BLOCK / 2, result.latency
    assert DETAIL not in dict(result.details)
    assert classify(result, endpoint) is Status.HEALTHY
    assert len(target.hits) == 1


async def test_a_failure_timed_at_the_socket_is_not_made_again(blocking_target) -> None:
    """A 500 that reached the socket while the loop was blocked is the target's answer, timed
    before the block could touch it: the loop's lateness explains nothing, no second look."""
    target = blocking_target(blocks=None)
    endpoint = next(iter(one_endpoint(f"{target.url}/fail").endpoints()))
    async with Prober() as prober:
        result = await prober.check(endpoint)
    assert not result.ok and result.http_status == 500
    assert result.latency < BLOCK / 2, result.latency
    assert len(target.hits) == 1 and result.attempts == 1


IN_FLIGHT = web.AppKey("in_flight", list)


async def counted(request: web.Request) -> web.Response:
    state = request.app[IN_FLIGHT]
    state[0] += 1
    state[1] = max(state[1], state[0])
    try:
        await asyncio.sleep(0.05)
        return web.Response(text="ok")
    finally:
        state[0] -= 1


async def test_once_never_runs_more_checks_at_a_time_than_the_cap() -> None:
    app = web.Application()
    app[IN_FLIGHT] = [0, 0]  # now, most at once
    app.router.add_get("/counted", counted)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/counted"
    document = {
        "defaults": {"retries": 0, "latency": {"warning": "10s", "critical": "20s"}},
        "scheduler": {"max_concurrency": 3},
        "regions": {"r": {"endpoints": [{"name": f"e{i}", "url": url} for i in range(40)]}},
    }
    config = parse_config(json.dumps(document), "test", {})
    try:
        async with Prober(recheck_lagged=False) as prober:
            results = await check_all(list(config.endpoints()), prober, config.scheduler)
    finally:
        await runner.cleanup()
    assert [r.endpoint for r in results] == [f"e{i}" for i in range(40)]
    assert all(r.ok for r in results)
    assert 1 <= app[IN_FLIGHT][1] <= 3
