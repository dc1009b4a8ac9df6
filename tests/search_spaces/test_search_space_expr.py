"""The safe expression evaluator (perftune.search_spaces._expr)."""

from __future__ import annotations

import pytest

from perftune.search_spaces import ExprError, compile_expr
from perftune.search_spaces._expr import evaluate

ENV = {"cores": 8, "device_count": 2, "x": 3, "ratio": 0.5, "opt": "adam", "flag": True}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("42", 42),
        ("1.5e-3", 1.5e-3),
        ("1e-4", 1e-4),
        ("cores", 8),
        ("cores // 3", 2),
        ("cores / 4", 2.0),
        ("cores % 3", 2),
        ("2 ** 10", 1024),
        ("-x + +x", 0),
        ("(cores - 2) * 3", 18),
        ("min(cores, 4)", 4),
        ("max(1, cores // 16)", 1),
        ("max(x, cores, device_count)", 8),
        ("abs(-ratio)", 0.5),
        ("1 <= x < 8", True),
        ("1 <= x < 2", False),
        ("x == 3 != 4", True),
        ("x >= 3 and device_count > 1", True),
        ("x > 3 or device_count > 1", True),
        ("not flag", False),
        ("opt == 'adam'", True),
        ('opt != "sgd"', True),
        ("opt in ('adam', 'adamw')", True),
        ("opt not in ['adam', 'adamw']", False),
        ("x in (1, 2, 3)", True),
        ("flag == True", True),
        ("flag == 1", False),  # booleans are not numbers here
        ("x == 'x'", False),
        ("'a' + 'b' == 'ab'", True),
    ],
)
def test_evaluates(text, expected):
    result = evaluate(text, ENV)
    assert result == expected
    assert type(result) is type(expected)


def test_names_are_collected():
    expr = compile_expr("world_size * num_threads <= min(cores, 64)")
    assert expr.names == frozenset({"world_size", "num_threads", "cores"})
    assert expr.text == "world_size * num_threads <= min(cores, 64)"
    assert expr.evaluate({"world_size": 2, "num_threads": 4, "cores": 8}) is True


def test_short_circuit_skips_bad_operand():
    # The right side would fail (str * number) but is never evaluated.
    assert evaluate("opt == 'adam' or opt * 2", ENV) is True


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("__import__('os')", "call of '__import__' not allowed"),
        ("open('/etc/passwd')", "call of 'open' not allowed"),
        ("eval('1')", "call of 'eval' not allowed"),
        ("cores.real", "attribute access not allowed"),
        ("().__class__", "attribute access not allowed"),
        ("(1).__class__.__bases__", "attribute access not allowed"),
        ("x[0]", "subscripts not allowed"),
        ("lambda: 1", "lambda not allowed"),
        ("[i for i in (1, 2)]", "comprehensions not allowed"),
        ("1 if x else 2", "conditional expressions not allowed"),
        ("f'{x}'", "f-strings not allowed"),
        ("{'a': 1}", "dict literals not allowed"),
        ("(x := 3)", "assignment expressions not allowed"),
        ("(1, 2)", "tuple or list literals outside 'in' not allowed"),
        ("x in opt", "'in' needs a tuple or list literal"),
        ("x is None", "comparison Is not allowed"),
        ("None", "literal None not allowed"),
        ("x << 2", "operator LShift not allowed"),
        ("x & 1", "operator BitAnd not allowed"),
        ("~x", "operator Invert not allowed"),
        ("_secret", "leading underscore"),
        ("min", "'min' is a function"),
        ("min(x, key=abs)", "keyword arguments not allowed"),
        ("max()", "max() needs arguments"),
        ("abs(1, 2)", "abs() takes exactly one argument"),
        ("1 +", "invalid syntax"),
        ("x = 1", "invalid syntax"),
        ("", "empty expression"),
        ("1\n+ 1", "single line"),
    ],
)
def test_rejects_forbidden_syntax(text, fragment):
    with pytest.raises(ExprError) as info:
        compile_expr(text)
    message = str(info.value)
    assert fragment in message
    assert message.startswith("expression ")
    if text.strip() and "\n" not in text:
        assert repr(text.strip()) in message  # names the expression


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("cores / 0", "division by zero"),
        ("cores // (x - 3)", "division by zero"),
        ("opt * 2", "operator * needs numbers"),
        ("opt < 3", "cannot compare"),
        ("flag < 3", "cannot order booleans"),
        ("2 ** 100", "exponent 100 too large"),
        ("(2 ** 60) ** 60", "integer result too large"),
        ("missing + 1", "unknown name 'missing'"),
        ("min(opt, 1)", "min() needs numbers"),
    ],
)
def test_evaluation_errors(text, fragment):
    with pytest.raises(ExprError) as info:
        evaluate(text, ENV)
    assert fragment in str(info.value)
    assert repr(text) in str(info.value)


def test_length_limit():
    with pytest.raises(ExprError, match="longer than"):
        compile_expr("1 + " * 200 + "1")


def test_non_string_is_rejected():
    with pytest.raises(ExprError, match="expected a string"):
        compile_expr(3)  # type: ignore[arg-type]
