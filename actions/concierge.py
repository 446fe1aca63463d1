"""Everyday helpers for the ``concierge`` assistant: arithmetic and unit conversion.

Pure functions with no network: safe to run anywhere, quick to test.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Literal

__all__ = ["calculate", "convert_units"]

_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "log": math.log,
    "sin": math.sin,
    "cos": math.cos,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def calculate(formula: str) -> float:
    """Calculate an arithmetic formula exactly, e.g. "(12 + 30) * 2" or "sqrt(2) ** 3".

    Args:
        formula: The arithmetic to evaluate: numbers, + - * / // % **,
            parentheses, pi, e and sqrt/abs/round/min/max/log/sin/cos.
    """
    tree = ast.parse(formula.replace("^", "**"), mode="eval")
    return _eval(tree.body)


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 1000:
            raise ValueError("exponent too large")
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _FUNCTIONS[node.func.id](*(_eval(arg) for arg in node.args))
    raise ValueError(f"unsupported expression element: {ast.dump(node)[:60]}")


Unit = Literal[
    "km", "miles", "kg", "lb", "celsius", "fahrenheit", "cm", "inches", "liters", "gallons"
]

_TO_OTHER: dict[str, tuple[str, Callable[[float], float]]] = {
    "km": ("miles", lambda v: v / 1.609344),
    "miles": ("km", lambda v: v * 1.609344),
    "kg": ("lb", lambda v: v / 0.45359237),
    "lb": ("kg", lambda v: v * 0.45359237),
    "celsius": ("fahrenheit", lambda v: v * 9 / 5 + 32),
    "fahrenheit": ("celsius", lambda v: (v - 32) * 5 / 9),
    "cm": ("inches", lambda v: v / 2.54),
    "inches": ("cm", lambda v: v * 2.54),
    "liters": ("gallons", lambda v: v / 3.785411784),
    "gallons": ("liters", lambda v: v * 3.785411784),
}


def convert_units(value: float, unit: Unit, decimals: int = 2) -> dict[str, object]:
    """Convert a measurement between metric and imperial units (km/miles, kg/lb, °C/°F...).

    Args:
        value: The amount to convert, e.g. 10.
        unit: The unit the amount is in; the result is in its metric or imperial counterpart.
        decimals: How many decimal places to round the result to.
    """
    target, convert = _TO_OTHER[unit]
    return {
        "value": value,
        "unit": unit,
        "result": round(convert(value), decimals),
        "result_unit": target,
    }
