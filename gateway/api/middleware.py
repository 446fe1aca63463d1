"""The outermost ASGI layer: correlation id, auth, rate limit, body limit, access log, metrics.

It wraps Litestar's whole handler (router and exception handling included),
so every response, even a 404 for an unknown path, carries
``X-Correlation-ID`` and gets exactly one access line. An incoming
``X-Correlation-ID`` or ``X-Request-ID`` is reused when it is short and made
of safe characters; otherwise a new one is made. Auth is decided by path
(``auth.route_access``) before routing, so an unknown path without a key is
a 401, not a 404. A gateway that needs no key refuses (403) browser requests
from other origins (an ``Origin`` that is neither its own host nor in
``GATEWAY_CORS_ORIGINS``, matched by the rule Litestar's CORS gets too, see
``gateway._origins``): a key is what stops them otherwise. Listening on
loopback, such a gateway also refuses browser requests (``Origin`` or
``Sec-Fetch-Site``) for any host but a loopback name: a page whose own name
an attacker rebinds to 127.0.0.1 (DNS rebinding) is same-origin with the
gateway, so its origin alone would pass. The access
line never holds bodies, query strings or keys. Metric labels are bounded:
a method outside the standard ones is counted as ``OTHER``. A HEAD response's
body is dropped here (its headers stay the GET's), whatever the server does.
Imports ``gateway.api.auth``, ``gateway.api.errors``, ``gateway.api.metrics``,
``gateway._origins``.
"""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from typing import Any, cast
from urllib.parse import unquote

import msgspec
import structlog
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.types.asgi_types import WebSocketAcceptEvent

from gateway._origins import AllowedOrigins
from gateway.api.auth import OPEN_PRINCIPAL, KeyRing, Principal, RateLimiter, route_access
from gateway.api.errors import CID_KEY, error_body
from gateway.api.metrics import Metrics

__all__ = [
    "PRINCIPAL_KEY",
    "SUBPROTOCOL_KEY",
    "GatewayMiddleware",
    "is_loopback_host",
    "principal_of",
    "take_rate_token",
]

PRINCIPAL_KEY = "gateway.principal"
SUBPROTOCOL_KEY = "gateway.subprotocol"
_RATE_KEY = "gateway.rate"
_SANE_ID = re.compile(rb"^[A-Za-z0-9._:/+=-]{1,128}$")
_NO_ROUTE = "<unmatched>"
# The methods the metrics name; any other token a client sends is counted as OTHER,
# so no request (authenticated or not) can add a time series of its own.
_METRIC_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "WS"})

access_log = structlog.get_logger("gateway.access")


def principal_of(scope: Scope) -> Principal:
    """The authenticated caller of this request (set by the middleware)."""
    state: dict[str, Any] = scope.get("state", {})
    principal = state.get(PRINCIPAL_KEY)
    return principal if isinstance(principal, Principal) else OPEN_PRINCIPAL


def take_rate_token(scope: Scope) -> float:
    """Take one more token from the caller's rate-limit bucket, for one WebSocket exchange.

    The handshake took the first token (it pays for the first exchange); each
    later message of the connection draws from the same bucket as the key's
    HTTP requests, so one socket cannot bypass ``GATEWAY_RATE_LIMIT``.

    Returns:
        0.0 when allowed (or rate limiting is off), else seconds until a token is due.
    """
    state: dict[str, Any] = scope.get("state", {})
    entry = state.get(_RATE_KEY)
    if entry is None:
        return 0.0
    limiter, ident = entry
    wait: float = limiter.take(ident)
    return wait


class _Denied(Exception):
    def __init__(self, status: int, type_: str, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.retry_after = retry_after


class GatewayMiddleware:
    """Wraps Litestar's ASGI handler; see the module docstring.

    Args:
        app: Litestar's ``asgi_handler``.
        keys: the configured keys.
        limiter: per-caller token bucket, or None when rate limiting is off.
        metrics: where request counts and durations go.
        max_body_bytes: larger declared bodies are refused with 413 before reading.
        cors_origins: browser origins allowed (``*`` for any, ``https://*.example.com``
            wildcards; as ``gateway._origins.parse_origin`` returns them): CORS preflights
            pass without a key, and refusals made here carry the CORS header.
        loopback: the server listens on a loopback address only; an open gateway then
            serves browsers only under loopback names (see the module docstring).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: KeyRing,
        limiter: RateLimiter | None,
        metrics: Metrics,
        max_body_bytes: int,
        cors_origins: tuple[str, ...] = (),
        loopback: bool = False,
    ) -> None:
        self.app = app
        self.loopback = loopback
        self.origins = AllowedOrigins(cors_origins)
        self.keys = keys
        self.limiter = limiter
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, asgi_scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request or WebSocket connection."""
        scope = cast("dict[str, Any]", asgi_scope)
        kind = str(scope["type"])
        if kind not in ("http", "websocket"):
            await self.app(asgi_scope, receive, send)
            return
        started = time.perf_counter()
        headers = dict(scope["headers"])
        cid = _correlation_id(headers)
        state: dict[str, Any] = scope.setdefault("state", {})
        state[CID_KEY] = cid
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(correlation_id=cid)
        path = scope["path"]
        method = scope.get("method", "WS")
        status = 500
        principal = OPEN_PRINCIPAL
        cid_header = (b"x-correlation-id", cid.encode())

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), cid_header]
            elif message["type"] == "http.response.body" and method == "HEAD":
                message["body"] = b""  # the GET's headers (length included), never its body
            elif message["type"] == "websocket.accept":
                status = 101
                message["headers"] = [*message.get("headers", ()), cid_header]
            elif message["type"] == "websocket.close" and status == 500:
                status = 403  # closed before the handshake completed
            await send(message)

        self.metrics.in_flight.inc()
        try:
            principal = self._admit(scope, headers, path, kind)
            state[PRINCIPAL_KEY] = principal
            await self.app(asgi_scope, receive, send_wrapper)
        except _Denied as denied:
            status = denied.status
            if kind == "http":
                await _send_error(send_wrapper, denied, cid, self._allow_origin(headers))
            else:
                await _refuse_websocket(receive, send_wrapper, denied, cid, state)
                status = denied.status  # accepted only to say why, then closed
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or _NO_ROUTE
            label = method if method in _METRIC_METHODS else "OTHER"
            self.metrics.requests.labels(label, route, str(status)).inc()
            self.metrics.request_seconds.labels(label, route).observe(elapsed)
            access_log.info(
                "request",
                method=method,
                path=path,
                status=status,
                duration_ms=round(elapsed * 1000, 3),
                client=principal.name,
            )

    def _admit(
        self, scope: dict[str, Any], headers: dict[bytes, bytes], path: str, kind: str
    ) -> Principal:
        if kind == "http":
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                raise _Denied(
                    413,
                    "payload_too_large",
                    f"request body over the limit of {self.max_body_bytes} bytes",
                )
        level = route_access(path)
        if level == "open" or self._preflight(scope, headers):
            return OPEN_PRINCIPAL
        principal = self._authenticate(scope, headers, kind)
        if self.keys.open and self._foreign_origin(headers):
            raise _Denied(
                403,
                "forbidden",
                "request from another origin refused: this gateway needs no key, so only its "
                "own pages and the origins in GATEWAY_CORS_ORIGINS may call it",
            )
        if self.keys.open and self._rebound(headers):
            host = headers.get(b"host", b"").decode("latin-1")[:100]
            raise _Denied(
                403,
                "forbidden",
                f"browser request for host {host!r} refused: this gateway needs no key and "
                "listens on loopback, so browsers may reach it only as localhost, 127.0.0.1 "
                "or [::1] (or from an origin in GATEWAY_CORS_ORIGINS)",
            )
        if level == "admin" and not principal.admin:
            raise _Denied(403, "forbidden", "this route needs an admin key")
        if self.limiter is not None:
            ident = principal.name if not self.keys.open else _client_ip(scope)
            scope["state"][_RATE_KEY] = (self.limiter, ident)  # see ``take_rate_token``
            wait = self.limiter.take(ident)
            if wait > 0:
                raise _Denied(429, "rate_limited", "too many requests; slow down", wait)
        return principal

    def _preflight(self, scope: dict[str, Any], headers: dict[bytes, bytes]) -> bool:
        """A CORS preflight: no key is sent with it, the CORS middleware answers it."""
        return (
            bool(self.origins)
            and scope.get("method") == "OPTIONS"
            and b"access-control-request-method" in headers
        )

    def _foreign_origin(self, headers: dict[bytes, bytes]) -> bool:
        """A browser page of another origin, not in ``GATEWAY_CORS_ORIGINS``, sent this.

        Only browsers send ``Origin``; curl and the SDKs do not. A page anywhere can send a
        ``text/plain`` POST without a preflight, or open a WebSocket (which CORS does not
        cover), to any address, a developer's localhost included: on a gateway that needs
        no key, its origin is the only thing telling such a request from the playground's.
        """
        origin = headers.get(b"origin")
        if origin is None or self._allow_origin(headers) is not None:
            return False
        _, sep, authority = origin.partition(b"://")
        host = headers.get(b"host")
        return not sep or host is None or authority.lower() != host.lower()

    def _rebound(self, headers: dict[bytes, bytes]) -> bool:
        """A browser reached this loopback gateway under a name that is not a loopback one.

        A page on ``evil.example`` whose DNS name is rebound to 127.0.0.1 talks to the
        gateway as its own origin (Origin and Host both ``evil.example``); only the Host
        gives it away. Browsers mark every request with ``Sec-Fetch-Site`` (same-origin
        GETs carry no ``Origin``); curl and the SDKs send neither and are not affected.
        """
        if not self.loopback or self._allow_origin(headers) is not None:
            return False
        if b"origin" not in headers and b"sec-fetch-site" not in headers:
            return False
        host = headers.get(b"host")
        # The hosts of the allowed origins are names a loopback gateway answers browsers under.
        if host is None or self.origins.allows_host(host.decode("latin-1")):
            return False
        return not _loopback_name(host)

    def _allow_origin(self, headers: dict[bytes, bytes]) -> bytes | None:
        origin = headers.get(b"origin")
        if origin is None or not self.origins.allows(origin.decode("latin-1")):
            return None
        return origin

    def _authenticate(
        self, scope: dict[str, Any], headers: dict[bytes, bytes], kind: str
    ) -> Principal:
        key = _bearer(headers.get(b"authorization"))
        if key is None and kind == "websocket":
            key = _subprotocol_key(scope)
            if key is not None:
                scope.setdefault("state", {})[SUBPROTOCOL_KEY] = "bearer"
        if key is None and (kind == "websocket" or scope.get("method") == "GET"):
            # Browsers cannot set headers on WebSocket or EventSource requests.
            key = _query_key(scope)
        if self.keys.open:
            return OPEN_PRINCIPAL
        if key is None:
            raise _Denied(401, "unauthorized", "missing API key: send Authorization: Bearer KEY")
        principal = self.keys.lookup(key)
        if principal is None:
            raise _Denied(401, "unauthorized", "invalid API key")
        structlog.contextvars.bind_contextvars(client=principal.name)
        return principal


def _correlation_id(headers: dict[bytes, bytes]) -> str:
    for name in (b"x-correlation-id", b"x-request-id"):
        value = headers.get(name)
        if value is not None and _SANE_ID.match(value):
            return value.decode()
    return uuid.uuid4().hex


def _loopback_name(host: bytes) -> bool:
    """Whether a ``Host`` header names this machine: ``localhost``, ``*.localhost`` or a
    loopback address (``127.0.0.1:8000``, ``[::1]:8000``), with or without a port.
    """
    value = host.decode("latin-1").strip().lower()
    if value.startswith("["):
        name = value[1:].partition("]")[0]
    else:
        name = value.rpartition(":")[0] if ":" in value else value
    name = name.rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_loopback_host(host: str) -> bool:
    """Whether ``GATEWAY_HOST`` binds only loopback (``127.0.0.1``, ``::1``, ``localhost``)."""
    return _loopback_name(f"[{host}]".encode() if ":" in host else host.encode())


def _bearer(value: bytes | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.decode("latin-1").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _subprotocol_key(scope: dict[str, Any]) -> str | None:
    protocols = [str(p) for p in scope.get("subprotocols", ())]
    for i, proto in enumerate(protocols):
        if proto.lower() == "bearer" and i + 1 < len(protocols):
            return str(protocols[i + 1])
    return None


def _query_key(scope: dict[str, Any]) -> str | None:
    """The first non-empty ``api_key`` of the query string, percent-decoded only.

    Not form-decoded: a ``+`` stays a ``+`` (a key never holds a space, and base64 keys
    hold ``+``), so a key pasted into a URL as is (``?api_key=${key}``) still matches.
    """
    raw: bytes = scope.get("query_string", b"")
    if b"api_key=" not in raw:
        return None
    for pair in raw.decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        if name == "api_key" and value:
            return unquote(value)
    return None


def _client_ip(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def _send_error(send: Send, denied: _Denied, cid: str, origin: bytes | None) -> None:
    headers = [(b"content-type", b"application/json")]
    if origin is not None:
        headers += [
            (b"access-control-allow-origin", origin),
            (b"access-control-expose-headers", b"X-Correlation-ID, Retry-After"),
            (b"vary", b"Origin"),
        ]
    if denied.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if denied.status == 429:
        headers.append((b"retry-after", str(max(1, round(denied.retry_after + 0.5))).encode()))
    await send({"type": "http.response.start", "status": denied.status, "headers": headers})
    body = error_body(denied.type, denied.message, cid)
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _refuse_websocket(
    receive: Receive, send: Send, denied: _Denied, cid: str, state: dict[str, Any]
) -> None:
    """Accept, say why in an ``error`` event, close with 4000 + status (browsers see that)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    accept: WebSocketAcceptEvent = {"type": "websocket.accept", "subprotocol": None, "headers": []}
    if state.get(SUBPROTOCOL_KEY):
        accept["subprotocol"] = state[SUBPROTOCOL_KEY]
    await send(accept)
    frame = b'{"event":"error","data":' + _error_data(denied, cid) + b"}"
    await send({"type": "websocket.send", "text": frame.decode(), "bytes": None})
    await send({"type": "websocket.close", "code": 4000 + denied.status, "reason": denied.type})


def _error_data(denied: _Denied, cid: str) -> bytes:
    return msgspec.json.encode(
        {"type": denied.type, "message": denied.message, "correlation_id": cid}
    )
