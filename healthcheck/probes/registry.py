"""The probe kinds, one registry line each: kind → the class that checks it, imported on the
kind's first use, so a command pays only for what its configuration has (the canaries bring
numpy: 0.2 s of a 0.9 s start-up when every kind was imported up front)."""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from healthcheck.probes.base import Probe

KINDS: dict[str, str] = {
    "http": "healthcheck.probes.http:HttpProbe",
    "tcp": "healthcheck.probes.tcp:TcpProbe",
    "tls": "healthcheck.probes.tls:TlsProbe",
    "dns": "healthcheck.probes.dns:DnsProbe",
    "onnx": "inference_probe.local:OnnxProbe",
    "inference": "inference_probe.remote:InferenceProbe",
}


@cache
def probe_kind(kind: str) -> type[Probe]:
    """The class of `kind`, its module imported now if this is its first use; KeyError for a
    kind that is not in KINDS."""
    module, _, name = KINDS[kind].partition(":")
    probe: type[Probe] = getattr(importlib.import_module(module), name)
    if probe.kind != kind:
        raise LookupError(f"{KINDS[kind]} checks {probe.kind!r}, registered as {kind!r}")
    return probe
