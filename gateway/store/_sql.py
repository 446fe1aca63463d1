"""The SQL both stores share: schema migrations and statements, per dialect.

Private to ``gateway.store``. The SQLite and PostgreSQL stores keep the same
tables and columns; only column types, parameter markers and the clock
(``{now}``: the database's current UNIX time) differ, so both are generated
here from one text and a backend cannot drift from the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.store._notify import CHANNEL

__all__ = ["POSTGRES", "SQLITE", "Dialect"]

# Each entry migrates the schema from version i to i + 1; never edit one that has shipped.
_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE threads (
            id TEXT PRIMARY KEY,
            assistant TEXT NOT NULL,
            created_at {real} NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{{}}',
            last_seq {int} NOT NULL DEFAULT 0)""",
        """CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
            seq {int} NOT NULL,
            created_at {real} NOT NULL,
            role TEXT NOT NULL,
            content TEXT,
            tool_calls TEXT,
            tool_call_id TEXT,
            name TEXT,
            run_id TEXT,
            UNIQUE (thread_id, seq))""",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            thread_id TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
            assistant TEXT NOT NULL,
            status TEXT NOT NULL,
            manifest_version TEXT NOT NULL,
            created_at {real} NOT NULL,
            completed_at {real},
            usage TEXT,
            timings TEXT,
            error TEXT)""",
        "CREATE INDEX runs_by_thread ON runs (thread_id, created_at)",
        # One active run per thread, enforced by the database for every replica.
        """CREATE UNIQUE INDEX runs_one_active ON runs (thread_id)
            WHERE status IN ('queued', 'in_progress')""",
        """CREATE TABLE run_events (
            run_id TEXT PRIMARY KEY REFERENCES runs(id) ON DELETE CASCADE,
            events {blob} NOT NULL)""",
    ],
    # 2: run leases. ``owner`` is the replica executing the run (``ThreadStore.owner``);
    # ``lease_until`` is when its claim lapses, in the database's clock (UNIX seconds).
    # An active run with a NULL lease was started by a gateway that predates leases (before
    # this step, or by an old replica still running during a rolling upgrade): nothing
    # renews it, so it lapses by age instead (``expire_leases``, ``LEGACY_LEASE_SECONDS``).
    [
        "ALTER TABLE runs ADD COLUMN owner TEXT",
        "ALTER TABLE runs ADD COLUMN lease_until {real}",
    ],
    # 3: live event batches. While a run goes, its owner appends its new events here in
    # small batches (``first_seq``..``last_seq``, the run log's sequence numbers, frames
    # joined as in ``run_events``) so other replicas can follow it live. ``finish_run``
    # stores the whole log in ``run_events`` and deletes the batches in the same commit.
    [
        """CREATE TABLE run_event_batches (
            run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
            first_seq {int} NOT NULL,
            last_seq {int} NOT NULL,
            events {blob} NOT NULL,
            PRIMARY KEY (run_id, first_seq))""",
    ],
]

_RUN_COLUMNS = (
    "id, thread_id, assistant, status, manifest_version, created_at,"
    " completed_at, usage, timings, error"
)
_ACTIVE = "status IN ('queued', 'in_progress')"
_SELECT_MESSAGES = (
    "SELECT id, thread_id, seq, created_at, role, content, tool_calls, tool_call_id,"
    " name, run_id FROM messages WHERE thread_id = ? ORDER BY seq DESC"
)
# The same, older than a sequence number (a page of a long thread, newest first).
_SELECT_MESSAGES_BEFORE = _SELECT_MESSAGES.replace(" ORDER BY", " AND seq < ? ORDER BY")


@dataclass(frozen=True, slots=True)
class Dialect:
    """The migrations and statements of one backend (``?`` or ``%s`` parameters)."""

    migrations: list[list[str]]
    insert_thread: str
    select_thread: str
    delete_thread: str
    lock_thread_runs: str
    next_seq: str
    insert_message: str
    select_messages: str
    select_newest_messages: str
    select_messages_before: str
    select_newest_messages_before: str
    insert_run: str
    update_run: str
    lock_own_run: str
    lock_own_run_to_write: str
    lock_active_run_to_write: str
    select_run: str
    select_active_runs: str
    expire_leases: str
    renew_leases: str
    save_events: str
    load_events: str
    append_batch: str
    load_events_after: str
    delete_batches: str

    def messages_query(
        self, thread_id: str, limit: int | None, before: int | None = None
    ) -> tuple[str, tuple[Any, ...]]:
        """The statement and parameters for a thread's messages, newest first; with
        ``before``, only those whose ``seq`` is lower; with ``limit``, only the newest
        ``limit`` of them (callers reverse the rows)."""
        if before is not None:
            if limit is None:
                return self.select_messages_before, (thread_id, before)
            return self.select_newest_messages_before, (thread_id, before, limit)
        if limit is None:
            return self.select_messages, (thread_id,)
        return self.select_newest_messages, (thread_id, limit)


def _dialect(
    *,
    real: str,
    int_: str,
    blob: str,
    param: str,
    upsert_events: str,
    now: str,
    id_list: str,
    lock_run: str,
    lock_run_to_write: str,
    lock_run_to_delete: str,
    notify_batch: str,
) -> Dialect:
    def p(sql: str) -> str:
        for token, text in (
            ("{cols}", _RUN_COLUMNS),
            ("{active}", _ACTIVE),
            ("{now}", now),
            ("{ids}", id_list),
            ("{lock}", lock_run),
            ("{lock_to_write}", lock_run_to_write),
            ("{lock_to_delete}", lock_run_to_delete),
            ("{notify}", notify_batch),
            ("?", param),
        ):
            sql = sql.replace(token, text)
        return sql

    return Dialect(
        migrations=[
            [s.format(real=real, int=int_, blob=blob) for s in step] for step in _MIGRATIONS
        ],
        insert_thread=p(
            "INSERT INTO threads (id, assistant, created_at, metadata) VALUES (?, ?, ?, ?)"
        ),
        select_thread=p("SELECT id, assistant, created_at, metadata FROM threads WHERE id = ?"),
        delete_thread=p("DELETE FROM threads WHERE id = ?"),
        # (thread_id): its runs' rows, locked before the thread's own row is, as a run's
        # writes lock them (run, then thread): deleting a thread while one of its runs
        # finishes elsewhere waits for that run instead of deadlocking with it.
        lock_thread_runs=p("SELECT id FROM runs WHERE thread_id = ? ORDER BY id{lock_to_delete}"),
        next_seq=p("UPDATE threads SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq"),
        insert_message=p(
            "INSERT INTO messages (id, thread_id, seq, created_at, role, content, tool_calls,"
            " tool_call_id, name, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        select_messages=p(_SELECT_MESSAGES),
        select_newest_messages=p(_SELECT_MESSAGES + " LIMIT ?"),
        select_messages_before=p(_SELECT_MESSAGES_BEFORE),
        select_newest_messages_before=p(_SELECT_MESSAGES_BEFORE + " LIMIT ?"),
        # The last two values: the owner and the lease duration in seconds.
        insert_run=p(
            "INSERT INTO runs ({cols}, owner, lease_until)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {now} + ?)"
        ),
        update_run=p(
            "UPDATE runs SET status = ?, manifest_version = ?, completed_at = ?, usage = ?,"
            " timings = ?, error = ? WHERE id = ?"
        ),
        # The guards of a run's writes after it started: each selects the run only if it
        # may still be written, and locks its row until the writer's commit (PostgreSQL),
        # so no cancel, expiry or takeover another replica commits can fall between the
        # check and the write (theirs wait for the lock, or ours sees their change).
        # (run_id, owner): the thread of the run, if still active and this owner's; a
        # shared lock, as for an event batch (a run's tool results may land together).
        lock_own_run=p("SELECT thread_id FROM runs WHERE id = ? AND owner = ? AND {active}{lock}"),
        # (run_id, owner): the same, locked to update the run's record.
        lock_own_run_to_write=p(
            "SELECT thread_id FROM runs WHERE id = ? AND owner = ? AND {active}{lock_to_write}"
        ),
        # (run_id): the run, if still active, whoever runs it (a cancel, a recovery).
        lock_active_run_to_write=p(
            "SELECT thread_id FROM runs WHERE id = ? AND {active}{lock_to_write}"
        ),
        select_run=p(
            "SELECT id, thread_id, assistant, status, manifest_version, created_at,"
            " completed_at, usage, timings, error FROM runs WHERE id = ?"
        ),
        select_active_runs=p("SELECT {cols} FROM runs WHERE {active}"),
        # (completed_at, error_json, thread_id, legacy_seconds): the thread's active run whose
        # lease lapsed, or, with no lease (a gateway that predates leases started it, and
        # nothing renews it), that is older than ``legacy_seconds`` by its ``created_at``
        # (that gateway's clock, the only time such a row holds).
        expire_leases=p(
            "UPDATE runs SET status = 'failed', completed_at = ?, error = ?, lease_until = NULL"
            " WHERE thread_id = ? AND {active} AND (lease_until < {now}"
            " OR (lease_until IS NULL AND created_at < {now} - ?)) RETURNING {cols}"
        ),
        # (seconds, owner, ids_json): extends the leases of the owner's runs still active.
        renew_leases=p(
            "UPDATE runs SET lease_until = {now} + ?"
            " WHERE owner = ? AND {active} AND id IN ({ids}) RETURNING id"
        ),
        save_events=p(upsert_events),
        load_events=p("SELECT events FROM run_events WHERE run_id = ?"),
        # (run_id, first_seq, last_seq, events, run_id, owner): a batch, only while the run
        # is active and ours. The run's row is locked (PostgreSQL: FOR SHARE) so a batch
        # never lands after a status change another replica committed (cancel, expiry);
        # a retried batch (its commit was in doubt) overwrites itself. PostgreSQL notifies
        # the run's followers from the RETURNING list: only when the batch is stored, and
        # in the same round trip (a separate ``SELECT pg_notify`` was one more per batch).
        append_batch=p(
            "INSERT INTO run_event_batches (run_id, first_seq, last_seq, events)"
            " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM runs"
            " WHERE id = ? AND owner = ? AND {active}{lock})"
            " ON CONFLICT (run_id, first_seq) DO UPDATE"
            " SET last_seq = excluded.last_seq, events = excluded.events"
            " RETURNING run_id{notify}"
        ),
        # (run_id, run_id, after): the finished log (first_seq 0), else the batches past
        # ``after``, in order; one round trip.
        load_events_after=p(
            "SELECT 0, events FROM run_events WHERE run_id = ?"
            " UNION ALL SELECT first_seq, events FROM run_event_batches"
            " WHERE run_id = ? AND last_seq > ? ORDER BY 1"
        ),
        delete_batches=p("DELETE FROM run_event_batches WHERE run_id = ?"),
    )


SQLITE = _dialect(
    real="REAL",
    int_="INTEGER",
    blob="BLOB",
    param="?",
    upsert_events="INSERT OR REPLACE INTO run_events (run_id, events) VALUES (?, ?)",
    # julianday() works on every SQLite version (unixepoch('subsec') needs 3.42).
    now="((julianday('now') - 2440587.5) * 86400.0)",
    id_list="SELECT value FROM json_each(?)",
    lock_run="",  # one writer at a time: the statement is already serialized
    lock_run_to_write="",  # likewise: BEGIN IMMEDIATE holds the write lock to the commit
    lock_run_to_delete="",
    notify_batch="",  # one process: its own runs are followed in memory
)
POSTGRES = _dialect(
    real="DOUBLE PRECISION",
    int_="BIGINT",
    blob="BYTEA",
    param="%s",
    upsert_events="INSERT INTO run_events (run_id, events) VALUES (?, ?)"
    " ON CONFLICT (run_id) DO UPDATE SET events = EXCLUDED.events",
    # The server's clock, not the replica's: replicas' clocks may disagree, the database's is one.
    now="CAST(extract(epoch FROM clock_timestamp()) AS DOUBLE PRECISION)",
    id_list="SELECT jsonb_array_elements_text(CAST(? AS jsonb))",
    lock_run=" FOR SHARE",
    # What the UPDATE of the record takes anyway, taken before the check; still allows
    # foreign-key checks (batches, the final log) on the row.
    lock_run_to_write=" FOR NO KEY UPDATE",
    lock_run_to_delete=" FOR UPDATE",
    # Evaluated for the stored row only, inside the transaction: delivered at its commit.
    notify_batch=f", pg_notify('{CHANNEL}', run_id)",
)
