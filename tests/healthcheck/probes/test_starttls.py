"""STARTTLS probe against real servers on loopback: aiosmtpd for SMTP, and small real IMAP and
POP3 servers (tests/support/mail_servers.py), each upgrading with a test CA's certificate."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import pytest
import trustme
from mail_servers import MailServer, mail_server, smtp_starttls

from healthcheck.probes.starttls import StartTlsProbe, StartTlsSettings
from healthcheck.result import ErrorClass
from healthcheck.schema import TlsOptions


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca, tmp_path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def good_tls(ca) -> ssl.SSLContext:
    return server_context(ca.issue_cert("127.0.0.1", "localhost"))


@pytest.fixture
def target(endpoint, ca_file):
    def make(port: int, protocol: str, *, conditions=(), **tls):
        options = TlsOptions(**{"ca_file": ca_file, **tls})
        settings = StartTlsSettings(("127.0.0.1", port), protocol, options)
        return endpoint("starttls", settings, conditions=conditions, timeout=10.0)

    return make


async def test_smtp_upgrades_and_the_certificate_is_judged(target, good_tls) -> None:
    with smtp_starttls(good_tls) as port:
        result = await StartTlsProbe().run(
            target(port, "smtp", conditions=("[CERTIFICATE_EXPIRATION] > 720h",))
        )

    assert result.ok, result.error_text
    assert result.kind == "starttls"
    assert result.cert_expiry is not None
    details = dict(result.details)
    assert details["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert "Testing CA" in details["cert_issuer"]
    assert result.conditions[0].passed


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
async def test_imap_and_pop3_upgrade(target, good_tls, protocol) -> None:
    async with mail_server(protocol, good_tls) as port:
        result = await StartTlsProbe().run(
            target(port, protocol, conditions=("[IP] == 127.0.0.1",))
        )

    assert result.ok, result.error_text
    assert dict(result.details)["cert_subject"].startswith("O=trustme")


async def test_an_expiring_certificate_fails_its_condition(ca, target) -> None:
    soon = ca.issue_cert("127.0.0.1", not_after=datetime(2999, 1, 1, tzinfo=UTC))
    async with mail_server("imap", server_context(soon)) as port:
        result = await StartTlsProbe().run(
            target(port, "imap", conditions=("[CERTIFICATE_EXPIRATION] > 400000d",))
        )

    assert result.error is ErrorClass.CONDITION_FAILED
    assert "[CERTIFICATE_EXPIRATION] was" in (result.error_text or "")


async def test_smtp_without_starttls_says_so(target) -> None:
    with smtp_starttls(None) as port:
        result = await StartTlsProbe().run(target(port, "smtp"))

    assert result.error is ErrorClass.INVALID_RESPONSE
    assert result.error_text == (
        "SMTP server does not offer STARTTLS (not among its EHLO extensions)"
    )


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        ("imap", "IMAP server does not offer STARTTLS (not among its CAPABILITY)"),
        ("pop3", "POP3 server does not offer STLS (not among its CAPA)"),
    ],
)
async def test_a_server_not_offering_the_upgrade_says_so(target, good_tls, protocol, message):
    async with mail_server(protocol, good_tls, MailServer(offers_tls=False)) as port:
        result = await StartTlsProbe().run(target(port, protocol))

    assert result.error is ErrorClass.INVALID_RESPONSE
    assert result.error_text == message


@pytest.mark.parametrize(
    ("protocol", "greeting", "message"),
    [
        ("imap", "* BYE too busy", "bad IMAP greeting '* BYE too busy', expected '* OK'"),
        ("pop3", "-ERR go away", "bad POP3 greeting '-ERR go away', expected '+OK'"),
    ],
)
async def test_a_bad_greeting_says_so(target, good_tls, protocol, greeting, message) -> None:
    async with mail_server(protocol, good_tls, MailServer(greeting=greeting)) as port:
        result = await StartTlsProbe().run(target(port, protocol))

    assert result.error is ErrorClass.INVALID_RESPONSE
    assert result.error_text == message


async def test_speaking_the_wrong_protocol_is_a_bad_greeting(target, good_tls) -> None:
    async with mail_server("pop3", good_tls) as port:
        result = await StartTlsProbe().run(target(port, "smtp"))

    assert result.error is ErrorClass.INVALID_RESPONSE
    assert result.error_text == "bad SMTP greeting '+OK POP3 test server ready', expected 220"


async def test_an_untrusted_certificate_fails_the_handshake(target, good_tls, tmp_path) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    async with mail_server("pop3", good_tls) as port:
        result = await StartTlsProbe().run(target(port, "pop3", ca_file=str(other)))

    assert result.error is ErrorClass.TLS
    assert (result.error_text or "").startswith("certificate verify failed")


async def test_a_wrong_server_name_fails_unless_verify_is_off(target, good_tls) -> None:
    async with mail_server("imap", good_tls) as port:
        wrong = await StartTlsProbe().run(target(port, "imap", server_name="mail.example.com"))
        unverified = await StartTlsProbe().run(
            target(port, "imap", server_name="mail.example.com", verify=False)
        )

    assert wrong.error is ErrorClass.TLS
    assert "mail.example.com" in (wrong.error_text or "")
    assert unverified.ok, unverified.error_text
    assert unverified.cert_expiry is not None  # read from the DER when not verified


async def test_a_server_that_hangs_up_once_is_retried(endpoint, ca_file, good_tls) -> None:
    async with mail_server(
        "pop3", good_tls, MailServer(hang_up_first=2)
    ) as port:  # once, then retried
        settings = StartTlsSettings(("127.0.0.1", port), "pop3", TlsOptions(ca_file=ca_file))
        once = await StartTlsProbe().run(endpoint("starttls", settings, timeout=10.0))
        retried = await StartTlsProbe().run(endpoint("starttls", settings, timeout=10.0, retries=1))

    assert once.error is ErrorClass.INVALID_RESPONSE
    assert once.error_text == "POP3 server closed the connection, waiting for its greeting"
    assert retried.ok, retried.error_text
    assert retried.attempts == 2


async def test_a_closed_port_is_refused(target, closed_port) -> None:
    result = await StartTlsProbe().run(target(closed_port, "smtp"))

    assert result.error is ErrorClass.CONNECTION_REFUSED
