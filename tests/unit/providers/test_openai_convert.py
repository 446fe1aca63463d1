"""Pure translation logic of the SDK providers: history, tools, streamed tool-call assembly."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from gateway.providers.base import ChatMessage, ModelRequest, ToolCall
from gateway.providers.openai_chat import ToolCallAssembler, ToolCallDelta, chat_messages
from gateway.providers.openai_responses import responses_input, responses_tools

HISTORY = [
    ChatMessage(role="user", content="weather in Paris and Rome?"),
    ChatMessage(
        role="assistant",
        content="Checking.",
        tool_calls=[
            ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}'),
            ToolCall(id="c2", name="get_weather", arguments='{"city": "Rome"}'),
        ],
    ),
    ChatMessage(role="tool", tool_call_id="c1", content="21C"),
    ChatMessage(role="tool", tool_call_id="c2", content="25C"),
    ChatMessage(role="assistant", content="Paris 21C, Rome 25C."),
]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_chat_messages_keep_tool_calls_and_results() -> None:
    """History becomes Chat Completions messages with instructions as the system message."""
    messages = chat_messages(ModelRequest(model="m", instructions="Be brief.", messages=HISTORY))
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert messages[2]["tool_calls"][1] == {
        "id": "c2",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
    }
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "21C"}
    assert messages[-1] == {"role": "assistant", "content": "Paris 21C, Rome 25C."}


def test_responses_input_uses_function_call_items() -> None:
    """History becomes Responses items: messages, function_call and function_call_output."""
    items = responses_input(ModelRequest(model="m", instructions="x", messages=HISTORY))
    assert items == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking."},
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
        },
        {
            "type": "function_call",
            "call_id": "c2",
            "name": "get_weather",
            "arguments": '{"city": "Rome"}',
        },
        {"type": "function_call_output", "call_id": "c1", "output": "21C"},
        {"type": "function_call_output", "call_id": "c2", "output": "25C"},
        {"role": "assistant", "content": "Paris 21C, Rome 25C."},
    ]


def test_responses_tools_are_flat_and_not_strict_by_default() -> None:
    """Chat tool schemas become flat Responses tools with strict stated explicitly."""
    strict_tool = {"type": "function", "function": {**TOOL["function"], "strict": True}}
    assert responses_tools([TOOL, strict_tool]) == [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": TOOL["function"]["parameters"],
            "strict": False,
        },
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": TOOL["function"]["parameters"],
            "strict": True,
        },
    ]


def _fn(name: str | None = None, arguments: str | None = None) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def _assemble(deltas: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    assembler = ToolCallAssembler()
    for raw in deltas:
        # Decoded leniently, as the provider decodes streamed chunks.
        assembler.add(msgspec.convert(raw, ToolCallDelta, strict=False))
    return [(c.id, c.name, c.arguments) for c in assembler.calls()]


PARALLEL = [("a", "f", '{"x": 1}'), ("b", "g", '{"y": 2}')]


@pytest.mark.parametrize(
    ("case", "deltas"),
    [
        (
            "openai",
            [
                {"index": 0, "id": "a", "function": _fn("f", "")},
                {"index": 0, "function": _fn(None, '{"x": ')},
                {"index": 0, "function": _fn(None, "1}")},
                {"index": 1, "id": "b", "function": _fn("g", '{"y": 2}')},
            ],
        ),
        (
            "no index",
            [
                {"id": "a", "function": _fn("f", '{"x"')},
                {"function": _fn(None, ": 1}")},
                {"id": "b", "function": _fn("g", '{"y": 2}')},
            ],
        ),
        (
            "all on index 0",
            [
                {"index": 0, "id": "a", "function": _fn("f", '{"x": 1}')},
                {"index": 0, "id": "b", "function": _fn("g", '{"y":')},
                {"index": 0, "function": _fn(None, " 2}")},
            ],
        ),
        (
            "id and name repeated",
            [
                {"index": 0, "id": "a", "function": _fn("f", '{"x": ')},
                {"index": 0, "id": "a", "function": _fn("f", "1}")},
                {"index": 1, "id": "b", "function": _fn("g", '{"y": 2}')},
            ],
        ),
        (
            "interleaved by index",
            [
                {"index": 0, "id": "a", "function": _fn("f", "")},
                {"index": 1, "id": "b", "function": _fn("g", "")},
                {"index": 0, "function": _fn(None, '{"x": 1}')},
                {"index": 1, "function": _fn(None, '{"y": 2}')},
            ],
        ),
    ],
)
def test_assembler_handles_server_variants(case: str, deltas: list[dict[str, Any]]) -> None:
    """Every way compatible servers stream two parallel calls assembles to the same calls."""
    assert _assemble(deltas) == PARALLEL, case


def test_assembler_generates_missing_ids_and_empty_arguments() -> None:
    """A call with no id gets a generated one; no arguments become an empty JSON object."""
    calls = _assemble([{"index": 0, "function": _fn("ping", None)}])
    assert len(calls) == 1
    call_id, name, arguments = calls[0]
    assert call_id.startswith("call_")
    assert (name, arguments) == ("ping", "{}")


def test_responses_call_arguments_streamed_in_many_deltas_are_joined_in_linear_time() -> None:
    """2 MB of arguments in 8-character deltas is read in well under a second.

    Each delta was appended by copying everything before it (quadratic): 3 to
    15 s of a blocked event loop for 1 MB (a model looping inside an argument
    until its token limit), minutes for a few MB.
    """
    import time

    from openai._models import construct_type
    from openai.types.responses import ResponseStreamEvent

    from gateway.providers.base import ToolCallRequest
    from gateway.providers.openai_responses import ResponsesProvider

    def event(**fields: Any) -> Any:
        return construct_type(type_=ResponseStreamEvent, value=fields)

    call = {"id": "fc_1", "type": "function_call", "call_id": "call_1", "name": "lookup"}
    reader = ResponsesProvider._reader(None)  # type: ignore[arg-type]
    reader.feed(
        event(
            type="response.output_item.added",
            output_index=0,
            item={**call, "arguments": "", "status": "in_progress"},
        )
    )
    delta = event(type="response.function_call_arguments.delta", item_id="fc_1", delta="x" * 8)
    started = time.perf_counter()
    for _ in range(250_000):
        reader.feed(delta)
    elapsed = time.perf_counter() - started
    reader.feed(event(type="response.completed", response={"output": [], "usage": None}))
    (request, _) = reader.finish()
    assert isinstance(request, ToolCallRequest)
    assert request.call.arguments == "x" * 2_000_000
    assert elapsed < 2, f"reading the deltas took {elapsed:.1f}s"
