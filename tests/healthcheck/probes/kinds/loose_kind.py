"""A kind that lists an error class nobody declared: refused when the kind is loaded."""

from __future__ import annotations

from healthcheck.probes.tcp import TcpProbe
from healthcheck.result import ErrorClass


class LooseProbe(TcpProbe):
    kind = "loose"
    errors = (*TcpProbe.errors, ErrorClass("half_open"))
