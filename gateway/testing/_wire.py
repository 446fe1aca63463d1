"""Wire formats of the fake OpenAI server: bodies, chunks and events as OpenAI sends them.

Private to ``gateway.testing``; the request log entry and pure functions from
a scripted reply to JSON objects, importing nothing from the gateway. Chat Completions streams are
``data: {chunk}`` frames ending with ``data: [DONE]``; Responses streams are
``event: TYPE`` + ``data: {event}`` frames ending with ``response.completed`` (or
``response.incomplete``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any

import msgspec

__all__ = [
    "QUIRKS",
    "FakeReply",
    "FakeToolCall",
    "RecordedRequest",
    "ReplyUsage",
    "chat_body",
    "chat_chunks",
    "error_body",
    "request_error",
    "responses_body",
    "responses_events",
    "sse_chat",
    "sse_error",
    "sse_responses",
]

QUIRKS = frozenset(
    {
        "no_index",
        "all_index_zero",
        "id_every_chunk",
        "stop_with_tool_calls",
        "usage_with_finish",
        "single_chunk_calls",
        "no_stream_with_tools",
    }
)
"""How compatible servers differ from OpenAI when streaming Chat Completions:

- ``no_index``: tool-call deltas carry no ``index``;
- ``all_index_zero``: every parallel call streams on index 0 (a new id starts a call);
- ``id_every_chunk``: ``id``, ``type`` and ``name`` repeated in every fragment;
- ``stop_with_tool_calls``: ``finish_reason: "stop"`` although tools were called;
- ``usage_with_finish``: usage on the finish chunk instead of a final chunk
  with empty ``choices`` (OpenAI's way, the default);
- ``single_chunk_calls``: each call's arguments in one fragment (Ollama);
- ``no_stream_with_tools``: a streamed request that carries ``tools`` gets the
  whole answer as one non-streamed ``chat.completion`` JSON body (SGLang did).
"""

_PIECE = re.compile(r"\s*\S+\s*")
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_ARG_FRAGMENT = 8


class FakeToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A scripted tool call; ``arguments`` is JSON text."""

    id: str
    name: str
    arguments: str


class ReplyUsage(msgspec.Struct, frozen=True, kw_only=True):
    """Token counts reported by the fake (word counts unless scripted)."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion."""
        return self.prompt_tokens + self.completion_tokens


class FakeReply(msgspec.Struct, frozen=True, kw_only=True):
    """One scripted model answer: text, tool calls, or both.

    ``finish_reason`` None means ``tool_calls`` when there are calls, else
    ``stop``. ``"length"`` plays an answer cut by the model's token limit
    (``"content_filter"``, one a filter stopped): Chat Completions sends it as
    is, the Responses API as an ``incomplete`` response (``response.incomplete``,
    ``incomplete_details.reason`` ``max_output_tokens`` / ``content_filter``, the
    last output item ``incomplete``). The text and the arguments are sent as
    scripted: script the cut yourself (``'{"city": "Par'``).
    """

    text: str = ""
    tool_calls: list[FakeToolCall] = []
    usage: ReplyUsage | None = None
    finish_reason: str | None = None

    @property
    def finish(self) -> str:
        """The finish reason sent (``finish_reason``, or what the reply implies)."""
        if self.finish_reason is not None:
            return self.finish_reason
        return "tool_calls" if self.tool_calls else "stop"

    @property
    def incomplete_reason(self) -> str | None:
        """The Responses API's ``incomplete_details.reason`` for it, None if it completed."""
        return {"length": "max_output_tokens", "content_filter": "content_filter"}.get(self.finish)


class RecordedRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One request the fake received.

    Attributes:
        method: HTTP method.
        path: URL path (``/v1/chat/completions``...).
        headers: lowercase header names to values.
        body: the parsed JSON body (``None`` for GET or a non-JSON body).
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any = None

    @property
    def api(self) -> str:
        """``chat``, ``responses`` or ``other``."""
        if self.path.endswith("/chat/completions"):
            return "chat"
        if self.path.endswith("/responses"):
            return "responses"
        return "other"

    @property
    def stream(self) -> bool:
        """Whether the client asked for a stream."""
        return isinstance(self.body, dict) and bool(self.body.get("stream"))

    def last_user_text(self) -> str:
        """The text of the newest user message (either API), or ``""``."""
        if not isinstance(self.body, dict):
            return ""
        items = self.body.get("messages") or self.body.get("input") or []
        if isinstance(items, str):
            return items
        for item in reversed(items):
            if isinstance(item, dict) and item.get("role") == "user":
                return _text_of(item.get("content"))
        return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def error_body(status: int, message: str, *, param: str | None = None) -> dict[str, Any]:
    """The JSON OpenAI sends with an error status (``param``: the field at fault)."""
    kinds = {
        400: "invalid_request_error",
        401: "invalid_request_error",
        404: "invalid_request_error",
        429: "rate_limit_error",
    }
    return {
        "error": {
            "message": message,
            "type": kinds.get(status, "server_error"),
            "param": param,
            "code": None,
        }
    }


def request_error(api: str, body: dict[str, Any]) -> tuple[str, str | None] | None:
    """Why OpenAI would refuse this model request with a 400, as (message, param); None if not.

    The fake checks what a client most easily gets wrong and OpenAI refuses,
    so a test cannot pass on a request the real service rejects: tool names
    match ``^[a-zA-Z0-9_-]{1,64}$``; Chat Completions needs ``messages``, a
    non-empty ``tools`` when sent (and for ``tool_choice``), ``stream_options``
    only with ``stream``, and
    every assistant message with ``tool_calls`` directly followed by one tool
    message per call (and no tool message anywhere else); a Responses input
    needs a ``function_call`` for each ``function_call_output`` and the reverse
    (unchecked with ``previous_response_id``: the fake keeps no responses).
    The messages are OpenAI's own.
    """
    tools_error = _tools_error(api, body)
    if tools_error is not None:
        return tools_error
    if api == "chat":
        if body.get("stream_options") is not None and not body.get("stream"):
            return (
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "Missing required parameter: 'messages'.", "messages"
        return _chat_tool_error(messages)
    if api == "responses" and not body.get("previous_response_id"):
        items = body.get("input")
        if isinstance(items, list):
            return _responses_tool_error([i for i in items if isinstance(i, dict)])
    return None


def _tools_error(api: str, body: dict[str, Any]) -> tuple[str, str | None] | None:
    tools = body.get("tools")
    if api == "chat" and tools == []:
        return (
            "Invalid 'tools': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "tools",
        )
    if api == "chat" and body.get("tool_choice") is not None and not tools:
        return (
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
            "are specified.",
            "tool_choice",
        )
    for at, tool in enumerate(tools if isinstance(tools, list) else []):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            continue  # a hosted tool (web_search...): not checked here
        nested = api == "chat" and isinstance(tool.get("function"), dict)
        name = tool["function"].get("name") if nested else tool.get("name")
        field = f"tools[{at}].function.name" if nested else f"tools[{at}].name"
        if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
            return (
                f"Invalid '{field}': string does not match pattern. Expected a string that "
                "matches the pattern '^[a-zA-Z0-9_-]+$'.",
                field,
            )
        if len(name) > 64:
            return (
                f"Invalid '{field}': string too long. Expected a string with maximum length "
                f"64, but got a string with length {len(name)} instead.",
                field,
            )
    return None


def _chat_tool_error(messages: list[Any]) -> tuple[str, str | None] | None:
    turn_ids: set[Any] = set()  # the call ids of the newest assistant message with tool_calls
    unanswered: list[Any] | None = None  # its calls without a tool message yet (None: no turn)
    turn_at = 0
    for at, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role == "tool":
            if unanswered is None:
                return (
                    "Invalid parameter: messages with role 'tool' must be a response to a "
                    "preceeding message with 'tool_calls'.",
                    f"messages.[{at}].role",
                )
            call_id = message.get("tool_call_id")
            if call_id not in turn_ids:
                return (
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in "
                    "'tool_calls' of previous message.",
                    f"messages.[{at}].tool_call_id",
                )
            unanswered = [i for i in unanswered if i != call_id]
            continue
        if unanswered:
            break
        unanswered = None
        calls = message.get("tool_calls") if role == "assistant" else None
        if calls:
            ids = [c.get("id") if isinstance(c, dict) else None for c in calls]
            turn_ids, unanswered, turn_at = set(ids), ids, at
    if unanswered:
        return (
            "An assistant message with 'tool_calls' must be followed by tool messages "
            "responding to each 'tool_call_id'. The following tool_call_ids did not have "
            f"response messages: {', '.join(str(i) for i in unanswered)}",
            f"messages.[{turn_at}].role",
        )
    return None


def _responses_tool_error(items: list[dict[str, Any]]) -> tuple[str, str | None] | None:
    calls = [i.get("call_id") for i in items if i.get("type") == "function_call"]
    outputs = [i.get("call_id") for i in items if i.get("type") == "function_call_output"]
    for call_id in outputs:
        if call_id not in calls:
            return (
                f"No tool call found for function call output with call_id {call_id}.",
                "input",
            )
    for call_id in calls:
        if call_id not in outputs:
            return f"No tool output found for function call {call_id}.", "input"
    return None


def _pieces(text: str) -> list[str]:
    return _PIECE.findall(text) or ([text] if text else [])


def _usage_chat(usage: ReplyUsage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _usage_responses(usage: ReplyUsage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def chat_body(reply: FakeReply, usage: ReplyUsage, *, model: str, ident: str) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in reply.tool_calls
        ]
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": reply.finish,
                "logprobs": None,
            }
        ],
        "usage": _usage_chat(usage),
        "system_fingerprint": None,
    }


def _tool_deltas(reply: FakeReply, quirks: frozenset[str]) -> list[dict[str, Any]]:
    """One dict per tool-call delta, each going into its own chunk."""
    deltas: list[dict[str, Any]] = []
    for position, call in enumerate(reply.tool_calls):
        index = 0 if "all_index_zero" in quirks else position
        if "single_chunk_calls" in quirks:
            fragments = [call.arguments]
        else:
            fragments = [""] + [
                call.arguments[i : i + _ARG_FRAGMENT]
                for i in range(0, len(call.arguments), _ARG_FRAGMENT)
            ]
        for number, fragment in enumerate(fragments):
            delta: dict[str, Any] = {"index": index, "function": {"arguments": fragment}}
            if number == 0 or "id_every_chunk" in quirks:
                delta["id"] = call.id
                delta["type"] = "function"
                delta["function"]["name"] = call.name
            if "no_index" in quirks:
                del delta["index"]
            deltas.append(delta)
    return deltas


def chat_chunks(
    reply: FakeReply,
    usage: ReplyUsage,
    *,
    model: str,
    ident: str,
    include_usage: bool,
    quirks: frozenset[str],
) -> list[dict[str, Any]]:
    """The ``chat.completion.chunk`` objects of a streamed answer, in order."""
    created = int(time.time())
    usage_field: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
            **usage_field,
        }

    first: dict[str, Any] = {"role": "assistant", "content": "" if reply.text else None}
    chunks = [chunk(first)]
    chunks += [chunk({"content": piece}) for piece in _pieces(reply.text)]
    chunks += [chunk({"tool_calls": [delta]}) for delta in _tool_deltas(reply, quirks)]
    finish = reply.finish
    if "stop_with_tool_calls" in quirks and reply.finish_reason is None:
        finish = "stop"
    last = chunk({}, finish)
    if "usage_with_finish" in quirks:
        last["usage"] = _usage_chat(usage)
        chunks.append(last)
    else:
        chunks.append(last)
        if include_usage:
            tail = chunk({})
            tail["choices"] = []
            tail["usage"] = _usage_chat(usage)
            chunks.append(tail)
    return chunks


def sse_chat(chunks: Iterable[dict[str, Any]]) -> list[bytes]:
    """Chat chunks as SSE frames, ``data: [DONE]`` last."""
    frames = [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]
    frames.append(b"data: [DONE]\n\n")
    return frames


def _output_items(reply: FakeReply, ident: str) -> list[dict[str, Any]]:
    """The final output items; the last one ``incomplete`` if the reply was cut."""
    items: list[dict[str, Any]] = []
    if reply.text:
        items.append(
            {
                "id": f"msg_{ident}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": reply.text, "annotations": []}],
            }
        )
    for number, call in enumerate(reply.tool_calls):
        items.append(
            {
                "id": f"fc_{ident}_{number}",
                "type": "function_call",
                "call_id": call.id,
                "name": call.name,
                "arguments": call.arguments,
                "status": "completed",
            }
        )
    if items and reply.incomplete_reason is not None:
        items[-1]["status"] = "incomplete"
    return items


def responses_body(
    reply: FakeReply,
    usage: ReplyUsage | None,
    *,
    model: str,
    ident: str,
    request: dict[str, Any],
) -> dict[str, Any]:
    """A ``response`` object: final (``completed`` or ``incomplete``) when ``usage`` is
    given, else in progress with no output yet."""
    final = usage is not None
    reason = reply.incomplete_reason if final else None
    status = ("incomplete" if reason else "completed") if final else "in_progress"
    return {
        "id": f"resp_{ident}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "model": model,
        "instructions": request.get("instructions"),
        "output": _output_items(reply, ident) if final else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": request.get("tools") or [],
        "temperature": request.get("temperature"),
        "store": request.get("store", True),
        "error": None,
        "incomplete_details": {"reason": reason} if reason else None,
        "usage": _usage_responses(usage) if usage is not None else None,
    }


def responses_events(
    reply: FakeReply,
    usage: ReplyUsage,
    *,
    model: str,
    ident: str,
    request: dict[str, Any],
) -> list[dict[str, Any]]:
    """The events of a streamed Responses answer, in order, with sequence numbers."""
    events: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    pending = responses_body(reply, None, model=model, ident=ident, request=request)
    emit("response.created", response=pending)
    emit("response.in_progress", response=pending)
    final_items = _output_items(reply, ident)
    position = 0
    if reply.text:
        item = final_items[0]
        emit(
            "response.output_item.added",
            output_index=0,
            item={**item, "status": "in_progress", "content": []},
        )
        part = {"type": "output_text", "text": "", "annotations": []}
        emit(
            "response.content_part.added",
            item_id=item["id"],
            output_index=0,
            content_index=0,
            part=part,
        )
        for piece in _pieces(reply.text):
            emit(
                "response.output_text.delta",
                item_id=item["id"],
                output_index=0,
                content_index=0,
                delta=piece,
                logprobs=[],
            )
        emit(
            "response.output_text.done",
            item_id=item["id"],
            output_index=0,
            content_index=0,
            text=reply.text,
            logprobs=[],
        )
        emit(
            "response.content_part.done",
            item_id=item["id"],
            output_index=0,
            content_index=0,
            part={**part, "text": reply.text},
        )
        emit("response.output_item.done", output_index=0, item=item)
        position = 1
    for offset, item in enumerate(final_items[position:]):
        index = position + offset
        emit(
            "response.output_item.added",
            output_index=index,
            item={**item, "arguments": "", "status": "in_progress"},
        )
        arguments = item["arguments"]
        for i in range(0, len(arguments), _ARG_FRAGMENT):
            emit(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=index,
                delta=arguments[i : i + _ARG_FRAGMENT],
            )
        emit(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=index,
            name=item["name"],
            arguments=arguments,
        )
        emit("response.output_item.done", output_index=index, item=item)
    final = responses_body(reply, usage, model=model, ident=ident, request=request)
    emit(f"response.{final['status']}", response=final)
    return events


def sse_error(api: str, message: str, *, sequence_number: int = 0) -> bytes:
    """The frame OpenAI sends when a started stream fails (chat: ``error`` data)."""
    if api == "chat":
        payload = error_body(500, message)
        return b"data: " + json.dumps(payload).encode() + b"\n\n"
    event = {
        "type": "error",
        "code": "server_error",
        "message": message,
        "param": None,
        "sequence_number": sequence_number,
    }
    return b"event: error\ndata: " + json.dumps(event).encode() + b"\n\n"


def sse_responses(events: Iterable[dict[str, Any]]) -> list[bytes]:
    """Responses events as SSE frames (``event:`` + ``data:``)."""
    return [
        b"event: " + e["type"].encode() + b"\ndata: " + json.dumps(e).encode() + b"\n\n"
        for e in events
    ]
