"""A probe kind defined outside the product, as a third party would: `kind: echo` sends one
line to a TCP echo server and reads it back. It declares everything a kind can (config keys,
error classes, a placeholder, metric families, an alert rule) and is registered only by an
entry point, to show that a new kind needs no edit in the core."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from healthcheck import schema
from healthcheck.conditions import ConditionContext
from healthcheck.probes.base import NETWORK_ERRORS, Probe
from healthcheck.probes.plugin import (
    AlertRule,
    Finding,
    Gauges,
    Histogram,
    KindMetrics,
    Reading,
    error_class,
)
from healthcheck.result import ErrorClass, ProbeResult
from healthcheck.schema import Option
from healthcheck.targets import Endpoint

# The kind's own error class: in its results, the `error` label of /metrics, storage and the
# API by this name, declared here and nowhere else.
GARBLED = error_class("garbled", "the echo server answered other text than was sent", "echo")


@dataclass(frozen=True, slots=True)
class EchoSettings:
    address: tuple[str, int]
    message: str
    lines: int


def _message(value: Any) -> str:
    text = schema.text(value)
    if not text or "\n" in text:
        raise ValueError(f"expected one line of text, got {text!r}")
    return text


def round_trip_seconds(result: ProbeResult) -> float | None:
    milliseconds = dict(result.details).get("round_trip_ms")
    return milliseconds / 1000 if isinstance(milliseconds, int | float) else None


def answer_length(result: ProbeResult) -> int | None:
    answer = dict(result.details).get("echo")
    return len(answer) if isinstance(answer, str) else None


def echo_gauges(rows: list[Reading]) -> Iterator[Gauges]:
    length = Gauges("healthcheck_echo_answer_bytes", "Length of the last answer")
    for labels, _, value in rows:
        length.add(labels, value)
    yield length


def judge_garbled(result: ProbeResult, degraded: bool) -> Finding:
    garbled = result.error is GARBLED
    text = f"{result.target_id}: echo {'garbled: ' + str(result.error_text) if garbled else 'ok'}"
    return Finding(garbled, "warning", text)


class EchoProbe(Probe):
    kind = "echo"
    settings = EchoSettings
    options = {
        "address": Option(schema.address, help="host:port of the echo server"),
        "message": Option(_message, "ping", "the line to send"),
        "lines": Option(schema.integer(1, 10), 1, "times to send it"),
    }
    placeholders = frozenset({"ECHO", "CONNECTED", "RESPONSE_TIME"})
    errors = (*NETWORK_ERRORS, GARBLED, ErrorClass.CONDITION_FAILED)
    metrics = KindMetrics(
        histograms=(
            Histogram(
                "healthcheck_echo_round_trip_seconds",
                "From sending the line to its echo",
                (0.001, 0.01, 0.1, 1.0),
                round_trip_seconds,
            ),
        ),
        reading=answer_length,
        gauges=echo_gauges,
    )
    alert_rules = (AlertRule("echo_garbled", "HealthcheckEchoGarbled", judge_garbled),)

    async def attempt(self, target: Endpoint) -> ProbeResult:
        settings: EchoSettings = target.settings
        started, timestamp = time.perf_counter(), self.clock()
        reader, writer = await asyncio.open_connection(*settings.address)
        try:
            sent = time.perf_counter()
            for _ in range(settings.lines):
                writer.write(settings.message.encode() + b"\n")
                await writer.drain()
                answer = (await reader.readline()).decode(errors="replace").rstrip("\n")
            round_trip = time.perf_counter() - sent
        finally:
            writer.close()
        details = (("echo", answer), ("round_trip_ms", round(round_trip * 1000, 3)))
        verdict = None
        if answer != settings.message:
            verdict = (GARBLED, f"sent {settings.message!r}, got {answer!r}")
        context = ConditionContext(connected=True, values={"ECHO": answer})
        return self.judged(target, context, started, timestamp, verdict=verdict, details=details)
