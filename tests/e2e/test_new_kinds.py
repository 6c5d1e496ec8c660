"""kind: icmp, kind: starttls and [DOMAIN_EXPIRATION] through the real CLI: `check-config`
key paths, `--once --record` rows and stored results, against real servers on loopback (the
kernel's ICMP echo, aiosmtpd and small IMAP/POP3 servers upgrading to TLS, an RDAP server).

The ICMP socket paths that need another user or another ping group range run the CLI in a
fresh network namespace (`unshare -n`, root only), so the host's settings are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import yaml
from mail_servers import MailServer, mail_server, smtp_starttls
from polling import until
from prometheus_client.parser import text_string_to_metric_families
from rdap_server import Registry, rdap_server
from timeouts import timeout_row_text

REPO = Path(__file__).resolve().parents[2]


def _may_ping() -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_RAW):
        try:
            socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP).close()
            return True
        except PermissionError:
            continue
    return False


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def write(path: Path, endpoints: list[dict], **top: object) -> Path:
    document = {
        "defaults": {"interval": "30s", "timeout": "5s", "retries": 0},
        **top,
        "regions": {"r": {"endpoints": endpoints}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
async def servers(ca, tmp_path) -> AsyncIterator[dict[str, object]]:
    """Mail servers of each protocol, one IMAP server without STARTTLS, a TLS server for a
    registered name, and an RDAP server that knows example.com and soon.example.com."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "www.shop.example.com").configure_cert(tls)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    registry = Registry(
        {
            "example.com": datetime.now(UTC) + timedelta(days=365),
            # Half an hour short of 10 days: "9d23h" is far from any rounding edge.
            "soon.example.com": datetime.now(UTC) + timedelta(days=10, minutes=-30),
        }
    )
    async with contextlib.AsyncExitStack() as stack:
        smtp_port = stack.enter_context(smtp_starttls(tls))
        imap = await stack.enter_async_context(mail_server("imap", tls))
        pop3 = await stack.enter_async_context(mail_server("pop3", tls))
        plain = await stack.enter_async_context(
            mail_server("imap", tls, MailServer(offers_tls=False))
        )
        await stack.enter_async_context(rdap_server(registry))
        https = await asyncio.start_server(_hold, "127.0.0.1", 0, ssl=tls)
        stack.push_async_callback(https.wait_closed)
        stack.callback(https.close)
        yield {
            "ca_file": str(ca_file),
            "smtp": smtp_port,
            "imap": imap,
            "pop3": pop3,
            "plain_imap": plain,
            "tls": https.sockets[0].getsockname()[1],
            "rdap": registry,
        }


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        await reader.read()
    writer.close()


async def test_once_checks_each_new_kind_and_records_it(run_cli, tmp_path, servers) -> None:
    if not _may_ping():
        pytest.skip("neither unprivileged ICMP nor raw sockets are allowed to this user")
    ca_file, rdap = servers["ca_file"], servers["rdap"]
    tls = {"ca_file": ca_file}
    mail = {"kind": "starttls", "tls": tls, "conditions": ["[CERTIFICATE_EXPIRATION] > 720h"]}
    endpoints = [
        {
            "name": "ping4",
            "kind": "icmp",
            "host": "127.0.0.1",
            "conditions": ["[PACKET_LOSS] == 0"],
        },
        {"name": "smtp", **mail, "protocol": "smtp", "address": f"127.0.0.1:{servers['smtp']}"},
        {"name": "imap", **mail, "protocol": "imap", "address": f"127.0.0.1:{servers['imap']}"},
        {"name": "pop3", **mail, "protocol": "pop3", "address": f"127.0.0.1:{servers['pop3']}"},
        {
            "name": "no-starttls",
            "kind": "starttls",
            "protocol": "imap",
            "address": f"127.0.0.1:{servers['plain_imap']}",
            "tls": tls,
        },
        {
            "name": "cert-domain",
            "kind": "tls",
            "address": f"127.0.0.1:{servers['tls']}",
            "tls": {**tls, "server_name": "www.shop.example.com"},
            "rdap": "${RDAP_URL}",
            "conditions": ["[DOMAIN_EXPIRATION] > 720h", "[CERTIFICATE_EXPIRATION] > 720h"],
        },
        {
            "name": "expiring-domain",
            "kind": "dns",
            "hostname": "localhost",
            "rdap": {"server": "${RDAP_URL}", "domain": "soon.example.com"},
            "conditions": ["[DOMAIN_EXPIRATION] > 720h"],
        },
    ]
    if _has_ipv6_loopback():
        endpoints.append({"name": "ping6", "kind": "icmp", "host": "::1", "count": 2})
    database = tmp_path / "hc.db"
    config = write(tmp_path / "regions.yaml", endpoints, storage={"path": str(database)})
    env = {"RDAP_URL": rdap.url}

    checked = await run_cli("check-config", "--config", str(config), env=env)
    assert checked.code == 0, checked.stderr
    done = await run_cli("--once", "--record", "--format", "json", "--config", str(config), env=env)

    assert done.code == 2, done.stderr  # two checks fail, both for what they found
    rows = {row["endpoint"]: row for row in json.loads(done.stdout)["results"]}
    for name in (
        "ping4",
        "smtp",
        "imap",
        "pop3",
        "cert-domain",
        *(["ping6"] if _has_ipv6_loopback() else []),
    ):
        assert rows[name]["ok"], (name, rows[name]["error_detail"])
    assert rows["ping4"]["details"]["packet_loss"] == 0
    assert rows["ping4"]["conditions"][0]["detail"] == "[PACKET_LOSS] was 0"
    assert rows["smtp"]["kind"] == "starttls" and rows["smtp"]["cert_expiry"]
    assert rows["no-starttls"]["error"] == "invalid_response"
    assert rows["no-starttls"]["error_detail"] == (
        "IMAP server does not offer STARTTLS (not among its CAPABILITY)"
    )
    assert rows["expiring-domain"]["error"] == "condition_failed"
    assert "[DOMAIN_EXPIRATION] was 9d23h" in rows["expiring-domain"]["error_detail"]
    assert rdap.asked == ["example.com", "soon.example.com"]

    with sqlite3.connect(database) as db:
        stored = dict(
            db.execute(
                "SELECT t.endpoint, t.kind || ':' || COALESCE(r.error, 'ok') FROM results r "
                "JOIN targets t ON t.id = r.target_id"
            ).fetchall()
        )
    assert stored["ping4"] == "icmp:ok"
    assert stored["pop3"] == "starttls:ok"
    assert stored["no-starttls"] == "starttls:invalid_response"
    assert stored["expiring-domain"] == "dns:condition_failed"


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        (
            {"kind": "icmp", "host": "a.example", "count": 0},
            "regions.r.endpoints[0].count: must be at least 1, got 0",
        ),
        ({"kind": "icmp", "host": "not a host"}, "regions.r.endpoints[0].host: expected a host"),
        (
            {"kind": "starttls", "address": "mail.example:25", "protocol": "ftp"},
            "regions.r.endpoints[0].protocol: ",
        ),
        (
            {"kind": "starttls", "address": "mail.example:25"},
            "regions.r.endpoints[0].protocol: ",
        ),
        (
            {"kind": "tls", "address": "a.example:443", "rdap": {"sever": "https://r.example/"}},
            "regions.r.endpoints[0].rdap.sever: unknown key; expected one of server, domain",
        ),
        (
            {"kind": "dns", "hostname": "a.example", "rdap": "ftp://r.example/"},
            "regions.r.endpoints[0].rdap: ",
        ),
        (
            {"url": "http://a.example/", "conditions": ["[PACKET_LOSS] < 5"]},
            "regions.r.endpoints[0].conditions[0]: unknown placeholder [PACKET_LOSS]",
        ),
        (
            {"kind": "tcp", "address": "a.example:1", "conditions": ["[DOMAIN_EXPIRATION] > 1h"]},
            "regions.r.endpoints[0].conditions[0]: [DOMAIN_EXPIRATION] is not available for tcp "
            "endpoints (they offer [CONNECTED], [IP], [RESPONSE_TIME])",
        ),
    ],
)
async def test_config_errors_name_the_key(run_cli, tmp_path, endpoint, message) -> None:
    config = write(tmp_path / "regions.yaml", [{"name": "e", **endpoint}])

    done = await run_cli("check-config", "--config", str(config))

    assert done.code == 3
    assert message in done.stderr


# -- ICMP in a network namespace of its own ---------------------------------------------------


def _namespaces() -> bool:
    """Whether this process may make network namespaces (root, and not in a container that
    forbids it) and has the tools to set one up."""
    if os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "setpriv", "ip"))):
        return False
    made = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], check=False)
    return made.returncode == 0


NAMESPACES = _namespaces()


async def _in_namespace(setup: str, config: Path, *, as_nobody: bool, env: dict[str, str]):
    """`healthcheck --once --format json` in a new network namespace with loopback up and
    `setup` run first (as root), then the CLI as root or as nobody."""
    user = "setpriv --reuid=65534 --regid=65534 --clear-groups " if as_nobody else ""
    script = (
        f"ip link set lo up && {setup} && exec {user}{sys.executable} -m healthcheck "
        f"--once --format json --config {config}"
    )
    process = await asyncio.create_subprocess_exec(
        "unshare",
        "-n",
        "sh",
        "-c",
        script,
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1", **env},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    if process.returncode == 3 or not stdout:
        pytest.fail(f"exit {process.returncode}: {stderr.decode()}")
    return {row["endpoint"]: row for row in json.loads(stdout)["results"]}


@pytest.fixture
def shared_config():
    """A folder nobody can read (the CLI runs as that user in some of these tests)."""
    folder = Path(tempfile.mkdtemp(prefix="hc-icmp-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


@pytest.mark.skipif(
    not NAMESPACES, reason="needs root, network namespaces (unshare -n), setpriv and ip"
)
async def test_all_lost_is_a_timeout_with_full_loss_and_a_secret_host_stays_hidden(
    shared_config,
) -> None:
    config = write(
        shared_config / "regions.yaml",
        [{"name": "hole", "kind": "icmp", "host": "${PING_HOST}", "count": 2}],
        defaults={"interval": "10s", "timeout": "1s", "retries": 0},
    )
    config.chmod(0o644)
    # Routed into loopback, the address is no one's: requests leave and nothing comes back.
    rows = await _in_namespace(
        "ip route add 203.0.113.0/24 dev lo",
        config,
        as_nobody=False,
        env={"PING_HOST": "203.0.113.7"},
    )

    hole = rows["hole"]
    # A busy machine may starve the CLI through the 1 s: then a prober fault that says so.
    assert timeout_row_text(hole, 1.0) == "no reply to 2 echo requests to *** (100% packet loss)"
    assert hole["details"]["packet_loss"] == 100
    assert hole["details"]["sent"] == 2 and hole["details"]["received"] == 0


@pytest.mark.skipif(
    not NAMESPACES, reason="needs root, network namespaces (unshare -n), setpriv and ip"
)
async def test_an_unprivileged_user_pings_where_the_group_range_allows(shared_config) -> None:
    config = write(
        shared_config / "regions.yaml",
        [{"name": "lo", "kind": "icmp", "host": "127.0.0.1", "conditions": ["[IP] == 127.0.0.1"]}],
    )
    config.chmod(0o644)
    rows = await _in_namespace(
        "echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range", config, as_nobody=True, env={}
    )

    assert rows["lo"]["ok"], rows["lo"]["error_detail"]


@pytest.mark.skipif(
    not NAMESPACES, reason="needs root, network namespaces (unshare -n), setpriv and ip"
)
async def test_with_neither_socket_allowed_the_error_says_how_to_allow_one(shared_config) -> None:
    config = write(
        shared_config / "regions.yaml", [{"name": "lo", "kind": "icmp", "host": "127.0.0.1"}]
    )
    config.chmod(0o644)
    rows = await _in_namespace(
        "echo '1 0' > /proc/sys/net/ipv4/ping_group_range", config, as_nobody=True, env={}
    )

    assert rows["lo"]["error"] == "prober"  # this machine's trouble, not the target's
    assert rows["lo"]["error_detail"].startswith(
        'ICMP not permitted: no unprivileged ICMP socket (net.ipv4.ping_group_range is "1 0", '
        "gid 65534 not in it) and no raw socket (needs root or CAP_NET_RAW)"
    )


async def test_the_daemon_exports_and_serves_the_new_kinds(
    start_daemon, follow_log, tmp_path, servers
) -> None:
    if not _may_ping():
        pytest.skip("neither unprivileged ICMP nor raw sockets are allowed to this user")
    config = write(
        tmp_path / "regions.yaml",
        [
            {"name": "ping", "kind": "icmp", "host": "127.0.0.1", "count": 2},
            {
                "name": "pop3",
                "kind": "starttls",
                "protocol": "pop3",
                "address": f"127.0.0.1:{servers['pop3']}",
                "tls": {"ca_file": servers["ca_file"]},
            },
            {
                "name": "domain",
                "kind": "dns",
                "hostname": "localhost",
                "rdap": {"server": servers["rdap"].url, "domain": "example.com"},
                "conditions": ["[DOMAIN_EXPIRATION] > 720h"],
            },
        ],
        defaults={"interval": "1s", "timeout": "900ms", "retries": 0},
        storage={"path": str(tmp_path / "hc.db")},
        exporter={"listen": "127.0.0.1:0"},
    )
    process = await start_daemon(config)
    log = follow_log(process)
    try:
        await until(lambda: log.events("listening"))
        base = f"http://127.0.0.1:{log.port}"
        async with aiohttp.ClientSession() as session:

            async def statuses() -> dict[str, str]:
                async with session.get(f"{base}/api/v1/status") as response:
                    regions = (await response.json())["regions"]
                return {e["endpoint"]: e["status"] for r in regions for e in r["endpoints"]}

            deadline = asyncio.get_running_loop().time() + 30
            while set((seen := await statuses()).values()) != {"healthy"}:
                assert asyncio.get_running_loop().time() < deadline, seen
                await asyncio.sleep(0.1)
            async with session.get(f"{base}/metrics") as response:
                text = await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }

    def value(name: str, endpoint: str, kind: str, **labels: str) -> float:
        key = {"region": "r", "endpoint": endpoint, "kind": kind, **labels}
        return samples[name, tuple(sorted(key.items()))]

    assert value("healthcheck_icmp_packet_loss_ratio", "ping", "icmp") == 0
    assert value("healthcheck_checks_total", "pop3", "starttls", result="success") >= 1
    assert value("healthcheck_check_errors_total", "pop3", "starttls", error="tls") == 0
    assert value("healthcheck_checks_total", "domain", "dns", result="success") >= 1
    assert servers["rdap"].asked == ["example.com"]  # kept, not asked every second
