"""Secret values from `${ENV}` interpolation: never printed, and scrubbed from any text."""

from __future__ import annotations

import base64
import contextlib
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass

from healthcheck.errors import ConfigError

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


# What a `${VAR}` that is not set reads as while a command that never uses secrets loads the
# configuration: 32 letters and digits pass the checks a push token, a header or the parts of
# an Apprise URL get, so those keys are still validated.
UNSET_PLACEHOLDER = "unset" + "0" * 27


@dataclass(frozen=True, slots=True)
class UnsetVariable:
    """A `${VAR}` not set in the environment, and the key path it was written at."""

    name: str
    path: str

    def describe(self) -> str:
        return f"environment variable {self.name} is not set"


class UnsetSecret(Secret):
    """A value built from a `${VAR}` that is not set, loaded for a command that never uses a
    secret's value (`status`, `routes test`, `silence`). Until the loader seals it, it reads
    as UNSET_PLACEHOLDER so that its key is validated; after, `reveal()` raises, so nothing
    can send or probe with it."""

    __slots__ = ("_sealed", "variable")

    def __init__(self, value: str, variable: UnsetVariable) -> None:
        super().__init__(value)
        self.variable = variable
        self._sealed = False

    def seal(self) -> None:
        self._sealed = True

    def reveal(self) -> str:
        if self._sealed:
            raise ConfigError(self.variable.describe(), path=self.variable.path)
        return super().reveal()


def reveal(value: str | Secret) -> str:
    """The real text of a value that may or may not be secret."""
    return value.reveal() if isinstance(value, Secret) else value


CUT_MARK = "…"


def cut(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, a cut marked so that a Redactor run after it
    still takes off the head of a secret the cut fell inside."""
    return text if len(text) <= limit else text[: limit - 1] + CUT_MARK


class Redactor:
    """Replaces every known secret value in a text with ***; shared by logs and outputs.

    A peer or a library may write a secret other than as itself, so it is found in any case,
    percent-encoded (either hex case, `+` for a space), backslash-escaped (`\\"`, `\\\\`,
    `\\u00e4`, `\\xc3`), as HTML entities, and base64-encoded anywhere in a longer token (the
    `user:password` of a basic-auth header), where the whole token goes. A text cut (`…` or
    `...`) inside a secret also loses the head of it left before the mark. All of it is one
    regular expression compiled once: this runs on every result and every log record."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        ordered = sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True)
        spelled = [[_spellings(ch) for ch in secret] for secret in ordered]
        cores = [core for secret in ordered for core in _base64_cores(secret)]
        # Whole and head in one branch per form: ~110 us for a 280-character text and 11
        # secrets, against ~190 us with separate branches (the plain alternation took ~70 us).
        branches = [_whole_or_head(chars, _PARTIAL_ESCAPE) for chars in spelled]
        if cores:
            encoded = "|".join(_whole_or_head(list(map(re.escape, core))) for core in cores)
            branches.append(f"(?P<encoded>(?-i:{encoded}))")
        self._pattern = re.compile("|".join(branches), re.IGNORECASE) if branches else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        spans: list[tuple[int, int]] = []
        for match in self._pattern.finditer(text):
            start, end = match.span()
            if match.lastgroup == "encoded":  # the whole base64 token: it says no less
                while start and text[start - 1] in _BASE64_LEFT:
                    start -= 1
                while end < len(text) and text[end] in _BASE64_RIGHT:
                    end += 1
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
        if not spans:
            return text
        pieces, kept = [], 0
        for start, end in spans:
            pieces += [text[kept:start], REDACTED]
            kept = end
        pieces.append(text[kept:])
        return "".join(pieces)


# A cut is marked; fewer characters of a secret than this left before the mark are let be.
_MIN_HEAD = 4
_CUT = rf"(?={CUT_MARK}|\.\.\.)"  # conditions cut with "..."
# A cut may fall inside the escape of one character: `%C3%A…`, `\u00…`, `&#22…`.
_PARTIAL_ESCAPE = r"(?:%[0-9a-f]{0,2}|\\+(?:u[0-9a-f]{0,3}|x[0-9a-f]{0,2})?|&#?x?[0-9a-z]{0,6})"
_PARTIAL_ESCAPE += "{0,3}"
_PLAIN = frozenset(string.ascii_letters + string.digits + "-._~")  # never escaped
_ENTITIES = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}
_CONTROL_ESCAPES = {"\n": "n", "\r": "r", "\t": "t", "\b": "b", "\f": "f"}
_BASE64_LEFT = frozenset(string.ascii_letters + string.digits + "+/-_")
_BASE64_RIGHT = _BASE64_LEFT | {"="}
_URLSAFE = str.maketrans("+/", "-_")


def _spellings(ch: str) -> str:
    """A pattern for one character of a secret in each way it is written in URLs, JSON,
    Python reprs and HTML."""
    if ch in _PLAIN:
        return re.escape(ch)
    code = ord(ch)
    utf8 = ch.encode()
    forms = [
        re.escape(ch),
        "".join(f"%{byte:02x}" for byte in utf8),
        "".join(f"\\\\+x{byte:02x}" for byte in utf8),  # b'\xc3\xa4'
    ]
    if code < 0x100 and len(utf8) > 1:  # Latin-1, as a str repr or an old form encoder
        forms += [f"%{code:02x}", f"\\\\+x{code:02x}"]
    if code > 0xFFFF:  # JSON writes a surrogate pair
        high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)
        forms += [f"\\\\+u{high:04x}\\\\+u{low:04x}", f"\\\\+U{code:08x}"]
    else:
        forms.append(f"\\\\+u{code:04x}")
    if ch == " ":
        forms.append(r"\+")
    elif ch == "\\":
        forms.append(r"\\+")  # escaped once or more: \\, \\\\
    elif ch.isascii() and ch.isprintable():
        forms.append(r"\\+" + re.escape(ch))  # \" \' \/
    if ch in _CONTROL_ESCAPES:
        forms.append(r"\\+" + _CONTROL_ESCAPES[ch])
    if ch in _ENTITIES:
        forms.append(f"&{_ENTITIES[ch]};")
    forms += [f"&#0*{code};", f"&#x0*{code:x};"]
    return "(?:" + "|".join(forms) + ")"


def _whole_or_head(chars: list[str], partial: str = "") -> str:
    """A pattern for the whole secret, or for its first _MIN_HEAD or more characters (and a
    `partial` escape) before a cut; one branch, so that each position is tried once."""
    if len(chars) <= _MIN_HEAD:
        return "".join(chars)
    rest = ""
    for char in reversed(chars[_MIN_HEAD:-1]):
        rest = f"(?:{char}{rest})?"
    return "".join(chars[:_MIN_HEAD]) + f"(?:{''.join(chars[_MIN_HEAD:])}|{rest}{partial}{_CUT})"


def _base64_cores(secret: str) -> list[str]:
    """The base64 characters that only the secret's bytes decide, at each of the three
    alignments it can have inside encoded text (`user:` before it shifts it), standard and
    URL-safe alphabets, of its UTF-8 and its Latin-1 bytes (aiohttp's basic auth)."""
    encodings = [secret.encode()]
    with contextlib.suppress(UnicodeEncodeError):
        if (latin1 := secret.encode("latin-1")) != encodings[0]:
            encodings.append(latin1)
    cores: list[str] = []
    for data in encodings:
        for offset in range(3):
            encoded = base64.b64encode(bytes(offset) + data).decode()
            core = encoded[-(-8 * offset // 6) : 8 * (offset + len(data)) // 6]
            if len(core) >= 8:  # shorter would match ordinary words
                cores += dict.fromkeys([core, core.translate(_URLSAFE)])
    return cores
