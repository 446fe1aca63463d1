"""Request and response bodies of the HTTP API, as msgspec Structs.

Litestar decodes and encodes these natively and documents them in the
OpenAPI schema at ``/schema``. Bodies a client sends are lenient about extra
fields (forward compatibility); everything the gateway sends is declared here,
so the published schema is the real one. Imports only ``gateway.events``,
``gateway.providers.base`` and ``gateway.store.base`` (shared value types), and
``NAME_PATTERN`` from ``gateway.manifests.model``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from gateway.events import ErrorInfo, IncompleteDetails, Metadata, ToolCallSummary
from gateway.manifests.model import NAME_PATTERN
from gateway.providers.base import ToolCall, Usage
from gateway.store.base import RunRecord

__all__ = [
    "ActionInfo",
    "AssistantDetail",
    "AssistantInfo",
    "ChatRequest",
    "ChatResponse",
    "ErrorBody",
    "ErrorDetail",
    "HealthBody",
    "InvokeRequest",
    "InvokeResponse",
    "MessageOut",
    "ReadyBody",
    "RootBody",
    "RunOut",
    "StartResponse",
]

Message = Annotated[str, msgspec.Meta(min_length=1, max_length=100_000)]
OptionalName = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)] | None
ThreadRef = Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    """What went wrong: a stable ``type``, a human message, and the request's correlation id."""

    type: str
    message: str
    correlation_id: str


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every error response: ``{"error": {"type", "message", "correlation_id"}}``."""

    error: ErrorDetail


class HealthBody(msgspec.Struct, frozen=True, kw_only=True):
    """Liveness answer."""

    status: str = "ok"


class ReadyBody(msgspec.Struct, frozen=True, kw_only=True):
    """Readiness answer: the live manifest version and whether the store answers."""

    status: str
    manifest_version: str | None
    store: bool


class RootBody(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /``: what this service is."""

    service: str
    version: str
    manifest_version: str | None
    assistants: int


class StartResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /start``: a new thread and the assistant's greeting."""

    thread_id: str
    assistant: str
    initial_message: str | None


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /chat`` and a WebSocket exchange: a user message for a thread.

    ``thread_id`` absent or ``"new"`` creates a thread; ``assistant`` picks the
    assistant of a new thread (default: the only one, or ``GATEWAY_DEFAULT_ASSISTANT``).
    An unknown field is refused, naming it: a misspelt ``thread_id`` (``"thread"``)
    would otherwise start a new thread with every message, silently.
    """

    message: Message
    thread_id: ThreadRef = None
    assistant: OptionalName = None
    stream: bool = False


class ChatResponse(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /chat`` as JSON: the answer of one run.

    ``tool_calls``: each call, in completion order, with the ``arguments`` the model
    sent (the stream shows them in ``thread.run.step.created``) and its outcome.

    ``status`` is ``incomplete`` when the last answer was cut short (the model
    hit its token limit, or a content filter stopped it); ``incomplete_details``
    then says why.
    """

    thread_id: str
    run_id: str
    responses: list[str]
    tool_calls: list[ToolCallSummary]
    usage: Usage
    metadata: Metadata | None
    status: Literal["completed", "incomplete"] = "completed"
    incomplete_details: IncompleteDetails | None = None


class MessageOut(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message of a thread's history."""

    id: str
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None
    created_at: float
    seq: int
    run_id: str | None = None
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None
    name: str | None = None


class RunOut(msgspec.Struct, frozen=True, kw_only=True):
    """A run's record (``GET .../runs/{run_id}``; ``POST .../cancel`` answers with it).

    ``error`` is set for a ``failed`` or ``cancelled`` run, ``incomplete_details``
    for an ``incomplete`` one (its last answer was cut short).
    """

    id: str
    thread_id: str
    assistant: str
    status: Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
    manifest_version: str
    created_at: float
    completed_at: float | None
    usage: Usage
    error: ErrorInfo | None = None
    incomplete_details: IncompleteDetails | None = None

    @classmethod
    def of(cls, run: RunRecord) -> RunOut:
        """The API's view of a stored run."""
        error = None
        if run.error is not None:
            error = ErrorInfo(
                type=run.error.get("type", run.status), message=run.error.get("message", "")
            )
        incomplete = None
        if run.incomplete_details is not None:
            incomplete = IncompleteDetails(reason=run.incomplete_details.get("reason", "unknown"))
        return cls(
            id=run.id,
            thread_id=run.thread_id,
            assistant=run.assistant,
            status=run.status,
            manifest_version=run.manifest_version,
            created_at=run.created_at,
            completed_at=run.completed_at,
            usage=run.usage,
            error=error,
            incomplete_details=incomplete,
        )


class AssistantInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An assistant as listed by ``GET /assistants``."""

    name: str
    display_name: str
    description: str
    model: str
    provider: str | None
    initial_message: str | None
    tools: list[str]


class AssistantDetail(AssistantInfo, frozen=True, kw_only=True):
    """``GET /assistants/{name}``: the listing plus its configuration and source."""

    actions: list[str]
    code_interpreter: bool
    file_search_files: list[str]
    temperature: float | None
    max_tool_rounds: int
    manifest_version: str
    source: str | None


class ActionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /actions``: an action, its kind and its argument schema."""

    name: str
    description: str
    kind: str
    parameters: dict[str, Any]
    timeout: float
    source: str | None


class InvokeRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /actions/{name}/invoke``: arguments for one sandboxed call (an unknown
    field, such as a misspelt ``arguments``, is refused rather than run as ``{}``)."""

    arguments: dict[str, Any] = {}


class InvokeResponse(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of one invoked action."""

    status: Literal["succeeded", "failed", "timed_out"]
    output: str
    duration_ms: float
    error_type: str | None = None
    truncated: bool = False
