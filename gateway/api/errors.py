"""The one mapping from exceptions to HTTP answers.

Every error a client sees is ``{"error": {"type", "message", "correlation_id"}}``
with the status of DESIGN.md: 400 invalid input, 401 missing or wrong key, 403
not allowed, 404 unknown thing, 409 run already active, 413 body too large,
429 rate limited, 502 model provider failed, 503 not ready, 500 anything else.
A 500 is logged with its traceback and answered with a generic message: no
traceback, secret or exception text reaches a client; a run that crashed
(``RunCrashed``) was logged by the run, with its own traceback, and is not
logged again. Imports ``gateway.errors``, ``gateway.api.schemas`` and
``NAME_PATTERN`` from ``gateway.manifests.model``.
"""

from __future__ import annotations

import math
import uuid
from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.types import Scope

from gateway.api.schemas import ErrorBody, ErrorDetail
from gateway.errors import (
    ActionError,
    Conflict,
    Forbidden,
    GatewayError,
    InvalidArguments,
    InvalidInput,
    ManifestError,
    NotFound,
    NotReady,
    PayloadTooLarge,
    ProviderError,
    RateLimited,
    Unauthorized,
)
from gateway.manifests.model import NAME_PATTERN, NAME_RULE

__all__ = [
    "CID_KEY",
    "NO_RETRY_KEY",
    "RunCrashed",
    "correlation_id_of",
    "error_body",
    "error_responses",
    "exception_handlers",
    "readable",
    "status_and_type",
]

CID_KEY = "gateway.correlation_id"
RETRY_AFTER_KEY = "gateway.retry_after"
# Set (True) by a route whose failed request must not be sent again: the answer then
# says ``x-should-retry: false``, which the openai SDKs obey over their own retry rules.
NO_RETRY_KEY = "gateway.no_retry"

log = structlog.get_logger("gateway.api")

_STATUS: tuple[tuple[type[GatewayError], int], ...] = (
    (InvalidInput, 400),
    (InvalidArguments, 400),
    (ManifestError, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (RateLimited, 429),
    (ProviderError, 502),
    (NotReady, 503),
    (ActionError, 500),
)

_HTTP_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    503: "not_ready",
}


class RunCrashed(GatewayError):
    """A run failed unexpectedly (``internal_error``): answered 500 "internal error".

    The run logged the crash where it happened (``run.crashed``: its traceback,
    run and thread ids), so the handler does not log it again: a second ERROR
    line would count one crash twice, with a traceback of this raise, not of it.
    """


def correlation_id_of(scope: Scope) -> str:
    """The request's correlation id (set by the middleware; made up if it is missing)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    cid = state.get(CID_KEY)
    if cid is None:
        cid = state[CID_KEY] = uuid.uuid4().hex
    return str(cid)


def status_and_type(exc: BaseException) -> tuple[int, str, str]:
    """HTTP status, error type and client-safe message for ``exc``."""
    if isinstance(exc, GatewayError):
        for cls, status in _STATUS:
            if isinstance(exc, cls):
                return status, exc.type, exc.message
        return 500, "internal_error", "internal error"
    if isinstance(exc, HTTPException):
        status = exc.status_code
        if status >= 500:
            return status, "internal_error", "internal error"
        return status, _HTTP_TYPES.get(status, "http_error"), _http_message(exc)
    return 500, "internal_error", "internal error"


# How msgspec says a value is not a name: the regex's `(?!\n)` (see NAME_PATTERN) only puzzles.
_NAME_REGEX = f"`str` matching regex {NAME_PATTERN!r}"


def readable(message: str) -> str:
    """A decoding error's text as a client should read it: a name's rule in words."""
    return message.replace(_NAME_REGEX, f"a name ({NAME_RULE})")


def _http_message(exc: HTTPException) -> str:
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        parts = []
        for item in exc.extra[:5]:
            if isinstance(item, dict):
                key = item.get("key") or item.get("source") or ""
                if key == "data" and item.get("message") == "'data'":
                    # Litestar's KeyError for a body that is not there at all.
                    parts.append("the request body is empty: send a JSON object")
                    continue
                # ``data`` is Litestar's name for the whole body: a field names itself.
                text = readable(str(item.get("message", "")))
                parts.append(f"{key}: {text}" if key and key != "data" else text)
        if parts:
            return "invalid request: " + "; ".join(parts)
    return str(exc.detail)


_COMMON = {401: "Missing or wrong API key", 503: "Not ready"}


def error_responses(descriptions: dict[int, str]) -> dict[int, ResponseSpec]:
    """OpenAPI ``responses`` for a route's errors: 401 and 503 plus ``descriptions``."""
    merged = {**_COMMON, **descriptions}
    return {
        status: ResponseSpec(ErrorBody, description=merged[status]) for status in sorted(merged)
    }


def error_body(type_: str, message: str, correlation_id: str) -> bytes:
    """The JSON error body, encoded."""
    detail = ErrorDetail(type=type_, message=message, correlation_id=correlation_id)
    return msgspec.json.encode(ErrorBody(error=detail))


def _handle(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    cid = correlation_id_of(request.scope)
    status, type_, message = status_and_type(exc)
    path = request.url.path
    if isinstance(exc, NotFoundException) and path.startswith("/v1/"):
        # An OpenAI client calling an API the gateway lacks: "Not Found" reads as a
        # wrong base_url, so say what is served instead.
        message = (
            f"{path[:100]} is not served: the gateway's OpenAI-compatible API is "
            "POST /v1/chat/completions (Chat Completions; not the Responses API, "
            "embeddings, images or audio), GET /v1/models and GET /v1/models/{model}"
        )
    if status >= 500 and status not in (502, 503) and not isinstance(exc, RunCrashed):
        log.error("unhandled_error", path=path, exc_info=exc)
    elif status == 502:
        log.warning("provider_error", message=message)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, HTTPException) and exc.headers:
        headers.update(exc.headers)
    state = request.scope.get("state", {})
    if state.get(NO_RETRY_KEY):
        headers["x-should-retry"] = "false"
    retry = state.get(RETRY_AFTER_KEY)
    if status == 429 and retry is not None:
        headers["Retry-After"] = str(max(1, math.ceil(float(retry))))
    body = ErrorBody(error=ErrorDetail(type=type_, message=message, correlation_id=cid))
    return Response(body, status_code=status, headers=headers, media_type="application/json")


exception_handlers: dict[type[Exception] | int, Any] = {
    GatewayError: _handle,
    HTTPException: _handle,
    Exception: _handle,
}
"""For ``Litestar(exception_handlers=...)``: every exception goes through ``_handle``."""
