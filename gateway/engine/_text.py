"""Text from outside the engine made encodable: surrogates joined or replaced.

Private to ``gateway.engine``; imports only ``gateway.providers.base``,
``gateway.engine.spec`` (``new_id``) and ``gateway._unicode`` (whose
``valid_text`` is the repair itself). JSON allows
``\\ud83d`` escapes, and Python's ``json`` (which the openai SDK decodes
streams with) turns a lone one into a lone surrogate in a ``str``. Such a
string cannot be encoded as UTF-8: not into the run's log, the store, SSE or
WebSocket frames. Servers that cut text into UTF-16 units also split an
emoji's surrogate pair across two deltas. So model text, tool calls, tool
output and provider error messages pass through here before they reach the
run's log: pairs are joined (also across deltas, see ``DeltaText``) and lone
surrogates become U+FFFD (``valid_text``; ``clean_call`` for a tool call, which
also bounds its name and id).
"""

from __future__ import annotations

import re

from gateway._unicode import valid_text
from gateway.engine.spec import new_id
from gateway.providers.base import ToolCall

__all__ = ["MAX_CALL_ID_CHARS", "MAX_TOOL_NAME_CHARS", "DeltaText", "clean_call"]

MAX_TOOL_NAME_CHARS = 64
"""The longest name a tool can have (OpenAI's limit, which manifests keep)."""

MAX_CALL_ID_CHARS = 128
"""The longest tool-call id kept as the model sent it (OpenAI's are about 30 characters)."""

_PLAIN_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_CALL_ID_CHARS}}}")


def clean_call(call: ToolCall) -> ToolCall:
    """``call`` cleaned: encodable text, a bounded name, an id every store keeps as is.

    The same object if nothing needed cleaning.

    - A name over ``MAX_TOOL_NAME_CHARS`` is no tool's: it is clipped to that many
      characters and ``…`` (so it cannot become a real tool's name, and the call is
      an ``unknown_tool`` error); a 1 MB name otherwise went into every log line
      about the call, the store and every later request of the thread.
    - An id that is not 1 to ``MAX_CALL_ID_CHARS`` characters of printable ASCII
      (no space) is replaced by a generated one (``call_...``), used for the call and
      its result alike: the stores replace NUL in a result's ``tool_call_id`` but not
      in the ids inside ``tool_calls``, so such a call lost its result on every later
      run of the thread (``history.repair`` made up an ``interrupted`` one).
    """
    name = valid_text(call.name)
    if len(name) > MAX_TOOL_NAME_CHARS:
        name = name[:MAX_TOOL_NAME_CHARS] + "\u2026"
    call_id = call.id if _PLAIN_ID.fullmatch(call.id) else new_id("call")
    fields = (call_id, name, valid_text(call.arguments))
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
