"""The shared thread store: PostgreSQL through psycopg 3 and an async connection pool.

Selected by ``GATEWAY_DATABASE_URL=postgresql://...`` so several replicas
share threads. Migrations run under an advisory lock, so replicas starting
together migrate once; their statements wait at most ``migration_lock_timeout``
for a table's lock (a long transaction holding one would otherwise queue every
query on that table behind the waiting ``ALTER``), and a blocked migration is
retried, then fails the start-up naming the sessions in the way. One active
run per thread is a partial unique index: the database refuses a second one
whichever replica asks. Commits are
synchronous (PostgreSQL's default), so an acknowledged write survives a crash.
A connection-level failure (server down or restarting, connection cut, pool
exhausted past its timeout) is ``NotReady`` (503); a broken rule stays
``Conflict`` / ``NotFound``. Every connection (pooled, listening, migrating)
gets TCP keepalives, ``tcp_user_timeout`` and ``connect_timeout``
(``CONNECTION_DEFAULTS``, shared with ``sql`` actions in ``gateway._libpq``)
unless the URL sets them: a server gone without a word (failover, partition)
is noticed in about 30 s, not after the kernel's 15 minutes of retransmissions.
Imports ``gateway._libpq``, ``gateway.errors``,
``gateway.providers.base``, ``gateway.store`` internals and structlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import re
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import psycopg
import structlog
from psycopg import errors as pg_errors
from psycopg.abc import Buffer
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import StrDumperUnknown
from psycopg_pool import AsyncConnectionPool

from gateway import _libpq as libpq
from gateway._libpq import CONNECTION_DEFAULTS
from gateway.errors import Conflict, InvalidInput, NotFound, NotReady
from gateway.providers.base import ChatMessage
from gateway.store import _codec as c
from gateway.store import _notify, register_store
from gateway.store._sql import POSTGRES
from gateway.store.base import (
    DEFAULT_LEASE_SECONDS,
    INTERRUPTED,
    LEGACY_LEASE_SECONDS,
    RunEventNotices,
    RunEventsPage,
    RunRecord,
    StoredMessage,
    ThreadRecord,
)

__all__ = ["CONNECTION_DEFAULTS", "PostgresStore"]

_SQL = POSTGRES
_logger = structlog.get_logger("gateway.store")
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # fullmatch: `$` passes a final "\n"


class PostgresStore:
    """``ThreadStore`` over PostgreSQL.

    Args:
        url: a libpq URL (``postgresql://user:pass@host:5432/db``).
        schema: optional schema to use (created if missing), e.g. to isolate tests.
        min_size / max_size: pool bounds.
        lease_seconds: lease of the runs this instance inserts (see ``gateway.store.base``).
        idle_in_transaction_timeout: seconds after which the server ends a session of this
            store left idle inside a transaction (its statements take milliseconds, so
            only a replica frozen or cut off mid-transaction gets there), releasing the row
            locks it holds: otherwise other replicas' writes on that thread wait, each
            holding a pooled connection, until the server's TCP keepalives notice (hours).
        migration_lock_timeout: seconds a migration statement waits for a table's lock
            before giving up (``lock_timeout``); meanwhile every query on that table waits
            behind it, so this is short.
        migration_attempts: how many times a migration that gave up is tried (pausing
            ``migration_lock_timeout`` between tries) before ``open`` fails with
            ``NotReady`` naming the sessions holding locks on the store's tables.

    ``open`` waits for an unreachable server three times the URL's ``connect_timeout``
    (``PGCONNECT_TIMEOUT``, else 10 s: 30 s), trying again with a back-off.
    """

    shared = True

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        idle_in_transaction_timeout: float = 10.0,
        migration_lock_timeout: float = 5.0,
        migration_attempts: int = 6,
    ) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidInput(f"invalid schema name {schema!r}")
        self._idle_in_transaction_ms = max(int(idle_in_transaction_timeout * 1000), 1)
        self._migration_lock_timeout = migration_lock_timeout
        self._migration_attempts = max(migration_attempts, 1)
        self._url = _conninfo(url)
        per_try = _connect_timeout(self._url)
        self._connect_timeout = per_try
        self._open_timeout = 3.0 * per_try if per_try > 0 else 30.0
        self._schema = schema
        self._min_size, self._max_size = min_size, max_size
        self._pool: AsyncConnectionPool | None = None
        self._listener: _notify.Listener | None = None
        self.owner = c.new_owner()
        self.lease_seconds = lease_seconds

    @property
    def pool(self) -> AsyncConnectionPool:
        """The open pool (``NotReady`` when the store is closed)."""
        if self._pool is None:
            raise NotReady("the thread store is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self, *, transaction: bool = True) -> AsyncIterator[Conn]:
        """A pooled connection (in a transaction unless told otherwise).

        Connection-level failures become ``NotReady``; errors the statements
        raise on purpose (``Conflict``, ``NotFound``) and constraint errors pass.
        """
        try:
            async with self.pool.connection() as conn:
                if not transaction:
                    yield conn
                    return
                async with conn.transaction():
                    yield conn
        except (
            psycopg.OperationalError,
            psycopg.InterfaceError,
            pg_errors.IdleInTransactionSessionTimeout,
        ) as exc:
            # OperationalError covers a refused or cut connection, an admin
            # shutdown and the pool's timeout (PoolTimeout); never a constraint. The
            # server also ends a session this store left idle in a transaction too long.
            raise NotReady(f"the thread store does not answer ({type(exc).__name__})") from exc

    async def open(self) -> None:
        """Wait for the server, open the pool and create or migrate the schema; idempotent.

        Raises:
            NotReady: the server did not answer within the open timeout (the message
                names its host and port and libpq's last error, never the password), or
                the migration stayed blocked.
        """
        if self._pool is not None:
            return
        await self._wait_for_server()
        try:
            await self._open_pool()
        except psycopg.OperationalError as exc:
            if exc.sqlstate is not None:  # a statement's error, not the connection's
                raise
            # Gone again since it answered (the pool's PoolTimeout included).
            raise NotReady(
                f"the PostgreSQL server at {self._server} stopped answering during start-up: "
                f"{self._cause(exc)}"
            ) from None

    async def _wait_for_server(self) -> None:
        """Return once one connection succeeds; retry with a back-off until the open timeout.

        Done before the pool opens: the pool's own wait ends in "pool initialization
        incomplete", which says nothing of why, and logs every try in libpq's words.

        Raises:
            NotReady: still unreachable at the end (naming the host and the last error).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._open_timeout
        delay = 0.5
        for attempt in itertools.count(1):
            left = deadline - loop.time()
            try:
                # A try does not outlast the time left (libpq counts whole seconds, 2 at least).
                shorter = max(math.ceil(left), 2)
                per_try = self._connect_timeout
                url = self._url
                if not 0 < per_try <= shorter:
                    url = make_conninfo(url, connect_timeout=str(shorter))
                conn = await psycopg.AsyncConnection.connect(url)
            except psycopg.OperationalError as exc:
                left = deadline - loop.time()
                if left <= 0:
                    raise NotReady(
                        f"the PostgreSQL server at {self._server} did not answer for "
                        f"{self._open_timeout:g} s: {self._cause(exc)}"
                    ) from None
                _logger.warning(
                    "store.unreachable",
                    server=self._server,
                    attempt=attempt,
                    error=self._cause(exc),
                    retry_in_s=round(min(delay, left), 1),
                )
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 8.0)
            else:
                await conn.close()
                return

    @property
    def _server(self) -> str:
        """``host:port`` of the URL (every host of a multi-host one), never its password."""
        params = conninfo_to_dict(self._url)
        host = str(params.get("host") or params.get("hostaddr") or "localhost")
        return f"{host}:{params.get('port') or 5432}"

    def _cause(self, exc: BaseException) -> str:
        """libpq's error on one line, the password masked should it ever appear in it."""
        lines = (" ".join(line.split()) for line in str(exc).splitlines())
        text = "; ".join(line for line in lines if line) or type(exc).__name__
        password = str(conninfo_to_dict(self._url).get("password") or "")
        return text.replace(password, "***") if password else text

    async def _open_pool(self) -> None:
        """Create the schema if one is named, open the pool, migrate (the server answers)."""
        kwargs: dict[str, Any] = {}
        if self._schema is not None:
            # Under the migration's lock: two ``CREATE SCHEMA IF NOT EXISTS`` racing both
            # see no schema, and the second fails on the catalog's unique index.
            async with (
                await psycopg.AsyncConnection.connect(self._url) as conn,
                conn.transaction(),
            ):
                await _lock_migrations(conn, self._schema)
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
            kwargs["options"] = f"-c search_path={self._schema}"
        pool = AsyncConnectionPool(
            self._url,
            kwargs=kwargs,
            min_size=self._min_size,
            max_size=self._max_size,
            configure=self._configure,
            # A connection the server cut while it sat idle (a restart, a failover) is
            # replaced when taken, not handed to a write that then fails with the database
            # up again (a run's answer lost); one empty round trip per checkout.
            check=AsyncConnectionPool.check_connection,
            open=False,
        )
        try:
            # Cancelled meanwhile (a start-up timeout), the pool is closed here too: its
            # workers would otherwise go on reconnecting behind a store that is not open.
            await pool.open(wait=True, timeout=self._open_timeout)
            async with pool.connection() as conn:
                await self._migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def _migrate(self, conn: Conn) -> None:
        """Migrate the schema, trying again while its statements cannot get their locks.

        Raises:
            NotReady: still blocked after ``migration_attempts`` tries.
        """
        schema = self._schema or "public"
        lock_timeout_ms = str(max(int(self._migration_lock_timeout * 1000), 1))
        for attempt in range(1, self._migration_attempts + 1):
            try:
                async with conn.transaction():
                    await _migrate(conn, schema, lock_timeout_ms)
                return
            except _MigrationBlocked as blocked:
                async with conn.transaction():
                    holders = await _lock_holders(conn)
                what = {"version": blocked.version, "statement": blocked.statement}
                if attempt < self._migration_attempts:
                    _logger.warning(
                        "store.migration_blocked",
                        **what,
                        holders=holders,
                        attempt=attempt,
                        attempts=self._migration_attempts,
                    )
                    await asyncio.sleep(self._migration_lock_timeout)
                    continue
                message = (
                    f"the thread store's schema cannot be migrated to version {blocked.version}: "
                    f"{blocked.statement!r} waited {self._migration_lock_timeout:g} s for a "
                    f"table lock, {attempt} times; sessions holding locks on the store's "
                    f"tables: {holders or 'none now'} (end their transactions, or cancel them "
                    "with pg_cancel_backend(pid), and start the gateway again)"
                )
                _logger.error("store.migration_failed", **what, holders=holders)
                raise NotReady(message) from None

    async def close(self) -> None:
        """Close the listening connection and the pool; the store can be opened again."""
        # Both are let go before anything is awaited: from here the store is closed to new
        # callers (NotReady), so no follower starts a listener that nothing would close.
        listener, self._listener = self._listener, None
        pool, self._pool = self._pool, None
        if listener is not None:
            await listener.aclose()
        if pool is not None:
            await pool.close()

    async def _configure(self, conn: Conn) -> None:
        """Set up each new pooled connection: ``str`` parameters through
        ``_StorableStrDumper``; the session's ``idle_in_transaction_session_timeout``."""
        conn.adapters.register_dumper(str, _StorableStrDumper)
        await conn.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
            (str(self._idle_in_transaction_ms),),
        )
        await conn.commit()  # the pool takes connections back idle, not in a transaction

    async def ping(self) -> bool:
        """True when a trivial query answers."""
        try:
            async with self.pool.connection(timeout=5) as conn:
                cur = await conn.execute("SELECT 1")
                return await cur.fetchone() == (1,)
        except (psycopg.Error, NotReady, TimeoutError):
            return False

    async def _fetchone(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        async with self._connection(transaction=False) as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchone()

    async def _fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async with self._connection(transaction=False) as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def _execute(self, sql: str, params: tuple[Any, ...]) -> int:
        async with self._connection() as conn:
            cur = await conn.execute(sql, params)
            return cur.rowcount

    # -- threads ------------------------------------------------------------------

    async def create_thread(
        self, assistant: str, metadata: dict[str, Any] | None = None
    ) -> ThreadRecord:
        """Insert a new thread for ``assistant``."""
        record = c.new_thread(assistant, metadata)
        await self._execute(_SQL.insert_thread, c.thread_row(record))
        return record

    async def get_thread(self, thread_id: str) -> ThreadRecord | None:
        """The thread, or None."""
        row = await self._fetchone(_SQL.select_thread, (thread_id,))
        return c.thread_from_row(row) if row else None

    async def delete_thread(self, thread_id: str) -> bool:
        """Delete the thread with its messages, runs and event logs.

        Its runs' rows are locked first, then the thread's (by the delete): the order
        a run's own writes take them in, so a run finishing meanwhile is waited for.
        """
        async with self._connection() as conn:
            await conn.execute(_SQL.lock_thread_runs, (thread_id,))
            cur = await conn.execute(_SQL.delete_thread, (thread_id,))
            return cur.rowcount > 0

    # -- messages -----------------------------------------------------------------

    async def append_message(
        self,
        thread_id: str,
        message: ChatMessage,
        run_id: str | None = None,
        *,
        message_id: str | None = None,
    ) -> StoredMessage:
        """Append ``message`` durably; the row lock on the thread orders concurrent appends."""
        mid, created = message_id or c.new_id("msg"), c.now()
        async with self._connection() as conn:
            seq = await _append(conn, thread_id, message, run_id, mid, created)
        return c.stored(
            message, thread_id=thread_id, run_id=run_id, mid=mid, seq=seq, created=created
        )

    async def append_run_message(
        self, run_id: str, message: ChatMessage, *, message_id: str | None = None
    ) -> StoredMessage | None:
        """Append a running run's message to its thread; None (nothing stored) once the run
        is not ours and active."""
        mid, created = message_id or c.new_id("msg"), c.now()
        async with self._connection() as conn:
            # The run's row first, then the thread's: the order a takeover locks them in.
            thread_id = await _lock_run(conn, _SQL.lock_own_run, (run_id, self.owner))
            if thread_id is None:
                return None
            seq = await _append(conn, thread_id, message, run_id, mid, created)
        return c.stored(
            message, thread_id=thread_id, run_id=run_id, mid=mid, seq=seq, created=created
        )

    async def list_messages(
        self, thread_id: str, limit: int | None = None, *, before: int | None = None
    ) -> list[StoredMessage]:
        """Messages in order; with ``before``, those whose ``seq`` is lower; with ``limit``,
        the newest ``limit`` of them."""
        sql, params = _SQL.messages_query(thread_id, limit, before)
        rows = await self._fetchall(sql, params)
        return [c.message_from_row(row) for row in reversed(rows)]

    # -- runs ---------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> None:
        """Insert ``run``; Conflict when the thread already has an active run."""
        async with self._connection() as conn:
            await self._insert_run(conn, run)

    async def begin_run(
        self, run: RunRecord, message: ChatMessage, *, thread: ThreadRecord | None = None
    ) -> StoredMessage:
        """Insert ``thread`` (if new), ``run`` and its user ``message`` in one transaction."""
        mid, created = c.new_id("msg"), c.now()
        async with self._connection() as conn:
            if thread is not None:
                await conn.execute(_SQL.insert_thread, c.thread_row(thread))
            await self._insert_run(conn, run)
            seq = await _append(conn, run.thread_id, message, run.id, mid, created)
        return c.stored(
            message, thread_id=run.thread_id, run_id=run.id, mid=mid, seq=seq, created=created
        )

    async def update_run(self, run: RunRecord) -> bool:
        """Store the run's new status, usage, timings and error; False if it had ended.
        Ending it keeps its live batches as its final log (see ``_compact``)."""
        async with self._connection() as conn:
            if await _lock_run(conn, _SQL.lock_active_run_to_write, (run.id,)) is None:
                return False
            await _update_run(conn, run)
            if run.status not in c.ACTIVE_STATUSES:
                await _compact(conn, run.id)
            return True

    async def finish_run(
        self,
        run: RunRecord,
        events: list[bytes],
        messages: Sequence[tuple[ChatMessage, str]] = (),
    ) -> bool:
        """Append ``messages``, store the final record and the event log in one transaction;
        False (nothing stored) once the run is not ours and active."""
        created = c.now()
        async with self._connection() as conn:
            # The run's row first, then the thread's: the order a takeover locks them in.
            guard = (run.id, self.owner)
            if await _lock_run(conn, _SQL.lock_own_run_to_write, guard) is None:
                return False
            for message, mid in messages:
                await _append(conn, run.thread_id, message, run.id, mid, created)
            await _update_run(conn, run)
            await _save_events(conn, run.id, events)
            return True

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""
        row = await self._fetchone(_SQL.select_run, (run_id,))
        return c.run_from_row(row) if row else None

    async def list_active_runs(self) -> list[RunRecord]:
        """Runs still queued or in progress (on any replica)."""
        rows = await self._fetchall(_SQL.select_active_runs)
        return [c.run_from_row(row) for row in rows]

    async def renew_leases(self, run_ids: Collection[str]) -> set[str]:
        """Extend the leases of those of ``run_ids`` this store owns and still runs."""
        if not run_ids:
            return set()
        params = (self.lease_seconds, self.owner, c.dumps(list(run_ids)))
        async with self._connection() as conn:
            cur = await conn.execute(_SQL.renew_leases, params)
            return {row[0] for row in await cur.fetchall()}

    async def expire_leases(self, thread_id: str) -> list[RunRecord]:
        """Fail the thread's active run whose lease lapsed; returns it (if any)."""
        async with self._connection() as conn:
            return await _expire(conn, thread_id)

    async def _insert_run(self, conn: Conn, run: RunRecord) -> None:
        # A racing replica doing the same blocks on the expired run's row lock, then
        # finds it failed and its own insert refused by ``runs_one_active``: one wins.
        await _expire(conn, run.thread_id)
        try:
            await conn.execute(_SQL.insert_run, (*c.run_row(run), self.owner, self.lease_seconds))
        except pg_errors.ForeignKeyViolation:
            raise NotFound("thread", run.thread_id) from None
        except pg_errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "runs_one_active":
                raise Conflict(f"thread {run.thread_id!r} already has an active run") from None
            raise

    async def save_run_events(self, run_id: str, events: list[bytes]) -> None:
        """Persist a finished run's encoded event log (replaces an earlier one)."""
        async with self._connection() as conn:
            await _save_events(conn, run_id, events)

    async def load_run_events(self, run_id: str) -> list[bytes] | None:
        """The saved event log, or None when the run has none (yet)."""
        row = await self._fetchone(_SQL.load_events, (run_id,))
        return c.split_events(bytes(row[0])) if row else None

    async def append_run_events(self, run_id: str, first_seq: int, events: list[bytes]) -> bool:
        """Append a batch of a running run's events and notify its followers at commit (the
        INSERT does, in one round trip); False (nothing stored) once the run is not ours
        and active."""
        last_seq = first_seq + len(events) - 1
        params = (run_id, first_seq, last_seq, c.join_events(events), run_id, self.owner)
        async with self._connection() as conn:
            cur = await conn.execute(_SQL.append_batch, params)
            return await cur.fetchone() is not None

    async def load_run_events_after(self, run_id: str, after: int) -> RunEventsPage:
        """The run's stored events past ``after`` (final log, else live batches)."""
        rows = await self._fetchall(_SQL.load_events_after, (run_id, run_id, after))
        return c.page_from_rows(rows, after)

    def run_event_notices(self, run_id: str) -> AbstractAsyncContextManager[RunEventNotices]:
        """Wake-ups for ``run_id`` through this store's LISTEN connection (see ``_notify``);
        ``NotReady`` once the store is closed or closing."""
        if self._pool is None:
            raise NotReady("the thread store is not open")
        if self._listener is None:
            # The channel is database-wide: the schema's search path is not needed.
            self._listener = _notify.Listener(self._url)
        return self._listener.subscribe(run_id)


Conn = psycopg.AsyncConnection[Any]


def _conninfo(url: str) -> str:
    """``url`` as libpq reads it, with ``CONNECTION_DEFAULTS`` (``gateway._libpq.conninfo``).

    Raises:
        InvalidInput: libpq cannot parse it (the message does not repeat its password).
    """
    try:
        return libpq.conninfo(url)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def _connect_timeout(conninfo: str) -> int:
    """libpq's ``connect_timeout`` for ``conninfo`` in seconds (the URL's, else
    ``PGCONNECT_TIMEOUT``'s); 0 when there is none (libpq then waits for ever).

    ``open`` waits three times this for the server (30 s by default), so
    ``?connect_timeout=1`` in the URL also makes start-up give up within seconds.
    """
    value = conninfo_to_dict(conninfo).get("connect_timeout") or os.environ.get(
        "PGCONNECT_TIMEOUT", ""
    )
    try:
        return max(int(str(value).strip()), 0)
    except ValueError:
        return 0


class _StorableStrDumper(StrDumperUnknown):
    """psycopg's default ``str`` parameter dumper, fed the text as ``_codec.storable`` makes it.

    PostgreSQL refuses NUL in text, and psycopg raises ``DataError`` for a parameter
    holding one; ids come from paths and bodies, so a hostile ``thread_id`` would be a
    500. Here such an id is looked up as text no row has (an unknown id: 404), as on
    SQLite; message text already comes through ``storable``.
    """

    def dump(self, obj: str) -> Buffer | None:
        return super().dump(c.storable(obj) or "")


async def _append(
    conn: Conn,
    thread_id: str,
    message: ChatMessage,
    run_id: str | None,
    message_id: str,
    created: float,
) -> int:
    # The row lock taken by this UPDATE orders concurrent appends to one thread.
    cur = await conn.execute(_SQL.next_seq, (thread_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound("thread", thread_id)
    seq = int(row[0])
    values = (message_id, thread_id, seq, created, *c.message_row(message), run_id)
    await conn.execute(_SQL.insert_message, values)
    return seq


async def _lock_run(conn: Conn, sql: str, params: tuple[str, ...]) -> str | None:
    """The thread of the run ``sql`` (one of the ``lock_*`` guards) selects, its row now locked."""
    cur = await conn.execute(sql, params)
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def _expire(conn: Conn, thread_id: str) -> list[RunRecord]:
    params = (c.now(), c.dumps(INTERRUPTED), thread_id, LEGACY_LEASE_SECONDS)
    cur = await conn.execute(_SQL.expire_leases, params)
    expired = [c.run_from_row(row) for row in await cur.fetchall()]
    for run in expired:
        await _compact(conn, run.id)
    return expired


async def _compact(conn: Conn, run_id: str) -> None:
    """Store the live batches of a run that ended elsewhere (no ``finish_run`` comes) as its
    final log, in the transaction that ends it; the log has no ending (readers make it from
    the record). The run's row is locked (the caller updated it): no batch lands meanwhile."""
    cur = await conn.execute(_SQL.load_events_after, (run_id, run_id, 0))
    rows = await cur.fetchall()
    if rows:
        await _save_events(conn, run_id, c.page_from_rows(rows, 0).events)


async def _update_run(conn: Conn, run: RunRecord) -> None:
    row = c.run_row(run)
    values = (run.status, run.manifest_version, run.completed_at, *row[7:], run.id)
    await conn.execute(_SQL.update_run, values)


async def _save_events(conn: Conn, run_id: str, events: list[bytes]) -> None:
    await conn.execute(_SQL.save_events, (run_id, c.join_events(events)))
    await conn.execute(_SQL.delete_batches, (run_id,))
    await _notify_followers(conn, run_id)


async def _notify_followers(conn: Conn, run_id: str) -> None:
    # Inside the writer's transaction: delivered at its commit, never for a rollback.
    await conn.execute("SELECT pg_notify(%s, %s)", (_notify.CHANNEL, run_id))


async def _lock_migrations(conn: Conn, schema: str) -> None:
    """Wait for, then hold until the transaction ends, the lock on ``schema``'s migrations."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"gateway.store:{schema}",))


class _MigrationBlocked(Exception):
    """A migration statement gave up waiting for its lock (its transaction is rolled back)."""

    def __init__(self, version: int, statement: str) -> None:
        super().__init__(version, statement)
        self.version, self.statement = version, statement


async def _lock_holders(conn: Conn) -> str:
    """The other sessions holding locks on the store's tables (its schema is the session's
    first), as ``pid N on table, ...`` with their transaction's age when the server shows it
    (to a role that is not the session's own, it does not); never their queries."""
    cur = await conn.execute(
        "SELECT l.pid, string_agg(DISTINCT c.relname, ', ' ORDER BY c.relname),"
        " extract(epoch FROM now() - min(a.xact_start))::int"
        " FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.granted AND l.pid <> pg_backend_pid() AND c.relkind IN ('r', 'p')"
        " AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
        " GROUP BY l.pid ORDER BY l.pid LIMIT 10"
    )
    return "; ".join(
        f"pid {pid} on {tables}{f' (in a transaction for {age} s)' if age is not None else ''}"
        for pid, tables, age in await cur.fetchall()
    )


async def _migrate(conn: Conn, schema: str, lock_timeout_ms: str) -> None:
    """Migrate ``schema`` to the newest version, in the caller's transaction.

    Raises:
        _MigrationBlocked: a statement waited ``lock_timeout_ms`` for its lock.
        NotReady: the schema is newer than this gateway.
    """
    # Replicas starting together: the advisory lock makes one migrate, the others wait
    # (for as long as it takes: ``lock_timeout`` is set after it, for this transaction).
    await _lock_migrations(conn, schema)
    await conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout_ms,))
    try:  # a session (an operator's psql) holding a lock on schema_version blocks it too
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cur = await conn.execute("SELECT version FROM schema_version")
        row = await cur.fetchone()
        current = int(row[0]) if row else 0
        if row is None:
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
    except pg_errors.LockNotAvailable:
        raise _MigrationBlocked(
            len(_SQL.migrations), "SELECT version FROM schema_version"
        ) from None
    if current > len(_SQL.migrations):
        # NotReady: one start-up line (exit 3) that says what to do, not a traceback.
        raise NotReady(
            f"the database schema is version {current}, newer than this gateway "
            f"({len(_SQL.migrations)}); upgrade the gateway"
        )
    for version, statements in enumerate(_SQL.migrations[current:], start=current + 1):
        for statement in statements:
            try:
                await conn.execute(statement)
            except pg_errors.LockNotAvailable:
                raise _MigrationBlocked(version, statement.split("\n", 1)[0]) from None
    try:
        await conn.execute("UPDATE schema_version SET version = %s", (len(_SQL.migrations),))
    except pg_errors.LockNotAvailable:
        raise _MigrationBlocked(len(_SQL.migrations), "UPDATE schema_version") from None


@register_store("postgresql", "postgres")
def _factory(url: str, root: Path, lease_seconds: float) -> PostgresStore:
    del root  # a server database has no relative path
    return PostgresStore(url, lease_seconds=lease_seconds)
