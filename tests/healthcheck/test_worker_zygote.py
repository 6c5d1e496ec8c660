"""The zygote that forks probe workers, run inside this test's process as a daemon embedded in
another program would: started as its own interpreter, its workers under it, all of them ending
with it, and a pool whose zygote is killed starting a new one without a false verdict."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from polling import until

from healthcheck.config import parse_config
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.scheduler import spread_offset
from healthcheck.worker_zygote import Zygote
from healthcheck.workers import WorkerPool

START = 120.0  # a busy one-core machine starts an interpreter and its imports first


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else int(fields[1])


async def test_workers_are_the_zygotes_children_and_end_with_it() -> None:
    zygote = Zygote()
    ours, theirs = socket.socketpair()
    worker = await zygote.fork(theirs)
    theirs.close()
    try:
        assert zygote.pid is not None
        assert parent_of(zygote.pid) == os.getpid()
        assert parent_of(worker.pid) == zygote.pid
        os.kill(zygote.pid, signal.SIGKILL)
        # PR_SET_PDEATHSIG: the worker is killed with its zygote, and the pool is told so.
        assert await asyncio.wait_for(worker.wait(), START) == -signal.SIGKILL
        await until(lambda: parent_of(worker.pid) is None, START)
    finally:
        ours.close()
        await zygote.close()
    # A zygote that died is started again, as a new process, for the next worker.
    ours, theirs = socket.socketpair()
    again = await zygote.fork(theirs)
    theirs.close()
    try:
        assert zygote.pid is not None and parent_of(again.pid) == zygote.pid
    finally:
        ours.close()  # the worker's daemon is gone: it ends, then the zygote with close()
        assert await asyncio.wait_for(again.wait(), START) == 0
        await zygote.close()


@pytest.fixture
async def target():
    """/ok answers at once; /hang not before the test ends (its check stays in flight)."""
    done = asyncio.Event()

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def hang(_request: web.Request) -> web.Response:
        await done.wait()
        return web.Response()

    app = web.Application()
    app.add_routes([web.get("/ok", ok), web.get("/hang", hang)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    done.set()
    await runner.cleanup()


def soon_started(candidates: list[str]) -> str:
    """The name whose first check comes soonest in its 60 s interval (a stable offset)."""
    hangs = [{"name": n, "url": "http://x/", "interval": "60s"} for n in candidates]
    config = parse_config(yaml.safe_dump({"regions": {"r": {"endpoints": hangs}}}), "test")
    return min(config.endpoints(), key=spread_offset).name


async def test_a_pool_whose_zygote_is_killed_starts_another_and_judges_nobody(target) -> None:
    hang = soon_started([f"hang{i}" for i in range(30)])
    # Generous for /ok on loopback: a busy machine must not make a check of it fail.
    document = {
        "defaults": {"interval": "1s", "timeout": "1s", "retries": 0},
        "regions": {
            "r": {
                "endpoints": [
                    *({"name": f"e{i}", "url": f"{target}/ok"} for i in range(4)),
                    {"name": hang, "url": f"{target}/hang", "interval": "60s", "timeout": "60s"},
                ]
            }
        },
    }
    config = parse_config(yaml.safe_dump(document), "test")
    results: list[ProbeResult] = []
    pool = WorkerPool(
        config.endpoints(), [results.append], config.scheduler, 2, lambda: config.secrets
    )
    running = asyncio.create_task(pool.run())
    try:
        await asyncio.wait_for(pool.ready.wait(), START)
        hanging = str(next(e.id for e in config.endpoints() if e.name == hang))
        await until(lambda: any(hanging in w.in_flight for w in pool.workers), START)
        zygote = pool.zygote.pid
        workers = {w.process.pid for w in pool.workers if w.process is not None}
        assert zygote is not None
        assert {parent_of(pid) for pid in workers} == {zygote}
        os.kill(zygote, signal.SIGKILL)
        await until(lambda: pool.restarts == 2 and all(w.ready for w in pool.workers), START)
        assert pool.zygote.pid not in (None, zygote)
        assert {parent_of(w.process.pid) for w in pool.workers if w.process} == {pool.zygote.pid}
        lost = [r for r in results if r.endpoint == hang]
        assert lost and all(r.error is ErrorClass.PROBER for r in lost), lost
        # Any other check in flight then is lost the same way: no verdict about its target.
        assert all(r.ok or r.error is ErrorClass.PROBER for r in results), results
        before = len([r for r in results if r.ok])
        await until(lambda: len([r for r in results if r.ok]) > before + 4, START)
    finally:
        await pool.drain(0.0)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert pool.zygote.pid is None  # drained: the zygote ended after its workers
    assert not any(parent_of(w.process.pid) for w in pool.workers if w.process)
