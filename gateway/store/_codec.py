"""Row <-> record conversions shared by the SQL stores (private to ``gateway.store``).

Both backends keep the same columns; JSON-valued columns (metadata, tool calls,
usage, timings, error) are stored as JSON text so the schema stays portable.
A message's plain text columns (content, tool call id, name) go through
``storable``: the two characters a text column cannot hold become U+FFFD,
the same on both backends.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from gateway.providers.base import ChatMessage, ToolCall, Usage
from gateway.store.base import RunEventsPage, RunRecord, StoredMessage, ThreadRecord

__all__ = [
    "ACTIVE_STATUSES",
    "dumps",
    "join_events",
    "message_from_row",
    "message_row",
    "new_id",
    "new_owner",
    "new_thread",
    "now",
    "page_from_rows",
    "run_from_row",
    "run_row",
    "split_events",
    "storable",
    "stored",
    "thread_from_row",
    "thread_row",
]

ACTIVE_STATUSES = ("queued", "in_progress")

_enc = msgspec.json.Encoder()
_tool_calls_dec = msgspec.json.Decoder(list[ToolCall])
_usage_dec = msgspec.json.Decoder(Usage)
_timings_dec = msgspec.json.Decoder(dict[str, float | None])
_error_dec = msgspec.json.Decoder(dict[str, str] | None)
_meta_dec = msgspec.json.Decoder(dict[str, Any])

# NUL, which PostgreSQL refuses in text ("text fields cannot contain NUL"), and lone
# surrogates, which are not UTF-8 (neither database takes them). Any surrogate in a str
# is a lone one: Python keeps astral characters as single code points. JSON columns
# need nothing for NUL: JSON text escapes it.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def new_id(prefix: str) -> str:
    """A fresh random id such as ``thread_3f2a...`` (prefix, underscore, 24 hex digits)."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def new_owner() -> str:
    """An id for one store instance (one replica), ``host:pid:random``, kept in ``runs.owner``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def now() -> float:
    """Current UNIX time."""
    return time.time()


def dumps(value: Any) -> str:
    """JSON text of ``value`` (msgspec Structs included)."""
    return _enc.encode(value).decode()


def thread_row(thread: ThreadRecord) -> tuple[str, str, float, str]:
    """The thread columns ``(id, assistant, created_at, metadata_json)``."""
    return thread.id, thread.assistant, thread.created_at, dumps(thread.metadata)


def new_thread(assistant: str, metadata: dict[str, Any] | None = None) -> ThreadRecord:
    """A new thread record (not stored yet)."""
    return ThreadRecord(
        id=new_id("thread"), assistant=assistant, created_at=now(), metadata=metadata or {}
    )


def stored(
    message: ChatMessage, *, thread_id: str, run_id: str | None, mid: str, seq: int, created: float
) -> StoredMessage:
    """The ``StoredMessage`` for a message just appended at ``seq``."""
    return StoredMessage(
        id=mid, thread_id=thread_id, seq=seq, created_at=created, message=message, run_id=run_id
    )


def thread_from_row(row: Sequence[Any]) -> ThreadRecord:
    """``(id, assistant, created_at, metadata_json)`` -> ``ThreadRecord``."""
    return ThreadRecord(
        id=row[0], assistant=row[1], created_at=float(row[2]), metadata=_meta_dec.decode(row[3])
    )


def storable(text: str | None) -> str | None:
    """``text`` with every character no text column can hold (NUL, lone surrogates) as U+FFFD.

    Such text comes from model output, tool results or user messages; refusing it would
    fail the write (a run's answer lost, its thread busy until its lease lapses) for a
    character that carries no meaning, and SQLite alone would keep a NUL: both stores
    store the same text instead. Not ``gateway._unicode.valid_text``: that one keeps NUL
    and joins two surrogates forming a pair, where this replaces each character alone.
    """
    if text is None or _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub("\ufffd", text)


def message_row(message: ChatMessage) -> tuple[str, str | None, str | None, str | None, str | None]:
    """The message columns ``(role, content, tool_calls_json, tool_call_id, name)``."""
    calls = dumps(message.tool_calls) if message.tool_calls else None
    content, call_id, name = (
        storable(v) for v in (message.content, message.tool_call_id, message.name)
    )
    return message.role, content, calls, call_id, name


def message_from_row(row: Sequence[Any]) -> StoredMessage:
    """``(id, thread_id, seq, created_at, role, content, tool_calls, tool_call_id, name,
    run_id)`` -> ``StoredMessage``."""
    calls = _tool_calls_dec.decode(row[6]) if row[6] else []
    message = ChatMessage(
        role=row[4], content=row[5], tool_calls=calls, tool_call_id=row[7], name=row[8]
    )
    return StoredMessage(
        id=row[0],
        thread_id=row[1],
        seq=int(row[2]),
        created_at=float(row[3]),
        message=message,
        run_id=row[9],
    )


def run_row(run: RunRecord) -> tuple[Any, ...]:
    """Values in column order: id, thread_id, assistant, status, manifest_version,
    created_at, completed_at, usage, timings, error."""
    return (
        run.id,
        run.thread_id,
        run.assistant,
        run.status,
        run.manifest_version,
        run.created_at,
        run.completed_at,
        dumps(run.usage),
        dumps(run.timings),
        _outcome(run),
    )


def _outcome(run: RunRecord) -> str | None:
    """The ``error`` column: the error of a failed or cancelled run, or the
    ``incomplete_details`` of an incomplete one (a run has at most one of them;
    kept in one column so the schema needs no migration for it)."""
    if run.status == "incomplete":
        return dumps(run.incomplete_details) if run.incomplete_details is not None else None
    return dumps(run.error) if run.error is not None else None


def run_from_row(row: Sequence[Any]) -> RunRecord:
    """A row in ``run_row`` order -> ``RunRecord``."""
    outcome = _error_dec.decode(row[9]) if row[9] else None
    incomplete = row[3] == "incomplete"
    return RunRecord(
        id=row[0],
        thread_id=row[1],
        assistant=row[2],
        status=row[3],
        manifest_version=row[4],
        created_at=float(row[5]),
        completed_at=float(row[6]) if row[6] is not None else None,
        usage=_usage_dec.decode(row[7]) if row[7] else Usage(),
        timings=_timings_dec.decode(row[8]) if row[8] else {},
        error=None if incomplete else outcome,
        incomplete_details=outcome if incomplete else None,
    )


def join_events(events: list[bytes]) -> bytes:
    """One blob for a run's event log: encoded events, one per line (JSON has no raw newlines)."""
    return b"\n".join(events)


def split_events(blob: bytes) -> list[bytes]:
    """Inverse of ``join_events``."""
    return blob.split(b"\n") if blob else []


def page_from_rows(rows: Sequence[Sequence[Any]], after: int) -> RunEventsPage:
    """The page of events past ``after`` from ``load_events_after`` rows ``(first_seq, blob)``.

    A row numbered 0 is the final log (it wins); otherwise batches are stitched in
    order, each trimmed to what lies past ``after``, stopping at a gap (a batch
    still in doubt) so a reader never skips a sequence number.
    """
    for first, blob in rows:
        if int(first) == 0:
            return RunEventsPage(events=split_events(bytes(blob))[after:], finished=True)
    events: list[bytes] = []
    expected = after + 1
    for first, blob in rows:
        start = int(first)
        if start > expected:
            break
        frames = split_events(bytes(blob))
        events += frames[expected - start :]
        expected = max(expected, start + len(frames))
    return RunEventsPage(events=events)
