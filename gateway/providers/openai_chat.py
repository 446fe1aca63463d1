"""Chat Completions provider (``api: chat``): any OpenAI-compatible server.

Imports ``gateway.providers`` and the ``openai`` SDK. Servers disagree on how
they stream tool calls, so chunks are assembled defensively:

- a delta with an ``id`` not seen before starts a new call, even when it
  reuses an ``index`` (servers that put every parallel call on index 0);
- a delta with a known ``id`` on an ``index`` not seen before also starts a
  new call (servers that give parallel calls the same id; the engine then
  gives each call of a turn its own id);
- a delta without ``id`` continues the call at its ``index``, or, without
  ``index`` either, the latest call (servers that send the id only once, or
  no index at all);
- tool calls win over ``finish_reason: "stop"`` (reported as ``tool_calls``), but
  not over ``length`` or ``content_filter``: the answer was cut, and its calls
  with it (the last one's arguments may be truncated JSON), so the engine must
  know;
- usage may come in a final chunk with empty ``choices`` (we ask for it with
  ``stream_options.include_usage``);
- a server that answers one non-streamed ``chat.completion`` JSON body
  (SGLang did when a request had ``tools``) is read as one chunk;
- a stream that ends without any ``finish_reason`` is an error, never a
  silently truncated answer; one cut after it (before the usage chunk or
  ``[DONE]``) is a whole answer.

Tool calls are emitted once complete, after the text, just before ``ModelDone``.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from gateway.providers._openai_base import (
    IncompleteStream,
    OpenAIProvider,
    StreamFailed,
    register_api,
    sendable_arguments,
)
from gateway.providers.base import (
    CUT_REASONS,
    ChatMessage,
    ModelDone,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)

__all__ = ["ChatCompletionsProvider", "ToolCallAssembler", "ToolCallDelta", "chat_messages"]


@register_api
class ChatCompletionsProvider(OpenAIProvider):
    """Streams ``POST {base_url}/chat/completions`` through ``AsyncOpenAI``."""

    api = "chat"
    path = "/chat/completions"

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": chat_messages(request),
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = request.tools
        return body

    def _reader(self) -> _ChunkReader:
        return _ChunkReader()

    def _json_items(self, body: Any) -> list[Any]:
        """A non-streamed ``chat.completion`` as the one chunk that streams the same answer.

        Servers that do not stream tool calls answer so when a request has
        ``tools`` (SGLang did); an error body is a ``StreamFailed``.
        """
        if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
            return super()._json_items(body)
        choices = []
        for choice in body["choices"]:
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict):
                raise StreamFailed("malformed answer: a choice without its message")
            calls = message.get("tool_calls") or []
            if not isinstance(calls, list):
                raise StreamFailed("malformed answer: tool_calls is not a list")
            delta = {
                "content": message.get("content"),
                "tool_calls": [
                    {**call, "index": n} for n, call in enumerate(calls) if isinstance(call, dict)
                ],
            }
            choices.append(
                {
                    "index": choice.get("index"),
                    "delta": delta,
                    "finish_reason": choice.get("finish_reason"),
                }
            )
        return [{"choices": choices, "usage": body.get("usage")}]


# What is read of a chunk, decoded leniently (every field optional, extra fields
# ignored): cheaper than the SDK's pydantic models, and servers omit a lot.
class _FunctionDelta(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct):
    """One streamed tool-call fragment (``index``, ``id`` and ``function`` may be missing)."""

    index: int | None = None
    id: str | None = None
    function: _FunctionDelta | None = None


class _Delta(msgspec.Struct):
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    # Reasoning streamed apart from the answer (vLLM, DeepSeek: ``reasoning_content``;
    # Ollama, OpenRouter: ``reasoning``): not shown, only counted (``max_answer_chars``).
    # ``Any``: a server sending something other than text must not fail the answer.
    reasoning_content: Any = None
    reasoning: Any = None


class _Choice(msgspec.Struct):
    index: int | None = None
    delta: _Delta | None = None
    finish_reason: str | None = None


class _ChunkUsage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class _Chunk(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: _ChunkUsage | None = None


class _ChunkReader:
    """Reads ``chat.completion.chunk`` items (as JSON) into model events."""

    def __init__(self) -> None:
        self.assembler = ToolCallAssembler()
        self.usage = Usage()
        self.finish_reason: str | None = None
        self.size = 0  # characters of text, reasoning and tool calls so far

    def feed(self, item: Any) -> list[ModelEvent]:
        try:
            chunk = msgspec.convert(item, _Chunk, strict=False)
        except msgspec.ValidationError as exc:
            raise StreamFailed(f"malformed chunk: {exc}") from None
        if chunk.usage is not None:
            self.usage = Usage(
                prompt_tokens=chunk.usage.prompt_tokens or 0,
                completion_tokens=chunk.usage.completion_tokens or 0,
                total_tokens=chunk.usage.total_tokens or 0,
            )
        text = ""
        for choice in chunk.choices or ():
            if choice.index not in (0, None):
                continue  # n > 1 is never requested; ignore stray choices
            delta = choice.delta
            if delta is not None:
                if delta.content:
                    text += delta.content
                    self.size += len(delta.content)
                for thought in (delta.reasoning_content, delta.reasoning):
                    if isinstance(thought, str):
                        self.size += len(thought)
                for tool_delta in delta.tool_calls or ():
                    # What the call keeps: names and ids too (calls with 1 MB names and
                    # no arguments went uncounted into memory, log lines and the store),
                    # but once (servers repeat them in every delta; counted each time, a
                    # 200 KB argument in 4-character deltas counted 2.5 MB and was cut).
                    self.size += self.assembler.add(tool_delta)
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
        return [TextDelta(text)] if text else []

    @property
    def whole(self) -> bool:
        return self.finish_reason is not None

    def finish(self) -> list[ModelEvent]:
        if self.finish_reason is None:
            raise IncompleteStream("the stream ended before the model finished its answer")
        calls = self.assembler.calls()
        events: list[ModelEvent] = [ToolCallRequest(call) for call in calls]
        reason = self.finish_reason
        if calls and reason not in CUT_REASONS:
            reason = "tool_calls"
        events.append(ModelDone(self.usage, reason))
        return events


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

    def add(self, delta: ToolCallDelta) -> int:
        """Apply one delta (``index``, ``id`` and ``function`` may each be missing).

        Returns:
            How many characters the calls grew by: the arguments, and an id or a name
            only when new to its call (a repeated one is not kept again).
        """
        kept = 0
        call_id = delta.id or None
        index = delta.index
        current: _Partial | None
        if call_id is not None:
            current = self._by_id.get(call_id)
            if current is not None and index is not None and index not in self._by_index:
                current = None  # a known id on a new index: another call reusing the id
            if current is None and index is not None:
                # Same index, no id yet: the id arrived after the first fragment.
                at_index = self._by_index.get(index)
                if at_index is not None and at_index.id is None:
                    current = at_index
                    current.id = call_id
                    self._by_id[call_id] = current
                    kept += len(call_id)
        elif index is not None:
            current = self._by_index.get(index)
        else:
            current = self._calls[-1] if self._calls else None
        if current is None:
            current = _Partial(call_id)
            self._calls.append(current)
            if call_id is not None:
                self._by_id[call_id] = current
                kept += len(call_id)
        if index is not None:
            self._by_index[index] = current
        function = delta.function
        if function is not None:
            if function.name and not current.name:
                current.name = function.name
                kept += len(function.name)
            if function.arguments:
                current.arguments.append(function.arguments)
                kept += len(function.arguments)
        return kept

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
    """The request's instructions and history as Chat Completions messages.

    A call's arguments that are not a JSON object go as ``{}`` (``sendable_arguments``).
    """
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
                    "function": {
                        "name": call.name,
                        "arguments": sendable_arguments(call.arguments),
                    },
                }
                for call in message.tool_calls
            ],
        }
    return {"role": message.role, "content": message.content or ""}
