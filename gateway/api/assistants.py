"""What is deployed: assistants, their exact tool schemas, and actions.

Read from the live catalog (one read per request). A key limited to some
assistants sees only those, and only the actions they use. Instructions are
not shown (they are the operator's prompt); the tool schemas are exactly
what the model receives. Imports ``gateway.api.*``, ``gateway.errors`` and the
``gateway.manifests`` types (``Catalog``, ``Assistant``).
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get
from litestar.params import FromPath

from gateway.api.auth import Principal
from gateway.api.errors import error_responses
from gateway.api.middleware import principal_of
from gateway.api.schemas import ActionInfo, AssistantDetail, AssistantInfo
from gateway.api.services import ServicesDep
from gateway.errors import NotFound
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Assistant

__all__ = ["get_assistant", "list_actions", "list_assistants", "tool_schemas"]

_ERRORS = error_responses({404: "Unknown assistant, or one the key may not use"})


def _tool_names(catalog: Catalog, name: str) -> list[str]:
    return [str(t.get("function", {}).get("name", "")) for t in catalog.tools.get(name, [])]


def _info(catalog: Catalog, asst: Assistant) -> AssistantInfo:
    return AssistantInfo(
        name=asst.name,
        display_name=asst.display_name or asst.name,
        description=asst.description,
        model=asst.model,
        provider=asst.provider,
        initial_message=asst.initial_message,
        tools=_tool_names(catalog, asst.name),
    )


def _visible(catalog: Catalog, principal: Principal, name: str) -> Assistant:
    """The assistant ``name``; one the key may not use is as missing (the same 404)."""
    principal.check_assistant(name)
    asst = catalog.assistants.get(name)
    if asst is None:
        raise NotFound("assistant", name)
    return asst


@get("/assistants", tags=["assistants"], responses=_ERRORS)
async def list_assistants(
    request: Request[Any, Any, Any], services: ServicesDep
) -> list[AssistantInfo]:
    """The assistants this key may use."""
    catalog = services.catalog()
    principal = principal_of(request.scope)
    return [
        _info(catalog, a)
        for name, a in sorted(catalog.assistants.items())
        if principal.may_use(name)
    ]


@get("/assistants/{name:str}", tags=["assistants"], responses=_ERRORS)
async def get_assistant(
    request: Request[Any, Any, Any], services: ServicesDep, name: FromPath[str]
) -> AssistantDetail:
    """One assistant: model, tools, configuration and where it was declared."""
    catalog = services.catalog()
    asst = _visible(catalog, principal_of(request.scope), name)
    source = catalog.sources.get(f"assistant/{name}")
    return AssistantDetail(
        **msgspec.structs.asdict(_info(catalog, asst)),
        actions=list(asst.actions),
        code_interpreter=asst.code_interpreter,
        file_search_files=list(asst.file_search.files) if asst.file_search else [],
        temperature=asst.temperature,
        max_tool_rounds=asst.max_tool_rounds,
        manifest_version=catalog.version,
        source=f"{source.file}:{source.line}" if source else None,
    )


@get("/assistants/{name:str}/tools", tags=["assistants"], responses=_ERRORS)
async def tool_schemas(
    request: Request[Any, Any, Any], services: ServicesDep, name: FromPath[str]
) -> list[dict[str, Any]]:
    """The exact tool schemas (Chat Completions form) sent to the model for this assistant."""
    catalog = services.catalog()
    _visible(catalog, principal_of(request.scope), name)
    return catalog.tools.get(name, [])


@get("/actions", tags=["actions"], responses=_ERRORS)
async def list_actions(request: Request[Any, Any, Any], services: ServicesDep) -> list[ActionInfo]:
    """The actions (of the assistants this key may use), with their argument schemas."""
    catalog = services.catalog()
    principal = principal_of(request.scope)
    allowed: set[str] | None = None
    if not principal.admin and principal.assistants is not None:
        allowed = set()
        for name in principal.assistants:
            if (asst := catalog.assistants.get(name)) is not None:
                allowed.update(asst.actions)
    result = []
    for name, action in sorted(catalog.actions.items()):
        if allowed is not None and name not in allowed:
            continue
        source = catalog.sources.get(f"action/{name}")
        result.append(
            ActionInfo(
                name=name,
                description=action.description,
                kind=action.kind_key,
                parameters=action.parameters or {"type": "object", "properties": {}},
                timeout=action.timeout,
                source=f"{source.file}:{source.line}" if source else None,
            )
        )
    return result
