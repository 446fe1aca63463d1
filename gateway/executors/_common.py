"""Shared pieces of the action kinds: the typed tool error and JSON-safe values.

Runs on both sides (load-time checks in the server, ``run`` in the sandbox
child). Imports only the standard library.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import uuid
from typing import Any

__all__ = ["ToolError", "json_safe"]


class ToolError(Exception):
    """A failure an action kind reports to the model with a type and fields.

    ``error_type`` becomes ``ToolResult.error_type`` and the ``type`` in the
    JSON the model reads; ``detail`` adds fields (for example ``status``).
    """

    def __init__(self, error_type: str, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.detail = detail


def json_safe(value: Any) -> Any:
    """Convert a database or library value to something JSON can carry losslessly enough.

    Decimals become numbers when exact, else strings; dates and times ISO 8601;
    bytes ``base64:...``; anything else unknown its ``str``.
    """
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return (
            value if value == value and value not in (float("inf"), float("-inf")) else str(value)
        )
    if isinstance(value, decimal.Decimal):
        if value.is_finite():
            as_float = float(value)
            if decimal.Decimal(repr(as_float)) == value:
                return (
                    int(as_float) if as_float.is_integer() and abs(as_float) < 2**53 else as_float
                )
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return "base64:" + base64.b64encode(bytes(value)).decode()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)
