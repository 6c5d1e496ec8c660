"""[DOMAIN_EXPIRATION] read over RDAP from a real RDAP server on loopback (tests/support
/rdap_server.py), through real tls, http and dns checks."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from rdap_server import Registry, rdap_server

from healthcheck.conditions import PLACEHOLDERS, parse_condition
from healthcheck.probes import rdap
from healthcheck.probes.dns import DnsProbe, DnsSettings
from healthcheck.probes.http import HttpProbe, HttpSettings
from healthcheck.probes.rdap import RdapOptions
from healthcheck.probes.tls import TlsProbe, TlsSettings
from healthcheck.result import ErrorClass
from healthcheck.schema import TlsOptions
from healthcheck.targets import Endpoint

KNOWN = (*PLACEHOLDERS, "DOMAIN_EXPIRATION")
IN_A_YEAR = datetime.now(UTC) + timedelta(days=365)


@pytest.fixture(autouse=True)
def fresh_cache():
    rdap.forget()
    yield
    rdap.forget()


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    async with rdap_server(Registry({"example.com": IN_A_YEAR})) as serving:
        yield serving


def check(kind: str, settings: object, *conditions: str) -> Endpoint:
    return Endpoint(
        region="test",
        name=f"{kind}-check",
        kind=kind,
        interval=60.0,
        timeout=5.0,
        retries=0,
        latency_warning=None,
        latency_critical=None,
        conditions=tuple(parse_condition(text, KNOWN) for text in conditions),
        settings=settings,  # type: ignore[arg-type]
    )


@pytest.fixture
async def tls_port(serve, ca) -> int:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("www.shop.example.com", "www.example.co.uk").configure_cert(context)
    return await serve(tls=context)


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def tls_check(port: int, ca_file: str, name: str, server: str, *conditions: str) -> Endpoint:
    options = TlsOptions(ca_file=ca_file, server_name=name)
    settings = TlsSettings(("127.0.0.1", port), options, RdapOptions(server=server))
    return check("tls", settings, *conditions)


async def test_a_tls_check_reads_the_registration_of_its_name(registry, tls_port, ca_file):
    target = tls_check(
        tls_port, ca_file, "www.shop.example.com", registry.url, "[DOMAIN_EXPIRATION] > 720h"
    )

    result = await TlsProbe().run(target)

    assert result.ok, result.error_text
    assert result.conditions[0].passed
    assert result.conditions[0].detail.startswith("[DOMAIN_EXPIRATION] was 36")  # 364d23h...
    assert registry.asked == ["example.com"]  # the last two labels were a registered name


async def test_the_registered_name_is_found_label_by_label(registry, tls_port, ca_file):
    # Half an hour short of 10 days, so the rendering ("9d23h30m") is far from any rounding edge:
    # the RDAP date carries whole seconds, and a check in the same second as `now` would read 10d.
    registry.expiries["example.co.uk"] = datetime.now(UTC) + timedelta(days=10, minutes=-30)
    target = tls_check(
        tls_port, ca_file, "www.example.co.uk", registry.url, "[DOMAIN_EXPIRATION] > 720h"
    )

    result = await TlsProbe().run(target)

    assert result.error is ErrorClass.CONDITION_FAILED
    assert "[DOMAIN_EXPIRATION] was 9d23h" in (result.error_text or "")
    assert registry.asked == ["co.uk", "example.co.uk"]


async def test_an_answer_is_kept_and_shared(registry, tls_port, ca_file):
    target = tls_check(
        tls_port, ca_file, "www.shop.example.com", registry.url, "[DOMAIN_EXPIRATION] > 1h"
    )
    probe = TlsProbe()

    at_once = await asyncio.gather(*(probe.run(target) for _ in range(5)))
    later = await probe.run(target)

    assert all(result.ok for result in (*at_once, later))
    assert registry.asked == ["example.com"]  # one request for six checks


async def test_an_rdap_failure_fails_only_its_condition(registry, tls_port, ca_file):
    registry.status = 503
    target = tls_check(
        tls_port,
        ca_file,
        "www.shop.example.com",
        registry.url,
        "[CONNECTED] == true",
        "[DOMAIN_EXPIRATION] > 720h",
    )

    result = await TlsProbe().run(target)
    again = await TlsProbe().run(target)

    assert result.error is ErrorClass.CONDITION_FAILED  # the endpoint answered: not down
    assert result.cert_expiry is not None
    assert [outcome.passed for outcome in result.conditions] == [True, False]
    port = registry.url.split(":")[2].split("/")[0]
    assert result.conditions[1].detail == (
        "[DOMAIN_EXPIRATION] has no value for this check: "
        f"RDAP 127.0.0.1:{port} answered HTTP 503 for example.com"
    )
    assert again.conditions[1].detail == result.conditions[1].detail
    assert registry.asked == ["example.com"]  # the failure is kept too, for minutes


async def test_an_unreachable_rdap_server_fails_only_its_condition(tls_port, ca_file, closed_port):
    server = f"http://probe:s3cret@127.0.0.1:{closed_port}/"
    target = tls_check(
        tls_port, ca_file, "www.shop.example.com", server, "[DOMAIN_EXPIRATION] > 720h"
    )

    result = await TlsProbe().run(target)

    assert result.error is ErrorClass.CONDITION_FAILED
    assert f"RDAP 127.0.0.1:{closed_port} could not be reached" in (result.error_text or "")
    assert "s3cret" not in (result.error_text or "")  # the server is named by host and port


async def test_an_answer_without_expiration_says_so(tls_port, ca_file):
    async def bare(request: web.Request) -> web.Response:
        return web.json_response({"objectClassName": "domain", "events": []})

    app = web.Application()
    app.router.add_get("/domain/{name}", bare)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    server = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        target = tls_check(
            tls_port, ca_file, "www.shop.example.com", server, "[DOMAIN_EXPIRATION] > 1h"
        )
        result = await TlsProbe().run(target)
    finally:
        await runner.cleanup()

    assert "gives no expiration event for example.com" in (result.error_text or "")


async def test_an_http_check_by_address_names_its_domain(registry, serve):
    async def up(request: web.Request) -> web.Response:
        return web.Response(text="up")

    app = web.Application()
    app.router.add_get("/", up)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/"
    named = RdapOptions(server=registry.url, domain="example.com")
    unnamed_settings = HttpSettings(url, rdap=RdapOptions(server=registry.url))
    probe = HttpProbe()
    await probe.start()
    try:
        ok = await probe.run(
            check("http", HttpSettings(url, rdap=named), "[DOMAIN_EXPIRATION] > 720h")
        )
        unnamed = await probe.run(
            check("http", unnamed_settings, "[STATUS] == 200", "[DOMAIN_EXPIRATION] > 720h")
        )
    finally:
        await probe.close()
        await runner.cleanup()

    assert ok.ok, ok.error_text
    assert unnamed.error is ErrorClass.CONDITION_FAILED
    assert unnamed.conditions[0].passed
    assert unnamed.conditions[1].detail == (
        "[DOMAIN_EXPIRATION] has no value for this check: "
        "127.0.0.1 is an address, not a registered domain name (set rdap.domain)"
    )


async def test_a_dns_check_reads_it_too(registry):
    named = RdapOptions(server=registry.url, domain="example.com")
    result = await DnsProbe().run(
        check("dns", DnsSettings("localhost", rdap=named), "[DOMAIN_EXPIRATION] > 720h")
    )

    assert result.ok, result.error_text


async def test_a_tld_without_a_known_server_says_so(tls_port, ca_file):
    options = TlsOptions(ca_file=ca_file, server_name="www.shop.example.com")
    settings = TlsSettings(("127.0.0.1", tls_port), options, RdapOptions(domain="example.zz"))

    result = await TlsProbe().run(check("tls", settings, "[DOMAIN_EXPIRATION] > 1h"))

    assert "no RDAP server known for .zz (set rdap.server)" in (result.error_text or "")


def test_the_shipped_bootstrap_is_ianas_file_and_names_the_registries() -> None:
    data = json.loads(rdap.BOOTSTRAP.read_text())
    published = datetime.fromisoformat(data["publication"].replace("Z", "+00:00"))
    servers = rdap.bootstrap()

    assert published.year >= 2026
    assert len(servers) > 1000  # the whole file, not a hand-written subset
    assert servers["com"] == "https://rdap.verisign.com/com/v1/"
    assert servers["net"] == "https://rdap.verisign.com/net/v1/"
    for tld in ("org", "uk", "fr", "br", "nl", "au", "cz", "no"):
        assert servers[tld].startswith("https://"), (tld, servers[tld])
    assert "zz" not in servers


def test_the_refresh_script_writes_the_shipped_format(tmp_path) -> None:
    script = Path(__file__).resolve().parents[3] / "scripts" / "refresh_rdap_bootstrap.py"
    target = tmp_path / "rdap_dns.json"
    source = tmp_path / "dns.json"
    source.write_text(json.dumps(json.loads(rdap.BOOTSTRAP.read_text()), indent=4))

    done = subprocess.run(
        [sys.executable, str(script), "--url", source.as_uri(), "--target", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert target.read_text() == rdap.BOOTSTRAP.read_text()


def test_the_refresh_script_refuses_a_file_that_is_not_a_bootstrap(tmp_path) -> None:
    script = Path(__file__).resolve().parents[3] / "scripts" / "refresh_rdap_bootstrap.py"
    source = tmp_path / "dns.json"
    source.write_text('{"services": {"com": "https://rdap.example/"}}')
    target = tmp_path / "rdap_dns.json"

    done = subprocess.run(
        [sys.executable, str(script), "--url", source.as_uri(), "--target", str(target)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert "is not an RDAP bootstrap file" in done.stderr
    assert not target.exists()
