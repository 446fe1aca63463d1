"""Text from outside the engine made encodable: surrogates joined or replaced.

Private to ``gateway.engine``; imports only ``gateway.providers.base`` and
``gateway._unicode`` (whose ``valid_text`` is the repair itself). JSON allows
``\\ud83d`` escapes, and Python's ``json`` (which the openai SDK decodes
streams with) turns a lone one into a lone surrogate in a ``str``. Such a
string cannot be encoded as UTF-8: not into the run's log, the store, SSE or
WebSocket frames. Servers that cut text into UTF-16 units also split an
emoji's surrogate pair across two deltas. So model text, tool calls, tool
output and provider error messages pass through here before they reach the
run's log: pairs are joined (also across deltas, see ``DeltaText``) and lone
surrogates become U+FFFD (``valid_text``; ``clean_call`` for a tool call).
"""

from __future__ import annotations

from gateway._unicode import valid_text
from gateway.providers.base import ToolCall

__all__ = ["DeltaText", "clean_call"]


def clean_call(call: ToolCall) -> ToolCall:
    """``call`` with its id, name and arguments cleaned (the same object if all were clean)."""
    fields = (valid_text(call.id), valid_text(call.name), valid_text(call.arguments))
    if fields == (call.id, call.name, call.arguments):
        return call
    return ToolCall(id=fields[0], name=fields[1], arguments=fields[2])


def _high_surrogate(char: str) -> bool:
    return "\ud800" <= char <= "\udbff"


class DeltaText:
    """Cleans streamed text: a high surrogate that ends a delta waits for the next one."""

    def __init__(self) -> None:
        """Start with nothing held back."""
        self._held = ""

    def feed(self, text: str) -> str:
        """The clean text of this delta (without a trailing high surrogate, held back)."""
        text, self._held = self._held + text, ""
        if text and _high_surrogate(text[-1]):
            text, self._held = text[:-1], text[-1]
        return valid_text(text)

    def flush(self) -> str:
        """What is still held back, cleaned (a lone high surrogate: U+FFFD)."""
        held, self._held = self._held, ""
        return valid_text(held)
