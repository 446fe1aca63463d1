"""The ``ThreadStore`` protocol: threads, their messages, and runs.

Implementations (``sqlite.py``, ``postgres.py``) register under their URL
scheme; ``open_store(url)`` picks one. Every write is durable when the
awaitable returns (nothing acknowledged to a client is lost on a crash).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import msgspec

from gateway.providers.base import ChatMessage, Usage

__all__ = ["RunRecord", "StoredMessage", "ThreadRecord", "ThreadStore"]

RunStatus = Literal["queued", "in_progress", "completed", "failed", "cancelled"]


class ThreadRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    assistant: str
    created_at: float
    metadata: dict[str, Any] = {}


class StoredMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A message with its identity and position in the thread."""

    id: str
    thread_id: str
    seq: int
    created_at: float
    message: ChatMessage
    run_id: str | None = None


class RunRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    thread_id: str
    assistant: str
    status: RunStatus
    manifest_version: str
    created_at: float
    completed_at: float | None = None
    usage: Usage = Usage()
    timings: dict[str, float | None] = {}
    error: dict[str, str] | None = None


class ThreadStore(Protocol):
    """Persistent threads, messages and runs.

    ``shared`` is True when several gateway processes may use the same store
    (PostgreSQL); an embedded store (SQLite) has one owner, so on start the
    engine may mark runs left ``in_progress`` by a crash as failed.
    """

    shared: bool

    async def open(self) -> None:
        """Connect and create or migrate the schema."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the store answers (for ``/ready``)."""
        ...

    async def create_thread(
        self, assistant: str, metadata: dict[str, Any] | None = None
    ) -> ThreadRecord: ...

    async def get_thread(self, thread_id: str) -> ThreadRecord | None: ...

    async def delete_thread(self, thread_id: str) -> bool:
        """Delete a thread with its messages and runs; False if it did not exist."""
        ...

    async def append_message(
        self,
        thread_id: str,
        message: ChatMessage,
        run_id: str | None = None,
        *,
        message_id: str | None = None,
    ) -> StoredMessage:
        """Append ``message`` at the end of the thread; ``message_id`` defaults to a new id.

        Raises ``gateway.errors.NotFound`` if the thread does not exist.
        """
        ...

    async def list_messages(self, thread_id: str, limit: int | None = None) -> list[StoredMessage]:
        """Messages in order; with ``limit``, the newest ``limit`` of them (still in order)."""
        ...

    async def create_run(self, run: RunRecord) -> None:
        """Insert a run. Raises ``gateway.errors.Conflict`` if the thread has an active run."""
        ...

    async def begin_run(
        self, run: RunRecord, message: ChatMessage, *, thread: ThreadRecord | None = None
    ) -> StoredMessage:
        """``create_run`` and append the run's user ``message`` in one transaction.

        With ``thread`` (a new thread, ``run.thread_id == thread.id``), the thread
        is inserted in the same transaction first, so a first turn commits once.
        Either everything is stored or nothing (Conflict / NotFound as ``create_run``).
        """
        ...

    async def update_run(self, run: RunRecord) -> None: ...

    async def finish_run(
        self,
        run: RunRecord,
        events: list[bytes],
        messages: Sequence[tuple[ChatMessage, str]] = (),
    ) -> None:
        """Append ``messages`` (each with its id) to the run's thread, then ``update_run``
        and ``save_run_events``, all in one transaction."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def save_run_events(self, run_id: str, events: list[bytes]) -> None:
        """Persist a finished run's event log (each item an encoded ``{"event","data"}``)."""
        ...

    async def load_run_events(self, run_id: str) -> list[bytes] | None: ...

    async def list_active_runs(self) -> list[RunRecord]:
        """Runs still ``queued`` or ``in_progress`` (orphans after a crash, for recovery)."""
        ...
