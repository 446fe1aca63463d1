"""The offline model's contract: tool choice, argument filling, answers, explanations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.providers._words import candidates
from gateway.providers.base import (
    ChatMessage,
    ModelDone,
    ModelRequest,
    TextDelta,
    ToolCall,
    ToolCallRequest,
)
from gateway.providers.offline import MAX_MESSAGE_CHARS, OfflineProvider, offline_reply


def _tool(
    name: str, description: str, props: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


TOOLS = [
    _tool(
        "search_customers",
        "Search customers by name or email.",
        {"query": {"type": "string"}},
        ["query"],
    ),
    _tool(
        "get_order_status",
        "Look up the status of an order by its id.",
        {"order_id": {"type": "integer", "description": "The order number"}},
        ["order_id"],
    ),
    _tool(
        "get_weather",
        "Get the current weather for a city.",
        {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        ["city"],
    ),
    _tool(
        "create_ticket",
        "Create a support ticket for a customer problem.",
        {
            "subject": {"type": "string"},
            "priority": {"type": "string", "enum": ["low", "normal", "high"], "default": "normal"},
        },
        ["subject", "priority"],
    ),
    _tool(
        "convert_currency",
        "Convert an amount of money between currencies.",
        {"amount": {"type": "number"}, "to": {"type": "string"}},
        ["amount", "to"],
    ),
    _tool(
        "search_orders",
        "List a customer's orders by email address.",
        {
            "email": {"type": "string"},
            "state": {"type": "string", "enum": ["paid", "shipped", "delivered"]},
        },
        ["email"],
    ),
    _tool(
        "calculate",
        "Calculate an arithmetic formula exactly.",
        {"formula": {"type": "string"}},
        ["formula"],
    ),
    _tool(
        "convert_units",
        "Convert a measurement between metric and imperial units (km/miles).",
        {"value": {"type": "number"}, "unit": {"type": "string", "enum": ["miles", "km"]}},
        ["value", "unit"],
    ),
    _tool(
        "code_interpreter", "Run Python code in a sandbox.", {"code": {"type": "string"}}, ["code"]
    ),
    _tool(
        "file_search",
        "Search the assistant's documents.",
        {"query": {"type": "string"}},
        ["query"],
    ),
]


def _request(*messages: ChatMessage, tools: list[dict[str, Any]] | None = None) -> ModelRequest:
    return ModelRequest(
        model="offline",
        instructions="You help customers.",
        messages=list(messages),
        tools=TOOLS if tools is None else tools,
    )


def _user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


@pytest.mark.parametrize(
    ("message", "tool", "arguments"),
    [
        ("what's the status of order 1042?", "get_order_status", {"order_id": 1042}),
        ("Status of my orders #77 please", "get_order_status", {"order_id": 77}),
        ("What is the weather in New York today?", "get_weather", {"city": "New York"}),
        (
            "weather for 'Rio de Janeiro' in f",
            "get_weather",
            {"city": "Rio de Janeiro", "unit": "f"},
        ),
        ("find customers named Alice", "search_customers", {"query": "customers Alice"}),
        ("search customers alice@example.com", "search_customers", {"query": "alice@example.com"}),
        (
            'create a high priority ticket: "printer on fire"',
            "create_ticket",
            {"subject": "printer on fire", "priority": "high"},
        ),
        (
            "open a ticket about login failures",
            "create_ticket",
            {"subject": "login failures", "priority": "normal"},
        ),
        ("convert 12.5 money to EUR", "convert_currency", {"amount": 12.5, "to": "EUR"}),
        ("use python to compute 17 * 23", "code_interpreter", {"code": "print(17 * 23)"}),
        ("How do I reset my password?", "file_search", {"query": "reset password"}),
        ("orders of bob@example.com", "search_orders", {"email": "bob@example.com"}),
        (
            "delivered orders of bob@example.com",
            "search_orders",
            {"email": "bob@example.com", "state": "delivered"},
        ),
        ("calculate (12 + 30) * 2", "calculate", {"formula": "(12 + 30) * 2"}),
        ("convert 10 km to miles", "convert_units", {"value": 10.0, "unit": "km"}),
    ],
)
def test_picks_tool_and_fills_arguments(message: str, tool: str, arguments: dict[str, Any]) -> None:
    """A message selects the tool sharing most words and fills arguments from the message."""
    text, calls = offline_reply(_request(_user(message)))
    assert text == ""
    assert len(calls) == 1
    assert calls[0].name == tool
    assert json.loads(calls[0].arguments) == arguments


def test_order_status_argument_is_an_integer() -> None:
    """The demo's key sentence reaches the order tool with order_id as a JSON integer."""
    _, calls = offline_reply(_request(_user("what's the status of order 1042?")))
    assert calls[0].arguments == '{"order_id": 1042}'


def test_tie_goes_to_name_matches_then_order() -> None:
    """Equal word overlap is decided by words in the tool name, then by tool order."""
    tools = [
        _tool("alpha", "Lists invoices.", {}, []),
        _tool("list_invoices", "Shows things.", {}, []),
    ]
    _, calls = offline_reply(_request(_user("list invoices"), tools=tools))
    assert calls[0].name == "list_invoices"
    twins = [_tool("first_report", "report", {}, []), _tool("second_report", "report", {}, [])]
    _, calls = offline_reply(_request(_user("the report"), tools=twins))
    assert calls[0].name == "first_report"


def test_prefers_a_tool_it_can_fill() -> None:
    """When the best-scoring tool lacks a required number, a fillable lower-ranked tool wins."""
    tools = [
        _tool(
            "order_status", "Status of an order.", {"order_id": {"type": "integer"}}, ["order_id"]
        ),
        _tool("order_search", "Search orders by text.", {"text": {"type": "string"}}, ["text"]),
    ]
    _, calls = offline_reply(_request(_user("order status for a red phone"), tools=tools))
    assert calls[0].name == "order_search"
    assert json.loads(calls[0].arguments) == {"text": "red phone"}


def test_greeting_does_not_search_files() -> None:
    """A message with only stopwords gets the explanation, not a file_search call."""
    text, calls = offline_reply(_request(_user("hello!")))
    assert calls == []
    assert "offline model" in text


def test_missing_required_number_asks_for_it() -> None:
    """Without a number for a required integer the model asks instead of calling."""
    text, calls = offline_reply(_request(_user("what's the status of my order?")))
    assert calls == []
    assert "get_order_status" in text
    assert "order_id" in text


def test_same_conversation_gives_same_call_id() -> None:
    """Replaying a conversation yields identical tool call ids (determinism)."""
    first = offline_reply(_request(_user("weather in Paris")))
    second = offline_reply(_request(_user("weather in Paris")))
    assert first == second
    assert first[1][0].id.startswith("call_")


@pytest.mark.parametrize(
    ("message", "emails", "expressions"),
    [
        ("mail bob@example.com and x.y+z@a-b.co.uk", ["bob@example.com", "x.y+z@a-b.co.uk"], []),
        ("a-b-c bob@example.com", ["bob@example.com"], []),
        ("calc (4+5)*3 and 10 / 2, not 12", [], ["(4+5)*3", "10 / 2"]),
        ("-3 + 4 then 2**10 and 7 // 2", [], ["-3 + 4", "2**10", "7 // 2"]),
        ("1 " * 50 + "+ 1", [], [("1 " * 50 + "+ 1")]),
        ("1 " * 150 + "+ 1", [], []),  # its operator lies past the run's first 200 characters
    ],
)
def test_emails_and_expressions_are_found_where_they_start(
    message: str, emails: list[str], expressions: list[str]
) -> None:
    """E-mails start where a local part starts; an expression is searched within its run of
    digits, operators and spaces, up to its first 200 characters (the bounds that keep a
    hostile message linear: bench/offline.py)."""
    found = candidates(message)
    assert found.emails == emails
    assert found.expressions == expressions


def test_only_the_start_of_a_long_message_is_read() -> None:
    """Words past MAX_MESSAGE_CHARS do not pick a tool (the documented limit)."""
    padding = "the " * (MAX_MESSAGE_CHARS // 4)  # stopwords: they match nothing
    text, calls = offline_reply(_request(_user(padding + " status of order 1042")))
    assert calls == [] and "offline model" in text
    _, calls = offline_reply(_request(_user("status of order 1042 " + padding)))
    assert [c.name for c in calls] == ["get_order_status"]


def _after_tool(content: str, name: str = "get_order_status") -> ModelRequest:
    return _request(
        _user("what's the status of order 1042?"),
        ChatMessage(
            role="assistant",
            tool_calls=[ToolCall(id="call_1", name=name, arguments='{"order_id": 1042}')],
        ),
        ChatMessage(role="tool", tool_call_id="call_1", content=content),
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            '[{"order_id": 1042, "status": "shipped", "carrier": "UPS"}]',
            "Here is what get_order_status returned: 1 result: order_id: 1042, "
            "status: shipped, carrier: UPS.",
        ),
        (
            '{"order_id": 1042, "status": "shipped"}',
            "Here is what get_order_status returned: order_id: 1042, status: shipped.",
        ),
        (
            '[{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"n": 5}]',
            "Here is what get_order_status returned: 5 results: n: 1; n: 2; n: 3 and 2 more.",
        ),
        ("[]", "Here is what get_order_status returned: no results."),
        ("Shipped yesterday.", "Here is what get_order_status returned: Shipped yesterday."),
        (
            '{"error": {"type": "timeout", "message": "action timed out after 5s"}}',
            "get_order_status failed: action timed out after 5s.",
        ),
    ],
)
def test_answers_from_tool_result(content: str, expected: str) -> None:
    """After a tool result the model answers with one sentence built from it."""
    text, calls = offline_reply(_after_tool(content))
    assert calls == []
    assert text == expected


def test_answers_from_a_deeply_nested_result() -> None:
    """A result nested deeper than Python's recursion limit is answered as text, not a crash."""
    text, calls = offline_reply(_after_tool("[" * 5000 + "]" * 5000))
    assert calls == []
    assert text.startswith("Here is what get_order_status returned: ")
    assert len(text) < 500


def test_answers_every_parallel_result() -> None:
    """With several results in the last round, each gets its sentence in order."""
    request = _request(
        _user("weather in Paris and Rome"),
        ChatMessage(
            role="assistant",
            tool_calls=[
                ToolCall(id="a", name="get_weather", arguments='{"city": "Paris"}'),
                ToolCall(id="b", name="get_weather", arguments='{"city": "Rome"}'),
            ],
        ),
        ChatMessage(role="tool", tool_call_id="a", content='{"temp": 21}'),
        ChatMessage(role="tool", tool_call_id="b", content='{"temp": 25}'),
    )
    text, _ = offline_reply(request)
    assert text == (
        "Here is what get_weather returned: temp: 21. Here is what get_weather returned: temp: 25."
    )


@pytest.mark.parametrize("tools", [[], [TOOLS[1]]])
def test_no_match_explains_how_to_configure(tools: list[dict[str, Any]]) -> None:
    """With no tools or no matching tool it says what it is and how to get a real model."""
    text, calls = offline_reply(_request(_user("sing me a song"), tools=tools))
    assert calls == []
    assert "offline model" in text
    assert "OPENAI_API_KEY" in text
    assert "kind: provider" in text
    if tools:
        assert "get_order_status" in text


async def test_stream_sends_several_deltas_then_done() -> None:
    """Text is streamed in several deltas and the stream ends with ModelDone and usage."""
    events = [e async for e in OfflineProvider().stream(_request(_user("sing"), tools=[]))]
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 3
    assert isinstance(events[-1], ModelDone)
    done = events[-1]
    assert done.finish_reason == "stop"
    text = "".join(d.text for d in deltas)
    assert done.usage.completion_tokens == len(text.split())
    assert done.usage.prompt_tokens == len(["You", "help", "customers.", "sing"])
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens


async def test_stream_tool_call_finishes_with_tool_calls() -> None:
    """A tool call is one ToolCallRequest followed by ModelDone(finish_reason=tool_calls)."""
    events = [e async for e in OfflineProvider().stream(_request(_user("weather in Oslo")))]
    assert [type(e) for e in events] == [ToolCallRequest, ModelDone]
    assert isinstance(events[0], ToolCallRequest)
    assert events[0].call.name == "get_weather"
    assert isinstance(events[1], ModelDone)
    assert events[1].finish_reason == "tool_calls"
    assert events[1].usage.completion_tokens > 0


def test_email_property_needs_an_address() -> None:
    """A required e-mail property is never filled with plain words: the model asks for it."""
    tools = [t for t in TOOLS if t["function"]["name"] == "search_orders"]
    text, calls = offline_reply(_request(_user("show me my orders"), tools=tools))
    assert calls == []
    assert "search_orders" in text
    assert "email" in text


def test_numbers_go_to_the_property_they_follow() -> None:
    """With several numbers, one right after a word of the property name goes to it."""
    tools = [
        _tool(
            "add_items",
            "Add items to an order.",
            {"order_id": {"type": "integer"}, "quantity": {"type": "integer"}},
            ["order_id", "quantity"],
        )
    ]
    _, calls = offline_reply(_request(_user("add 3 items to order 1042"), tools=tools))
    assert json.loads(calls[0].arguments) == {"order_id": 1042, "quantity": 3}


def test_reads_flat_responses_tool_schemas() -> None:
    """Tools in the flat Responses form are understood as well as Chat Completions ones."""
    order_tool = next(t for t in TOOLS if t["function"]["name"] == "get_order_status")
    flat = [{"type": "function", **order_tool["function"]}]
    _, calls = offline_reply(_request(_user("status of order 7"), tools=flat))
    assert (calls[0].name, calls[0].arguments) == ("get_order_status", '{"order_id": 7}')
