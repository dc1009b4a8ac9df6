"""A tiny, safe expression language for search-space files.

Expressions are parsed with :mod:`ast` and walked by a whitelist interpreter; nothing is ever
handed to ``eval``. Allowed:

* literals: numbers (int, float), strings, ``True`` / ``False``;
* names (looked up in the mapping given to :meth:`Expr.evaluate`);
* arithmetic ``+ - * / // % **`` and unary ``+ - not``;
* comparisons ``== != < <= > >=`` (chains like ``1 <= x < 8`` too), ``in`` / ``not in`` with a
  tuple or list literal on the right;
* ``and`` / ``or``, parentheses;
* calls of ``min``, ``max`` and ``abs`` (positional arguments only).

Anything else (attribute access, subscripts, other calls, lambdas, comprehensions, f-strings,
``if``-expressions, ...) is rejected with an :class:`ExprError` naming the expression.
"""

from __future__ import annotations

import ast
import math
import operator
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Expr", "ExprError", "clip", "compile_expr", "evaluate", "quote", "same_value"]

MAX_LENGTH = 500  # characters
MAX_NODES = 200
MAX_POW_EXPONENT = 64
MAX_INT_BITS = 256
QUOTE_LIMIT = 100  # characters of a user value that an error message quotes

FUNCTIONS: dict[str, Callable[..., Any]] = {"min": min, "max": max, "abs": abs}

_BINOPS: dict[type[ast.operator], tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", operator.pow),
}

_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}

# Human-readable names for the node types people most often try, for error messages.
_NODE_NAMES: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambda",
    ast.IfExp: "conditional expressions",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: "f-strings",
    ast.Dict: "dict literals",
    ast.Set: "set literals",
    ast.NamedExpr: "assignment expressions",
    ast.Starred: "star arguments",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


def _quoter() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel = 3
    r.maxdict = r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = 8
    r.maxstring = r.maxother = QUOTE_LIMIT
    r.maxlong = 40
    return r


_QUOTER = _quoter()


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text`` itself if it has at most ``limit`` characters, else its start and ``...``
    (``limit`` characters in all)."""
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def quote(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error message, at most ``limit`` characters however large
    ``value`` is.

    Long strings, big numbers and nested or long containers are elided by :mod:`reprlib` as the
    text is built, so a huge value (a YAML alias bomb: a few shared lists standing for billions of
    items) costs no more than a small one. Short values read exactly as ``repr`` (dict keys sorted).
    """
    try:
        text = _QUOTER.repr(value)
    except Exception:  # noqa: BLE001 - a repr that fails (an int past Python's digit limit)
        text = f"<{type(value).__name__}>"
    return clip(text, limit)


class ExprError(ValueError):
    """An expression is malformed, uses forbidden syntax, or cannot be evaluated."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Expr:
    """A validated expression: its source text, the names it reads, and its syntax tree."""

    text: str
    names: frozenset[str]
    tree: ast.Expression = field(repr=False, compare=False)

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """Evaluate with ``env`` supplying the names; :class:`ExprError` on any failure."""
        missing = sorted(n for n in self.names if n not in env)
        if missing:
            raise ExprError(
                f"expression {quote(self.text)}: unknown name{'s' if len(missing) > 1 else ''} "
                f"{', '.join(quote(m) for m in missing)}"
            )
        try:
            return _Evaluator(self.text, env).visit(self.tree.body)
        except ExprError:
            raise
        except ZeroDivisionError:
            raise ExprError(f"expression {quote(self.text)}: division by zero") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExprError(f"expression {quote(self.text)}: {exc}") from None


def compile_expr(text: str) -> Expr:
    """Parse and whitelist-check ``text``; raise :class:`ExprError` naming it if not allowed."""
    if not isinstance(text, str):
        raise ExprError(f"expression {quote(text)}: expected a string")
    src = text.strip()
    if not src:
        raise ExprError("expression '': empty expression")
    if len(src) > MAX_LENGTH:
        raise ExprError(f"expression {quote(src)}: longer than {MAX_LENGTH} characters")
    if "\n" in src or "\r" in src:
        raise ExprError(f"expression {quote(src)}: must be a single line")
    try:
        tree = ast.parse(src, mode="eval")
    except SyntaxError as exc:
        detail = exc.msg or "invalid syntax"
        if detail != "invalid syntax":
            detail = f"invalid syntax ({detail})"
        raise ExprError(f"expression {quote(src)}: {detail}") from None
    checker = _Checker(src)
    checker.check(tree.body)
    return Expr(src, frozenset(checker.names), tree)


def evaluate(text: str, env: Mapping[str, Any]) -> Any:
    """Shorthand: ``compile_expr(text).evaluate(env)``."""
    return compile_expr(text).evaluate(env)


class _Checker:
    """Recursive whitelist check; collects the data names an expression reads."""

    def __init__(self, src: str) -> None:
        self.src = src
        self.names: set[str] = set()
        self.count = 0

    def reject(self, what: str) -> ExprError:
        return ExprError(f"expression {quote(self.src)}: {what} not allowed")

    def check(self, node: ast.AST) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise ExprError(
                f"expression {quote(self.src)}: too complex (more than {MAX_NODES} nodes)"
            )
        if isinstance(node, ast.Constant):
            value = node.value
            if isinstance(value, bool) or _is_number(value) or isinstance(value, str):
                return
            raise self.reject(f"literal {quote(value)}")
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                raise self.reject(f"name {quote(node.id)} (leading underscore)")
            if node.id in FUNCTIONS:
                raise ExprError(
                    f"expression {quote(self.src)}: {quote(node.id)} is a function; call it"
                )
            self.names.add(node.id)
            return
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise self.reject(f"operator {type(node.op).__name__}")
            self.check(node.left)
            self.check(node.right)
            return
        if isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.UAdd, ast.USub, ast.Not)):
                raise self.reject(f"operator {type(node.op).__name__}")
            self.check(node.operand)
            return
        if isinstance(node, ast.BoolOp):
            for value in node.values:
                self.check(value)
            return
        if isinstance(node, ast.Compare):
            self.compare(node)
            return
        if isinstance(node, ast.Call):
            self.call(node)
            return
        if isinstance(node, (ast.Tuple, ast.List)):
            raise self.reject("tuple or list literals outside 'in'")
        raise self.reject(_NODE_NAMES.get(type(node), f"syntax {type(node).__name__}"))

    def compare(self, node: ast.Compare) -> None:
        self.check(node.left)
        for op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, (ast.In, ast.NotIn)):
                if len(node.ops) > 1:
                    raise self.reject("chaining 'in' with other comparisons")
                if not isinstance(right, (ast.Tuple, ast.List)):
                    raise ExprError(
                        f"expression {quote(self.src)}: 'in' needs a tuple or list literal on the right"
                    )
                for element in right.elts:
                    self.check(element)
            elif type(op) in _CMPOPS:
                self.check(right)
            else:
                raise self.reject(f"comparison {type(op).__name__}")

    def call(self, node: ast.Call) -> None:
        func = node.func
        if not isinstance(func, ast.Name):
            raise self.reject(_NODE_NAMES.get(type(func), "calls of computed functions"))
        if func.id not in FUNCTIONS:
            raise ExprError(
                f"expression {quote(self.src)}: call of {quote(func.id)} not allowed "
                f"(allowed functions: {', '.join(sorted(FUNCTIONS))})"
            )
        if node.keywords:
            raise self.reject("keyword arguments")
        if not node.args:
            raise ExprError(f"expression {quote(self.src)}: {func.id}() needs arguments")
        if func.id == "abs" and len(node.args) != 1:
            raise ExprError(f"expression {quote(self.src)}: abs() takes exactly one argument")
        for arg in node.args:
            self.check(arg)


class _Evaluator:
    def __init__(self, src: str, env: Mapping[str, Any]) -> None:
        self.src = src
        self.env = env

    def fail(self, what: str) -> ExprError:
        return ExprError(f"expression {quote(self.src)}: {what}")

    def visit(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.env[node.id]
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.UnaryOp):
            value = self.visit(node.operand)
            if isinstance(node.op, ast.Not):
                return not value
            if not _is_number(value):
                raise self.fail(f"unary minus/plus needs a number, got {quote(value)}")
            return -value if isinstance(node.op, ast.USub) else +value
        if isinstance(node, ast.BoolOp):
            result: Any = None
            for operand in node.values:
                result = self.visit(operand)
                if isinstance(node.op, ast.And) and not result:
                    return result
                if isinstance(node.op, ast.Or) and result:
                    return result
            return result
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            args = [self.visit(a) for a in node.args]
            for arg in args:
                if not _is_number(arg):
                    raise self.fail(f"{node.func.id}() needs numbers, got {quote(arg)}")  # type: ignore[attr-defined]
            func = FUNCTIONS[node.func.id]  # type: ignore[attr-defined]
            return func(*args) if len(args) > 1 or func is abs else args[0]
        raise self.fail(f"syntax {type(node).__name__} not allowed")  # pragma: no cover

    def binop(self, node: ast.BinOp) -> Any:
        symbol, func = _BINOPS[type(node.op)]
        left = self.visit(node.left)
        right = self.visit(node.right)
        if isinstance(node.op, ast.Add) and isinstance(left, str) and isinstance(right, str):
            if len(left) + len(right) > MAX_LENGTH:
                raise self.fail("string result too long")
            return left + right
        if not (_is_number(left) and _is_number(right)):
            raise self.fail(
                f"operator {symbol} needs numbers, got {quote(left)} and {quote(right)}"
            )
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_POW_EXPONENT:
                raise self.fail(f"exponent {quote(right)} too large (limit {MAX_POW_EXPONENT})")
            if left == 0 and right < 0:
                raise ZeroDivisionError
        result = func(left, right)
        if isinstance(result, complex):
            raise self.fail("result is not a real number")
        if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
            raise self.fail("integer result too large")
        if isinstance(result, float) and not math.isfinite(result):
            raise self.fail("result is not finite")
        return result

    def compare(self, node: ast.Compare) -> bool:
        left = self.visit(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, (ast.In, ast.NotIn)):
                items = [self.visit(e) for e in right_node.elts]  # type: ignore[attr-defined]
                found = any(same_value(left, item) for item in items)
                return found if isinstance(op, ast.In) else not found
            right = self.visit(right_node)
            if isinstance(op, (ast.Eq, ast.NotEq)):
                ok = same_value(left, right)
                ok = ok if isinstance(op, ast.Eq) else not ok
            else:
                if isinstance(left, bool) or isinstance(right, bool):
                    raise self.fail(f"cannot order booleans ({quote(left)}, {quote(right)})")
                if _is_number(left) != _is_number(right):
                    raise self.fail(f"cannot compare {quote(left)} with {quote(right)}")
                ok = _CMPOPS[type(op)](left, right)
            if not ok:
                return False
            left = right
        return True


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from numbers (``True != 1`` here)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) != isinstance(b, str):
        return False
    return a == b
