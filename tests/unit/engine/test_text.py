"""Tool calls from a model made safe to log, store and send back (``clean_call``)."""

from __future__ import annotations

import pytest

from gateway.engine._text import clean_call
from gateway.providers.base import ToolCall


@pytest.mark.parametrize(
    "call_id",
    ["call_abc123", "chatcmpl-tool-0123456789abcdef0123456789abcdef", "x" * 128, "a:b/c=d"],
)
def test_a_plain_call_is_kept_as_is(call_id: str) -> None:
    """A call with a printable ASCII id, a name of at most 64 characters and valid text is
    the same object."""
    call = ToolCall(id=call_id, name="n" * 64, arguments='{"a": 1}')
    assert clean_call(call) is call


@pytest.mark.parametrize(
    "call_id", ["", "call\x00x", "call x", "call\u00e9", "call\nx", "x" * 129, "c\ud83d"]
)
def test_an_id_the_stores_could_alter_is_replaced(call_id: str) -> None:
    """An id that is empty, too long, or not printable ASCII becomes a generated one."""
    cleaned = clean_call(ToolCall(id=call_id, name="get_weather", arguments="{}"))
    assert cleaned.id.startswith("call_") and len(cleaned.id) == 29
    assert (cleaned.name, cleaned.arguments) == ("get_weather", "{}")


def test_a_name_longer_than_any_tool_is_clipped_past_every_tool_name() -> None:
    """A name over 64 characters is cut to 64 and an ellipsis: no tool's name, even one
    that is its first 64 characters."""
    cleaned = clean_call(ToolCall(id="c1", name="t" * 64 + "x" * 1_000_000, arguments="{}"))
    assert cleaned.name == "t" * 64 + "\u2026"
    assert cleaned.id == "c1"
