"""The SQL both stores share: schema migrations and statements, per dialect.

Private to ``gateway.store``. The SQLite and PostgreSQL stores keep the same
tables and columns; only column types, parameter markers and the clock
(``{now}``: the database's current UNIX time) differ, so both are generated
here from one text and a backend cannot drift from the other.
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
    # 2: run leases. ``owner`` is the replica executing the run (``ThreadStore.owner``);
    # ``lease_until`` is when its claim lapses, in the database's clock (UNIX seconds).
    # An active run with a NULL lease was started by a gateway that predates leases:
    # it never lapses (a cancel frees it), so a rolling upgrade never steals a live run.
    [
        "ALTER TABLE runs ADD COLUMN owner TEXT",
        "ALTER TABLE runs ADD COLUMN lease_until {real}",
    ],
]

_RUN_COLUMNS = (
    "id, thread_id, assistant, status, manifest_version, created_at,"
    " completed_at, usage, timings, error"
)
_ACTIVE = "status IN ('queued', 'in_progress')"


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
    expire_leases: str
    renew_leases: str
    save_events: str
    load_events: str


def _dialect(
    *, real: str, int_: str, blob: str, param: str, upsert_events: str, now: str, id_list: str
) -> Dialect:
    def p(sql: str) -> str:
        for token, text in (
            ("{cols}", _RUN_COLUMNS),
            ("{active}", _ACTIVE),
            ("{now}", now),
            ("{ids}", id_list),
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
        next_seq=p("UPDATE threads SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq"),
        insert_message=p(
            "INSERT INTO messages (id, thread_id, seq, created_at, role, content, tool_calls,"
            " tool_call_id, name, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        select_messages=p(
            "SELECT id, thread_id, seq, created_at, role, content, tool_calls, tool_call_id,"
            " name, run_id FROM messages WHERE thread_id = ? ORDER BY seq DESC"
        ),
        # The last two values: the owner and the lease duration in seconds.
        insert_run=p(
            "INSERT INTO runs ({cols}, owner, lease_until)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {now} + ?)"
        ),
        update_run=p(
            "UPDATE runs SET status = ?, manifest_version = ?, completed_at = ?, usage = ?,"
            " timings = ?, error = ? WHERE id = ?"
        ),
        select_run=p(
            "SELECT id, thread_id, assistant, status, manifest_version, created_at,"
            " completed_at, usage, timings, error FROM runs WHERE id = ?"
        ),
        select_active_runs=p("SELECT {cols} FROM runs WHERE {active}"),
        # (completed_at, error_json, thread_id): the thread's active run whose lease lapsed.
        expire_leases=p(
            "UPDATE runs SET status = 'failed', completed_at = ?, error = ?, lease_until = NULL"
            " WHERE thread_id = ? AND {active} AND lease_until < {now} RETURNING {cols}"
        ),
        # (seconds, owner, ids_json): extends the leases of the owner's runs still active.
        renew_leases=p(
            "UPDATE runs SET lease_until = {now} + ?"
            " WHERE owner = ? AND {active} AND id IN ({ids}) RETURNING id"
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
    # julianday() works on every SQLite version (unixepoch('subsec') needs 3.42).
    now="((julianday('now') - 2440587.5) * 86400.0)",
    id_list="SELECT value FROM json_each(?)",
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
)
