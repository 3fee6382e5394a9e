"""The expression parser: normal forms, errors with positions, algebraic laws (hypothesis)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptermath.errors import ExpressionError
from adaptermath.expression import parse_expression


@pytest.mark.parametrize(
    "text, operands, expected",
    [
        ("0.5*sst2 + 0.5*mnli", None, {"sst2": 0.5, "mnli": 0.5}),
        ("-toxic", None, {"toxic": -1.0}),
        ("cls + 0.3*(yelp_lm - amazon_lm)", None, {"cls": 1.0, "yelp_lm": 0.3, "amazon_lm": -0.3}),
        ("(1+0.3)*alpaca - 0.3*toxic", None, {"alpaca": 1.3, "toxic": -0.3}),
        ("2*(a+b)/4", None, {"a": 0.5, "b": 0.5}),
        ("a - (b - c)", None, {"a": 1.0, "b": -1.0, "c": 1.0}),
        ("x − 2·y × 3", None, {"x": 1.0, "y": -6.0}),
        ("--a", None, {"a": 1.0}),
        ("a/2 - b*2e-1", None, {"a": 0.5, "b": -0.2}),
        ("x - x", None, {"x": 0.0}),
    ],
)
def test_normal_form_coefficients(text, operands, expected):
    combination = parse_expression(text, operands)
    coefficients = combination.coefficients()
    assert list(coefficients) == list(expected)
    for name, value in expected.items():
        assert coefficients[name] == pytest.approx(value)


def test_free_variables_are_symbolic_until_bound():
    combination = parse_expression("(1+λ)*alpaca - λ*toxic", ["alpaca", "toxic"])
    assert combination.free_variables == ["λ"]
    assert str(combination) == "(1 + λ)*alpaca - λ*toxic"
    assert combination.coefficients({"λ": 0.4}) == pytest.approx({"alpaca": 1.4, "toxic": -0.4})
    with pytest.raises(ExpressionError, match="λ"):
        combination.coefficients()


def test_products_of_variables_are_polynomials():
    combination = parse_expression("cls + λ*μ*(t - s)/2", ["cls", "t", "s"])
    assert combination.free_variables == ["λ", "μ"]
    assert combination.coefficients({"λ": 0.5, "μ": 0.4}) == pytest.approx({"cls": 1, "t": 0.1, "s": -0.1})


def test_normal_form_text():
    assert str(parse_expression("cls + 0.3*(yelp - amazon)")) == "cls + 0.3*yelp - 0.3*amazon"
    assert str(parse_expression("-toxic")) == "-toxic"


@pytest.mark.parametrize(
    "text, message, position",
    [
        ("a*b", "product of two adapters", 1),
        ("a + 1", "cannot add a number", 2),
        ("2/a", "cannot divide by an adapter", 2),
        ("a/λ", "only by a number", 2),
        ("a/0", "division by zero", 2),
        ("(a + b", "missing closing parenthesis", 6),
        ("", "empty expression", 0),
        ("3*2", "contains no adapter", 0),
        ("a b", "unexpected 'b'", 2),
        ("a $ b", "unexpected character '$'", 2),
        ("a + ", "ends too early", 4),
        ("a + ()", "empty parentheses", 5),
        ("__import__('os')", "unexpected character", 11),
    ],
)
def test_malformed_or_nonlinear_expressions_report_position(text, message, position):
    with pytest.raises(ExpressionError, match=re.escape(message)) as info:
        parse_expression(text, ["a", "b"])
    assert info.value.position == position
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- property tests

NAMES = ["a", "b", "c"]


@st.composite
def linear_trees(draw, depth=3):
    """A random linear expression as (text, coefficients computed independently)."""
    if depth == 0 or draw(st.booleans()):
        name = draw(st.sampled_from(NAMES))
        return name, {name: 1.0}
    op = draw(st.sampled_from(["+", "-", "scale", "neg", "div"]))
    left_text, left = draw(linear_trees(depth=depth - 1))
    if op in "+-":
        right_text, right = draw(linear_trees(depth=depth - 1))
        sign = 1.0 if op == "+" else -1.0
        out = dict(left)
        for k, v in right.items():
            out[k] = out.get(k, 0.0) + sign * v
        return f"({left_text} {op} {right_text})", out
    if op == "neg":
        return f"-({left_text})", {k: -v for k, v in left.items()}
    number = draw(st.sampled_from([0.5, 2.0, 3.0, 0.25, 1.5]))
    if op == "div":
        return f"{left_text}/{number}", {k: v / number for k, v in left.items()}
    return f"{number}*{left_text}", {k: number * v for k, v in left.items()}


@settings(max_examples=200, deadline=None)
@given(linear_trees())
def test_normal_form_matches_independent_evaluation(tree):
    text, expected = tree
    coefficients = parse_expression(text, NAMES).coefficients()
    assert set(coefficients) == set(expected)
    for name in expected:
        assert coefficients[name] == pytest.approx(expected[name], abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(linear_trees(), st.floats(-3, 3, allow_nan=False).filter(lambda x: abs(x) > 1e-3))
def test_normal_form_is_linear(tree, scale):
    text, _ = tree
    base = parse_expression(text, NAMES).coefficients()
    scaled = parse_expression(f"{scale!r}*({text})", NAMES).coefficients()
    negated_twice = parse_expression(f"-(-({text}))", NAMES).coefficients()
    for name in base:
        assert scaled[name] == pytest.approx(scale * base[name], abs=1e-9)
        assert negated_twice[name] == base[name]


@settings(max_examples=100, deadline=None)
@given(linear_trees())
def test_reparsing_the_normal_form_is_a_fixed_point(tree):
    text, _ = tree
    first = parse_expression(text, NAMES)
    again = parse_expression(str(first), NAMES)
    assert again.coefficients() == pytest.approx(first.coefficients())
