"""Chat Completions provider (``api: chat``): any OpenAI-compatible server.

Imports ``gateway.providers`` and the ``openai`` SDK. Servers disagree on how
they stream tool calls, so chunks are assembled defensively:

- a delta with an ``id`` not seen before starts a new call, even when it
  reuses an ``index`` (servers that put every parallel call on index 0);
- a delta without ``id`` continues the call at its ``index``, or, without
  ``index`` either, the latest call (servers that send the id only once, or
  no index at all);
- tool calls win over ``finish_reason: "stop"`` (reported as ``tool_calls``);
- usage may come in a final chunk with empty ``choices`` (we ask for it with
  ``stream_options.include_usage``);
- a stream that ends without any ``finish_reason`` is an error, never a
  silently truncated answer.

Tool calls are emitted once complete, after the text, just before ``ModelDone``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import ChoiceDeltaToolCall

from gateway.providers._openai_base import IncompleteStream, OpenAIProvider, register_api
from gateway.providers.base import (
    ChatMessage,
    ModelDone,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)

__all__ = ["ChatCompletionsProvider", "ToolCallAssembler", "chat_messages"]


@register_api
class ChatCompletionsProvider(OpenAIProvider):
    """Streams ``POST {base_url}/chat/completions`` through ``AsyncOpenAI``."""

    api = "chat"

    async def _stream_once(self, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        params: dict[str, Any] = {
            "model": request.model,
            "messages": chat_messages(request),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            params["tools"] = request.tools
        if request.temperature is not None:
            params["temperature"] = request.temperature
        stream = await self.client.chat.completions.create(**params)
        assembler = ToolCallAssembler()
        usage = Usage()
        finish: str | None = None
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = Usage(
                        prompt_tokens=chunk.usage.prompt_tokens or 0,
                        completion_tokens=chunk.usage.completion_tokens or 0,
                        total_tokens=chunk.usage.total_tokens or 0,
                    )
                text, chunk_finish = _read_chunk(chunk, assembler)
                if text:
                    yield TextDelta(text)
                finish = chunk_finish or finish
        finally:
            await stream.close()
        if finish is None:
            raise IncompleteStream("the stream ended before the model finished its answer")
        calls = assembler.calls()
        for call in calls:
            yield ToolCallRequest(call)
        yield ModelDone(usage, "tool_calls" if calls else finish)


def _read_chunk(chunk: ChatCompletionChunk, assembler: ToolCallAssembler) -> tuple[str, str | None]:
    """Feed one chunk's tool-call deltas to ``assembler``; return its text and finish reason."""
    text = ""
    finish: str | None = None
    for choice in chunk.choices or []:
        if choice.index not in (0, None):
            continue  # n > 1 is never requested; ignore stray choices
        delta = choice.delta
        if delta is not None:
            if delta.content:
                text += delta.content
            for tool_delta in delta.tool_calls or []:
                assembler.add(tool_delta)
        if choice.finish_reason:
            finish = choice.finish_reason
    return text, finish


class _Partial:
    __slots__ = ("arguments", "id", "name")

    def __init__(self, call_id: str | None) -> None:
        self.id = call_id
        self.name = ""
        self.arguments: list[str] = []


class ToolCallAssembler:
    """Assembles streamed tool-call deltas into complete calls (see module doc)."""

    def __init__(self) -> None:
        """Start with no calls."""
        self._calls: list[_Partial] = []
        self._by_id: dict[str, _Partial] = {}
        self._by_index: dict[int, _Partial] = {}

    def add(self, delta: ChoiceDeltaToolCall) -> None:
        """Apply one delta (``index``, ``id`` and ``function`` may each be missing)."""
        call_id = delta.id or None
        index = delta.index
        current: _Partial | None
        if call_id is not None:
            current = self._by_id.get(call_id)
            if current is None and index is not None:
                # Same index, no id yet: the id arrived after the first fragment.
                at_index = self._by_index.get(index)
                if at_index is not None and at_index.id is None:
                    current = at_index
                    current.id = call_id
                    self._by_id[call_id] = current
        elif index is not None:
            current = self._by_index.get(index)
        else:
            current = self._calls[-1] if self._calls else None
        if current is None:
            current = _Partial(call_id)
            self._calls.append(current)
            if call_id is not None:
                self._by_id[call_id] = current
        if index is not None:
            self._by_index[index] = current
        function = delta.function
        if function is not None:
            if function.name and not current.name:
                current.name = function.name
            if function.arguments:
                current.arguments.append(function.arguments)

    def calls(self) -> list[ToolCall]:
        """The complete calls in the order they started; missing ids are generated."""
        result = []
        for partial in self._calls:
            if not partial.name:
                continue
            arguments = "".join(partial.arguments).strip() or "{}"
            call_id = partial.id or f"call_{uuid.uuid4().hex[:24]}"
            result.append(ToolCall(id=call_id, name=partial.name, arguments=arguments))
        return result


def chat_messages(request: ModelRequest) -> list[dict[str, Any]]:
    """The request's instructions and history as Chat Completions messages."""
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    messages.extend(_chat_message(m) for m in request.messages)
    return messages


def _chat_message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id or "",
            "content": message.content or "",
        }
    if message.role == "assistant" and message.tool_calls:
        return {
            "role": "assistant",
            "content": message.content,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content or ""}
