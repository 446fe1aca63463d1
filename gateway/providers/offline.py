"""The offline model: a deterministic stand-in for a real model, with no network.

It is the default provider when no ``OPENAI_API_KEY`` is configured, so the
demo and the tests run anywhere and always behave the same way. It imports
only ``gateway.providers``. The algorithm below is a **contract** (users write
demos and tests against it); change it here, in the README and in
``tests/unit/providers/test_offline.py`` together.

One call looks at the request and does exactly one of three things:

1. **Answer from tool results.** When the last message has role ``tool``, it
   answers with one sentence per result of the latest tool round:
   ``"<tool> failed: <message>."`` when the result is an error (a JSON object
   with an ``error`` key, as the sandbox reports failures), otherwise
   ``"Here is what <tool> returned: <summary>."`` The summary of JSON is
   ``key: value`` pairs (at most 6 keys per object); for a list of objects,
   ``"<n> results: "`` and the first 3 rows, then ``"and <k> more"``; a list of
   scalars is joined with commas; plain text is quoted as is. Summaries are cut
   at 400 characters.
2. **Call a tool.** Otherwise it takes the newest user message (its first
   ``MAX_MESSAGE_CHARS``, 4,000 characters: the rest is ignored) and the
   request's tools. Words are lowercased, split on non-letters (identifiers
   are split on ``_``, ``-`` and camelCase), stopwords, numbers and one-letter
   words are dropped, and plurals are stemmed (``cities`` -> ``city``,
   ``orders`` -> ``order``; ``status``, ``address`` stay). An e-mail address
   in the message also counts as the word ``email``, a link as ``url``. Each
   tool scores the number of distinct message words found in its name and
   description; tools scoring at least 1 are ranked by score, then by matches
   in their *name*, then by their order. The first ranked tool whose required
   arguments can all be filled is called (else the first one, see below).
   When no tool scores, the message has content words and the assistant has
   ``file_search``, that is called. Arguments are filled from the message
   using the tool's JSON Schema:

   - every ``required`` property is filled; optional ones only when they have
     an ``enum`` and one of its values appears as a word in the message;
   - ``enum``: the value mentioned first in the message, else the schema
     default, else the first value;
   - ``integer`` / ``number``: a number from the message, preferring one right
     after a word of the property name ("order 1042" fills ``order_id``),
     else the first unused one;
   - ``boolean``: true when a word of the property name appears in the message;
   - ``string``: the first that exists of: a code block, or an arithmetic
     expression (found within the first 200 characters of a run of digits,
     operators and spaces) wrapped in ``print(...)``, for properties named ``code``,
     ``source``, ``script``, ``program``; an arithmetic expression as is for
     ``formula``, ``expression``, ``expr``, ``math``, ``calculation``; quoted
     text (``"..."``, ``'...'``, backticks); an e-mail address for properties
     whose name has the word ``email`` (or with ``format: email``) and for
     ``query``-like properties (``query``, ``q``, ``question``, ``text``,
     ``prompt``, ``search``, ``input``, ``message``); a number or an id-like
     token (``A-1042``) for properties whose name ends in the word ``id``,
     ``number``, ``num`` or ``no``. E-mail and id properties take nothing
     else: without such a value they cannot be filled. Other strings go on
     with: the words after ``in``, ``for`` or ``about`` up to the end of the
     clause (stopwords trimmed at both ends); for ``query``-like properties,
     the message's content words except request verbs (``find``, ``look``,
     ``check``, ``list``, ``search``...); the content words that are in
     neither the tool's name nor its description, request verbs excluded; all
     content words; the message. A value fills one property only, while
     unused ones remain;
   - ``array``: a one-element list of the item type's value.

   When a required value (a number, an e-mail, an id) cannot be found for
   any ranked tool, it calls none: it asks for the missing value of the best
   tool instead (``"To use <tool> I need <prop> (<type>)..."``).
3. **Explain itself.** With no tools or no matching tool, it says that it is
   the gateway's offline model, which tools it has, and how to configure a real
   model (``OPENAI_API_KEY``, or a ``kind: provider`` manifest named in the
   assistant's ``provider:``).

Text is streamed in deltas of 3 words. Usage counts words: prompt tokens are
the words of the instructions and every message, completion tokens the words
of the answer (or of the call's name and arguments). Tool call ids are
``call_`` plus a hash of the conversation, so a replayed conversation gives
the same ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from gateway.providers._words import (
    Candidates,
    candidates,
    content_words,
    entity_words,
    identifier_words,
    stem,
    words,
)
from gateway.providers.base import (
    ChatMessage,
    ModelDone,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)

__all__ = ["MAX_MESSAGE_CHARS", "OfflineProvider", "offline_reply"]

MAX_MESSAGE_CHARS = 4000
"""How much of the newest user message the offline model reads."""
_WORDS_PER_DELTA = 3
_MAX_SUMMARY = 400
_ID_WORDS = frozenset({"id", "number", "num", "no"})
_CODE_NAMES = frozenset({"code", "source", "script", "program"})
_FORMULA_NAMES = frozenset({"formula", "expression", "expr", "math", "calculation"})
_QUERY_NAMES = frozenset({"query", "q", "question", "text", "prompt", "search", "input", "message"})
_CHUNK = re.compile(r"\S+\s*")
# Verbs that say what to do, not what with: never used as a string argument.
_REQUEST_VERB_TEXT = "find look lookup check list fetch retrieve use compute calculate run search"
_REQUEST_VERBS = frozenset(_REQUEST_VERB_TEXT.split())


class OfflineProvider:
    """The deterministic offline model (see the module docstring for the contract)."""

    def __init__(self, name: str = "offline") -> None:
        """Create the provider.

        Args:
            name: the provider name reported to the engine (``offline``).
        """
        self.name = name

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Stream the reply: text deltas or one tool call, then ``ModelDone``."""
        text, calls = offline_reply(request)
        prompt = _count_words(request.instructions) + sum(
            _count_words(m.content or "") + sum(_count_words(c.arguments) for c in m.tool_calls)
            for m in request.messages
        )
        completion = 0
        if text:
            chunks = _CHUNK.findall(text) or [text]
            for i in range(0, len(chunks), _WORDS_PER_DELTA):
                yield TextDelta("".join(chunks[i : i + _WORDS_PER_DELTA]))
                # Give the loop a turn so a cancelled run stops between deltas.
                await asyncio.sleep(0)
            completion += len(chunks)
        for call in calls:
            completion += 1 + _count_words(call.arguments)
            yield ToolCallRequest(call)
        usage = Usage(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
        )
        yield ModelDone(usage, "tool_calls" if calls else "stop")

    async def aclose(self) -> None:
        """Nothing to release."""


def offline_reply(request: ModelRequest) -> tuple[str, list[ToolCall]]:
    """Decide the offline model's reply: ``(text, tool_calls)``, exactly one non-empty.

    Pure and deterministic; ``OfflineProvider.stream`` streams its result.
    """
    messages = request.messages
    if messages and messages[-1].role == "tool":
        return _answer_from_results(messages), []
    user = next((m.content or "" for m in reversed(messages) if m.role == "user"), "")
    # Read synchronously, on the event loop, by patterns that are not all linear: a
    # longer message would stall the whole server (see the module doc).
    user = user[:MAX_MESSAGE_CHARS]
    tools = [_Tool.from_schema(t) for t in request.tools]
    tools = [t for t in tools if t.name]
    ranked = _rank_tools(user, tools)
    if not ranked:
        return _explain(tools), []
    attempts = [(tool, *_fill_arguments(tool, user)) for tool in ranked]
    tool, arguments, missing = next((a for a in attempts if not a[2]), attempts[0])
    if missing:
        return (
            f"To use {tool.name} I need {missing}. Please include it in your message, "
            f'for example as a number or in quotes ("...").'
        ), []
    args_json = json.dumps(arguments, ensure_ascii=False)
    digest = hashlib.sha256(
        f"{len(messages)}\n{user}\n{tool.name}\n{args_json}".encode()
    ).hexdigest()
    return "", [ToolCall(id=f"call_{digest[:24]}", name=tool.name, arguments=args_json)]


class _Tool:
    """A tool schema reduced to what the offline model reads."""

    __slots__ = ("description", "name", "name_words", "parameters", "vocabulary")

    def __init__(self, name: str, description: str, parameters: dict[str, Any]) -> None:
        self.name = name
        self.description = description
        self.parameters = parameters
        self.name_words = frozenset(words(name))
        self.vocabulary = self.name_words | frozenset(words(description))

    @classmethod
    def from_schema(cls, schema: dict[str, Any]) -> _Tool:
        """Read a Chat Completions (``function: {...}``) or flat Responses tool schema."""
        function = schema.get("function", schema)
        if not isinstance(function, dict):
            return cls("", "", {})
        params = function.get("parameters")
        return cls(
            str(function.get("name") or ""),
            str(function.get("description") or ""),
            params if isinstance(params, dict) else {},
        )


def _rank_tools(message: str, tools: Sequence[_Tool]) -> list[_Tool]:
    """Tools sharing at least one word with ``message``, best first (see module doc)."""
    message_words = set(words(message)) | entity_words(message)
    scored = []
    for position, tool in enumerate(tools):
        shared = message_words & tool.vocabulary
        if shared:
            scored.append(((-len(shared), -len(shared & tool.name_words), position), tool))
    ranked = [tool for _, tool in sorted(scored, key=lambda pair: pair[0])]
    if not ranked and words(message):
        ranked = [t for t in tools if t.name == "file_search"]
    return ranked


def _fill_arguments(tool: _Tool, message: str) -> tuple[dict[str, Any], str]:
    """Arguments for ``tool`` from ``message``; the second item names a missing value."""
    props = tool.parameters.get("properties")
    if not isinstance(props, dict):
        return {}, ""
    required = [r for r in tool.parameters.get("required", []) if isinstance(r, str)]
    found = candidates(message)
    filler = _Filler(tool, message, found)
    arguments: dict[str, Any] = {}
    for prop, schema in props.items():
        if not isinstance(schema, dict):
            continue
        if prop not in required:
            enum_value = filler.enum_match(schema)
            if enum_value is not None:
                arguments[prop] = enum_value
            continue
        value = filler.value(prop, schema)
        if value is None:
            return {}, f"{prop} ({schema.get('type', 'value')})"
        arguments[prop] = value
    return arguments, ""


class _Filler:
    """Hands out candidates to properties, each candidate used at most once when possible."""

    def __init__(self, tool: _Tool, message: str, found: Candidates) -> None:
        self.tool = tool
        self.message = message
        self.found = found
        self.used: set[str] = set()

    def enum_match(self, schema: dict[str, Any]) -> Any:
        """The enum value that appears as a word of the message, if any."""
        enum = schema.get("enum")
        if not isinstance(enum, list):
            return None
        positions: dict[str, int] = {}
        for number, word in enumerate(self.found.raw_words):
            positions.setdefault(word, number)
            positions.setdefault(stem(word), number)
        found = [
            (positions[key], order, value)
            for order, value in enumerate(enum)
            for key in {str(value).lower(), stem(str(value).lower())}
            if key in positions
        ]
        # The value mentioned first wins ("10 km to miles" is in km).
        return min(found, key=lambda item: item[:2])[2] if found else None

    def value(self, prop: str, schema: dict[str, Any]) -> Any:
        """A value for one required property, or None when none can be found."""
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            matched = self.enum_match(schema)
            if matched is not None:
                return matched
            return schema.get("default", schema["enum"][0])
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "string")
        if kind in ("integer", "number"):
            return self.number(prop, integer=kind == "integer")
        if kind == "boolean":
            return bool(set(words(prop)) & set(words(self.message)))
        if kind == "array":
            items = schema.get("items")
            item = self.value(prop, items if isinstance(items, dict) else {"type": "string"})
            return None if item is None else [item]
        if kind == "object":
            return {}
        return self.string(prop, schema)

    def _take(self, options: Sequence[str]) -> str | None:
        for option in options:
            if option not in self.used:
                self.used.add(option)
                return option
        return None

    def number(self, prop: str, *, integer: bool) -> int | float | None:
        """A number, preferring one right after a word of the property name."""
        prop_words = {stem(w) for w in words(prop)}
        numbers = [
            (text, before) for text, before in self.found.numbers if not integer or "." not in text
        ]
        ordered = [t for t, before in numbers if stem(before) in prop_words] + [
            t for t, _ in numbers
        ]
        text = self._take(ordered)
        if text is None:
            return None
        return int(text) if integer else float(text)

    def string(self, prop: str, schema: dict[str, Any]) -> str | None:
        """The best string candidate for ``prop`` (see the module docstring for the order).

        None when ``prop`` names a typed value (an e-mail, an id) the message lacks.
        """
        low = prop.lower()
        parts = identifier_words(prop)
        wants_email = "email" in parts or schema.get("format") == "email"
        wants_id = bool(parts) and parts[-1] in _ID_WORDS
        options: list[str] = []
        if low in _CODE_NAMES:
            options += self.found.code
            options += [f"print({e})" for e in self.found.expressions]
        if low in _FORMULA_NAMES:
            options += self.found.expressions
        options += self.found.quoted
        if wants_email or low in _QUERY_NAMES:
            options += self.found.emails
        if wants_id:
            options += [n for n, _ in self.found.numbers] + self.found.ids
        if not (wants_email or wants_id):
            options += self.found.phrases
            content = content_words(self.message)
            if low in _QUERY_NAMES:
                options.append(" ".join(w for w in content if w.lower() not in _REQUEST_VERBS))
            leftover = [
                w
                for w in content
                if stem(w.lower()) not in self.tool.vocabulary and w.lower() not in _REQUEST_VERBS
            ]
            options += [" ".join(leftover), " ".join(content), self.message.strip()]
        options = [o for o in options if o.strip()]
        taken = self._take(options)
        if taken is not None:
            return taken
        return options[0] if options else None


def _answer_from_results(messages: Sequence[ChatMessage]) -> str:
    """One sentence per tool result of the latest tool round."""
    results: list[ChatMessage] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    results.reverse()
    names: dict[str, str] = {}
    for message in messages:
        for call in message.tool_calls:
            names[call.id] = call.name
    sentences = []
    for result in results:
        name = result.name or names.get(result.tool_call_id or "", "the tool")
        sentences.append(_sentence(name, result.content or ""))
    return " ".join(sentences)


def _sentence(name: str, content: str) -> str:
    # Tool output can be anything (an HTTP action returns a remote body as is): JSON
    # nested deeper than Python's recursion limit is read as plain text.
    try:
        value: Any = json.loads(content)
    except (ValueError, RecursionError):
        value = content
    error = _error_message(value)
    if error is not None:
        return f"{name} failed: {_cut(error.rstrip('.'))}."
    summary = _summarize(value)
    return f"Here is what {name} returned: {_cut(summary.rstrip('.'))}."


def _error_message(value: Any) -> str | None:
    if not isinstance(value, dict) or "error" not in value:
        return None
    error = value["error"]
    if isinstance(error, dict):
        message = error.get("message") or error.get("type") or "unknown error"
        return str(message)
    return str(error)


def _summarize(value: Any) -> str:
    if isinstance(value, dict):
        for key in ("rows", "results", "items", "data"):
            inner = value.get(key)
            if isinstance(inner, list):
                return _summarize(inner)
        return _pairs(value) or "an empty object"
    if isinstance(value, list):
        if not value:
            return "no results"
        if all(isinstance(row, dict) for row in value):
            shown = "; ".join(_pairs(row) for row in value[:3])
            more = f" and {len(value) - 3} more" if len(value) > 3 else ""
            noun = "result" if len(value) == 1 else "results"
            return f"{len(value)} {noun}: {shown}{more}"
        return ", ".join(_scalar(item) for item in value[:10])
    if isinstance(value, str):
        return value.strip() or "nothing"
    return _scalar(value)


def _pairs(row: dict[str, Any]) -> str:
    return ", ".join(f"{key}: {_scalar(val)}" for key, val in list(row.items())[:6])


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return _cut(json.dumps(value, ensure_ascii=False), 60)
    return str(value)


def _cut(text: str, limit: int = _MAX_SUMMARY) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _explain(tools: Sequence[_Tool]) -> str:
    if tools:
        listed = ", ".join(t.name for t in tools)
        situation = (
            f"Nothing in your message matched one of my tools ({listed}); "
            "try naming what you want, for example with words from a tool's description."
        )
    else:
        situation = "This assistant has no tools, so I cannot do anything useful with that."
    return (
        "I am the gateway's offline model: a deterministic stand-in that picks a tool by "
        f"matching the words of your message against tool names and descriptions. {situation} "
        "To use a real model, set OPENAI_API_KEY, or add a `kind: provider` manifest "
        "(any OpenAI-compatible server) and name it in the assistant's `provider:`."
    )


def _count_words(text: str) -> int:
    return len(text.split())
