"""The prober's own trouble is told apart from the target's: error classes, the daemon's
health verdict, the exporter's connection budget, and logs that a flood cannot flood."""

from __future__ import annotations

import errno
import io
import logging
import os

import pytest

from alerting.rules import SelfCheck, daemon_health
from healthcheck.connections import (
    ACCEPTED_AHEAD,
    FD_RESERVE,
    MIN_CONNECTIONS,
    connection_budget,
)
from healthcheck.logs import RepeatFilter
from healthcheck.probes.base import classify_exception
from healthcheck.result import ErrorClass


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.EMFILE, os.strerror(errno.EMFILE)), ErrorClass.PROBER),
        (OSError(errno.ENFILE, os.strerror(errno.ENFILE)), ErrorClass.PROBER),
        (OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS)), ErrorClass.PROBER),
        (OSError(errno.ENOMEM, os.strerror(errno.ENOMEM)), ErrorClass.PROBER),
        (MemoryError(), ErrorClass.PROBER),
        (OSError(errno.EHOSTUNREACH, os.strerror(errno.EHOSTUNREACH)), ErrorClass.NETWORK),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), ErrorClass.CONNECTION_REFUSED),
    ],
)
def test_a_local_shortage_is_the_probers_error_class(exc: BaseException, expected) -> None:
    error, text = classify_exception(exc)
    assert error is expected
    if expected is ErrorClass.PROBER:
        assert "prober" in text


def test_prober_faults_raise_the_daemons_health_alert_not_the_targets() -> None:
    healthy = daemon_health(SelfCheck(), lag_limit=1.0, storage_limit=60.0)
    assert not healthy.active
    faulty = daemon_health(
        SelfCheck(prober_faults=3, prober_fault="eu/api: Too many open files (in the prober)"),
        lag_limit=1.0,
        storage_limit=60.0,
    )
    assert faulty.active
    assert "3 check(s)" in faulty.summary and "Too many open files" in faulty.summary


@pytest.mark.parametrize(
    ("configured", "probes", "limit", "expected"),
    [
        (256, 500, None, 256),  # no limit: as configured
        (256, 500, 1_048_576, 256),
        (256, 20, 256, 256 - 20 - FD_RESERVE - ACCEPTED_AHEAD),  # what the probes leave
        (512, 500, 1024, 1024 - 500 - FD_RESERVE - ACCEPTED_AHEAD),
        (256, 500, 600, MIN_CONNECTIONS),  # never none: /healthz must get through
    ],
)
def test_the_exporter_keeps_file_descriptors_back_for_probes(
    configured, probes, limit, expected
) -> None:
    assert connection_budget(configured, probes, limit) == expected


def test_repeated_errors_are_logged_at_a_bounded_rate() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RepeatFilter(burst=3, window=60.0))
    logger = logging.getLogger("test.repeats")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    for _ in range(1000):
        logger.error("socket.accept() out of system resource")
    logger.error("another problem")
    logger.info("a status change")
    logger.info("a status change")
    lines = stream.getvalue().splitlines()
    assert lines.count("socket.accept() out of system resource") == 3
    assert lines[-3:] == ["another problem", "a status change", "a status change"]
    # Once the window has passed, the next one says how many were held back.
    record = logging.makeLogRecord(
        {"name": "test.repeats", "levelno": logging.ERROR, "levelname": "ERROR"}
    )
    record.msg = "socket.accept() out of system resource"
    record.created += 61
    assert handler.filters[0].filter(record)
    assert record.getMessage().endswith("(and 997 more like this, not logged)")
