"""The one nesting limit for JSON from outside, measured on text and on decoded values."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway._nesting import MAX_JSON_DEPTH, too_deep, value_too_deep


def _nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


@pytest.mark.parametrize("depth", [1, 99, 100, 101, 150, 2000])
def test_text_and_value_agree_on_the_limit(depth: int) -> None:
    """Past 100 levels of arrays and objects is too deep, as text (bytes or str) and as a value."""
    value = _nested(depth)
    text = "".join('{"k": ' if level % 2 == 0 else "[" for level in range(depth))
    text = text + "1" + "".join("}" if level % 2 == 0 else "]" for level in reversed(range(depth)))
    expected = depth > MAX_JSON_DEPTH
    assert too_deep(text) is expected
    assert too_deep(text.encode()) is expected
    assert value_too_deep(value) is expected


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "' + "[" * 500 + '"}',
        '{"a": "\\"' + "{" * 500 + '\\\\"}',  # escaped quotes do not end the string
        '["' + "]" * 300 + '", ' + "[" * 50 + "]" * 50 + "]",
    ],
    ids=["brackets-in-a-string", "escaped-quotes", "closing-brackets-in-a-string"],
)
def test_brackets_inside_strings_do_not_count(text: str) -> None:
    """Brackets in string values are text; only structure counts."""
    json.loads(text)  # the cases are valid JSON
    assert not too_deep(text)


def test_an_unclosed_string_is_measured_in_one_pass() -> None:
    """A string left open, full of escaped quotes (1 MiB, the default body limit): each
    ``\\"`` made the string pattern scan to the end again, about an hour of the event loop
    for one request. It now ends the string at the end of the text, in one pass."""
    body = b"[" * 101 + b'"' + b'\\"' * (1 << 19)
    assert too_deep(body)
    assert not too_deep(b"[" * 100 + b'"' + b'\\"' * (1 << 19))
