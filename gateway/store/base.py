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
A run with no lease (a gateway that predates leases started it) lapses
likewise once it is ``LEGACY_LEASE_SECONDS`` old.

Writes of a running run: once a run started, everything it writes (its tool
calls and results: ``append_run_message``; its last answer, final record and
log: ``finish_run``; its event batches: ``append_run_events``) takes effect
only while the run is still active and owned by this store. Each checks that
and writes in one transaction, holding the run's row lock (PostgreSQL) so a
cancel, expiry or takeover another replica commits is ordered before or after
the whole write, never inside it; a refused write stores nothing and returns
None / False. So a replica that lost its run (its lease lapsed and another
replica took the thread over, or another replica cancelled it) can add
nothing to the thread after the takeover, and cannot turn the stored
``failed`` / ``cancelled`` record back into its own outcome. ``update_run``
(a cancel from any replica, a recovery) likewise changes only an active run:
a finished run's record is final.

Live event logs: while a run goes, its owner appends its new events in small
batches (``append_run_events``, numbered by the run log's sequence numbers);
``finish_run`` replaces them with the whole log in one commit. A run that ends
without its owner's ``finish_run`` (cancelled from another replica through
``update_run``, or its lease lapsed) has its batches joined into its final log
in the commit that ends it; that log has no ending (no terminal event, no
``done``): readers make it from the run's record. Another replica reads them
with ``load_run_events_after`` and waits for more on ``run_event_notices``
(PostgreSQL LISTEN/NOTIFY; a plain timeout elsewhere), so it can stream a run
executing elsewhere with the owner's sequence numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

import msgspec

from gateway.providers.base import ChatMessage, Usage

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "INTERRUPTED",
    "LEGACY_LEASE_SECONDS",
    "RunEventNotices",
    "RunEventsPage",
    "RunRecord",
    "StoredMessage",
    "ThreadRecord",
    "ThreadStore",
]

# A replica that stops renewing frees its threads this long after its last renewal.
# Renewals come every third of it, so two may fail (a slow database) before a live run
# loses its lease; shorter frees threads sooner after a crash, at more writes per run.
DEFAULT_LEASE_SECONDS = 30.0

# An active run with no lease was started by a gateway that predates leases (schema step 2):
# nothing renews it, so it lapses this long after it started instead. Long enough for such
# a gateway, still running during a rolling upgrade, to finish its runs (a cancel frees a
# thread sooner); short enough that a run it left behind by crashing does not hold its
# thread forever (one older than this is failed at the next run on its thread).
LEGACY_LEASE_SECONDS = 600.0

# The error of a run whose replica stopped during it: a crash seen at start-up (embedded
# store) or a lapsed lease (any store).
INTERRUPTED = {"type": "interrupted", "message": "the gateway stopped during the run"}

# ``incomplete``: the run ended without error but its last answer was cut short (the
# model's token limit, a content filter); ``RunRecord.incomplete_details`` says why.
RunStatus = Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]


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
    """A run as stored. ``error`` (``{type, message}``) is set for a failed or
    cancelled run, ``incomplete_details`` (``{reason}``) for an incomplete one."""

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
    incomplete_details: dict[str, str] | None = None


class RunEventsPage(msgspec.Struct, frozen=True, kw_only=True):
    """A run's stored events after some sequence number.

    Attributes:
        events: encoded events with sequence numbers ``after + 1``, ``after + 2``...
            (contiguous; never one past a gap).
        finished: True when they come from the run's final log (``finish_run`` /
            ``save_run_events``, or its batches kept when it ended elsewhere, then
            without an ending): nothing will follow them.
    """

    events: list[bytes] = []
    finished: bool = False


class RunEventNotices(Protocol):
    """Wake-ups for one run's new events (``ThreadStore.run_event_notices``)."""

    async def wait(self, timeout: float) -> bool:
        """Wait until the run's owner stored more events (True) or ``timeout`` passed.

        A notice that came since the previous ``wait`` returns at once, so a
        reader that reads, then waits, never misses one.
        """
        ...


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

        Unconditional: for messages written outside a run. A running run stores
        its own messages with ``append_run_message``.

        Raises ``gateway.errors.NotFound`` if the thread does not exist.
        """
        ...

    async def append_run_message(
        self, run_id: str, message: ChatMessage, *, message_id: str | None = None
    ) -> StoredMessage | None:
        """Append a running run's ``message`` (a tool call or result) at the end of its thread.

        Only while the run is active and owned by this store, checked in the
        same transaction under the run's row lock: otherwise nothing is stored
        and the result is None (the run was cancelled, taken over, or deleted).
        """
        ...

    async def list_messages(
        self, thread_id: str, limit: int | None = None, *, before: int | None = None
    ) -> list[StoredMessage]:
        """Messages in order; with ``before``, only those whose ``seq`` is lower (the page
        before one already read); with ``limit``, the newest ``limit`` of them (still in
        order)."""
        ...

    async def create_run(self, run: RunRecord) -> None:
        """Insert a run owned by this store, with a fresh lease.

        An active run on the thread whose lease lapsed is first marked failed
        (``INTERRUPTED``), in the same transaction.

        Raises ``gateway.errors.Conflict`` if the thread has an active run with a
        live lease (or, from a gateway that predates leases, younger than
        ``LEGACY_LEASE_SECONDS``).
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

    async def update_run(self, run: RunRecord) -> bool:
        """Store the run's new status, usage, timings and error, if it is still active.

        For writes from outside the run (a cancel from any replica, marking a
        crashed process's runs interrupted): False, and nothing changed, when
        the run had ended meanwhile (its record is final) or does not exist.
        A run so ended keeps its live batches as its final log, in the same
        commit (see the module docstring).
        """
        ...

    async def finish_run(
        self,
        run: RunRecord,
        events: list[bytes],
        messages: Sequence[tuple[ChatMessage, str]] = (),
    ) -> bool:
        """End a run this store executes: append ``messages`` (each with its id) to its
        thread, store the final record and the event log, all in one transaction
        (which drops the run's live batches: the full log supersedes them).

        Only while the run is active and owned by this store (checked under its
        row lock): otherwise nothing at all is stored and the result is False,
        so a run cancelled or taken over elsewhere keeps the record written there.
        """
        ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def save_run_events(self, run_id: str, events: list[bytes]) -> None:
        """Persist a finished run's event log (each item an encoded ``{"event","data"}``),
        dropping its live batches."""
        ...

    async def load_run_events(self, run_id: str) -> list[bytes] | None: ...

    async def append_run_events(self, run_id: str, first_seq: int, events: list[bytes]) -> bool:
        """Append a batch of a running run's events, numbered from ``first_seq``; one commit.

        Only while the run is active and owned by this store: returns False (and
        stores nothing) once it is not, so no batch lands after a cancel or an
        expiry another replica committed. Writing the same ``first_seq`` again
        (a retry whose commit was in doubt) replaces that batch. On PostgreSQL
        the commit notifies the run's followers.
        """
        ...

    async def load_run_events_after(self, run_id: str, after: int) -> RunEventsPage:
        """The run's stored events with a sequence number above ``after``: from its final
        log when it has one (``finished``), else from the batches stored so far."""
        ...

    def run_event_notices(self, run_id: str) -> AbstractAsyncContextManager[RunEventNotices]:
        """Subscribe to wake-ups for ``run_id``'s new events while the context is open.

        PostgreSQL listens (one connection per store, open while anyone subscribes);
        wake-ups come on every batch and on the run's final commit. Stores
        with no notifications (SQLite) only time out; readers poll anyway.
        """
        ...

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
        """Mark failed (``INTERRUPTED``) the thread's active run if its lease lapsed (with
        no lease: once it is ``LEGACY_LEASE_SECONDS`` old).

        Its live batches become its final log in the same commit, as for
        ``update_run``. Returns the runs so ended (none or one), as now stored.
        """
        ...
