"""What running an action returns, and the runner interface the engine calls.

``ToolResult`` is the one shape every call ends in, success or failure, so the
engine, the API (``/actions/{name}/invoke``) and the events all speak it.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import msgspec

from gateway.executors.builtins import FILE_SEARCH
from gateway.manifests.catalog import Catalog

__all__ = ["ActionRunner", "ToolResult", "isolation_of"]

ToolStatus = Literal["succeeded", "failed", "timed_out"]


class ToolResult(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one tool call.

    ``output`` is what the model reads: the result (a string, or JSON text)
    on success, or a short JSON error ``{"error": {"type", "message"}}`` on
    failure, so the model can recover. ``error_type`` is set on failure
    (``invalid_arguments``, ``timeout``, ``exception``, ``memory``,
    ``output_too_large``, ``crashed``, ``http_status``, ``sandbox_error``...).
    """

    status: ToolStatus
    output: str
    duration_ms: float
    error_type: str | None = None
    truncated: bool = False


def isolation_of(catalog: Catalog, name: str) -> Literal["sandbox", "inline"]:
    """Where a call of tool ``name`` runs: ``inline`` (the server process) or ``sandbox``.

    An action says so in ``isolation``; of the built-ins ``file_search`` reads
    the index in the server and ``code_interpreter`` runs in the sandbox.
    """
    action = catalog.actions.get(name)
    if action is not None:
        return action.isolation
    return "inline" if name == FILE_SEARCH else "sandbox"


class ActionRunner(Protocol):
    """Runs tools by name for the engine (actions and the built-ins)."""

    async def run(
        self,
        catalog: Catalog,
        name: str,
        arguments: str | dict[str, Any],
        *,
        correlation_id: str = "",
        assistant: str | None = None,
    ) -> ToolResult:
        """Validate ``arguments`` (JSON text from the model, or a dict) and run ``name``.

        ``assistant`` names the calling assistant; built-ins such as
        ``file_search`` are scoped to its own files (without it they refuse).

        Never raises for a failing call: every failure is a ``ToolResult``.
        Cancelling the awaiting task kills the sandboxed process.
        """
        ...
