"""Derived metrics: a small arithmetic expression over signals, evaluated without ``eval``.

``100 * BMS_nominalFullPackEnergy / BMS_beginningOfLifeEnergy`` is parsed once
with ``ast`` and only a whitelist of nodes is accepted: numbers, operand names
(``Signal`` or ``Message.Signal``), ``+ - * / **``, unary minus and the
functions ``min``, ``max``, ``abs``. Anything else (attribute chains, calls to
other names, subscripts, comparisons, lambdas...) is a configuration error.
The result is a plain closure over a dict of operand values: no code object
is ever executed.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass

Evaluator = Callable[[dict[str, float]], float]

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}
MAX_LENGTH = 500


class ExpressionError(ValueError):
    """The expression is not one this module accepts; the message says why."""


@dataclass(frozen=True)
class Expression:
    """A parsed expression: its text, its operand names in order of appearance, its evaluator."""

    text: str
    operands: tuple[str, ...]
    evaluate: Evaluator


def parse_expression(text: str) -> Expression:
    """Parses ``text``; raises ``ExpressionError`` for anything outside the whitelist."""
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"not an arithmetic expression: {exc.msg}") from None
    operands: list[str] = []
    evaluate = _compile(tree.body, operands)
    if not operands:
        raise ExpressionError("uses no signal")
    return Expression(text, tuple(dict.fromkeys(operands)), evaluate)


def _compile(node: ast.AST, operands: list[str]) -> Evaluator:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise ExpressionError(f"{node.value!r} is not a number")
        value = float(node.value)
        return lambda _v: value
    name = _operand_name(node)
    if name is not None:
        if "__" in name:
            raise ExpressionError(f"{name!r} is not a signal name")
        operands.append(name)
        return lambda v: v[name]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op = _BINARY[type(node.op)]
        left, right = _compile(node.left, operands), _compile(node.right, operands)
        return lambda v: op(left(v), right(v))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        uop = _UNARY[type(node.op)]
        inner = _compile(node.operand, operands)
        return lambda v: uop(inner(v))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
        and node.args
    ):
        fn = _FUNCTIONS[node.func.id]
        args = [_compile(a, operands) for a in node.args]
        if fn is abs and len(args) != 1:
            raise ExpressionError("abs takes one argument")
        return lambda v: float(fn(*(a(v) for a in args)))
    raise ExpressionError(f"{ast.unparse(node)!r} is not allowed (numbers, signals, + - * / **)")


def _operand_name(node: ast.AST) -> str | None:
    """``Signal`` or ``Message.Signal``; None when ``node`` is neither."""
    if isinstance(node, ast.Name):
        if node.id in _FUNCTIONS:
            raise ExpressionError(f"{node.id!r} is a function, not a signal")
        return node.id
    if (
        isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and isinstance(node.ctx, ast.Load)
    ):
        return f"{node.value.id}.{node.attr}"
    return None
