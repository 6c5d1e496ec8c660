"""sd_notify over a real unix datagram socket, as systemd listens."""

from __future__ import annotations

import os
import socket
import time

from healthcheck.systemd_notify import Notifier


def listener(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    return sock


def test_messages_arrive_as_systemd_reads_them(tmp_path) -> None:
    sock = listener(tmp_path / "notify")
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert notifier.send(ready=1, status="3 endpoints: 3 healthy")
    assert sock.recv(4096) == b"READY=1\nSTATUS=3 endpoints: 3 healthy"
    sock.close()


def test_abstract_socket_addresses_are_understood() -> None:
    name = f"healthcheck-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    assert Notifier({"NOTIFY_SOCKET": "@" + name}).send(watchdog=1)
    assert sock.recv(100) == b"WATCHDOG=1"
    sock.close()


def test_a_manager_that_stops_reading_never_blocks_the_daemon(tmp_path) -> None:
    """The receive queue fills (net.unix.max_dgram_qlen, 10 by default) and stays full:
    each send must return at once, reporting the message lost, instead of blocking."""
    sock = listener(tmp_path / "notify")
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    started = time.monotonic()
    results = [notifier.send(watchdog=1) for _ in range(200)]
    assert time.monotonic() - started < 5  # a blocking send would never return at all
    assert results[0] is True
    assert results[-1] is False
    sock.close()


def test_watchdog_interval_is_half_the_timeout_and_only_for_our_pid() -> None:
    mine = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier({**mine, "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "nonsense"}).watchdog_interval is None


def test_without_a_manager_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.send(ready=1) is False
