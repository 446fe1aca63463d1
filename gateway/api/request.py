"""The request class: Litestar's, with every undecodable JSON body a 400.

Litestar maps ``msgspec.DecodeError`` to 400 but lets ``UnicodeDecodeError``
(bytes that are not UTF-8) and ``RecursionError`` (arrays nested past the
decoder's depth) escape as 500s with a logged traceback, which any client
could use to flood the error log. A body nested past ``MAX_JSON_DEPTH`` is
refused before it is decoded (what walks it later in Python would overflow).
Imports Litestar and ``gateway._nesting``.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException

from gateway._nesting import MAX_JSON_DEPTH, too_deep

__all__ = ["TOO_DEEP", "GatewayRequest"]

TOO_DEEP = f"nested too deeply (more than {MAX_JSON_DEPTH} levels of arrays and objects)"
"""The end of the message for JSON from a client nested past the limit."""


class GatewayRequest(Request[Any, Any, Any]):
    """A ``Request`` whose ``json()`` turns any undecodable body into a 400."""

    async def json(self) -> Any:
        """The decoded JSON body; 400 when it is not UTF-8 or nested too deeply."""
        if too_deep(await self.body()):
            raise ClientException(f"the request body is {TOO_DEEP}")
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise ClientException("the request body is not valid UTF-8 JSON") from None
        except RecursionError:  # not reached past the check above; kept as the last guard
            raise ClientException(f"the request body is {TOO_DEEP}") from None
