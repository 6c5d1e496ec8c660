"""Error classes are an open set: the core declares those every kind shares, a kind its own.
One instance per name in a process, whatever way the name arrives (a worker's result, a
pickle, a stored row), so `is` comparisons hold; a name nobody here declared stays readable."""

from __future__ import annotations

import copy
import json
import pickle
import subprocess
import sys
import textwrap

import pytest

from healthcheck.probes.grpc_health import SERVICE_UNKNOWN
from healthcheck.result import (
    ErrorClass,
    ErrorClassConflict,
    ProbeResult,
    declare_error,
    declared_errors,
)
from healthcheck.worker_wire import decode_result, encode_result, unpack_batch


def test_a_name_is_one_instance_however_it_arrives() -> None:
    timeout = ErrorClass.TIMEOUT
    assert ErrorClass("timeout") is timeout
    assert pickle.loads(pickle.dumps(timeout)) is timeout
    assert copy.copy(timeout) is timeout and copy.deepcopy(timeout) is timeout
    assert pickle.loads(pickle.dumps(SERVICE_UNKNOWN)) is SERVICE_UNKNOWN
    # the same string everywhere it is written
    assert timeout == "timeout" and type(timeout.value) is str and str(timeout) == "timeout"
    assert f"{SERVICE_UNKNOWN}" == "service_unknown"
    assert json.dumps({"error": SERVICE_UNKNOWN}) == '{"error": "service_unknown"}'


def test_the_core_declares_only_what_every_kind_shares() -> None:
    core = {str(error) for error, declaration in declared_errors().items() if error.core}
    assert core == {
        "timeout",
        "connection_refused",
        "connection_reset",
        "dns",
        "tls",
        "http_status",
        "body_too_large",
        "invalid_response",
        "condition_failed",
        "network",
        "internal",
        "prober",
    }
    assert SERVICE_UNKNOWN.declared and not SERVICE_UNKNOWN.core
    assert SERVICE_UNKNOWN.declaration.owner == "grpc"


def test_a_name_nobody_declared_is_kept_with_its_string() -> None:
    """A stored row or a worker's result of a kind this process has not imported."""
    stranger = ErrorClass("unheard_of_here")
    assert (stranger.value, stranger.declared, stranger.meaning) == ("unheard_of_here", False, None)
    assert ErrorClass("unheard_of_here") is stranger
    assert pickle.loads(pickle.dumps(stranger)) is stranger
    # the kind's module imported later: the same instance, now with its meaning
    declared = declare_error("unheard_of_here", "a class declared after it was read", "late")
    assert declared is stranger and stranger.meaning == "a class declared after it was read"


def test_another_meaning_for_a_declared_name_is_refused_naming_both() -> None:
    with pytest.raises(ErrorClassConflict) as caught:
        declare_error("timeout", "the job ran too long", "batch")
    assert str(caught.value) == (
        "error class 'timeout' of batch means 'the job ran too long', but the core already "
        "declared it as 'no answer within the timeout'; give the kind's class a name of its own"
    )
    with pytest.raises(ErrorClassConflict, match="but grpc already declared it"):
        declare_error("service_unknown", "no such service here", "mykind")
    # the same meaning again is sharing it, not a clash
    meaning = SERVICE_UNKNOWN.meaning
    assert meaning is not None
    assert declare_error("service_unknown", meaning, "mykind") is SERVICE_UNKNOWN
    assert SERVICE_UNKNOWN.declaration.owner == "grpc"


@pytest.mark.parametrize(
    ("name", "meaning", "message"),
    [
        ("Bad-Name", "x", "use lower-case letters"),
        ("", "x", "use lower-case letters"),
        ("fine_name", "", "one line of text"),
        ("fine_name", "two\nlines", "one line of text"),
    ],
)
def test_a_declaration_is_a_plain_name_and_one_line(name: str, meaning: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        declare_error(name, meaning, "mykind")


def test_a_kind_class_crosses_from_a_worker_process_by_name() -> None:
    """The worker wire carries the name; the daemon gets its own instance: the kind's where it
    imported the kind, an undeclared one of that name where it did not."""
    child = textwrap.dedent(
        """
        import sys
        from healthcheck.probes.grpc_health import SERVICE_UNKNOWN
        from healthcheck.probes.plugin import error_class
        from healthcheck.result import ProbeResult
        from healthcheck.worker_wire import encode_result, pack_batch

        ONLY_HERE = error_class("only_in_the_worker", "a class the daemon never saw", "w")
        results = [
            ProbeResult("r", "a", "grpc", False, 0.1, 1.0, SERVICE_UNKNOWN, "no such service"),
            ProbeResult("r", "b", "w", False, 0.1, 1.0, ONLY_HERE, "odd"),
        ]
        batch = ([encode_result(result) for result in results], None, 0, [], 0)
        sys.stdout.buffer.write(pack_batch(batch))
        """
    )
    sent = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, check=True, timeout=60
    ).stdout
    events = unpack_batch(sent[5:])[0]  # after the frame header
    known, stranger = (decode_result(values) for values in events)
    assert known.error is SERVICE_UNKNOWN
    assert stranger.error is ErrorClass("only_in_the_worker")
    assert (stranger.error.value, stranger.error.declared) == ("only_in_the_worker", False)
    # encoded again, it is the same plain name
    assert encode_result(known)[6] == "service_unknown"


def test_a_result_keeps_its_class_through_a_pickle() -> None:
    result = ProbeResult("r", "a", "grpc", False, 0.1, 1.0, SERVICE_UNKNOWN, "no such service")
    assert pickle.loads(pickle.dumps(result)).error is SERVICE_UNKNOWN
