"""The ``ThreadStore`` protocol: threads, their messages, and runs.

Implementations (``sqlite.py``, ``postgres.py``) register under their URL
scheme; ``open_store(url)`` picks one. Every write is durable when the
awaitable returns (nothing acknowledged to a client is lost on a crash).

Run leases: every store instance has an ``owner`` id (one per process) and
stamps the runs it inserts with it and a lease of ``lease_seconds``, measured
by the database's clock. The engine renews the leases of the runs it executes
(``renew_leases``, one statement for all of them, every third of the lease).
A run whose lease lapsed belongs to a replica that died (or lost the database
for a whole lease): the next ``begin_run`` / ``create_run`` on its thread marks
it ``failed`` (``INTERRUPTED``) in the same transaction that inserts the new
run, so the one-active-run index still decides between racing replicas.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Literal, Protocol

import msgspec

from gateway.providers.base import ChatMessage, Usage

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "INTERRUPTED",
    "RunRecord",
    "StoredMessage",
    "ThreadRecord",
    "ThreadStore",
]

# A replica that stops renewing frees its threads this long after its last renewal.
# Renewals come every third of it, so two may fail (a slow database) before a live run
# loses its lease; shorter frees threads sooner after a crash, at more writes per run.
DEFAULT_LEASE_SECONDS = 30.0

# The error of a run whose replica stopped during it: a crash seen at start-up (embedded
# store) or a lapsed lease (any store).
INTERRUPTED = {"type": "interrupted", "message": "the gateway stopped during the run"}

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
    ``owner`` identifies this instance (host, pid and a random part) on the
    runs it inserts; ``lease_seconds`` is how long their lease lasts unless
    renewed (see the module docstring).
    """

    shared: bool
    owner: str
    lease_seconds: float

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
        """Insert a run owned by this store, with a fresh lease.

        An active run on the thread whose lease lapsed is first marked failed
        (``INTERRUPTED``), in the same transaction.

        Raises ``gateway.errors.Conflict`` if the thread has an active run with a
        live lease (or one from a gateway that predates leases).
        """
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

    async def renew_leases(self, run_ids: Collection[str]) -> set[str]:
        """Extend by ``lease_seconds`` the leases of those runs this store owns; one statement.

        Returns the ids renewed: a run missing from it has finished, or its lease
        lapsed and another replica failed it (``expire_leases``).
        """
        ...

    async def expire_leases(self, thread_id: str) -> list[RunRecord]:
        """Mark failed (``INTERRUPTED``) the thread's active run if its lease lapsed.

        Returns the runs so ended (none or one), as now stored.
        """
        ...
