"""Secret values from `${ENV}` interpolation: never printed, and scrubbed from any text."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"


class Secret:
    """A string that shows as *** in repr, str, logs and JSON; `reveal()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        # Readers echo a bad value with !r: the message should read '***', not a class name.
        return repr(REDACTED)

    def __str__(self) -> str:
        return REDACTED

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def reveal(value: str | Secret) -> str:
    """The real text of a value that may or may not be secret."""
    return value.reveal() if isinstance(value, Secret) else value


class Redactor:
    """Replaces every known secret value in a text with ***; shared by logs and outputs.
    Matching ignores case: an error message may echo a value upper- or lower-cased."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(map(re.escape, ordered)), re.IGNORECASE) if ordered else None
        )

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)
