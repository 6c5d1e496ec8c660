"""A real RDAP server on loopback (aiohttp): RFC 9083 domain objects with an `expiration` event
for the names it is given, 404 for others, and every request it got, for the cache tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiohttp import web


@dataclass
class Registry:
    """What the server knows: name → expiry date; `status` set makes it answer that instead."""

    expiries: dict[str, datetime] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    status: int | None = None
    url: str = ""


def domain_object(name: str, expires: datetime) -> dict[str, object]:
    return {
        "objectClassName": "domain",
        "rdapConformance": ["rdap_level_0"],
        "ldhName": name.upper(),
        "status": ["active"],
        "events": [
            {"eventAction": "registration", "eventDate": "1995-08-14T04:00:00Z"},
            {
                "eventAction": "expiration",
                "eventDate": expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            {"eventAction": "last update of RDAP database", "eventDate": "2026-01-01T00:00:00Z"},
        ],
    }


@contextlib.asynccontextmanager
async def rdap_server(registry: Registry) -> AsyncIterator[Registry]:
    """Serve `registry` at http://127.0.0.1:PORT/rdap/ (its `url`)."""

    async def domain(request: web.Request) -> web.Response:
        name = request.match_info["name"].lower()
        registry.asked.append(name)
        if registry.status is not None:
            return web.json_response({"errorCode": registry.status}, status=registry.status)
        if name not in registry.expiries:
            return web.json_response({"errorCode": 404, "title": "Not Found"}, status=404)
        return web.json_response(
            domain_object(name, registry.expiries[name]), content_type="application/rdap+json"
        )

    app = web.Application()
    app.router.add_get("/rdap/domain/{name}", domain)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    registry.url = f"http://127.0.0.1:{port}/rdap/"
    try:
        yield registry
    finally:
        await runner.cleanup()
