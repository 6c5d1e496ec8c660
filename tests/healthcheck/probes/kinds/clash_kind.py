"""A kind that declares an error class another kind (echo) already declared with another
meaning: refused when the kind is loaded, naming both, not silently merged."""

from __future__ import annotations

from healthcheck.probes.plugin import error_class
from healthcheck.probes.tcp import TcpProbe

GARBLED = error_class("garbled", "the answer was not valid UTF-8", "clash")


class ClashProbe(TcpProbe):
    kind = "clash"
    errors = (*TcpProbe.errors, GARBLED)
