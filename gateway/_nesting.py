"""How deeply JSON may nest where it comes from outside: one limit, checked before decoding.

msgspec decodes nesting up to Python's recursion limit and raises ``RecursionError``
past it, but what then walks the value in Python (``copy.deepcopy`` of an action's
arguments, about 500 levels) overflowed well before that: a client's body nested
that deep was an ``internal_error``. Every JSON a client or a model sends (HTTP
bodies, WebSocket frames, tool arguments) is held to ``MAX_JSON_DEPTH`` instead,
the depth the manifest loader allows YAML (``manifests._yaml.MAX_DEPTH``).
``too_deep`` looks at the raw text (C-speed counts first: text with fewer brackets
than the limit cannot nest past it); ``value_too_deep`` at a decoded value.
Imports nothing of the gateway.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["MAX_JSON_DEPTH", "too_deep", "value_too_deep"]

MAX_JSON_DEPTH = 100
"""Deepest nesting of arrays and objects accepted in JSON from outside."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
"""A JSON string; one left open runs to the end of the text (linear: a required closing
quote made each of n unclosed ``\\"`` scan to the end again, quadratic)."""
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_OPENING = frozenset(b"[{")


def too_deep(raw: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text ``raw`` nests arrays and objects more than ``limit`` deep.

    Brackets inside strings do not count. Text that is not JSON gets an answer that
    means nothing; its decoder refuses it anyway.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        if byte in _OPENING:
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def value_too_deep(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether decoded JSON ``value`` nests lists and dicts more than ``limit`` deep
    (iterative: any depth is measured without recursing)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
