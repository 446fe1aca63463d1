"""The gateway's exceptions: one small tree, carrying fields rather than strings.

::

    GatewayError
    ├── ManifestError          a manifest set is invalid (carries every Problem)
    ├── ActionError            an action call was refused (carries the action)
    │   └── InvalidArguments   the arguments do not match the schema (-> 400)
    ├── ProviderError          the model provider failed after retries (-> 502)
    ├── InvalidInput           a client sent something malformed (-> 400)
    ├── Unauthorized           missing or wrong key (-> 401)
    ├── Forbidden              key not allowed for this assistant or route (-> 403)
    ├── NotFound               unknown thread, run, assistant or action (-> 404)
    ├── Conflict               a run is already active on the thread (-> 409)
    ├── PayloadTooLarge        request body over the limit (-> 413)
    ├── RateLimited            too many requests (-> 429)
    └── NotReady               no valid manifest set or the store is down (-> 503)

Mapping to HTTP happens once, in ``gateway.api.errors``; everything else raises
these and never formats a status code itself. A call that ran and failed (an
exception in the action, its timeout, a sandbox limit or crash) is not an
exception: the runner returns it as a ``ToolResult`` with its ``status`` and
``error_type`` (``gateway.sandbox.results``), which the model reads. Messages are safe to show to a
client: they never contain secrets or tracebacks.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "ActionError",
    "Conflict",
    "Forbidden",
    "GatewayError",
    "InvalidArguments",
    "InvalidInput",
    "ManifestError",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "Problem",
    "ProviderError",
    "RateLimited",
    "Unauthorized",
]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One located problem in a manifest set: ``file:line:col: message``.

    ``line`` and ``col`` are 1-based and point at the offending node, not the
    document start. ``path`` is the JSON path of the node inside its document
    (for example ``actions[2]``), empty for the document itself.
    """

    file: str
    line: int
    col: int
    message: str
    path: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    type: str = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ManifestError(GatewayError):
    """A manifest set failed to load or validate; ``problems`` lists them all."""

    type = "manifest_error"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        first = str(problems[0]) if problems else "invalid manifests"
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(first + more)


class ActionError(GatewayError):
    """An action call was refused before it ran; ``action`` names the action."""

    type = "action_error"

    def __init__(self, action: str, message: str) -> None:
        super().__init__(message)
        self.action = action


class InvalidArguments(ActionError):
    """The arguments do not match the action's schema; ``argument`` names the field."""

    type = "invalid_arguments"

    def __init__(self, action: str, message: str, argument: str = "") -> None:
        super().__init__(action, message)
        self.argument = argument


class ProviderError(GatewayError):
    """The model provider failed after retries; ``status`` is its HTTP status if any."""

    type = "provider_error"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InvalidInput(GatewayError):
    """The client sent something malformed; ``field`` names it when known."""

    type = "invalid_request"

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(GatewayError):
    """Missing or wrong API key."""

    type = "unauthorized"


class Forbidden(GatewayError):
    """The key is valid but not allowed here."""

    type = "forbidden"


class NotFound(GatewayError):
    """An unknown thread, run, assistant or action; ``what`` says which."""

    type = "not_found"

    def __init__(self, what: str, name: str) -> None:
        super().__init__(f"{what} {name!r} not found")
        self.what = what
        self.name = name


class Conflict(GatewayError):
    """A run is already active on the thread."""

    type = "conflict"


class PayloadTooLarge(GatewayError):
    """The request body is over the configured limit."""

    type = "payload_too_large"


class RateLimited(GatewayError):
    """Too many requests."""

    type = "rate_limited"


class NotReady(GatewayError):
    """No valid manifest set is loaded or the store does not answer."""

    type = "not_ready"
