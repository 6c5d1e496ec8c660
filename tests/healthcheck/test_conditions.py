"""Condition parsing and evaluation, driven through parse_condition and Condition.evaluate."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healthcheck.conditions import (
    Condition,
    ConditionContext,
    ConditionSyntaxError,
    evaluate_all,
    parse_condition,
)
from healthcheck.result import ConditionOutcome

HOUR = 3600.0
API = json.dumps(
    {
        "status": "UP",
        "version": "1.0",
        "count": 3,
        "ratio": 0.5,
        "ok": True,
        "nothing": None,
        "errors": [],
        "name": "hello world",
        "uptime": "90m",
        "data": [{"id": 1, "tags": ["a", "b"]}, {"id": 2, "tags": []}],
        "nested": {"deep": {"value": "x"}},
    }
).encode()


def json_body(value: object) -> ConditionContext:
    return ConditionContext(body=json.dumps(value).encode())


CASES = [
    # [STATUS]
    ("[STATUS] == 200", ConditionContext(status=200), True),
    ("[STATUS] == 200", ConditionContext(status=500), False),
    ("[STATUS]==200", ConditionContext(status=200), True),
    ("[status] == 200", ConditionContext(status=200), True),
    ("[STATUS] != 500", ConditionContext(status=200), True),
    ("[STATUS] != 500", ConditionContext(status=500), False),
    ("[STATUS] < 300", ConditionContext(status=299), True),
    ("[STATUS] < 300", ConditionContext(status=300), False),
    ("[STATUS] <= 300", ConditionContext(status=300), True),
    ("[STATUS] > 400", ConditionContext(status=404), True),
    ("[STATUS] >= 500", ConditionContext(status=499), False),
    ("[STATUS] == any(200, 204)", ConditionContext(status=204), True),
    ("[STATUS] == any(200, 204)", ConditionContext(status=500), False),
    ("[STATUS] != any(500, 503)", ConditionContext(status=200), True),
    ("any(200, 204) == [STATUS]", ConditionContext(status=200), True),
    ("200 == [STATUS]", ConditionContext(status=200), True),
    ("[STATUS] == 200.0", ConditionContext(status=200), True),
    ("[STATUS] == pat(2*)", ConditionContext(status=204), True),
    ("[STATUS] == pat(2??)", ConditionContext(status=404), False),
    ("[STATUS] == 200", ConditionContext(), False),
    # [RESPONSE_TIME] in milliseconds; durations compare in ms too
    ("[RESPONSE_TIME] < 300", ConditionContext(response_time_ms=120.5), True),
    ("[RESPONSE_TIME] < 300", ConditionContext(response_time_ms=300.0), False),
    ("[RESPONSE_TIME] < 1s", ConditionContext(response_time_ms=999.0), True),
    ("[RESPONSE_TIME] <= 250ms", ConditionContext(response_time_ms=251.0), False),
    # [BODY] as text: utf-8 with replacement, surrounding whitespace stripped
    ("[BODY] == OK", ConditionContext(body=b"OK"), True),
    ("[BODY] == OK", ConditionContext(body=b"  OK\n"), True),
    ("[BODY] == OK", ConditionContext(body=b"ok"), False),
    ("[BODY] != OK", ConditionContext(body=b"DOWN"), True),
    ("[BODY] == pat(*healthy*)", ConditionContext(body=b"all healthy here"), True),
    ("[BODY] == pat(*healthy*)", ConditionContext(body=b"all HEALTHY here"), False),
    ("[BODY] == pat(*healthy*)", ConditionContext(body=b"line one\nhealthy\n"), True),
    ("[BODY] == pat(*hello world*)", ConditionContext(body=b"say hello world!"), True),
    ("[BODY] == pat(*<h1>Example</h1>*)", ConditionContext(body=b"<h1>Example</h1>"), True),
    ("[BODY] == pat(he?lo)", ConditionContext(body=b"hello"), True),
    ("[BODY] == pat(hello)", ConditionContext(body=b"hello!"), False),
    ("[BODY] == pat(a*b*c)", ConditionContext(body=b"abc"), True),
    ("[BODY] == pat(a*b*c)", ConditionContext(body=b"acb"), False),
    ("[BODY] == pat(ab*ba)", ConditionContext(body=b"aba"), False),
    ("[BODY] == pat(*)", ConditionContext(body=b""), True),
    ("[BODY] == pat(*a*a*a*a*b)", ConditionContext(body=b"a" * 100_000), False),
    ("[BODY] != pat(*error*)", ConditionContext(body=b"fine"), True),
    (
        "[BODY] == pat(*caf\N{LATIN SMALL LETTER E WITH ACUTE}*)",
        ConditionContext(body="caf\N{LATIN SMALL LETTER E WITH ACUTE}!".encode()),
        True,
    ),
    ("[BODY] == pat(*\ufffd*)", ConditionContext(body=b"bad \xff byte"), True),
    ("[BODY] == 42", ConditionContext(body=b"42.0"), True),
    ('[BODY] == {"a":1}', ConditionContext(body=b'{"a":1}'), True),
    ("[BODY] == OK", ConditionContext(), False),
    # [BODY] JSON paths
    ("[BODY].status == UP", ConditionContext(body=API), True),
    ("[BODY].status == DOWN", ConditionContext(body=API), False),
    ("[BODY].status != DOWN", ConditionContext(body=API), True),
    ("[BODY].status == pat(U*)", ConditionContext(body=API), True),
    ("[BODY].status == any(UP, DEGRADED)", ConditionContext(body=API), True),
    ("[BODY].count == 3", ConditionContext(body=API), True),
    ("[BODY].count == 3.0", ConditionContext(body=API), True),
    ("[BODY].count > 2", ConditionContext(body=API), True),
    ("[BODY].ratio < 1", ConditionContext(body=API), True),
    ("[BODY].ratio == 0.5", ConditionContext(body=API), True),
    ("[BODY].version == 1", ConditionContext(body=API), True),
    ("[BODY].version == 1.0", ConditionContext(body=API), True),
    ("[BODY].ok == true", ConditionContext(body=API), True),
    ("[BODY].ok == false", ConditionContext(body=API), False),
    ("[BODY].ok == True", ConditionContext(body=API), False),
    ("[BODY].nothing == null", ConditionContext(body=API), True),
    ("[BODY].name == hello world", ConditionContext(body=API), True),
    ("[BODY].uptime > 1h", ConditionContext(body=API), True),
    ("[BODY].uptime < 1h", ConditionContext(body=API), False),
    ("[BODY].data[0].id == 1", ConditionContext(body=API), True),
    ("[BODY].data[1].id == 1", ConditionContext(body=API), False),
    ("[BODY].data[0].tags[1] == b", ConditionContext(body=API), True),
    ("[BODY].data[5].id == 1", ConditionContext(body=API), False),
    ("[BODY].nested.deep.value == x", ConditionContext(body=API), True),
    ("[BODY].missing == x", ConditionContext(body=API), False),
    ("[BODY].status.deeper == x", ConditionContext(body=API), False),
    ("[BODY].data.id == 1", ConditionContext(body=API), False),
    ("[BODY].errors == []", ConditionContext(body=API), True),
    ('[BODY].data[0].tags == ["a","b"]', ConditionContext(body=API), True),
    ("[STATUS] == [200]", ConditionContext(status=200), False),
    ('[BODY].nested.deep == {"value":"x"}', ConditionContext(body=API), True),
    ("[BODY][0].name == x", json_body([{"name": "x"}]), True),
    ("[BODY][0][1] == 2", json_body([[1, 2]]), True),
    ('[BODY].count == "3"', json_body({"count": '"3"'}), True),
    ("[BODY].count == 3", json_body({"count": "3"}), True),
    ("[BODY].count > 2", json_body({"count": "3"}), True),
    ("[BODY].big > 1", json_body({"big": 10**400}), True),
    ("[BODY].status == UP", ConditionContext(body=b"<html>UP</html>"), False),
    ("[BODY].status == UP", ConditionContext(body=b""), False),
    ("[BODY].status == UP", ConditionContext(), False),
    ("[BODY].status > 1", ConditionContext(body=API), False),
    ("[BODY].ok > 0", ConditionContext(body=API), False),
    ("[BODY].data > 0", ConditionContext(body=API), False),
    ("[BODY].id == [BODY].copy", json_body({"id": 7, "copy": 7.0}), True),
    ("[BODY].id < [BODY].limit", json_body({"id": 7, "limit": 5}), False),
    # len() and has()
    ("len([BODY].data) == 2", ConditionContext(body=API), True),
    ("len([BODY].data) > 0", ConditionContext(body=API), True),
    ("len([BODY].errors) > 0", ConditionContext(body=API), False),
    ("len([BODY].name) == 11", ConditionContext(body=API), True),
    ("len([BODY].nested) == 1", ConditionContext(body=API), True),
    ("len([BODY].count) == 1", ConditionContext(body=API), True),
    ("len([BODY].missing) == 0", ConditionContext(body=API), False),
    ("len([BODY]) < 100", ConditionContext(body=b"short text"), True),
    ("len([BODY]) == 10", ConditionContext(body=b" short text "), True),
    ("len([BODY]) == 3", json_body([1, 2, 3]), True),
    ("len([STATUS]) == 3", ConditionContext(status=200), True),
    ("has([BODY].errors) == true", ConditionContext(body=API), True),
    ("has([BODY].nothing) == true", ConditionContext(body=API), True),
    ("has([BODY].missing) == false", ConditionContext(body=API), True),
    ("has([BODY].status) == false", ConditionContext(body=b"not json"), True),
    ("has([BODY]) == true", ConditionContext(body=b"x"), True),
    ("has([BODY]) == false", ConditionContext(body=b"  "), True),
    ("has([BODY]) == false", ConditionContext(), True),
    ("has([IP]) == false", ConditionContext(ip=""), True),
    # [CERTIFICATE_EXPIRATION] is given in seconds and compared in ms
    ("[CERTIFICATE_EXPIRATION] > 48h", ConditionContext(certificate_expiration_s=72 * HOUR), True),
    ("[CERTIFICATE_EXPIRATION] > 48h", ConditionContext(certificate_expiration_s=24 * HOUR), False),
    ("[CERTIFICATE_EXPIRATION] > 2d", ConditionContext(certificate_expiration_s=-HOUR), False),
    ("[CERTIFICATE_EXPIRATION] > 1h30m", ConditionContext(certificate_expiration_s=2 * HOUR), True),
    ("[CERTIFICATE_EXPIRATION] > 86400000", ConditionContext(certificate_expiration_s=2e5), True),
    ("[CERTIFICATE_EXPIRATION] > 48h", ConditionContext(), False),
    # [CONNECTED], [IP], [DNS_RCODE]
    ("[CONNECTED] == true", ConditionContext(connected=True), True),
    ("[CONNECTED] == true", ConditionContext(connected=False), False),
    ("[CONNECTED] == false", ConditionContext(connected=False), True),
    ("[IP] == 127.0.0.1", ConditionContext(ip="127.0.0.1"), True),
    ("[IP] == 127.0.0.1", ConditionContext(ip="127.0.0.10"), False),
    ("[IP] == pat(192.168.*)", ConditionContext(ip="192.168.1.20"), True),
    ("[IP] == any(1.1.1.1, 1.0.0.1)", ConditionContext(ip="1.0.0.1"), True),
    ("[DNS_RCODE] == NOERROR", ConditionContext(dns_rcode="NOERROR"), True),
    ("[DNS_RCODE] == NOERROR", ConditionContext(dns_rcode="NXDOMAIN"), False),
    ("[DNS_RCODE] != SERVFAIL", ConditionContext(dns_rcode="NOERROR"), True),
]


@pytest.mark.parametrize(("text", "context", "passed"), CASES, ids=[case[0] for case in CASES])
def test_condition_holds_or_not(text: str, context: ConditionContext, passed: bool) -> None:
    outcome = parse_condition(text).evaluate(context)
    assert outcome.passed is passed, outcome.detail
    assert outcome.condition == text


DETAILS = [
    ("[STATUS] == 200", ConditionContext(status=500), "[STATUS] was 500"),
    ("[STATUS] == 200", ConditionContext(status=200), "[STATUS] was 200"),
    ("[STATUS] < 300", ConditionContext(), "[STATUS] has no value for this check"),
    ("[BODY].status == UP", json_body({"status": "DOWN"}), "[BODY].status was 'DOWN'"),
    ("[BODY].status == UP", ConditionContext(body=b"<html>"), "[BODY] is not valid JSON"),
    ("[BODY].status == UP", ConditionContext(), "[BODY] has no value for this check"),
    ("[BODY].data[3].id == 1", ConditionContext(body=API), "[BODY].data[3].id does not exist"),
    ("[body].Missing == 1", ConditionContext(body=API), "[BODY].Missing does not exist"),
    ("[BODY].ok == false", ConditionContext(body=API), "[BODY].ok was true"),
    ("[BODY].nothing == x", ConditionContext(body=API), "[BODY].nothing was null"),
    ("[BODY].data[0] == x", ConditionContext(body=API), '[BODY].data[0] was {"id":1,"tags"'),
    ("[BODY].status > 5", json_body({"status": "UP"}), "[BODY].status was 'UP', not a number"),
    ("[BODY].status > 5", json_body({"status": "UP"}), "'>' cannot compare it"),
    ("[BODY] == OK", ConditionContext(body=b"x" * 500), "[BODY] was 'xxxxxxxx"),
    ("[BODY] == OK", ConditionContext(body=b"x" * 500), "xxx..."),
    ("len([BODY].data) == 0", ConditionContext(body=API), "len([BODY].data) was 2"),
    ("has([BODY].errors) == false", ConditionContext(body=API), "has([BODY].errors) was true"),
    ("[RESPONSE_TIME] < 300", ConditionContext(response_time_ms=312.5), "was 312.5ms"),
    ("[CERTIFICATE_EXPIRATION] > 48h", ConditionContext(certificate_expiration_s=HOUR), "was 1h"),
    ("[CERTIFICATE_EXPIRATION] > 1h", ConditionContext(certificate_expiration_s=-90), "was -1m30s"),
    ("[CONNECTED] == true", ConditionContext(connected=False), "[CONNECTED] was false"),
    ("[IP] == 127.0.0.1", ConditionContext(ip="10.0.0.1"), "[IP] was '10.0.0.1'"),
    ("[BODY].a == [BODY].b", json_body({"a": 1, "b": 2}), "[BODY].a was 1, [BODY].b was 2"),
]


@pytest.mark.parametrize(("text", "context", "detail"), DETAILS, ids=[d[0] for d in DETAILS])
def test_detail_says_what_was_seen(text: str, context: ConditionContext, detail: str) -> None:
    outcome = parse_condition(text).evaluate(context)
    assert outcome.detail is not None
    assert detail in outcome.detail
    assert len(outcome.detail) < 200


def test_long_values_are_cut_in_details() -> None:
    outcome = parse_condition("[BODY] == OK").evaluate(ConditionContext(body=b"x" * 10_000))
    assert outcome.detail == "[BODY] was '" + "x" * 76 + "..."


SYNTAX_ERRORS = [
    ("", "empty condition", 0),
    ("   ", "empty condition", 0),
    ("[STATUS]", "no comparison operator; use one of ==, !=, <, <=, >, >=", 8),
    ("[STATUS] 200", "no comparison operator", 12),
    ("[STATUS] = 200", "'=' is not an operator; use '=='", 9),
    ("[STATUS] => 200", "'=' is not an operator; use '=='", 9),
    ("[STATUS] ! 200", "'!' is not an operator; use '!='", 9),
    ("[STATUS] === 200", "unexpected '='; use a single operator", 11),
    ("[STATUSS] == 200", "unknown placeholder [STATUSS]; did you mean [STATUS]?", 0),
    ("[STATUSS] == 200", "expected one of [STATUS], [RESPONSE_TIME], [BODY]", 0),
    ("[STATUS] == [STATUSS]", "unknown placeholder [STATUSS]", 12),
    ("[STATUS] == [Status_Code]", "unknown placeholder [Status_Code]", 12),
    ("[] == 1", "no placeholder to check", 0),
    (
        "[DOMAIN_EXPIRY] > 1h",
        "unknown placeholder [DOMAIN_EXPIRY]; did you mean [DOMAIN_EXPIRATION]?",
        0,
    ),
    ("foo([BODY]) == 1", "unknown function foo(); expected one of len(), has(), pat(), any()", 0),
    ("[BODY] == regex(.*)", "unknown function regex()", 10),
    ("[STATUS] == (200", "unbalanced '(': never closed", 12),
    ("len([BODY] == 1", "unbalanced '(': never closed", 3),
    ("[STATUS] == 200)", "unbalanced ')': nothing opened it", 15),
    ("[BODY].a] == 1", "unbalanced ']': nothing opened it", 8),
    ("[STATUS == 200", "unbalanced '[': never closed", 0),
    ("len([BODY)] == 1", "')' cannot close the '[' before it", 9),
    ("[BODY]..x == 1", "empty key after '.' in [BODY]..x; write a path like [BODY].data.id", 6),
    ("[BODY]. == 1", "empty key after '.'", 6),
    ("[BODY].a. == 1", "empty key after '.'", 8),
    ("[BODY][x] == 1", "bad index in [BODY][x]; write a whole number", 6),
    ("[BODY][-1] == 1", "bad index", 6),
    ("[BODY][] == 1", "bad index", 6),
    ("[BODY] x == 1", "unexpected 'x' after [BODY]", 7),
    ("[BODY]x == 1", "unexpected 'x' after [BODY]", 6),
    ("[BODY].a(b) == 1", "unexpected '(b)' after [BODY].a", 8),
    ("[STATUS].code == 1", "only [BODY] has fields; [STATUS] cannot be followed by a path", 8),
    ("== 200", "missing value before '=='", 0),
    ("[STATUS] ==", "missing value after '=='", 11),
    ("[STATUS] <   ", "missing value after '<'", 10),
    ("200 == 200", "no placeholder to check", 0),
    ("up == pat(u*)", "no placeholder to check", 0),
    ("[CERTIFICATE_EXPIRATION] > 48x", "bad duration '48x'; write one like 30s, 5m", 27),
    ("[CERTIFICATE_EXPIRATION] > 2 days", "bad duration '2 days'", 27),
    ("[STATUS] < abc", "'<' compares numbers, but 'abc' is not a number or duration", 11),
    ("[STATUS] >= true", "'>=' compares numbers", 12),
    ("[STATUS] < any(1, 2)", "pat() and any() compare one placeholder with == or !=", 10),
    ("[BODY] > pat(*a*)", "pat() and any() compare one placeholder", 8),
    ("pat(*a*) == any(a)", "no placeholder to check", 0),
    ("[STATUS] == any()", "empty value in any(); write any(200, 204)", 16),
    ("[STATUS] == any(200,,204)", "empty value in any()", 16),
    ("len(items) > 0", "len() takes a placeholder like [BODY].items", 4),
    ("has( body ) == true", "has() takes a placeholder", 5),
    ("len() > 0", "len() takes a placeholder", 4),
    ("len([BODY]) x > 0", "unexpected 'x' after len()", 12),
    ("len([BODY].) > 0", "empty key after '.'", 10),
    ("has([NOPE]) == true", "unknown placeholder [NOPE]", 4),
]


@pytest.mark.parametrize(
    ("text", "message", "column"), SYNTAX_ERRORS, ids=[e[0] or "<empty>" for e in SYNTAX_ERRORS]
)
def test_syntax_errors_say_what_and_where(text: str, message: str, column: int) -> None:
    with pytest.raises(ConditionSyntaxError) as raised:
        parse_condition(text)
    assert message in raised.value.message
    assert raised.value.position == column
    assert str(raised.value).endswith(f" at column {column + 1}")


PLACEHOLDER_CASES = [
    ("[STATUS] == 200", {"STATUS"}),
    ("[status] == 200", {"STATUS"}),
    ("[RESPONSE_TIME] < 300", {"RESPONSE_TIME"}),
    ("[BODY] == pat(*ok*)", {"BODY"}),
    ("[BODY].data[0].id == 1", {"BODY"}),
    ("len([BODY].items) > 0", {"BODY"}),
    ("has([BODY].errors) == false", {"BODY"}),
    ("[CERTIFICATE_EXPIRATION] > 48h", {"CERTIFICATE_EXPIRATION"}),
    ("[CONNECTED] == true", {"CONNECTED"}),
    ("[IP] == any(127.0.0.1, ::1)", {"IP"}),
    ("[DNS_RCODE] == NOERROR", {"DNS_RCODE"}),
    ("[BODY].limit > [RESPONSE_TIME]", {"BODY", "RESPONSE_TIME"}),
    ("[BODY] == [STATUS]", {"BODY", "STATUS"}),
]


@pytest.mark.parametrize(
    ("text", "names"), PLACEHOLDER_CASES, ids=[p[0] for p in PLACEHOLDER_CASES]
)
def test_placeholders_name_what_a_condition_reads(text: str, names: set[str]) -> None:
    assert parse_condition(text).placeholders == frozenset(names)


def test_conditions_compare_by_text_and_placeholders() -> None:
    parsed = parse_condition("[STATUS] == 200")
    assert parsed == Condition("[STATUS] == 200", frozenset({"STATUS"}))
    assert parsed == parse_condition("[STATUS] == 200")
    assert hash(parsed) == hash(parse_condition("[STATUS] == 200"))
    assert "_tree" not in repr(parsed)


def test_a_condition_built_from_text_alone_still_evaluates() -> None:
    built = Condition("[STATUS] == 200", frozenset({"STATUS"}))
    assert built.evaluate(ConditionContext(status=200)).passed
    broken = Condition("[STATUS] = 200", frozenset()).evaluate(ConditionContext(status=200))
    assert not broken.passed
    assert broken.detail == "'=' is not an operator; use '==' at column 10"


def test_evaluate_all_keeps_order_and_reads_the_body_once() -> None:
    conditions = [parse_condition(text) for text in ("[STATUS] == 200", "[BODY].status == UP")]
    context = ConditionContext(status=503, body=API)
    outcomes = evaluate_all(conditions, context)
    assert outcomes == (
        ConditionOutcome("[STATUS] == 200", False, "[STATUS] was 503"),
        ConditionOutcome("[BODY].status == UP", True, "[BODY].status was 'UP'"),
    )
    assert evaluate_all([], context) == ()


def test_a_body_nested_deeper_than_python_goes_is_not_json() -> None:
    context = ConditionContext(body=b"[" * 100_000 + b"]" * 100_000)
    outcome = parse_condition("[BODY][0] == 1").evaluate(context)
    assert outcome == ConditionOutcome("[BODY][0] == 1", False, "[BODY] is not valid JSON")
    assert parse_condition("len([BODY]) > 0").evaluate(context).passed


BODY_CONDITIONS = [
    parse_condition(text)
    for text in (
        "[BODY] == OK",
        "[BODY] == pat(*a*b?c*)",
        "[BODY] == any(1, true, null)",
        "[BODY] > 10",
        "[BODY].a[0].b == x",
        "[BODY][0] <= 5m",
        "len([BODY]) > 0",
        "len([BODY].a) == 1",
        "has([BODY].a) == true",
        "has([BODY]) == true",
    )
]


@given(text=st.text(max_size=200))
def test_parsing_anything_raises_only_syntax_errors(text: str) -> None:
    try:
        condition = parse_condition(text)
    except ConditionSyntaxError as error:
        assert 0 <= error.position <= len(text)
    else:
        assert condition.placeholders
        assert isinstance(condition.evaluate(ConditionContext()), ConditionOutcome)


ALPHABET = st.sampled_from([*"[]().,=!<> *?-0123456789abhmsxyz", "[BODY]", "[STATUS]", "len("])


@given(text=st.lists(ALPHABET, max_size=30).map("".join))
def test_parsing_condition_like_text_raises_only_syntax_errors(text: str) -> None:
    try:
        parse_condition(text)
    except ConditionSyntaxError as error:
        assert 0 <= error.position <= len(text)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b"]), children, max_size=2)
    ),
    max_leaves=10,
)


@given(body=st.binary(max_size=300) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_evaluating_any_body_never_raises(body: bytes) -> None:
    context = ConditionContext(status=200, body=body)
    for condition in BODY_CONDITIONS:
        outcome = condition.evaluate(context)
        assert isinstance(outcome.passed, bool)
        assert outcome.detail
