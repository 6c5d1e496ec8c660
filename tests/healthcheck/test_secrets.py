"""The Redactor over the forms a peer or a library writes a secret in, whole and cut."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable
from urllib.parse import quote, quote_plus

import pytest

from healthcheck.prober import one_line
from healthcheck.secrets import REDACTED, Redactor, cut

# Longer than every cut (conditions 80, aiohttp's message 120), with a space, a quote, a
# backslash, a plus and letters outside ASCII: each is written differently by someone.
SECRET = 'Zq8-P\u00e4ssw\u00f6rd "k7" back\\slash+w9 ' + "Xr4Tn8Ly2Hc6Jb0Vd5Mq" * 6
SHORTEST_LEAK = 6  # no run this long of any form of the secret may remain


def _basic(user: str, encoding: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{SECRET}".encode(encoding)).decode()


ENCODINGS: dict[str, Callable[[str], str]] = {
    "itself": lambda s: s,
    "upper case": str.upper,
    "percent-encoded": lambda s: quote(s, safe=""),
    "percent-encoded, lowercase hex": lambda s: quote(s, safe="").lower(),
    "form-encoded, + for space": lambda s: quote_plus(s, safe=""),
    "percent-encoded as a URL path": lambda s: quote(s),
    # escaped forms without their quotes: those are not the secret's
    "JSON string": lambda s: json.dumps(s)[1:-1],
    "JSON string, UTF-8 kept": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "JSON inside JSON": lambda s: json.dumps(json.dumps(s))[3:-3],
    "Python repr": lambda s: repr(s)[1:-1],
    "bytes repr": lambda s: repr(s.encode())[2:-1],
    "HTML-escaped": html.escape,
    "base64": lambda s: base64.b64encode(s.encode()).decode(),
    "base64, URL-safe": lambda s: base64.urlsafe_b64encode(s.encode()).decode(),
    "basic auth, Latin-1 (aiohttp)": lambda s: _basic("user", "latin-1"),
    "basic auth, UTF-8, other alignment": lambda s: _basic("ops", "utf-8"),
    "basic auth, third alignment": lambda s: _basic("root", "utf-8"),
}


def pieces(text: str) -> set[str]:
    """Every run of SHORTEST_LEAK characters of `text`, lower-cased."""
    lowered = text.lower()
    return {lowered[i : i + SHORTEST_LEAK] for i in range(len(lowered) - SHORTEST_LEAK + 1)}


def leaked(output: str, form: str) -> set[str]:
    """Runs of the secret's form (and of the secret itself) still in the output."""
    if form.startswith("Basic "):  # the first 8 say no more than the user name
        form = form.removeprefix("Basic ")[8:]
    return pieces(output) & (pieces(form) | pieces(SECRET))


@pytest.fixture(scope="module")
def redact() -> Redactor:
    return Redactor([SECRET, "tok-Q7x9ZK2mW4"])


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_every_form_of_a_secret_goes(redact, encode) -> None:
    form = encode(SECRET)
    output = redact(f"upstream said: {form} (end)")
    assert output.startswith("upstream said: ") and output.endswith(" (end)")
    assert REDACTED in output
    assert leaked(output, form) == set(), output


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
@pytest.mark.parametrize("mark", ["…", "..."])
def test_a_cut_inside_a_secret_leaves_no_head_of_it(redact, encode, mark) -> None:
    """Texts are cut (conditions at 80 with '...', others with '…'): wherever the cut falls
    inside a secret, what is left of it before the mark goes too."""
    form = encode(SECRET)
    text = f"header: {form} and more"
    for length in range(len("header: ") + SHORTEST_LEAK, len("header: ") + len(form)):
        output = redact(text[:length] + mark)
        assert leaked(output, form) == set(), output


def test_cut_then_one_line_marks_the_cut_so_the_head_can_go(redact) -> None:
    text = one_line("x" * 250 + quote(SECRET))
    assert text.endswith("…") and leaked(redact(text), quote(SECRET)) == set()
    assert cut("short", 10) == "short" and cut("0123456789abc", 10) == "012345678…"


@pytest.mark.parametrize(
    "text",
    [
        "condition '[BODY].status == UP' failed ([BODY].status was 'DOWN')",
        "HTTP 500, expected 2xx",
        "Basic dXNlcjpvdGhlcg==",  # base64 of another password
        "tok…",  # three characters of a secret before a cut are let be
        "Zq8-",
    ],
)
def test_texts_without_a_secret_are_left_alone(redact, text) -> None:
    assert redact(text) == text


def test_a_secret_is_found_at_once_however_many_there_are() -> None:
    """One pattern for all of them: a secret that contains another goes whole."""
    redact = Redactor(["abc-123-def", "abc-123-def-456-ghi", "ab"])
    assert redact("x abc-123-def-456-ghi y abc-123-def z ab") == "x *** y *** z ab"


def test_a_secret_too_short_for_a_base64_form_is_still_found() -> None:
    assert Redactor(["abcd"])("x abcd y ABCD") == "x *** y ***"
