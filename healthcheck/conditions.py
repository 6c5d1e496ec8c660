"""Gatus-compatible condition expressions, parsed once at config load, evaluated per check."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from healthcheck.result import ConditionOutcome

_UNSET: Any = object()


class ConditionSyntaxError(ValueError):
    """A condition that cannot be parsed; `position` is the 0-based column of the problem."""

    def __init__(self, message: str, position: int) -> None:
        self.message = message
        self.position = position
        super().__init__(f"{message} at column {position + 1}")


@dataclass(slots=True)
class ConditionContext:
    """What one check observed, for conditions to read. Times in ms, as Gatus users write them."""

    status: int | None = None
    response_time_ms: float | None = None
    body: bytes | None = None
    connected: bool | None = None
    certificate_expiration_s: float | None = None  # seconds until the peer certificate expires
    ip: str | None = None
    dns_rcode: str | None = None
    _json: Any = field(default=_UNSET, repr=False)

    def body_json(self) -> Any:
        """The body parsed as JSON once, or raise ValueError if it is not JSON."""
        if self._json is _UNSET:
            try:
                self._json = json.loads(self.body or b"")
            except ValueError:
                self._json = ValueError("the body is not valid JSON")
        if isinstance(self._json, ValueError):
            raise self._json
        return self._json


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition; `placeholders` names those it reads (e.g. {"STATUS", "BODY"})."""

    text: str
    placeholders: frozenset[str]

    def evaluate(self, context: ConditionContext) -> ConditionOutcome:
        """Whether the condition holds for this check, with what was seen."""
        return ConditionOutcome(self.text, False, "not implemented yet")  # helper completes


def parse_condition(text: str) -> Condition:
    """Parse one condition; raise ConditionSyntaxError with the column of the problem."""
    raise ConditionSyntaxError("not implemented yet", 0)  # helper completes
