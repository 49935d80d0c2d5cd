"""Trigger matching: event-name wildcards and CEL filters."""

from __future__ import annotations

import logging

import pytest

from engine.expressions import (
    ExpressionError,
    TriggerMatcher,
    compile_expression,
    to_json,
)


def ev(name: str = "shop/order.created", **data: object) -> dict[str, object]:
    return {"name": name, "data": dict(data), "id": "01J0000000000000000000000A", "ts": 1000}


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("shop/order.*", "shop/order.created", True),
        ("shop/order.*", "shop/order.", True),
        ("shop/order.*", "shop/order", False),
        ("shop/order.*", "shop/orders.created", False),
        ("*", "anything/at.all", True),
        ("*", "", True),
        ("shop/*.created", "shop/order.created", True),
        ("shop/*.created", "shop/order.deleted", False),
        ("*/created", "a/b/created", True),
        ("shop/order.created", "shop/order.created", True),
        ("shop/order.created", "shop/orderXcreated", False),  # '.' is literal
        ("a+b(c)?", "a+b(c)?", True),  # regex metacharacters are literal
        ("a+b(c)?", "aab", False),
        ("shop/order.created", "shop/order.created.v2", False),  # whole name only
    ],
)
def test_name_wildcards(pattern: str, name: str, expected: bool) -> None:
    assert TriggerMatcher(pattern).matches(ev(name)) is expected


def test_no_name_no_match() -> None:
    assert not TriggerMatcher("*").matches({"data": {}})
    assert not TriggerMatcher("*").matches({"name": 3, "data": {}})


def test_cel_true_and_false() -> None:
    m = TriggerMatcher("shop/*", 'event.data.total > 0 && event.name != "x"')
    assert m.matches(ev(total=5))
    assert not m.matches(ev(total=0))
    assert not m.matches(ev("x", total=5))  # name pattern fails first
    assert not TriggerMatcher("*", 'event.data.total > 0 && event.name != "x"').matches(
        ev("x", total=5)
    )


def test_cel_sees_all_event_fields() -> None:
    assert TriggerMatcher("*", 'event.id.startsWith("01J") && event.ts == 1000').matches(ev())
    assert TriggerMatcher("*", 'event.data.tags.exists(t, t == "vip")').matches(
        ev(tags=["a", "vip"])
    )
    assert TriggerMatcher("*", 'event.data.customer.tier in ["gold", "plat"]').matches(
        ev(customer={"tier": "gold"})
    )


def test_missing_field_is_no_match_not_error(caplog: pytest.LogCaptureFixture) -> None:
    m = TriggerMatcher("*", "event.data.missing > 0")
    with caplog.at_level(logging.DEBUG):
        assert not m.matches(ev(total=1))
    # the third-party "Internal error" noise is filtered; our debug line remains
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("event.data.missing" in r.getMessage() for r in caplog.records)
    assert not m.matches({"name": "a"})  # no data at all


def test_has_macro_and_short_circuit() -> None:
    assert not TriggerMatcher("*", "has(event.data.missing)").matches(ev())
    assert TriggerMatcher("*", "event.data.total > 0 || event.data.missing > 1").matches(
        ev(total=3)
    )


def test_type_error_is_no_match() -> None:
    assert not TriggerMatcher("*", 'event.data.total + "a" == "1a"').matches(ev(total=1))
    # cel-python does not compare int with double: an error, so no match
    assert not TriggerMatcher("*", "event.data.total == 5.0").matches(ev(total=5))


def test_non_bool_result_is_no_match() -> None:
    assert not TriggerMatcher("*", "event.data.total").matches(ev(total=1))
    assert not TriggerMatcher("*", '"true"').matches(ev())


@pytest.mark.parametrize("src", ["event.data.total >", "foo(((", "1 +", "   "])
def test_bad_expression_raises_with_source(src: str) -> None:
    with pytest.raises(ExpressionError) as info:
        TriggerMatcher("*", src)
    assert repr(src) in str(info.value)


def test_empty_pattern_rejected() -> None:
    with pytest.raises(ExpressionError):
        TriggerMatcher("")


def test_compile_expression_async_variable() -> None:
    # wait_for_event's if_exp refers to `async`, a Python keyword: must still work.
    expr = compile_expression("event.data.user == async.data.user")
    act = {"event": {"data": {"user": "u1"}}, "async": {"data": {"user": "u1"}}}
    assert expr.evaluate_bool(act)
    act["async"] = {"data": {"user": "u2"}}
    assert not expr.evaluate_bool(act)


def test_evaluate_returns_values() -> None:
    key = compile_expression('event.data.user + "-" + string(event.data.n)')
    value = key.evaluate({"event": {"data": {"user": "u1", "n": 7}}})
    assert value == "u1-7"
    assert type(to_json(value)) is str
    assert to_json(compile_expression("[1, true, {'a': 2.5}]").evaluate({})) == [
        1, True, {"a": 2.5}
    ]
    assert type(to_json(compile_expression("true").evaluate({}))) is bool


def test_to_cel_matches_json_to_cel() -> None:
    import celpy

    from engine.expressions import to_cel

    doc = {"s": "x", "i": 7, "big": 2**63 - 1, "neg": -(2**63), "f": 1.5, "t": True,
           "n": None, "l": [1, "a", [False], {"k": 2.0}], "m": {"a": {"b": [None]}},
           "e": {}, "el": []}

    def same(a: object, b: object) -> None:
        assert type(a) is type(b), (a, b)
        if isinstance(a, dict):
            assert isinstance(b, dict)
            assert list(a) == list(b)
            for ka, kb in zip(a, b, strict=True):
                same(ka, kb)
                same(a[ka], b[kb])
        elif isinstance(a, list):
            assert isinstance(b, list) and len(a) == len(b)
            for x, y in zip(a, b, strict=True):
                same(x, y)
        else:
            assert a == b

    same(to_cel(doc), celpy.json_to_cel(doc))
    same(to_cel((1, 2)), celpy.json_to_cel([1, 2]))
    # an integer beyond int64 fails the same way json_to_cel fails: no match
    assert not TriggerMatcher("*", "event.data.x > 0").matches(ev(x=2**64 - 1))
