"""DNS probe through the system resolver; only names that resolve (or fail) without a network."""

from __future__ import annotations

import pytest

from healthcheck.probes.dns import DnsProbe, DnsSettings
from healthcheck.result import ErrorClass

LOOPBACK = {"127.0.0.1", "::1"}


async def test_localhost_resolves(endpoint):
    result = await DnsProbe().run(endpoint("dns", DnsSettings("localhost")))

    assert result.ok, result.error_text
    assert result.kind == "dns"
    addresses = dict(result.details)["addresses"].split(",")
    assert addresses
    assert set(addresses) <= LOOPBACK
    assert len(addresses) == len(set(addresses))


async def test_ipv4_family_gives_only_ipv4(endpoint):
    result = await DnsProbe().run(endpoint("dns", DnsSettings("localhost", family="ipv4")))

    assert result.ok, result.error_text
    assert dict(result.details)["addresses"] == "127.0.0.1"


async def test_an_address_literal_resolves_to_itself(endpoint):
    result = await DnsProbe().run(endpoint("dns", DnsSettings("127.0.0.1")))

    assert result.ok, result.error_text
    assert dict(result.details)["addresses"] == "127.0.0.1"


async def test_unknown_name_is_a_dns_error_naming_the_host(endpoint):
    # .invalid never resolves (RFC 6761); offline the resolver fails fast with EAI_AGAIN.
    result = await DnsProbe().run(endpoint("dns", DnsSettings("does-not-exist.invalid")))

    assert not result.ok
    assert result.error is ErrorClass.DNS
    assert "could not resolve does-not-exist.invalid" in result.error_text
    assert result.error_text.endswith(("no such host", "temporary resolver failure"))


async def test_ipv4_literal_asked_as_ipv6_is_a_dns_error(endpoint):
    result = await DnsProbe().run(endpoint("dns", DnsSettings("127.0.0.1", family="ipv6")))

    assert result.error is ErrorClass.DNS
    assert "could not resolve 127.0.0.1" in result.error_text


@pytest.mark.parametrize(
    "condition",
    [
        "[CONNECTED] == true",
        "[DNS_RCODE] == NOERROR",
        "[IP] == 127.0.0.1",
        "[BODY] == 127.0.0.1",
        "[RESPONSE_TIME] < 5000",
    ],
)
async def test_conditions_see_the_answer(endpoint, condition):
    target = endpoint("dns", DnsSettings("localhost", family="ipv4"), conditions=(condition,))

    result = await DnsProbe().run(target)

    assert result.ok, result.error_text
    assert result.conditions[0].passed


async def test_failed_condition_on_the_address(endpoint):
    target = endpoint(
        "dns", DnsSettings("localhost", family="ipv4"), conditions=("[IP] == 10.1.2.3",)
    )

    result = await DnsProbe().run(target)

    assert result.error is ErrorClass.CONDITION_FAILED
