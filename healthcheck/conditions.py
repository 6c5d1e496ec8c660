"""Gatus-compatible condition expressions, parsed once at config load, evaluated per check."""

from __future__ import annotations

import contextlib
import difflib
import json
import operator
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from healthcheck.durations import format_duration, parse_duration
from healthcheck.result import ConditionOutcome

# What a JSON body parses to; every value a condition reads is one of these.
Json = None | bool | int | float | str | list["Json"] | dict[str, "Json"]
_FIELDS = {  # placeholder -> the ConditionContext field it reads
    "STATUS": "status",
    "RESPONSE_TIME": "response_time_ms",
    "BODY": "body",
    "CONNECTED": "connected",
    "CERTIFICATE_EXPIRATION": "certificate_expiration_s",
    "IP": "ip",
    "DNS_RCODE": "dns_rcode",
}
# The common ones: each kind's own placeholders are known only to its endpoints' conditions.
# [DOMAIN_EXPIRATION] (several kinds, read over RDAP) comes in ConditionContext.values.
PLACEHOLDERS = (*_FIELDS, "DOMAIN_EXPIRATION")
# Placeholders whose value is in seconds: compared in ms with durations (48h), shown as one
_SECONDS = frozenset({"CERTIFICATE_EXPIRATION", "DOMAIN_EXPIRATION"})
FUNCTIONS = ("len", "has", "pat", "any")
_OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
_ORDERING = frozenset({"<", "<=", ">", ">="})
# A tuple, not `int | float`: that builds a union at every call, and every check reads numbers
_NUMERIC = (int, float)
_COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_OPENERS = {")": "(", "]": "["}
_FUNCTION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\(")
_PLACEHOLDER = re.compile(r"\[([A-Za-z_][A-Za-z0-9_]*)\]")  # other text in [] is a literal
_STEP = re.compile(r"\.([^.\[\]()\s]+)|\[([0-9]{1,9})\]")  # .key or [index] after [BODY]
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SHOWN = 80  # longest value quoted in a detail


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
    # The values of placeholders a probe kind declares beyond the ones above, by name
    values: dict[str, Json] = field(default_factory=dict)
    # Why a placeholder has no value for this check, where something says why (an RDAP lookup)
    reasons: dict[str, str] = field(default_factory=dict)
    _json: Json | ValueError = field(default=None, repr=False)
    _parsed: bool = field(default=False, repr=False)

    def body_json(self) -> Json:
        """The body parsed as JSON once, or raise ValueError if it is not JSON."""
        if not self._parsed:
            self._parsed = True
            try:
                self._json = json.loads(self.body or b"")
            except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
                self._json = ValueError("the body is not valid JSON")
        if isinstance(self._json, ValueError):
            raise self._json
        return self._json


@dataclass(frozen=True, slots=True)
class _Ref:
    """A placeholder as written, with a JSON path (only [BODY]) and maybe len() or has()."""

    label: str
    name: str
    path: tuple[str | int, ...] = ()
    function: str | None = None


@dataclass(frozen=True, slots=True)
class _Literal:
    value: str | int | float  # a number for <, <=, >, >= (durations in ms), else the text


@dataclass(frozen=True, slots=True)
class _Matcher:
    function: str  # "pat" with one glob, or "any" with its options
    values: tuple[str, ...]


_Operand = _Ref | _Literal | _Matcher


@dataclass(frozen=True, slots=True)
class _Comparison:
    left: _Operand
    operator: str
    right: _Operand


class _Unmet(Exception):
    """Why a condition fails without a comparison (no value, not JSON, not a number)."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition; `placeholders` names those it reads (e.g. {"STATUS", "BODY"})."""

    text: str
    placeholders: frozenset[str]
    _tree: _Comparison | None = field(default=None, compare=False, repr=False)

    def evaluate(self, context: ConditionContext) -> ConditionOutcome:
        """Whether the condition holds for this check, with what was seen."""
        try:
            tree = self._tree or _parse(self.text)
            left, right = _value(tree.left, context), _value(tree.right, context)
            passed = _holds(tree, left, right)
        except (_Unmet, ConditionSyntaxError) as unmet:
            return ConditionOutcome(self.text, False, str(unmet))
        sides = ((tree.left, left), (tree.right, right))
        seen = [f"{side.label} was {_show(side, v)}" for side, v in sides if isinstance(side, _Ref)]
        return ConditionOutcome(self.text, passed, ", ".join(seen))


def parse_condition(text: str, placeholders: Collection[str] = PLACEHOLDERS) -> Condition:
    """Parse one condition, which may read `placeholders` (a kind adds its own to the common
    ones); raise ConditionSyntaxError with the column of the problem."""
    tree = _parse(text, placeholders)
    refs = [side for side in (tree.left, tree.right) if isinstance(side, _Ref)]
    return Condition(text, frozenset(ref.name for ref in refs), tree)


def evaluate_all(
    conditions: Iterable[Condition], context: ConditionContext
) -> tuple[ConditionOutcome, ...]:
    """Every condition's outcome for one check, in order."""
    return tuple(condition.evaluate(context) for condition in conditions)


def _parse(text: str, placeholders: Collection[str] = PLACEHOLDERS) -> _Comparison:
    if not isinstance(text, str) or not text.strip():
        raise ConditionSyntaxError("empty condition; write one like [STATUS] == 200", 0)
    column, operator = _find_operator(text)
    right_start = column + len(operator)
    left = _operand(text, 0, column, operator, placeholders)
    right = _operand(text, right_start, len(text), operator, placeholders)
    if not isinstance(left, _Ref) and not isinstance(right, _Ref):
        raise ConditionSyntaxError("no placeholder to check; put one like [STATUS] on a side", 0)
    matchers = [side for side in (left, right) if isinstance(side, _Matcher)]
    if matchers and (operator in _ORDERING or len(matchers) == 2):
        message = "pat() and any() compare one placeholder with == or !="
        raise ConditionSyntaxError(message, right_start)
    return _Comparison(left, operator, right)


def _find_operator(text: str) -> tuple[int, str]:
    """The first comparison operator outside brackets, as Gatus splits; brackets must balance."""
    opened: list[int] = []
    found: tuple[int, str] | None = None
    for column, char in enumerate(text):
        if char in "([":
            opened.append(column)
        elif char in ")]":
            if not opened:
                raise ConditionSyntaxError(f"unbalanced {char!r}: nothing opened it", column)
            if text[opened[-1]] != _OPENERS[char]:
                message = f"{char!r} cannot close the {text[opened[-1]]!r} before it"
                raise ConditionSyntaxError(message, column)
            opened.pop()
        elif found is None and not opened and char in "=!<>":
            operator = text[column : column + 2] if text[column + 1 : column + 2] == "=" else char
            if operator not in _OPERATORS:
                fix = "==" if char == "=" else "!="
                raise ConditionSyntaxError(f"{char!r} is not an operator; use {fix!r}", column)
            found = (column, operator)
    if opened:
        raise ConditionSyntaxError(f"unbalanced {text[opened[-1]]!r}: never closed", opened[-1])
    if found is None:
        message = "no comparison operator; use one of ==, !=, <, <=, >, >= as in [STATUS] == 200"
        raise ConditionSyntaxError(message, len(text.rstrip()))
    return found


def _operand(
    text: str, start: int, end: int, operator: str, placeholders: Collection[str]
) -> _Operand:
    raw = text[start:end]
    source = raw.strip()
    column = start + len(raw) - len(raw.lstrip())
    if not source:
        where = "before" if start == 0 else "after"
        raise ConditionSyntaxError(f"missing value {where} {operator!r}", start)
    if source.startswith("="):
        raise ConditionSyntaxError("unexpected '='; use a single operator", column)
    if placeholder := _PLACEHOLDER.match(source):
        return _ref(placeholder, column, None, source, placeholders)
    if match := _FUNCTION.match(source):
        return _function(source, column, match.group(1), placeholders)
    return _Literal(_ordinal(source, column, operator) if operator in _ORDERING else source)


def _function(source: str, column: int, name: str, placeholders: Collection[str]) -> _Operand:
    if name not in FUNCTIONS:
        known = ", ".join(f"{known}()" for known in FUNCTIONS)
        message = f"unknown function {_cut(name)}(); expected one of {known}"
        raise ConditionSyntaxError(message, column)
    depth, end = 0, len(name)
    while end == len(name) or depth:  # on to the ")" that closes this call
        depth += (source[end] in "([") - (source[end] in ")]")
        end += 1
    if rest := source[end:]:
        at = column + len(source) - len(rest.lstrip())
        raise ConditionSyntaxError(f"unexpected {_cut(rest.lstrip())!r} after {name}()", at)
    inner, inner_column = source[len(name) + 1 : -1], column + len(name) + 1
    if name == "pat":
        return _Matcher(name, (inner,))
    if name == "any":
        options = tuple(option.strip() for option in inner.split(","))
        if not all(options):
            raise ConditionSyntaxError("empty value in any(); write any(200, 204)", inner_column)
        return _Matcher(name, options)
    argument = inner.strip()
    argument_column = inner_column + len(inner) - len(inner.lstrip())
    if not (placeholder := _PLACEHOLDER.match(argument)):
        message = f"{name}() takes a placeholder like [BODY].items"
        raise ConditionSyntaxError(message, argument_column)
    return _ref(placeholder, argument_column, name, source, placeholders)


def _ref(
    placeholder: re.Match[str],
    column: int,
    function: str | None,
    label: str,
    placeholders: Collection[str],
) -> _Ref:
    source, name, index = placeholder.string, placeholder[1].upper(), placeholder.end()
    if name not in placeholders:
        guess = difflib.get_close_matches(name, placeholders, n=1) if len(name) < 40 else []
        hint = f"did you mean [{guess[0]}]? " if guess else ""
        known = ", ".join(f"[{known}]" for known in placeholders)
        message = f"unknown placeholder {_cut(source[:index])}; {hint}expected one of {known}"
        raise ConditionSyntaxError(message, column)
    path: list[str | int] = []
    while index < len(source):
        if not (step := _STEP.match(source, index)):
            raise _bad_step(source, index, column)
        path.append(step[1] if step[1] is not None else int(step[2]))
        index = step.end()
    if path and name != "BODY":
        message = f"only [BODY] has fields; [{name}] cannot be followed by a path"
        raise ConditionSyntaxError(message, column + len(name) + 2)
    return _Ref(label, name, tuple(path), function)


def _bad_step(source: str, index: int, column: int) -> ConditionSyntaxError:
    if source[index] == ".":
        message = f"empty key after '.' in {_cut(source)}; write a path like [BODY].data.id"
    elif source[index] == "[":
        message = f"bad index in {_cut(source)}; write a whole number like [BODY].items[0]"
    else:
        rest = source[index:].lstrip()
        message = f"unexpected {_cut(rest)!r} after {_cut(source[:index])}"
        index = len(source) - len(rest)
    return ConditionSyntaxError(message, column + index)


def _ordinal(source: str, column: int, operator: str) -> int | float:
    """A literal compared with <, <=, > or >= must be a number or a duration (then in ms)."""
    number = _number(source)
    if number is None and not source[:1].isdigit():
        message = f"{operator!r} compares numbers, but {_cut(source)!r} is not a number or duration"
        raise ConditionSyntaxError(message, column)
    if number is None and (number := _milliseconds(source)) is None:
        message = f"bad duration {_cut(source)!r}; write one like 30s, 5m, 250ms or 1h30m"
        raise ConditionSyntaxError(message, column)
    return number


def _number(value: object) -> int | float | None:
    if isinstance(value, _NUMERIC) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or not _NUMBER.fullmatch(value):
        return None
    try:
        return int(value) if value.lstrip("+-").isdigit() else float(value)
    except ValueError:  # more digits than int() converts
        return None


def _milliseconds(text: str) -> float | None:
    try:
        return parse_duration(text) * 1000 if len(text) <= 64 else None
    except ValueError:
        return None


def _value(side: _Operand, context: ConditionContext) -> Json | _Matcher:
    """What an operand stands for in this check; a matcher stands for itself."""
    if not isinstance(side, _Ref):
        return side.value if isinstance(side, _Literal) else side
    if side.function == "has":
        try:
            value = _read(side, context)
        except _Unmet:
            return False
        return bool(side.path) or value not in (None, "")
    value = _read(side, context)
    if side.function != "len":
        return value
    if side.name == "BODY" and not side.path:  # JSON counts its items, other text its characters
        with contextlib.suppress(ValueError):
            value = context.body_json()
    return len(value) if isinstance(value, str | list | dict) else len(_text(value))


def _read(ref: _Ref, context: ConditionContext) -> Json:
    field_name = _FIELDS.get(ref.name)
    value: Json | bytes = (
        getattr(context, field_name) if field_name else context.values.get(ref.name)
    )
    if value is None:
        reason = context.reasons.get(ref.name)
        raise _Unmet(
            f"[{ref.name}] has no value for this check" + (f": {reason}" if reason else "")
        )
    if isinstance(value, bytes):  # [BODY]
        if not ref.path:
            return value.decode("utf-8", errors="replace").strip()
        try:
            node = context.body_json()
        except ValueError:
            raise _Unmet("[BODY] is not valid JSON") from None
        for step in ref.path:
            if isinstance(node, list) and isinstance(step, int) and step < len(node):
                node = node[step]
                continue
            if not (isinstance(node, dict) and isinstance(step, str) and step in node):
                raise _Unmet(f"{_path(ref)} does not exist in the body")
            node = node[step]
        return node
    if ref.name in _SECONDS and isinstance(value, _NUMERIC):
        return value * 1000  # in ms, so it compares with durations like 48h
    return value


def _path(ref: _Ref) -> str:
    steps = (f"[{step}]" if isinstance(step, int) else f".{step}" for step in ref.path)
    return f"[{ref.name}]" + "".join(steps)


def _holds(tree: _Comparison, left: Json | _Matcher, right: Json | _Matcher) -> bool:
    if tree.operator in _ORDERING:
        a, b = _measure(tree.left, left, tree.operator), _measure(tree.right, right, tree.operator)
        return bool(_COMPARE[tree.operator](a, b))
    if isinstance(left, _Matcher):
        left, right = right, left
    if isinstance(right, _Matcher) and right.function == "pat":
        matched = _glob(right.values[0], _text(left))
    elif isinstance(right, _Matcher):
        matched = any(_equal(left, option) for option in right.values)
    else:
        matched = _equal(left, right)
    return matched if tree.operator == "==" else not matched


def _measure(side: _Operand, value: Json | _Matcher, operator: str) -> int | float:
    """A value as a number for <, <=, >, >=; text like 5m counts as a duration in ms."""
    number = _number(value)
    if number is None and isinstance(value, str) and value[:1].isdigit():
        number = _milliseconds(value)
    if number is None:  # literals were checked at parse time, so this is a placeholder's value
        seen = f"{side.label} was {_show(side, value)}" if isinstance(side, _Ref) else repr(value)
        raise _Unmet(f"{seen}, not a number, so {operator!r} cannot compare it")
    return number


def _equal(a: object, b: object) -> bool:
    x, y = _number(a), _number(b)
    return x == y if x is not None and y is not None else _text(a) == _text(b)


def _text(value: object) -> str:
    """Values as Gatus compares them: JSON's true/false/null, JSON text for lists and objects."""
    if isinstance(value, str):
        return value
    # JSON's words without a JSON encoder: what json.dumps gives for them (every check that
    # reads [CONNECTED] and the like shows one)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, bool | None | list | dict):
        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        except (RecursionError, ValueError):
            return "<nested too deeply to show>"
    return str(value)


def _show(ref: _Ref, value: object) -> str:
    """A value for a detail: strings quoted, times as durations, cut to about 80 characters."""
    if ref.function is None and isinstance(value, _NUMERIC) and abs(value) < 1e15:
        if ref.name == "RESPONSE_TIME":
            return f"{_text(round(value, 3))}ms"
        if ref.name in _SECONDS:
            return ("-" if value < 0 else "") + format_duration(abs(value) / 1000)
    return _cut(repr(value[: _SHOWN + 1]) if isinstance(value, str) else _text(value))


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _glob(pattern: str, text: str) -> bool:
    """Match `*` (any run, newlines too) and `?` (one character) piece by piece: no blowup."""
    first, *rest = pattern.split("*")
    if not rest:
        return _piece(first).fullmatch(text) is not None
    *middle, last = rest
    end = len(text) - len(last)
    if end < len(first) or not _piece(first).match(text) or not _piece(last).match(text, end):
        return False
    position = len(first)
    for part in middle:
        if (found := _piece(part).search(text, position, end)) is None:
            return False
        position = found.end()
    return True


def _piece(part: str) -> re.Pattern[str]:
    return re.compile(".".join(re.escape(piece) for piece in part.split("?")), re.DOTALL)
