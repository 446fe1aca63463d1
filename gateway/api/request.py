"""The request class: Litestar's, with every undecodable JSON body a 400.

Litestar maps ``msgspec.DecodeError`` to 400 but lets ``UnicodeDecodeError``
(bytes that are not UTF-8) and ``RecursionError`` (arrays nested past the
decoder's depth) escape as 500s with a logged traceback, which any client
could use to flood the error log. A body nested past ``MAX_JSON_DEPTH`` is
refused before it is decoded (what walks it later in Python would overflow).
A body after a UTF-8 byte-order mark (a file saved by Notepad, sent with
``curl --data-binary @file``) is a 400 saying so (``BOM_FOUND``; the decoder's
own message, "invalid character (byte 0)", pointed nowhere); WebSocket frames
get the same words (``starts_with_bom``).
Imports Litestar and ``gateway._nesting``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException

from gateway._nesting import MAX_JSON_DEPTH, too_deep

__all__ = ["BOM_FOUND", "TOO_DEEP", "GatewayRequest", "starts_with_bom"]

TOO_DEEP = f"nested too deeply (more than {MAX_JSON_DEPTH} levels of arrays and objects)"
"""The end of the message for JSON from a client nested past the limit."""

BOM_FOUND = "starts with a UTF-8 byte-order mark (BOM): send the JSON without it"
"""The end of the message for JSON from a client that follows a byte-order mark."""


def starts_with_bom(raw: str | bytes) -> bool:
    """Whether ``raw`` (a body, or a text or binary frame) begins with a byte-order mark."""
    return raw.startswith("\ufeff") if isinstance(raw, str) else raw.startswith(b"\xef\xbb\xbf")


class GatewayRequest(Request[Any, Any, Any]):
    """A ``Request`` whose ``json()`` turns any undecodable body into a 400."""

    async def json(self) -> Any:
        """The decoded JSON body; 400 when it is not UTF-8, follows a byte-order mark or is
        nested too deeply."""
        body = await self.body()
        if starts_with_bom(body):
            raise ClientException(f"the request body {BOM_FOUND}")
        if too_deep(body):
            raise ClientException(f"the request body is {TOO_DEEP}")
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise ClientException("the request body is not valid UTF-8 JSON") from None
        except RecursionError:  # not reached past the check above; kept as the last guard
            raise ClientException(f"the request body is {TOO_DEEP}") from None
