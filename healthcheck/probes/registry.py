"""The probe kinds, one registry line each: kind → the class that checks it, imported on the
kind's first use, so a command pays only for what its configuration has (the canaries bring
numpy: 0.2 s of a 0.9 s start-up when every kind was imported up front).

A kind shipped elsewhere registers with `register_kind`, or as an entry point of the
`healthcheck.probe_kinds` group (`name = "package.module:Class"`), looked up only for a kind
name that is not registered yet.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from healthcheck.result import ErrorClass, ErrorClassConflict

if TYPE_CHECKING:
    from healthcheck.probes.base import Probe
    from healthcheck.probes.plugin import AlertRule

ENTRY_POINTS = "healthcheck.probe_kinds"

KINDS: dict[str, str] = {
    "http": "healthcheck.probes.http:HttpProbe",
    "tcp": "healthcheck.probes.tcp:TcpProbe",
    "tls": "healthcheck.probes.tls:TlsProbe",
    "dns": "healthcheck.probes.dns:DnsProbe",
    "grpc": "healthcheck.probes.grpc_health:GrpcProbe",
    "websocket": "healthcheck.probes.websocket:WebsocketProbe",
    "udp": "healthcheck.probes.udp:UdpProbe",
    "icmp": "healthcheck.probes.icmp:IcmpProbe",
    "starttls": "healthcheck.probes.starttls:StartTlsProbe",
    "push": "healthcheck.probes.push:PushProbe",
    "onnx": "inference_probe.local:OnnxProbe",
    "inference": "inference_probe.remote:InferenceProbe",
}


def register_kind(kind: str, where: str) -> None:
    """Add a kind checked by the class at `where` ("package.module:Class"), imported on first
    use; registering a name again for another class is an error."""
    module, _, name = where.partition(":")
    if not kind or not module or not name:
        raise ValueError(f"register {kind!r} as 'package.module:Class', not {where!r}")
    if KINDS.setdefault(kind, where) != where:
        raise ValueError(f"kind {kind!r} is already registered as {KINDS[kind]}")


def is_kind(kind: str) -> bool:
    """Whether `kind` is registered, or an installed entry point offers it (then registered)."""
    if kind in KINDS:
        return True
    from importlib.metadata import entry_points  # only here: a start-up cost every run avoids

    for point in entry_points(group=ENTRY_POINTS, name=kind):
        register_kind(kind, point.value)
        return True
    return False


def known_kinds() -> list[str]:
    """Every kind a configuration may name: registered, or offered by an entry point (which
    this registers)."""
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINTS):
        if point.name not in KINDS:
            register_kind(point.name, point.value)
    return sorted(KINDS)


@cache
def probe_kind(kind: str) -> type[Probe]:
    """The class of `kind`, its module imported now if this is its first use; KeyError for a
    kind that is neither registered nor offered by an entry point."""
    if not is_kind(kind):
        raise KeyError(kind)
    module, _, name = KINDS[kind].partition(":")
    try:
        probe: type[Probe] = getattr(importlib.import_module(module), name)
    except ErrorClassConflict as exc:
        raise LookupError(f"kind {kind!r} ({KINDS[kind]}): {exc}") from exc
    if probe.kind != kind:
        raise LookupError(f"{KINDS[kind]} checks {probe.kind!r}, registered as {kind!r}")
    undeclared = [error for error in probe.errors if not _is_declared(error)]
    if undeclared:
        raise LookupError(
            f"kind {kind!r} ({KINDS[kind]}) lists error classes nobody declared: "
            f"{', '.join(map(repr, undeclared))}; declare each in the kind's module with "
            "healthcheck.probes.plugin.error_class(name, meaning, kind)"
        )
    return probe


def _is_declared(error: object) -> bool:
    return isinstance(error, ErrorClass) and error.declared


def find_kind(kind: str) -> type[Probe] | None:
    """The class of `kind`, or None for a kind nobody registered (a result from elsewhere)."""
    try:
        return probe_kind(kind)
    except KeyError:
        return None


def every_alert_rule() -> list[AlertRule]:
    """The alert rules of every registered kind (importing each): for commands that name a
    rule without a configuration's kinds at hand."""
    return [rule for kind in list(KINDS) for rule in probe_kind(kind).alert_rules]
