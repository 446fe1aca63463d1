"""Run events: the vocabulary every client sees, and their SSE / WebSocket encodings.

Names follow the Assistants API (``thread.run.created``...). A run appends
``Event`` values to its log with a sequence number; SSE frames carry
``id: <run_id>:<seq>``, WebSocket frames are ``{"event": NAME, "data": {...}}``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec

from gateway.providers.base import Usage

__all__ = [
    "Done",
    "ErrorEvent",
    "ErrorInfo",
    "Event",
    "IncompleteDetails",
    "MessageCompleted",
    "MessageDelta",
    "Metadata",
    "RunCompleted",
    "RunCreated",
    "RunFailed",
    "StepCompleted",
    "StepCreated",
    "Timings",
    "ToolCallInfo",
    "ToolCallOutcome",
    "ToolCallSummary",
    "decode_ws",
    "encode_sse",
    "encode_ws",
]


class _Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of run events; ``name`` is the wire name."""

    name: ClassVar[str]


class RunCreated(_Event, frozen=True, kw_only=True):
    name: ClassVar[str] = "thread.run.created"
    thread_id: str
    run_id: str
    assistant: str
    manifest_version: str


class ToolCallInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    arguments: str


class ToolCallOutcome(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    status: Literal["succeeded", "failed", "timed_out"]
    output: str
    duration_ms: float


class ToolCallSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One tool call of a JSON answer (``POST /chat``): what the model asked and how it ended.

    ``arguments`` is the JSON text the model sent, as ``thread.run.step.created``
    shows it (not masked: it comes from the model, never from a secret; a call
    whose arguments were not valid JSON shows them as sent); the rest is
    ``thread.run.step.completed``'s ``tool_call``, which keeps its fields (a
    streaming client pairs the two events by ``step_id``).
    """

    id: str
    name: str
    arguments: str
    status: Literal["succeeded", "failed", "timed_out"]
    output: str
    duration_ms: float


class StepCreated(_Event, frozen=True, kw_only=True):
    name: ClassVar[str] = "thread.run.step.created"
    run_id: str
    step_id: str
    type: str = "tool_call"
    tool_call: ToolCallInfo


class StepCompleted(_Event, frozen=True, kw_only=True):
    name: ClassVar[str] = "thread.run.step.completed"
    run_id: str
    step_id: str
    tool_call: ToolCallOutcome


class MessageDelta(_Event, frozen=True, kw_only=True):
    name: ClassVar[str] = "thread.message.delta"
    run_id: str
    message_id: str
    delta: str


class MessageCompleted(_Event, frozen=True, kw_only=True):
    name: ClassVar[str] = "thread.message.completed"
    run_id: str
    message_id: str
    content: str


class IncompleteDetails(msgspec.Struct, frozen=True, kw_only=True):
    """Why a run ended without a finished answer (the Assistants API's field).

    ``reason`` is ``max_completion_tokens`` (the model hit its output token
    limit: ``finish_reason: "length"``), ``content_filter``, or
    ``max_tool_rounds`` (the model still called tools after the assistant's
    ``max_tool_rounds`` rounds; those calls did not run).
    """

    reason: str


class RunCompleted(_Event, frozen=True, kw_only=True):
    """The run ended without error. ``incomplete_details`` is set when its last
    answer was cut short (the run's status is then ``incomplete``)."""

    name: ClassVar[str] = "thread.run.completed"
    run_id: str
    usage: Usage
    incomplete_details: IncompleteDetails | None = None


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    message: str


class RunFailed(_Event, frozen=True, kw_only=True):
    name: ClassVar[str] = "thread.run.failed"
    run_id: str
    error: ErrorInfo


class Timings(msgspec.Struct, frozen=True, kw_only=True):
    total_ms: float
    model_ms: float
    first_token_ms: float | None
    tools_ms: float


class Metadata(_Event, frozen=True, kw_only=True):
    """Timings and usage of the run; ``finish_reason`` is its last model call's
    (``stop``, ``length``, ``content_filter``, ``tool_calls``...), None if none ended.
    ``empty_answer`` is True when the model's last answer held no text (or only
    whitespace) and no tool call (the run completed with nothing to show)."""

    name: ClassVar[str] = "metadata"
    run_id: str
    timings: Timings
    usage: Usage
    manifest_version: str
    correlation_id: str
    finish_reason: str | None = None
    empty_answer: bool = False


class ErrorEvent(_Event, frozen=True, kw_only=True):
    name: ClassVar[str] = "error"
    type: str
    message: str
    correlation_id: str = ""


class Done(_Event, frozen=True, kw_only=True):
    name: ClassVar[str] = "done"


Event = (
    RunCreated
    | StepCreated
    | StepCompleted
    | MessageDelta
    | MessageCompleted
    | RunCompleted
    | RunFailed
    | Metadata
    | ErrorEvent
    | Done
)

_encoder = msgspec.json.Encoder()


def encode_sse(event: Event, event_id: str | None = None) -> bytes:
    """One SSE frame: ``event:``, optional ``id:``, ``data:`` (JSON), blank line."""
    head = f"event: {event.name}\n"
    if event_id is not None:
        head += f"id: {event_id}\n"
    return head.encode() + b"data: " + _encoder.encode(event) + b"\n\n"


def encode_ws(event: Event) -> bytes:
    """One WebSocket frame: ``{"event": NAME, "data": {...}}`` as JSON bytes."""
    data: Any = msgspec.Raw(_encoder.encode(event))
    return _encoder.encode({"event": event.name, "data": data})


class _Frame(msgspec.Struct, frozen=True):
    event: str
    data: msgspec.Raw


_frame_decoder = msgspec.json.Decoder(_Frame)
_EVENT_TYPES: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (
        RunCreated,
        StepCreated,
        StepCompleted,
        MessageDelta,
        MessageCompleted,
        RunCompleted,
        RunFailed,
        Metadata,
        ErrorEvent,
        Done,
    )
}


def decode_ws(frame: bytes) -> Event:
    """Inverse of ``encode_ws``: the event a ``{"event", "data"}`` frame carries.

    Used to replay a finished run's stored log. Raises ``ValueError`` for an
    unknown event name and ``msgspec.DecodeError`` for malformed data.
    """
    decoded = _frame_decoder.decode(frame)
    cls = _EVENT_TYPES.get(decoded.event)
    if cls is None:
        raise ValueError(f"unknown event {decoded.event!r}")
    event: Event = msgspec.json.decode(decoded.data, type=cls)
    return event
