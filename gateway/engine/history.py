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


def _close_turn(
    calls: dict[str, str], results: dict[str, ChatMessage], out: list[ChatMessage]
) -> None:
    """Append one result per call of the open turn, in the order of its calls."""
    for call_id, name in calls.items():
        found = results.get(call_id)
        if found is None:
            found = ChatMessage(
                role="tool", content=INTERRUPTED_OUTPUT, tool_call_id=call_id, name=name
            )
        out.append(found)
    calls.clear()
    results.clear()


def repair(messages: list[ChatMessage]) -> list[ChatMessage]:
    """Drop tool results without a call, add error results for calls without one.

    Returns a new list; every assistant message with ``tool_calls`` is directly
    followed by exactly one tool message per call, **in the order of its
    calls**. A turn's calls run concurrently and their results are stored as
    they finish, but chat templates of local models (Llama 3 on Ollama or
    vLLM...) render tool results without their call id, so the model pairs
    them with its calls by position. A second result for a call (a retried
    write) is dropped: the first one stored wins.
    """
    out: list[ChatMessage] = []
    calls: dict[str, str] = {}  # the open turn's call ids -> names, in call order
    results: dict[str, ChatMessage] = {}  # its results so far, by call id
    for message in messages:
        if message.role == "tool":
            call_id = message.tool_call_id
            if call_id is not None and call_id in calls and call_id not in results:
                results[call_id] = message
            continue  # an orphan result (its call was trimmed or never stored), or a duplicate
        _close_turn(calls, results, out)
        out.append(message)
        if message.role == "assistant":
            calls.update((call.id, call.name) for call in message.tool_calls)
    _close_turn(calls, results, out)
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
    unit is always kept, even when it alone is over budget, and so is the
    newest user message: it is the question the run answers, and a turn of
    tool calls whose results fill the budget (one big result, many parallel
    calls) must not leave the model with results but no question (strict chat
    templates also refuse a conversation that starts with the assistant).
    ``system`` messages (an OpenAI-compatible client's own instructions;
    threads hold none) are instructions, not history: they are always kept, in
    place, and count against the budget first.
    """
    units: list[list[tuple[int, ChatMessage]]] = []
    pinned: list[tuple[int, ChatMessage]] = []
    for index, message in enumerate(repair(messages)):
        if message.role == "system":
            pinned.append((index, message))
        elif message.role == "tool" and units:
            units[-1].append((index, message))
        else:
            units.append([(index, message)])
    kept = list(pinned)
    count = len(pinned)
    chars = sum(_size(m) for _, m in pinned)
    question = next((unit for unit in reversed(units) if unit[0][1].role == "user"), None)
    for position, unit in enumerate(reversed(units)):
        size = sum(_size(m) for _, m in unit)
        if position and (count + len(unit) > max_messages or chars + size > max_chars):
            if question is not None and question[0] not in kept:
                kept += question  # a user message is a unit of its own: nothing is split
            break
        kept += unit
        count += len(unit)
        chars += size
    return [message for _, message in sorted(kept, key=lambda pair: pair[0])]
