"""Shared connections for ``isolation: inline`` calls: one HTTP client, SQL pools, SQL threads.

``Pools`` is owned by the runner (one per server) and creates everything on
first use: the ``httpx.AsyncClient`` that every inline ``http`` call shares,
one pool of SQLite connections per (database URL, read-only), one psycopg
``ConnectionPool`` per PostgreSQL URL (its connections with the keepalives and
timeouts of ``gateway._libpq``, which the caller's ``conninfo`` adds), and the
worker threads that run the blocking database work and the rendering of
templates off the event loop.
``aclose`` closes them all (app shutdown); ``retain`` closes the database
pools a new catalog no longer uses.

Cancellation: when the awaiting task is cancelled (the action's timeout, or
the run was cancelled) the statement in progress is interrupted (SQLite
``interrupt``) or cancelled on the server (PostgreSQL), and a SQLite
connection that saw an error or a cancellation is closed, never reused.

Imports ``gateway.executors._common``; httpx, sqlite3 and psycopg lazily.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import os
import threading
from collections.abc import Callable
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from gateway.executors._common import ToolError

if TYPE_CHECKING:
    import sqlite3

    import httpx
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["Pools"]

log = structlog.get_logger("gateway.executors")

T = TypeVar("T")

_IDLE_SQLITE = 8  # idle connections kept per SQLite pool; more are closed on return
_CHECKOUT_TIMEOUT = 10.0  # at most this long waiting for a PostgreSQL connection


class _Slot:
    """One blocking call: how to interrupt the statement it runs, and whether it was cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._interrupt: Callable[[], None] | None = None
        self.cancelled = False

    def attach(self, interrupt: Callable[[], None]) -> None:
        """Register how to stop the statement; runs it at once if the call is already cancelled."""
        with self._lock:
            self._interrupt = interrupt
            cancelled = self.cancelled
        if cancelled:
            interrupt()

    def detach(self) -> None:
        """The statement is over: nothing to interrupt any more."""
        with self._lock:
            self._interrupt = None

    def cancel(self) -> None:
        """Mark cancelled and interrupt the statement in progress, if any."""
        with self._lock:
            self.cancelled = True
            interrupt = self._interrupt
        if interrupt is not None:
            interrupt()


class _SqlitePool:
    """Idle SQLite connections of one file and mode, reused across threads one at a time.

    The file's identity (device, inode) is checked on every checkout: when the
    file was replaced (a deploy copies a new database in), the idle
    connections to the old one are closed instead of reused.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._identity: tuple[int, int] | None = None
        self._closed = False

    def checkout(self, open_: Callable[[], sqlite3.Connection]) -> sqlite3.Connection:
        """An idle connection to the current file, or a new one from ``open_``."""
        identity = _identity(self.path)
        stale: list[sqlite3.Connection] = []
        conn = None
        with self._lock:
            if identity != self._identity:
                stale, self._idle, self._identity = self._idle, [], identity
            if self._idle:
                conn = self._idle.pop()
        for old in stale:
            old.close()
        return conn if conn is not None else open_()

    def checkin(self, conn: sqlite3.Connection, *, reuse: bool) -> None:
        """Keep ``conn`` for the next call when ``reuse`` (and room is left), else close it."""
        with self._lock:
            if reuse and not self._closed and len(self._idle) < _IDLE_SQLITE:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections; connections in use are closed when returned."""
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for conn in idle:
            conn.close()


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # noqa: PTH116 - a str path, on every checkout
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Pools:
    """The shared HTTP client and database pools of inline calls, created on first use.

    Args:
        sql_threads: worker threads for blocking database work, which is also
            the most connections one PostgreSQL pool opens.
        http_connections: the most connections the HTTP client opens (per
            server; a call waits for a free one up to its connect timeout).
    """

    def __init__(self, *, sql_threads: int = 16, http_connections: int = 100) -> None:
        self._sql_threads = max(1, sql_threads)
        self._http_connections = max(1, http_connections)
        self._http: httpx.AsyncClient | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._sqlite: dict[tuple[str, bool], _SqlitePool] = {}
        self._postgres: dict[str, ConnectionPool[Any]] = {}
        self._closed = False

    # -- HTTP ------------------------------------------------------------------------------

    def http(self) -> httpx.AsyncClient:
        """The one pooled client of inline ``http`` calls.

        It keeps no cookies (a cookie one call receives must never reach
        another call), ignores proxy variables of the server's environment
        (``trust_env=False``, as in the sandbox) and verifies TLS with the
        same CA bundle as sandboxed calls. Timeouts and redirects are per request.
        """
        self._check_open()
        if self._http is None:
            import httpx

            from gateway.executors.http import ssl_context

            jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
            self._http = httpx.AsyncClient(
                trust_env=False,
                verify=ssl_context(),
                cookies=jar,  # this jar itself (httpx.Cookies(jar) would copy it into a plain one)
                limits=httpx.Limits(
                    max_connections=self._http_connections,
                    max_keepalive_connections=min(20, self._http_connections),
                ),
            )
        return self._http

    # -- SQL -------------------------------------------------------------------------------

    async def sqlite(
        self,
        key: str,
        path: str,
        *,
        readonly: bool,
        timeout: float,
        opener: Callable[[], sqlite3.Connection],
        work: Callable[[sqlite3.Connection], T],
    ) -> T:
        """Run ``work`` on a pooled connection to ``path`` in a worker thread.

        ``key`` (the database URL) and ``readonly`` select the pool; ``opener``
        makes a new connection when none is idle. An in-memory database is
        never pooled (each call gets a fresh one, as in the sandbox).
        """
        self._check_open()
        pool = None
        if path not in ("", ":memory:"):
            pool = self._sqlite.get((key, readonly))
            if pool is None:
                pool = self._sqlite[(key, readonly)] = _SqlitePool(path)
        busy_ms = int(min(timeout, 5.0) * 1000)

        def job(slot: _Slot) -> T:
            conn = pool.checkout(opener) if pool is not None else opener()
            reuse = False
            try:
                conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
                slot.attach(conn.interrupt)
                try:
                    result = work(conn)
                finally:
                    slot.detach()
                reuse = not slot.cancelled
                return result
            finally:
                if pool is not None:
                    pool.checkin(conn, reuse=reuse)
                else:
                    conn.close()

        return await self._blocking(job)

    async def postgres(
        self,
        url: str,
        *,
        timeout: float,
        conninfo: Callable[[], str],
        work: Callable[[psycopg.Connection[Any]], T],
    ) -> T:
        """Run ``work`` on a pooled connection to ``url`` in a worker thread.

        ``url`` (the database URL as the catalog has it, which ``retain`` is given)
        selects the pool; ``conninfo`` makes the libpq string a new pool connects
        with. Connections are checked before use (a server restart costs a
        reconnect, not a failed call) and are idle again when ``work`` returns (it
        commits or rolls back). Waiting for a connection is bounded by the call's
        timeout (at most 10 s): then a ``database_error``.
        """
        self._check_open()
        pool = self._postgres.get(url)
        if pool is None:
            pool = self._postgres[url] = self._open_postgres(conninfo())
        wait = min(timeout, _CHECKOUT_TIMEOUT)

        def job(slot: _Slot) -> T:
            import psycopg
            from psycopg_pool import PoolClosed, PoolTimeout

            try:
                with pool.connection(timeout=wait) as conn:
                    slot.attach(lambda: _cancel_postgres(conn))
                    try:
                        return work(conn)
                    finally:
                        slot.detach()
                        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                            with contextlib.suppress(psycopg.Error):
                                conn.rollback()
            except PoolClosed:
                raise ToolError(
                    "unavailable",
                    "the database pool was closed by a reload or shutdown; call again",
                ) from None
            except PoolTimeout:
                raise ToolError(
                    "database_error",
                    f"no connection to the database within {wait:g}s "
                    "(is it reachable? see the server log)",
                ) from None

        return await self._blocking(job)

    def _open_postgres(self, conninfo: str) -> ConnectionPool[Any]:
        from psycopg_pool import ConnectionPool

        pool: ConnectionPool[Any] = ConnectionPool(
            conninfo,  # carries connect_timeout and the keepalives (``sql.postgres_conninfo``)
            min_size=1,
            max_size=self._sql_threads,
            kwargs={"autocommit": False},
            check=ConnectionPool.check_connection,
            name="gateway-inline",
            open=False,
        )
        pool.open(wait=False)
        return pool

    async def offload(self, work: Callable[[], T]) -> T:
        """Run ``work`` (CPU work such as rendering a call's templates) in a worker thread.

        The same threads as the database work, in the caller's context (so the
        call's render deadline, ``_templates``, holds there). Cancelling the
        caller does not stop ``work``: it must end by itself (renders stop at
        their deadline).
        """
        self._check_open()
        return await self._blocking(lambda _slot: work())

    async def _blocking(self, job: Callable[[_Slot], T]) -> T:
        """Run ``job`` in a worker thread, in a copy of the caller's context variables;
        cancelling the caller interrupts its statement."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._sql_threads, thread_name_prefix="gateway-inline"
            )
        slot = _Slot()
        context = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(self._executor, context.run, job, slot)
        try:
            return await future
        except asyncio.CancelledError:
            slot.cancel()
            raise

    # -- lifecycle -------------------------------------------------------------------------

    async def retain(self, urls: set[str]) -> None:
        """Close the database pools whose URL is not in ``urls`` (after a catalog swap).

        Calls already running on the old catalog finish on the connection they
        hold; a later call on it opens a new pool. Never raises (a reload must
        not fail for it): a pool that does not close cleanly is logged.
        """
        sqlite = [k for k in self._sqlite if k[0] not in urls]
        postgres = [k for k in self._postgres if k not in urls]
        for key in sqlite:
            self._sqlite.pop(key).close()
        closing = [self._postgres.pop(k) for k in postgres]
        if closing:
            await asyncio.to_thread(_close_postgres, closing)
        if sqlite or closing:
            log.info("executors.inline_pools_closed", sqlite=len(sqlite), postgres=len(closing))

    async def aclose(self) -> None:
        """Close the HTTP client, every database pool and the worker threads."""
        self._closed = True
        client, self._http = self._http, None
        if client is not None:
            await client.aclose()
        for pool in self._sqlite.values():
            pool.close()
        self._sqlite.clear()
        closing = list(self._postgres.values())
        self._postgres.clear()
        if closing:
            await asyncio.to_thread(_close_postgres, closing)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def _check_open(self) -> None:
        if self._closed:
            raise ToolError("unavailable", "the server is shutting down")


def _cancel_postgres(conn: psycopg.Connection[Any]) -> None:
    """Ask the server to cancel ``conn``'s statement, from a thread of its own (it blocks)."""

    def cancel() -> None:
        try:
            conn.cancel_safe(timeout=5.0)
        except Exception as exc:  # the statement timeout still ends it; say why in the log
            log.warning("executors.inline_cancel_failed", error=str(exc))

    threading.Thread(target=cancel, name="gateway-inline-cancel", daemon=True).start()


def _close_postgres(pools: list[ConnectionPool[Any]]) -> None:
    for pool in pools:
        try:
            pool.close(timeout=5.0)
        except Exception as exc:  # closing is best effort; the process keeps serving
            log.warning("executors.inline_pool_close_failed", pool=pool.name, error=str(exc))
