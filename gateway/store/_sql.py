"""The SQL both stores share: schema migrations and statements, per dialect.

Private to ``gateway.store``. The SQLite and PostgreSQL stores keep the same
tables and columns; only column types and parameter markers differ, so both
are generated here from one text and a backend cannot drift from the other.
"""

from __future__ import annotations

from dataclasses import dataclass

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
]


@dataclass(frozen=True, slots=True)
class Dialect:
    """The migrations and statements of one backend (``?`` or ``%s`` parameters)."""

    migrations: list[list[str]]
    insert_thread: str
    select_thread: str
    delete_thread: str
    next_seq: str
    insert_message: str
    select_messages: str
    insert_run: str
    update_run: str
    select_run: str
    select_active_runs: str
    save_events: str
    load_events: str


def _dialect(*, real: str, int_: str, blob: str, param: str, upsert_events: str) -> Dialect:
    def p(sql: str) -> str:
        return sql.replace("?", param)

    return Dialect(
        migrations=[
            [s.format(real=real, int=int_, blob=blob) for s in step] for step in _MIGRATIONS
        ],
        insert_thread=p(
            "INSERT INTO threads (id, assistant, created_at, metadata) VALUES (?, ?, ?, ?)"
        ),
        select_thread=p("SELECT id, assistant, created_at, metadata FROM threads WHERE id = ?"),
        delete_thread=p("DELETE FROM threads WHERE id = ?"),
        next_seq=p("UPDATE threads SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq"),
        insert_message=p(
            "INSERT INTO messages (id, thread_id, seq, created_at, role, content, tool_calls,"
            " tool_call_id, name, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        select_messages=p(
            "SELECT id, thread_id, seq, created_at, role, content, tool_calls, tool_call_id,"
            " name, run_id FROM messages WHERE thread_id = ? ORDER BY seq DESC"
        ),
        insert_run=p(
            "INSERT INTO runs (id, thread_id, assistant, status, manifest_version, created_at,"
            " completed_at, usage, timings, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        update_run=p(
            "UPDATE runs SET status = ?, manifest_version = ?, completed_at = ?, usage = ?,"
            " timings = ?, error = ? WHERE id = ?"
        ),
        select_run=p(
            "SELECT id, thread_id, assistant, status, manifest_version, created_at,"
            " completed_at, usage, timings, error FROM runs WHERE id = ?"
        ),
        select_active_runs=(
            "SELECT id, thread_id, assistant, status, manifest_version, created_at,"
            " completed_at, usage, timings, error FROM runs"
            " WHERE status IN ('queued', 'in_progress')"
        ),
        save_events=p(upsert_events),
        load_events=p("SELECT events FROM run_events WHERE run_id = ?"),
    )


SQLITE = _dialect(
    real="REAL",
    int_="INTEGER",
    blob="BLOB",
    param="?",
    upsert_events="INSERT OR REPLACE INTO run_events (run_id, events) VALUES (?, ?)",
)
POSTGRES = _dialect(
    real="DOUBLE PRECISION",
    int_="BIGINT",
    blob="BYTEA",
    param="%s",
    upsert_events="INSERT INTO run_events (run_id, events) VALUES (?, ?)"
    " ON CONFLICT (run_id) DO UPDATE SET events = EXCLUDED.events",
)
