"""Badges from the real daemon: valid SVG (and shields.io JSON) whose value and colour follow a
healthy and a failing endpoint, their stored uptime and latency, auth, and 404s."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

import aiohttp
import pytest
from live_daemon import live_daemon

from healthcheck.result import ErrorClass, ProbeResult, Status
from storage.writer import StorageWriter

SVG = "{http://www.w3.org/2000/svg}"
GREEN, RED, GREY = "#4c1", "#e05d44", "#9f9f9f"


def seed(path: str) -> None:
    """An hour of stored history: us-west/api always up at 20 ms, eu-west/api always down
    after 5 s; written through the storage layer, as a daemon before a restart did."""
    writer = StorageWriter(path)
    writer.start()
    now = time.time()
    for minute in range(1, 50):
        for step in range(8):
            ts = now - minute * 60 - step
            writer.submit(ProbeResult("us-west", "api", "http", True, 0.020, ts), Status.HEALTHY)
            down = ProbeResult(
                "eu-west",
                "api",
                "http",
                False,
                5.0,
                ts,
                error=ErrorClass.HTTP_STATUS,
                error_text="HTTP 503",
            )
            writer.submit(down, Status.UNHEALTHY)
    writer.close()


def document(fleet, **exporter) -> dict:
    return {
        "defaults": {
            # A live check is never slow enough to be degraded (it would time out first), and
            # one of /ok never fails on a busy machine: the badges' values are the seeded ones.
            "interval": "2s",
            "timeout": "2s",
            "retries": 0,
            "latency": {"warning": "3s", "critical": "4s"},
        },
        "regions": {
            "us-west": {"endpoints": [{"name": "api", "url": f"{fleet.http}/ok"}]},
            "eu-west": {"endpoints": [{"name": "api", "url": f"{fleet.http}/fail"}]},
        },
        "exporter": {"listen": "127.0.0.1:0", **exporter},
    }


def parse(svg: str) -> tuple[list[str], list[str]]:
    """The texts (without their shadows) and the fills of a badge's two halves."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    rects = root.findall(f"{SVG}g/{SVG}rect")
    texts = [t.text or "" for t in root.iter(f"{SVG}text") if t.get("fill-opacity") is None]
    return texts, [rects[0].get("fill", ""), rects[1].get("fill", "")]


async def badge(session: aiohttp.ClientSession, url: str) -> tuple[list[str], list[str]]:
    async with session.get(url) as response:
        assert response.status == 200, url
        assert response.content_type == "image/svg+xml"
        assert response.headers["Cache-Control"] == "max-age=60, s-maxage=60"
        return parse(await response.text())


async def test_badges_follow_status_uptime_and_latency(fleet, tmp_path) -> None:
    seed(str(tmp_path / "hc.db"))
    async with live_daemon(tmp_path, document(fleet)) as daemon, aiohttp.ClientSession() as s:
        base = f"{daemon.url}/badges"
        seen: dict[str, tuple[list[str], list[str]]] = {}

        async def checked() -> bool:
            seen["up"] = await badge(s, f"{base}/us-west/api/status.svg")
            seen["down"] = await badge(s, f"{base}/eu-west/api/status.svg")
            return seen["up"][0][1] != "unknown" and seen["down"][0][1] != "unknown"

        deadline = time.monotonic() + 30
        while not await checked():  # until both have been checked once
            assert time.monotonic() < deadline, seen
            await asyncio.sleep(0.1)
        assert seen["up"] == (["us-west/api", "healthy"], ["#555", GREEN])
        assert seen["down"] == (["eu-west/api", "unhealthy"], ["#555", RED])
        assert await badge(s, f"{base}/eu-west/status.svg") == (
            ["eu-west", "unhealthy"],
            ["#555", RED],
        )

        assert await badge(s, f"{base}/us-west/api/uptime/24h.svg") == (
            ["uptime 24h", "100%"],
            ["#555", GREEN],
        )
        assert await badge(s, f"{base}/eu-west/api/uptime/1h.svg") == (
            ["uptime 1h", "0%"],
            ["#555", RED],
        )
        assert await badge(s, f"{base}/us-west/uptime/30d.svg") == (
            ["uptime 30d", "100%"],
            ["#555", GREEN],
        )
        texts, fills = await badge(s, f"{base}/us-west/api/latency/24h.svg")
        assert texts[0] == "p95 24h" and texts[1].endswith(" ms") and fills[1] == GREEN
        assert float(texts[1].removesuffix(" ms")) < 3000
        texts, fills = await badge(s, f"{base}/eu-west/api/latency/24h.svg")
        assert float(texts[1].removesuffix(" ms")) > 4000 and fills[1] == RED

        async with s.get(f"{base}/us-west/api/uptime/24h.json") as response:
            assert response.status == 200
            assert await response.json() == {
                "schemaVersion": 1,
                "label": "uptime 24h",
                "message": "100%",
                "color": "brightgreen",
                "cacheSeconds": 60,
            }
        async with s.get(f"{base}/eu-west/api/status.json") as response:
            body = await response.json()
            assert (body["message"], body["color"]) == ("unhealthy", "red")

        # A label given by the page that embeds it is text in the SVG, never markup.
        async with s.get(
            f"{base}/us-west/api/status.svg", params={"label": '<script>alert("x")</script>&'}
        ) as response:
            texts, _fills = parse(await response.text())
            assert texts[0] == '<script>alert("x")</script>&'
            etag = response.headers["ETag"]
            assert response.headers["Last-Modified"].endswith("GMT")
        async with s.get(
            f"{base}/us-west/uptime/30d.svg", headers={"If-None-Match": "*"}
        ) as response:
            assert response.status == 304
        assert etag


UNKNOWN = [
    "nowhere/status.svg",
    "us-west/nothing/status.svg",
    "us-west/api/uptime/2h.svg",
    "us-west/api/latency/1h.svg",
    "us-west/api/status.png",
    "us-west/api/health.svg",
    "us-west/api/extra/status.svg",
    "us-west/api/uptime/24h/status.svg",
]


async def test_unknown_badges_are_404_saying_nothing(fleet, tmp_path) -> None:
    async with live_daemon(tmp_path, document(fleet)) as daemon, aiohttp.ClientSession() as s:
        answers = []
        for path in UNKNOWN:
            async with s.get(f"{daemon.url}/badges/{path}") as response:
                answers.append((response.status, await response.text()))
    assert answers == [(404, "no such badge\n")] * len(UNKNOWN)


@pytest.mark.parametrize("public", [False, True])
async def test_badges_need_the_apis_auth_unless_public(fleet, tmp_path, public) -> None:
    settings = {"auth": {"bearer_token": "${HC_TOKEN}"}, "public_badges": public}
    env = {"HC_TOKEN": "s3cret-badge-token"}
    async with (
        live_daemon(tmp_path, document(fleet, **settings), env) as daemon,
        aiohttp.ClientSession() as s,
    ):
        url = f"{daemon.url}/badges/us-west/api/status.svg"
        async with s.get(url) as response:
            assert response.status == (200 if public else 401)
        async with s.get(url.replace(".svg", ".json")) as response:
            assert response.status == (200 if public else 401)
        # Unknown ids too: without the token nothing tells which exist.
        async with s.get(f"{daemon.url}/badges/nowhere/status.svg") as response:
            assert response.status == (404 if public else 401)
        async with s.get(url, headers={"Authorization": "Bearer s3cret-badge-token"}) as response:
            assert response.status == 200
        async with s.get(f"{daemon.url}/api/v1/status") as response:
            assert response.status == 401  # the API stays behind auth either way
