"""The history sent to the model: repaired, then trimmed to a budget.

Two rules keep every provider happy: an assistant message that asked for
tools is always followed by one tool message per call (a call interrupted by
a crash or a cancellation gets a synthetic error result), and trimming drops
whole turns from the oldest end, never a tool call without its result or a
result without its call. Pure functions over ``ChatMessage``; imports only
``gateway.providers.base``.
"""

from __future__ import annotations

import json

from gateway.providers.base import ChatMessage

__all__ = ["INTERRUPTED_OUTPUT", "repair", "trim_history"]

INTERRUPTED_OUTPUT = json.dumps(
    {"error": {"type": "interrupted", "message": "the tool call did not complete"}}
)


def _answer_missing(pending: dict[str, str], out: list[ChatMessage]) -> None:
    for call_id, name in pending.items():
        out.append(
            ChatMessage(role="tool", content=INTERRUPTED_OUTPUT, tool_call_id=call_id, name=name)
        )
    pending.clear()


def repair(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Drop tool results without a call, add error results for calls without one.

    Returns a new list; every assistant message with ``tool_calls`` is directly
    followed by exactly one tool message per call.
    """
    out: list[ChatMessage] = []
    pending: dict[str, str] = {}
    for message in messages:
        if message.role == "tool":
            if message.tool_call_id in pending:
                pending.pop(message.tool_call_id)
                out.append(message)
            continue  # an orphan result (its call was trimmed or never stored)
        _answer_missing(pending, out)
        out.append(message)
        if message.role == "assistant":
            pending = {call.id: call.name for call in message.tool_calls}
    _answer_missing(pending, out)
    return out


def _size(message: ChatMessage) -> int:
    size = len(message.content or "") + 16
    for call in message.tool_calls:
        size += len(call.name) + len(call.arguments) + len(call.id)
    return size


def trim_history(
    messages: list[ChatMessage], *, max_messages: int, max_chars: int
) -> list[ChatMessage]:
    """The newest whole turns of ``messages`` that fit the budget (repaired first).

    A unit is a message plus, for an assistant message with tool calls, its
    tool results; units are kept newest first while both ``max_messages`` and
    ``max_chars`` (approximate: content plus call arguments) hold. The newest
    unit is always kept, even when it alone is over budget.
    """
    units: list[list[ChatMessage]] = []
    for message in repair(messages):
        if message.role == "tool" and units:
            units[-1].append(message)
        else:
            units.append([message])
    kept: list[list[ChatMessage]] = []
    count = chars = 0
    for unit in reversed(units):
        size = sum(_size(m) for m in unit)
        if kept and (count + len(unit) > max_messages or chars + size > max_chars):
            break
        kept.append(unit)
        count += len(unit)
        chars += size
    return [message for unit in reversed(kept) for message in unit]
