"""The request class: Litestar's, with every undecodable JSON body a 400.

Litestar maps ``msgspec.DecodeError`` to 400 but lets ``UnicodeDecodeError``
(bytes that are not UTF-8) and ``RecursionError`` (arrays nested past the
decoder's depth) escape as 500s with a logged traceback, which any client
could use to flood the error log. Imports only Litestar.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException

__all__ = ["GatewayRequest"]


class GatewayRequest(Request[Any, Any, Any]):
    """A ``Request`` whose ``json()`` turns any undecodable body into a 400."""

    async def json(self) -> Any:
        """The decoded JSON body; 400 when it is not UTF-8 or nested too deeply."""
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise ClientException("the request body is not valid UTF-8 JSON") from None
        except RecursionError:
            raise ClientException("the request body is nested too deeply") from None
