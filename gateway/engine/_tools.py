"""Calling one tool for a run: the allow-list, the runner, and failures as results.

Private to ``gateway.engine``. A tool the assistant was not given is refused
without running (the model cannot reach another assistant's actions), and a
runner that raises (it promises not to) becomes a failed ``ToolResult`` so a
bug never ends the run. Imports the executor interface and manifests types.
"""

from __future__ import annotations

import json

import structlog

from gateway.engine.spec import RunSpec
from gateway.executors.base import ActionRunner, ToolResult
from gateway.providers.base import ToolCall

__all__ = [
    "MAX_CALLS_PER_ANSWER",
    "allowed_tools",
    "cancelled_result",
    "error_output",
    "run_tool",
    "too_many_calls_result",
    "unknown_tool_result",
]

MAX_CALLS_PER_ANSWER = 128
"""How many tool calls of one model answer run; the next one gets a tool error
saying so, and the others are dropped, unstored (``RunTask._bounded``).

Every result goes back to the model, whole, in the next request (the
history's newest turn is never trimmed): without a bound, one answer asking
for thousands of calls (a model looping, a prompt injection in a document)
filled the server's memory and the model's context with their results. 128
is OpenAI's own limit on the tools of one request."""


def error_output(type_: str, message: str) -> str:
    """The JSON error text a model reads for a failed call."""
    return json.dumps({"error": {"type": type_, "message": message}})


def _failed(type_: str, message: str) -> ToolResult:
    return ToolResult(
        status="failed", output=error_output(type_, message), duration_ms=0.0, error_type=type_
    )


def cancelled_result() -> ToolResult:
    """The result recorded for a call its run's cancellation interrupted."""
    return _failed("cancelled", "the run was cancelled before the tool finished")


def too_many_calls_result(count: int) -> ToolResult:
    """The result of a call past ``MAX_CALLS_PER_ANSWER`` in an answer of ``count`` calls."""
    return _failed(
        "too_many_tool_calls",
        f"this answer asked for {count} tool calls; only the first "
        f"{MAX_CALLS_PER_ANSWER} ran. Ask for fewer at once.",
    )


def allowed_tools(spec: RunSpec) -> set[str]:
    """Names of the tools the run's assistant was given (none if the run offers none)."""
    tools = spec.catalog.tools.get(spec.assistant.name, []) if spec.offer_tools else []
    return {tool["function"]["name"] for tool in tools if "function" in tool}


# An unknown tool's error names at most this many of the assistant's tools (names are
# at most 64 characters: a few KB in the model's context, however many tools it has).
_LISTED_TOOLS = 50


def unknown_tool_result(name: str, allowed: set[str]) -> ToolResult:
    """The result of a call to ``name``, not one of the ``allowed`` tools.

    It names the tools the model does have (sorted, the first ``_LISTED_TOOLS``),
    so the model can correct a misspelt or invented name in its next answer
    instead of guessing again.
    """
    tools = sorted(allowed)
    if not tools:
        hint = "this assistant has no tools; answer without calling one"
    else:
        hint = "use one of your tools: " + ", ".join(tools[:_LISTED_TOOLS])
        if len(tools) > _LISTED_TOOLS:
            hint += f" (and {len(tools) - _LISTED_TOOLS} more)"
    return _failed("unknown_tool", f"unknown tool {name[:100]!r}; {hint}")


async def run_tool(
    runner: ActionRunner,
    spec: RunSpec,
    call: ToolCall,
    *,
    allowed: set[str],
    logger: structlog.typing.FilteringBoundLogger,
) -> ToolResult:
    """Run ``call`` for ``spec``'s assistant if it is one of the ``allowed`` tools (else
    an ``unknown_tool`` error listing them); never raises except for cancellation."""
    if call.name not in allowed:
        return unknown_tool_result(call.name, allowed)
    try:
        # The assistant scopes built-ins such as file_search to its own files.
        return await runner.run(
            spec.catalog,
            call.name,
            call.arguments,
            correlation_id=spec.correlation_id,
            assistant=spec.assistant.name,
        )
    except Exception:  # the runner promises ToolResults; a bug must not end the run
        logger.exception("tool.crashed", tool=call.name)
        return _failed("internal_error", "the tool failed unexpectedly")
