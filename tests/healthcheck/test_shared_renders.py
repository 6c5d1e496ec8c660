"""Renders shared among concurrent requests (/metrics, the API views), and the bounded threads.

The render is a real blocking function held on a threading.Event, so a render "in progress"
is a fact the test controls, not a race it hopes to win."""

from __future__ import annotations

import asyncio
import threading

import pytest
from polling import until

from healthcheck.server_threads import ServerBusy, ServerThreads, ServingCounts
from healthcheck.shared_renders import SharedRenders

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


class HeldRender:
    """A render that blocks until released, and records each call it makes."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[tuple[str | None, bool]] = []

    def __call__(self, accept: str | None, gzipped: bool) -> tuple[bytes, str]:
        self.calls.append((accept, gzipped))
        assert self.release.wait(30), "the test never released the render"
        return f"render {len(self.calls)}\n".encode(), "text/plain"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def render() -> HeldRender:
    return HeldRender()


@pytest.fixture
async def threads():
    pool = ServerThreads(1, 3, "test-render")
    yield pool
    pool.close()


def shared(render: HeldRender, threads: ServerThreads, **kw) -> SharedRenders:
    return SharedRenders(render, threads, ServingCounts(), **kw)


async def test_scrapes_during_a_render_share_it(render, threads) -> None:
    renders = shared(render, threads, clock=Clock())
    scrapes = [asyncio.create_task(renders.scrape(None, False)) for _ in range(20)]
    await until(lambda: renders.waiting == 20 and render.calls)
    render.release.set()
    bodies = await asyncio.gather(*scrapes)
    assert set(bodies) == {(b"render 1\n", "text/plain")}
    assert len(render.calls) == 1
    assert (renders.counts.renders, renders.counts.scrapes_shared) == (1, 19)


async def test_each_variant_is_rendered_for_its_own_scrapers(render, threads) -> None:
    renders = shared(render, threads, clock=Clock())
    render.release.set()
    variants = [(None, False), (None, True), (OPENMETRICS, False), ("text/plain", False)]
    await asyncio.gather(*(renders.scrape(a, gz) for a, gz in variants for _ in range(3)))
    # text/plain without a version is the default text format: the same variant as no Accept
    assert sorted(render.calls, key=str) == sorted(variants[:3], key=str)


async def test_a_render_just_made_is_served_for_a_second_then_made_anew(render, threads) -> None:
    clock = Clock()
    renders = shared(render, threads, clock=clock)
    render.release.set()
    first = await renders.scrape(None, False)
    clock.now += 1.0
    assert await renders.scrape(None, False) == first
    clock.now += 0.01
    assert await renders.scrape(None, False) != first
    clock.now -= 60  # the clock stepped back: the body kept is not fresh, whatever its age
    assert len({first, await renders.scrape(None, False)}) == 2
    assert renders.counts.renders == 3 and len(render.calls) == 3


async def test_past_the_waiting_bound_a_scrape_is_refused_at_once(render, threads) -> None:
    renders = shared(render, threads, max_waiting=5, clock=Clock())
    waiting = [asyncio.create_task(renders.scrape(None, False)) for _ in range(5)]
    await until(lambda: renders.waiting == 5)
    with pytest.raises(ServerBusy) as refused:
        await renders.scrape(OPENMETRICS, False)
    assert refused.value.retry_after == 1
    render.release.set()
    assert len(set(await asyncio.gather(*waiting))) == 1
    assert len(render.calls) == 1


async def test_a_render_whose_scrapers_all_left_before_it_began_is_not_made(
    render, threads
) -> None:
    renders = shared(render, threads, clock=Clock())
    busy = asyncio.create_task(renders.scrape(None, False))  # holds the one render thread
    await until(lambda: render.calls)
    gone = [asyncio.create_task(renders.scrape(OPENMETRICS, False)) for _ in range(3)]
    await until(lambda: renders.waiting == 4)
    for scrape in gone:  # their clients hung up: aiohttp cancels the handlers
        scrape.cancel()
    await asyncio.gather(*gone, return_exceptions=True)
    assert renders.waiting == 1
    render.release.set()
    await busy
    after = await renders.scrape(OPENMETRICS, True)  # the thread is free, and skipped that one
    assert after == (b"render 2\n", "text/plain")
    assert render.calls == [(None, False), (OPENMETRICS, True)]
    assert threads.admitted == 0


async def test_a_render_that_fails_fails_each_scraper_and_the_next_is_made_anew(threads) -> None:
    calls = []

    def broken(accept: str | None, gzipped: bool) -> tuple[bytes, str]:
        calls.append(accept)
        if len(calls) == 1:
            raise RuntimeError("render broke")
        return b"ok\n", "text/plain"

    renders = SharedRenders(broken, threads, ServingCounts(), clock=Clock())
    results = await asyncio.gather(
        *(renders.scrape(None, False) for _ in range(3)), return_exceptions=True
    )
    assert [type(r) for r in results] == [RuntimeError] * 3
    assert await renders.scrape(None, False) == (b"ok\n", "text/plain")
    assert renders.counts.renders == 1


async def test_server_threads_refuse_past_their_bound_until_the_work_itself_ends() -> None:
    pool = ServerThreads(1, 1, "test-read")
    release = threading.Event()
    try:
        running = asyncio.create_task(pool.run("read", release.wait, 30))
        queued = asyncio.create_task(pool.run("read", lambda: "queued ran"))
        await until(lambda: pool.admitted == 2)
        with pytest.raises(ServerBusy, match="read: the server is busy"):
            await pool.run("read", lambda: None)
        running.cancel()  # its caller left; its thread did not
        queued.cancel()  # not begun: dropped unrun, its place freed
        await asyncio.gather(running, queued, return_exceptions=True)
        await until(lambda: pool.admitted == 1)  # the running one holds its place still
        again = asyncio.create_task(pool.run("read", lambda: "answered"))
        await until(lambda: pool.admitted == 2)
        with pytest.raises(ServerBusy):
            await pool.run("read", lambda: None)
        release.set()
        assert await again == "answered"
        await until(lambda: pool.admitted == 0)
    finally:
        release.set()
        pool.close()


async def test_a_view_is_snapshotted_once_per_render_and_a_new_stamp_renders_anew(
    render, threads
) -> None:
    """The API's views: `prepare` (the snapshot, on the loop) runs only for a render that is
    made; within a second the answer is reused, unless the stamp (the configuration) changed."""
    clock = Clock()
    views = SharedRenders(None, threads, ServingCounts(), clock=clock, what="/api/v1")
    prepared: list[str] = []

    def prepare(stamp: str):
        def make():
            prepared.append(stamp)
            return lambda: render(stamp, False)

        return make

    old, new = "config one", "config two"
    asks = [asyncio.create_task(views.share("status", prepare(old), stamp=old)) for _ in range(5)]
    await until(lambda: views.waiting == 5 and render.calls)
    render.release.set()
    assert set(await asyncio.gather(*asks)) == {(b"render 1\n", "text/plain")}
    assert await views.share("status", prepare(old), stamp=old) == (b"render 1\n", "text/plain")
    assert prepared == [old]  # one snapshot for six answers
    # A reload: the answer made under the old configuration is not served under the new one.
    assert await views.share("status", prepare(new), stamp=new) == (b"render 2\n", "text/plain")
    assert await views.share("page 2", prepare(new), stamp=new) == (b"render 3\n", "text/plain")
    clock.now += 1.5
    assert await views.share("status", prepare(new), stamp=new) == (b"render 4\n", "text/plain")
    assert prepared == [old, new, new, new]
    assert views.counts.renders == 4


async def test_with_fresh_for_zero_only_requests_meanwhile_share(render, threads) -> None:
    """/api/v1/results: a page answered is not kept, so a row stored since is in the next."""
    pages = SharedRenders(None, threads, ServingCounts(), fresh_for=0, clock=Clock())

    def prepare():
        return lambda: render("page", False)

    asks = [asyncio.create_task(pages.share("page 1", prepare)) for _ in range(4)]
    await until(lambda: pages.waiting == 4 and render.calls)
    render.release.set()
    assert set(await asyncio.gather(*asks)) == {(b"render 1\n", "text/plain")}
    # The clock has not moved, and still the next ask is a new read.
    assert await pages.share("page 1", prepare) == (b"render 2\n", "text/plain")
