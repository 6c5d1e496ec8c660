"""TLS probe against real loopback TLS servers with certificates from a test CA."""

from __future__ import annotations

import ssl
import time
from datetime import UTC, datetime, timedelta

import pytest
import trustme

from healthcheck.probes.tls import TlsContexts, TlsProbe, TlsSettings, der_not_after
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
def tls_target(endpoint, ca_file):
    """A TLS endpoint for a local port, trusting only the test CA unless told otherwise."""

    def make(port, *, conditions=(), timeout=5.0, **tls):
        options = TlsOptions(**{"ca_file": ca_file, **tls})
        settings = TlsSettings(("127.0.0.1", port), options)
        return endpoint("tls", settings, conditions=conditions, timeout=timeout)

    return make


@pytest.fixture
def valid_cert(ca) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture
def expired_cert(ca) -> trustme.LeafCert:
    return ca.issue_cert(
        "127.0.0.1",
        not_before=datetime(2020, 1, 1, tzinfo=UTC),
        not_after=datetime(2021, 1, 1, tzinfo=UTC),
    )


async def test_valid_certificate_is_ok_with_expiry_and_details(serve, tls_target, valid_cert):
    port = await serve(tls=server_context(valid_cert))

    result = await TlsProbe().run(tls_target(port))

    assert result.ok, result.error_text
    assert result.kind == "tls"
    assert result.cert_expiry is not None
    assert result.cert_expiry > time.time() + 365 * 86400  # trustme's default: year 3000
    details = dict(result.details)
    assert details["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert details["cert_subject"].startswith("O=trustme")
    assert "Testing CA" in details["cert_issuer"]
    assert details["days_left"] > 365


async def test_expiration_condition_passes_for_a_long_lived_certificate(
    serve, tls_target, valid_cert
):
    port = await serve(tls=server_context(valid_cert))
    target = tls_target(
        port,
        conditions=("[CONNECTED] == true", "[CERTIFICATE_EXPIRATION] > 48h", "[IP] == 127.0.0.1"),
    )

    result = await TlsProbe().run(target)

    assert result.ok, result.error_text
    assert all(outcome.passed for outcome in result.conditions)


async def test_certificate_expiring_tomorrow_fails_a_48h_condition(serve, tls_target, ca):
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    cert = ca.issue_cert("127.0.0.1", not_after=not_after)
    port = await serve(tls=server_context(cert))

    result = await TlsProbe().run(tls_target(port, conditions=("[CERTIFICATE_EXPIRATION] > 48h",)))

    assert not result.ok
    assert result.error is ErrorClass.CONDITION_FAILED
    assert "[CERTIFICATE_EXPIRATION] > 48h" in result.error_text
    assert result.cert_expiry == not_after.timestamp()
    assert dict(result.details)["days_left"] == 1.0


@pytest.fixture
def other_host_cert(ca) -> trustme.LeafCert:
    return ca.issue_cert("other.example")


@pytest.mark.parametrize(
    ("tls", "cert", "reason"),
    [
        pytest.param({}, "expired_cert", "certificate has expired", id="expired"),
        pytest.param(
            {"ca_file": None}, "valid_cert", "unable to get local issuer", id="unknown-ca"
        ),
        pytest.param({}, "other_host_cert", "IP address mismatch", id="ip-not-in-cert"),
        pytest.param(
            {"server_name": "wrong.example"}, "valid_cert", "Hostname mismatch", id="wrong-sni"
        ),
    ],
)
async def test_verification_failures_are_tls_errors_naming_the_reason(
    serve, tls_target, request, tls, cert, reason
):
    port = await serve(tls=server_context(request.getfixturevalue(cert)))

    result = await TlsProbe().run(tls_target(port, **tls))

    assert not result.ok
    assert result.error is ErrorClass.TLS
    assert result.error_text.startswith("certificate verify failed: ")
    assert reason in result.error_text
    assert result.cert_expiry is None


async def test_server_name_is_checked_instead_of_the_address(serve, tls_target, ca):
    cert = ca.issue_cert("api.internal")
    port = await serve(tls=server_context(cert))

    result = await TlsProbe().run(tls_target(port, server_name="api.internal"))

    assert result.ok, result.error_text


async def test_verify_false_accepts_an_expired_certificate_and_still_reads_its_expiry(
    serve, tls_target, expired_cert
):
    port = await serve(tls=server_context(expired_cert))

    result = await TlsProbe().run(tls_target(port, verify=False, ca_file=None))

    assert result.ok, result.error_text
    assert result.cert_expiry == datetime(2021, 1, 1, tzinfo=UTC).timestamp()
    assert dict(result.details)["days_left"] < 0


async def test_verify_false_expiry_agrees_with_the_verified_one(serve, tls_target, valid_cert):
    port = await serve(tls=server_context(valid_cert))
    probe = TlsProbe()

    verified = await probe.run(tls_target(port))
    unverified = await probe.run(tls_target(port, verify=False))

    assert verified.ok and unverified.ok
    assert unverified.cert_expiry == verified.cert_expiry


async def test_expired_certificate_fails_an_expiration_condition_with_verify_false(
    serve, tls_target, expired_cert
):
    port = await serve(tls=server_context(expired_cert))
    target = tls_target(port, verify=False, conditions=("[CERTIFICATE_EXPIRATION] > 0",))

    result = await TlsProbe().run(target)

    assert result.error is ErrorClass.CONDITION_FAILED


async def test_plain_tcp_server_answering_garbage_is_a_tls_error(serve, tls_target):
    async def garbage(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    port = await serve(garbage)

    result = await TlsProbe().run(tls_target(port))

    assert not result.ok
    assert result.error is ErrorClass.TLS
    assert result.error_text.startswith("TLS handshake failed")


async def test_closed_port_is_connection_refused(closed_port, tls_target):
    result = await TlsProbe().run(tls_target(closed_port))

    assert result.error is ErrorClass.CONNECTION_REFUSED


async def test_server_that_never_answers_the_handshake_times_out(serve, tls_target):
    port = await serve()  # plain TCP that accepts and stays silent

    result = await TlsProbe().run(tls_target(port, timeout=0.3))

    assert result.error is ErrorClass.TIMEOUT
    assert result.error_text == "no answer within 0.3s"


async def test_missing_ca_file_is_a_tls_error_naming_the_file(
    serve, tls_target, valid_cert, tmp_path
):
    port = await serve(tls=server_context(valid_cert))
    missing = str(tmp_path / "missing.pem")

    result = await TlsProbe().run(tls_target(port, ca_file=missing))

    assert result.error is ErrorClass.TLS
    assert missing in result.error_text
    assert "No such file" in result.error_text


def test_contexts_are_cached_per_verify_and_ca_file(ca_file):
    contexts = TlsContexts()

    pinned = contexts.get(True, ca_file)

    assert isinstance(pinned, ssl.SSLContext)
    assert pinned.verify_mode is ssl.CERT_REQUIRED and pinned.check_hostname
    assert contexts.get(True, ca_file) is pinned
    assert contexts.get(True, None) is not pinned
    assert contexts.get(False, ca_file) is False
    unverified = contexts.context(False, ca_file)
    assert unverified.verify_mode is ssl.CERT_NONE and not unverified.check_hostname
    assert contexts.context(False, None) is unverified


@pytest.mark.parametrize(
    "der",
    [b"", b"\x30", b"\x30\x05\x30\x03\x02\x01\x01", b"not a certificate at all"],
    ids=["empty", "truncated", "too-few-fields", "text"],
)
def test_unreadable_der_gives_no_expiry(der):
    assert der_not_after(der) is None


@pytest.mark.parametrize(
    "not_after",
    [
        datetime(2021, 1, 1, tzinfo=UTC),
        datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2050, 1, 1, tzinfo=UTC),
        datetime(3000, 1, 1, tzinfo=UTC),
    ],
    ids=["utctime", "last-utctime", "first-generalizedtime", "far-future"],
)
def test_der_expiry_matches_the_certificate(ca, not_after):
    cert = ca.issue_cert(
        "127.0.0.1", not_before=datetime(2020, 1, 1, tzinfo=UTC), not_after=not_after
    )
    der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())

    assert der_not_after(der) == not_after.timestamp()
