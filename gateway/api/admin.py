"""Admin routes (an admin key whenever any key is set): manifest status, reload, invoke.

``GET /manifests/status`` shows the live set and the last reload attempt with
its problems (``file:line:col: message``; never a secret's value), and among
its warnings the live set's knowledge files that failed to parse.
``POST /manifests/reload`` reloads now and answers with the attempt's result.
``POST /actions/{name}/invoke`` runs one action in the sandbox, exactly as a
model's call would. Imports ``gateway.api.*``, ``gateway.errors`` and
``gateway.manifests.watch`` (status types).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath, JSONBody

from gateway.api.errors import correlation_id_of, error_responses
from gateway.api.schemas import InvokeRequest, InvokeResponse
from gateway.api.services import ServicesDep
from gateway.errors import NotFound, NotReady
from gateway.manifests.watch import ReloadResult, ReloadStatus

__all__ = ["invoke_action", "manifests_status", "reload_manifests"]

_ERRORS = error_responses({403: "Not an admin key"})


_MAX_REASON = 300  # a parser's message may quote much of a broken file


@get("/manifests/status", tags=["admin"], responses=_ERRORS)
async def manifests_status(services: ServicesDep) -> ReloadStatus:
    """Version, load time, source files, and the last reload attempt with its errors.

    ``warnings`` also names each knowledge file of the live set that cannot be
    searched because its content failed to parse (known once a search or ``gateway
    index`` read it), read from the index at each request: it goes when the file
    parses.
    """
    if services.reloader is None:
        raise NotReady("the gateway is starting")
    status = services.reloader.status
    knowledge = await _knowledge_warnings(services)
    if not knowledge:
        return status
    return msgspec.structs.replace(status, warnings=[*status.warnings, *knowledge])


async def _knowledge_warnings(services: ServicesDep) -> list[str]:
    """``knowledge file 'docs/x.pdf' cannot be searched: REASON`` per failed file."""
    catalog = services.catalog_ref.current
    index = services.knowledge
    if catalog is None or index is None or not catalog.knowledge_files:
        return []
    # In a thread: the index's lock may be held while a large file's passages are written.
    failures = await asyncio.to_thread(index.failures, catalog.knowledge_files)
    warnings = []
    for file, reason in failures.items():
        name = file.relative_to(catalog.root).as_posix()
        cut = reason if len(reason) <= _MAX_REASON else reason[: _MAX_REASON - 1] + "…"
        warnings.append(f"knowledge file {name!r} cannot be searched: {cut}")
    return warnings


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
