"""The probe kinds, one registry line each, and the Prober that runs any of them."""

from __future__ import annotations

import time
from dataclasses import replace
from types import TracebackType
from typing import Any

from healthcheck.probes.base import Clock, Probe
from healthcheck.probes.dns import DnsProbe
from healthcheck.probes.http import HttpProbe
from healthcheck.probes.tcp import TcpProbe
from healthcheck.probes.tls import TlsProbe
from healthcheck.result import ProbeResult
from healthcheck.secrets import Redactor, cut
from healthcheck.targets import Endpoint
from inference_probe.local import OnnxProbe
from inference_probe.remote import InferenceProbe

REGISTRY: dict[str, type[Probe]] = {
    HttpProbe.kind: HttpProbe,
    TcpProbe.kind: TcpProbe,
    TlsProbe.kind: TlsProbe,
    DnsProbe.kind: DnsProbe,
    OnnxProbe.kind: OnnxProbe,
    InferenceProbe.kind: InferenceProbe,
}


class Prober:
    """Owns one instance of each probe kind and checks any endpoint with the right one."""

    def __init__(self, redactor: Redactor | None = None, clock: Clock = time.time) -> None:
        self._probes = {kind: cls(clock) for kind, cls in REGISTRY.items()}
        self._redact = redactor or Redactor()

    async def __aenter__(self) -> Prober:
        for probe in self._probes.values():
            await probe.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for probe in self._probes.values():
            await probe.close()

    def use_secrets(self, redactor: Redactor) -> None:
        """A reloaded configuration may bring new secrets to scrub."""
        self._redact = redactor

    async def check(self, target: Endpoint) -> ProbeResult:
        """One check of one endpoint; secrets are scrubbed at the source from every text the
        result carries (error, condition texts and what they saw, string details)."""
        return self.scrub(await self._probes[target.kind].run(target))

    def scrub(self, result: ProbeResult) -> ProbeResult:
        redact = self._redact
        changes: dict[str, Any] = {}
        if result.error_text and (text := one_line(redact(result.error_text))) != result.error_text:
            changes["error_text"] = text
        conditions = tuple(
            replace(
                outcome,
                condition=redact(outcome.condition),
                detail=one_line(redact(outcome.detail)) if outcome.detail else outcome.detail,
            )
            for outcome in result.conditions
        )
        if conditions != result.conditions:
            changes["conditions"] = conditions
        details = tuple(
            (key, redact(value) if isinstance(value, str) else value)
            for key, value in result.details
        )
        if details != result.details:
            changes["details"] = details
        if result.degraded and redact(result.degraded) != result.degraded:
            changes["degraded"] = redact(result.degraded)
        return replace(result, **changes) if changes else result


# Error texts and what conditions saw can quote the peer (aiohttp quotes the bytes of a bad
# status line): they go to logs, alerts and pages as one line of printable text, capped.
MAX_TEXT = 300


def one_line(text: str) -> str:
    """`text` with whitespace runs as one space, other control characters as `?`, capped."""
    if text.isprintable() and len(text) <= MAX_TEXT:
        return text  # the common case, untouched
    flat = "".join(ch if ch.isprintable() else "?" for ch in " ".join(text.split()))
    return cut(flat, MAX_TEXT)
