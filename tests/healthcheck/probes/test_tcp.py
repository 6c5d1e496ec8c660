"""TCP probe against real loopback listeners."""

from __future__ import annotations

from healthcheck.probes.tcp import TcpProbe, TcpSettings
from healthcheck.result import ErrorClass


async def test_open_port_is_ok(serve, endpoint):
    port = await serve()

    result = await TcpProbe().run(endpoint("tcp", TcpSettings(("127.0.0.1", port))))

    assert result.ok, result.error_text
    assert result.error is None
    assert result.kind == "tcp"
    assert result.endpoint == "tcp-check"
    assert result.latency > 0


async def test_closed_port_is_connection_refused(closed_port, endpoint):
    result = await TcpProbe().run(endpoint("tcp", TcpSettings(("127.0.0.1", closed_port))))

    assert not result.ok
    assert result.error is ErrorClass.CONNECTION_REFUSED
    assert result.error_text == "connection refused"


async def test_connected_and_ip_conditions_pass(serve, endpoint):
    port = await serve()
    target = endpoint(
        "tcp",
        TcpSettings(("127.0.0.1", port)),
        conditions=("[CONNECTED] == true", "[IP] == 127.0.0.1", "[RESPONSE_TIME] < 5000"),
    )

    result = await TcpProbe().run(target)

    assert result.ok, result.error_text
    assert [outcome.passed for outcome in result.conditions] == [True, True, True]


async def test_failed_condition_makes_the_check_fail(serve, endpoint):
    port = await serve()
    target = endpoint("tcp", TcpSettings(("127.0.0.1", port)), conditions=("[IP] == 10.0.0.1",))

    result = await TcpProbe().run(target)

    assert not result.ok
    assert result.error is ErrorClass.CONDITION_FAILED
    assert "[IP] == 10.0.0.1" in result.error_text


async def test_retries_are_counted(closed_port, endpoint):
    target = endpoint("tcp", TcpSettings(("127.0.0.1", closed_port)), retries=2)

    result = await TcpProbe().run(target)

    assert result.error is ErrorClass.CONNECTION_REFUSED
    assert result.attempts == 3
