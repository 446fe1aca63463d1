"""The request class: Litestar's, with every undecodable JSON body a 400.

Litestar maps ``msgspec.DecodeError`` to 400 but lets ``UnicodeDecodeError``
(bytes that are not UTF-8) and ``RecursionError`` (arrays nested past the
decoder's depth) escape as 500s with a logged traceback, which any client
could use to flood the error log. A body nested past ``MAX_JSON_DEPTH`` is
refused before it is decoded (what walks it later in Python would overflow).
A body after a UTF-8 byte-order mark (a file saved by Notepad, sent with
``curl --data-binary @file``) is a 400 saying so (``BOM_FOUND``; the decoder's
own message, "invalid character (byte 0)", pointed nowhere); one after a UTF-16
or UTF-32 byte-order mark (PowerShell's ``Out-File``) is a 400 naming that
encoding and asking for UTF-8. WebSocket frames get the same words
(``bom_problem``).
Imports Litestar and ``gateway._nesting``.
"""

from __future__ import annotations

import codecs
from typing import Any

from litestar import Request
from litestar.exceptions import ClientException

from gateway._nesting import MAX_JSON_DEPTH, too_deep

__all__ = ["BOM_FOUND", "TOO_DEEP", "GatewayRequest", "bom_problem"]

TOO_DEEP = f"nested too deeply (more than {MAX_JSON_DEPTH} levels of arrays and objects)"
"""The end of the message for JSON from a client nested past the limit."""

BOM_FOUND = "starts with a UTF-8 byte-order mark (BOM): send the JSON without it"
"""The end of the message for JSON from a client that follows a byte-order mark."""


# UTF-32 first: its little-endian mark starts with UTF-16's.
_OTHER_ENCODINGS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def bom_problem(raw: str | bytes) -> str | None:
    """What is wrong with ``raw`` (a body, or a text or binary frame) if it begins with a
    byte-order mark: the end of a sentence (``BOM_FOUND``, or that it is UTF-16 or UTF-32
    and must be UTF-8); None without one."""
    if isinstance(raw, str):
        return BOM_FOUND if raw.startswith("\ufeff") else None
    if raw.startswith(codecs.BOM_UTF8):
        return BOM_FOUND
    for bom, name in _OTHER_ENCODINGS:
        if raw.startswith(bom):
            return f"is {name} (it starts with a {name} byte-order mark): JSON must be UTF-8"
    return None


class GatewayRequest(Request[Any, Any, Any]):
    """A ``Request`` whose ``json()`` turns any undecodable body into a 400."""

    async def json(self) -> Any:
        """The decoded JSON body; 400 when it is not UTF-8, follows a byte-order mark or is
        nested too deeply."""
        body = await self.body()
        if (problem := bom_problem(body)) is not None:
            raise ClientException(f"the request body {problem}")
        if too_deep(body):
            raise ClientException(f"the request body is {TOO_DEEP}")
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise ClientException("the request body is not valid UTF-8 JSON") from None
        except RecursionError:  # not reached past the check above; kept as the last guard
            raise ClientException(f"the request body is {TOO_DEEP}") from None
