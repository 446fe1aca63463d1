"""Admin routes (an admin key whenever any key is set): manifest status, reload, invoke.

``GET /manifests/status`` shows the live set and the last reload attempt with
its problems (``file:line:col: message``; never a secret's value).
``POST /manifests/reload`` reloads now and answers with the attempt's result.
``POST /actions/{name}/invoke`` runs one action in the sandbox, exactly as a
model's call would. Imports ``gateway.api.*``, ``gateway.errors`` and
``gateway.manifests.watch`` (status types).
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.params import FromPath, JSONBody

from gateway.api.errors import correlation_id_of, error_responses
from gateway.api.schemas import InvokeRequest, InvokeResponse
from gateway.api.services import ServicesDep
from gateway.errors import NotFound, NotReady
from gateway.manifests.watch import ReloadResult, ReloadStatus

__all__ = ["invoke_action", "manifests_status", "reload_manifests"]

_ERRORS = error_responses({403: "Not an admin key"})


@get("/manifests/status", tags=["admin"], responses=_ERRORS)
async def manifests_status(services: ServicesDep) -> ReloadStatus:
    """Version, load time, source files, and the last reload attempt with its errors."""
    if services.reloader is None:
        raise NotReady("the gateway is starting")
    return services.reloader.status


@post("/manifests/reload", tags=["admin"], status_code=200, responses=_ERRORS)
async def reload_manifests(services: ServicesDep) -> ReloadResult:
    """Reload the manifests now; ``result`` is swapped, unchanged, rejected or failed."""
    if services.reloader is None:
        raise NotReady("the gateway is starting")
    return await services.reloader.reload("api")


@post(
    "/actions/{name:str}/invoke",
    tags=["admin"],
    status_code=200,
    responses=error_responses(
        {403: "Not an admin key", 400: "Invalid body", 404: "Unknown action"}
    ),
)
async def invoke_action(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    name: FromPath[str],
    data: JSONBody[InvokeRequest],
) -> InvokeResponse:
    """Run one action in the sandbox with ``arguments`` (validated against its schema)."""
    catalog = services.catalog()
    if name not in catalog.actions:
        raise NotFound("action", name)
    if services.runner is None:
        raise NotReady("the sandbox is not running")
    result = await services.runner.run(
        catalog, name, data.arguments, correlation_id=correlation_id_of(request.scope)
    )
    return InvokeResponse(
        status=result.status,
        output=result.output,
        duration_ms=result.duration_ms,
        error_type=result.error_type,
        truncated=result.truncated,
    )
