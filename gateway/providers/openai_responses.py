"""Responses provider (``api: responses``, the built-in ``openai`` default).

Imports ``gateway.providers`` and the ``openai`` SDK. The gateway owns the
conversation, so every call sends the whole (trimmed) history with
``store: false``: ``ChatMessage`` history becomes Responses input items
(messages, ``function_call`` and ``function_call_output``), and Chat
Completions tool schemas become the flat Responses form (``strict`` kept as
declared, false by default, since the Responses API would otherwise default
it to true).

From the event stream it reads ``response.output_text.delta`` (text),
function calls (``response.output_item.added`` / ``...arguments.delta`` /
``response.output_item.done``), and ``response.completed`` (usage). A
``response.failed`` or ``error`` event becomes a ``ProviderError`` (retried
first when nothing was streamed yet); a stream that ends without
``response.completed`` or ``response.incomplete`` is an error, never a
silently truncated answer.

The SDK builds each event without validating it, so every field is read
through ``_str`` / ``_int`` / ``_list``: a server that sends a number where
text belongs gets a ``ProviderError`` (``StreamFailed``), not a crash of the
run deep in the engine.
"""

from __future__ import annotations

from typing import Any

from openai.types.responses import ResponseStreamEvent

from gateway.providers._openai_base import (
    IncompleteStream,
    OpenAIProvider,
    StreamFailed,
    register_api,
    sendable_arguments,
)
from gateway.providers.base import (
    CUT_REASONS,
    ModelDone,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)

__all__ = ["ResponsesProvider", "responses_input", "responses_tools"]


@register_api
class ResponsesProvider(OpenAIProvider):
    """Streams ``POST {base_url}/responses`` through ``AsyncOpenAI``."""

    api = "responses"
    path = "/responses"
    stream_item = ResponseStreamEvent

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"input": responses_input(request), "store": False}
        if request.instructions:
            body["instructions"] = request.instructions
        if request.tools:
            body["tools"] = responses_tools(request.tools)
        return body

    def _reader(self) -> _Reader:
        return _Reader()


# Reasoning streamed as text (open models, summaries): counted toward ``max_answer_chars``.
_REASONING_DELTAS = frozenset(
    {"response.reasoning_text.delta", "response.reasoning_summary_text.delta"}
)


class _Reader:
    """Turns Responses stream events into model events; ``done`` is set at the end."""

    def __init__(self) -> None:
        self.calls = _Calls()
        self.saw_text = False
        self.done: ModelDone | None = None
        self.size = 0  # characters of text, reasoning and function calls so far

    def feed(self, event: Any) -> list[ModelEvent]:
        """Read one event; return the text deltas it carries (nothing after the end).

        Raises:
            StreamFailed: on ``response.failed`` and ``error`` events.
        """
        if self.done is not None:
            return []
        kind = getattr(event, "type", "")
        if kind == "response.output_text.delta":
            delta = _str(event, "delta")
            if delta:
                self.saw_text = True
                self.size += len(delta)
                return [TextDelta(delta)]
        elif kind in ("response.output_item.added", "response.output_item.done"):
            self.size += self.calls.item(getattr(event, "item", None))
        elif kind in _REASONING_DELTAS:
            self.size += len(_str(event, "delta"))  # not shown, only counted
        elif kind == "response.function_call_arguments.delta":
            delta = _str(event, "delta")
            self.size += len(delta)
            self.calls.delta(_str(event, "item_id"), delta)
        elif kind in ("response.completed", "response.incomplete"):
            return self._finish(kind, getattr(event, "response", None))
        elif kind == "response.failed":
            error = getattr(getattr(event, "response", None), "error", None)
            raise StreamFailed(_str(error, "message"))
        elif kind == "error":
            raise StreamFailed(_str(event, "message"))
        return []

    @property
    def whole(self) -> bool:
        """True once ``response.completed`` / ``response.incomplete`` was read."""
        return self.done is not None

    def finish(self) -> list[ModelEvent]:
        """The function calls, then ``ModelDone``; ``IncompleteStream`` without the end event."""
        if self.done is None:
            raise IncompleteStream("the stream ended before the response completed")
        complete = self.calls.complete()
        events: list[ModelEvent] = [ToolCallRequest(call) for call in complete]
        done = self.done
        if complete and done.finish_reason not in CUT_REASONS:
            # A cut response (``length``...) keeps its reason: its calls may be truncated.
            done = ModelDone(done.usage, "tool_calls")
        events.append(done)
        return events

    def _finish(self, kind: str, response: Any) -> list[ModelEvent]:
        out: list[ModelEvent] = []
        for item in _list(response, "output"):
            self.size += self.calls.item(item)
            if not self.saw_text and getattr(item, "type", "") == "message":
                # Servers that send only the final response still answer.
                text = _message_text(item)
                if text:
                    self.saw_text = True
                    out.append(TextDelta(text))
        self.done = ModelDone(_usage(response), _finish_reason(kind, response))
        return out


class _Calls:
    """Function calls by output item id, in the order they appeared."""

    def __init__(self) -> None:
        self._order: list[str] = []
        self._name: dict[str, str] = {}
        self._call_id: dict[str, str] = {}
        # Argument pieces, joined once at the end: adding each delta to a string copied
        # everything before it (quadratic: 1 MB in 8-character deltas took 15 s).
        self._args: dict[str, list[str]] = {}
        self._final: set[str] = set()
        # Characters of arguments counted so far, by item (what an item repeats is not new).
        self._length: dict[str, int] = {}

    def item(self, item: Any) -> int:
        """Read a ``function_call`` output item; returns how many characters it added.

        Its name, ids and arguments count toward ``max_answer_chars`` as far as they
        are new: an item repeating what its deltas streamed (``output_item.done``,
        ``response.completed``) adds nothing, one carrying whole arguments (no deltas
        before it) adds them all.
        """
        if getattr(item, "type", "") != "function_call":
            return 0
        call_id = _str(item, "call_id")
        key = _str(item, "id") or call_id
        added = 0
        if key not in self._name:
            self._order.append(key)
            added += len(key)
        name = _str(item, "name")
        if name and name != self._name.get(key):
            added += len(name)
        self._name[key] = name or self._name.get(key, "")
        if call_id and call_id != self._call_id.get(key):
            added += len(call_id)
        self._call_id[key] = call_id or self._call_id.get(key, key)
        arguments = _str(item, "arguments")
        if arguments and getattr(item, "status", "completed") != "in_progress":
            added += max(0, len(arguments) - self._length.get(key, 0))
            self._length[key] = max(len(arguments), self._length.get(key, 0))
            self._args[key] = [arguments]
            self._final.add(key)
        elif key not in self._final and arguments:
            added += len(arguments)
            self._length[key] = self._length.get(key, 0) + len(arguments)
            self._args.setdefault(key, []).append(arguments)
        return added

    def delta(self, item_id: str, text: str) -> None:
        if item_id in self._final or not text:
            return
        if item_id not in self._name:
            self._order.append(item_id)
            self._name[item_id] = ""
            self._call_id[item_id] = item_id
        self._length[item_id] = self._length.get(item_id, 0) + len(text)
        self._args.setdefault(item_id, []).append(text)

    def complete(self) -> list[ToolCall]:
        return [
            ToolCall(
                id=self._call_id[key],
                name=self._name[key],
                arguments="".join(self._args.get(key, ())).strip() or "{}",
            )
            for key in self._order
            if self._name[key]
        ]


def _str(obj: Any, field: str) -> str:
    """``obj.field`` when it is text, ``""`` when absent or null.

    Raises:
        StreamFailed: it is something else (a malformed event).
    """
    value = getattr(obj, field, None)
    if value is None or isinstance(value, str):
        return value or ""
    raise StreamFailed(f"malformed event: {field!r} is {type(value).__name__}, not text")


def _int(obj: Any, field: str) -> int:
    """``obj.field`` when it is an integer, 0 when absent or null (else ``StreamFailed``)."""
    value = getattr(obj, field, None)
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise StreamFailed(f"malformed event: {field!r} is {type(value).__name__}, not a number")


def _list(obj: Any, field: str) -> list[Any]:
    """``obj.field`` when it is a list, ``[]`` when absent or null (else ``StreamFailed``)."""
    value = getattr(obj, field, None)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise StreamFailed(f"malformed event: {field!r} is {type(value).__name__}, not a list")


def _message_text(item: Any) -> str:
    return "".join(_str(part, "text") for part in _list(item, "content"))


def _usage(response: Any) -> Usage:
    usage = getattr(response, "usage", None)
    if usage is None:
        return Usage()
    prompt = _int(usage, "input_tokens")
    completion = _int(usage, "output_tokens")
    total = _int(usage, "total_tokens") or prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


def _finish_reason(kind: str, response: Any) -> str:
    if kind == "response.completed":
        return "stop"
    details = getattr(response, "incomplete_details", None)
    reason = getattr(details, "reason", None)
    return "length" if reason in (None, "max_output_tokens") else str(reason)


def responses_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chat Completions tool schemas in the flat Responses form."""
    flat: list[dict[str, Any]] = []
    for tool in tools:
        function = tool.get("function")
        if tool.get("type") != "function" or not isinstance(function, dict):
            flat.append(tool)  # already flat, or a hosted tool: pass through
            continue
        converted: dict[str, Any] = {"type": "function", "name": function["name"]}
        if function.get("description"):
            converted["description"] = function["description"]
        converted["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
        converted["strict"] = bool(function.get("strict", False))
        flat.append(converted)
    return flat


def responses_input(request: ModelRequest) -> list[dict[str, Any]]:
    """The history as Responses input items (instructions travel separately).

    A call's arguments that are not a JSON object go as ``{}`` (``sendable_arguments``).
    """
    items: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id or "",
                    "output": message.content or "",
                }
            )
            continue
        if message.content or message.role != "assistant":
            items.append({"role": message.role, "content": message.content or ""})
        for call in message.tool_calls:
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.id,
                    "name": call.name,
                    "arguments": sendable_arguments(call.arguments),
                }
            )
    return items
