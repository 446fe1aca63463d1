"""The provider interface: a model call as a stream of small typed events.

A provider turns a ``ModelRequest`` (instructions, history, tool schemas) into
an async stream of ``TextDelta``, ``ToolCallRequest`` and finally one
``ModelDone`` (usage, finish reason). Providers hide every API difference
(Responses vs Chat Completions, how compatible servers stream tool calls):
the engine sees only these events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "CUT_REASONS",
    "ChatMessage",
    "ModelDone",
    "ModelEvent",
    "ModelRequest",
    "Provider",
    "TextDelta",
    "ToolCall",
    "ToolCallRequest",
    "Usage",
]


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call as stored in history: ``arguments`` is the model's JSON text."""

    id: str
    name: str
    arguments: str


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One message of a thread, in the shape the engine keeps and providers translate."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None
    name: str | None = None


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts of one model call (or summed over a run)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class ModelRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a provider needs for one call.

    ``tools`` are in Chat Completions form (``{"type": "function", "function":
    {...}}``); the Responses provider converts them.
    """

    model: str
    instructions: str
    messages: list[ChatMessage]
    tools: list[dict[str, Any]] = []
    temperature: float | None = None


class TextDelta(msgspec.Struct, frozen=True, tag="text"):
    """A piece of the answer's text."""

    text: str


class ToolCallRequest(msgspec.Struct, frozen=True, tag="tool_call"):
    """A complete tool call the model asked for (emitted once fully assembled)."""

    call: ToolCall


CUT_REASONS = frozenset({"length", "content_filter"})
"""Finish reasons of an answer the model did not finish: it hit its token limit
(``length``; the Responses API's ``max_output_tokens``) or a content filter
stopped it. Tool calls streamed before the cut may be truncated."""


class ModelDone(msgspec.Struct, frozen=True, tag="done"):
    """The last event of a call.

    ``finish_reason`` is ``stop`` (a finished answer), ``tool_calls`` (it asked
    for tools), one of ``CUT_REASONS`` (cut short, even when it asked for tools),
    or whatever else a compatible server reported.
    """

    usage: Usage
    finish_reason: str = "stop"


ModelEvent = TextDelta | ToolCallRequest | ModelDone


class Provider(Protocol):
    """A model endpoint. Raises ``gateway.errors.ProviderError`` after retries fail."""

    name: str

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Stream one model call. Cancelling the iterating task stops the HTTP stream."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
