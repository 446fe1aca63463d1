"""The embedded thread store: one SQLite file (WAL, ``synchronous=FULL``).

The default store (``sqlite:///var/gateway.db``). One connection is used from
one dedicated thread, so statements are serialized without a lock and the event
loop never blocks on disk. ``synchronous=FULL`` makes every committed
transaction survive a power loss, so nothing acknowledged to a client is lost
(WAL with ``NORMAL`` could drop the last transactions). One active run per
thread is a partial unique index, so the rule holds even across processes
sharing the file. One gateway serves a file: the store ``open_store`` makes holds
an exclusive lock on ``<file>.lock`` while it is open, and a second process
(a second ``gateway serve`` on another port) is refused with an error naming
the file and the holder's pid. It would otherwise fail the first one's runs in
progress at its start-up (the engine takes them for a crash's leftovers), and
it could neither stream nor cancel them (an embedded store keeps no live event
batches); several gateways share PostgreSQL. A failure of the database itself (the file
damaged, full, read-only or deleted, a disk I/O error, the lock held past the busy
timeout) is ``NotReady`` (503) saying in words what failed, with one ERROR line
naming the file and SQLite's error (``_failures``); a broken rule stays
``Conflict`` / ``NotFound``, a bad statement a bug (500). Every call first checks
(one ``stat``) that the file at the path is the one opened: a deleted file fails
every call until it is put back, a file put in its place (a backup restored) is
opened instead (``_checked``). ``ping`` (``/ready``) writes while the file fails,
so a freed disk is seen with no traffic.
Imports ``gateway.errors``, ``gateway._files`` (the file made mode 0600),
``gateway.providers.base``, ``gateway.store`` internals and structlog.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gateway._files import private_file
from gateway.errors import Conflict, InvalidInput, NotFound, NotReady
from gateway.providers.base import ChatMessage
from gateway.store import _codec as c
from gateway.store import _notify, register_store
from gateway.store._failures import FileChanged, Health, is_failure
from gateway.store._sql import SQLITE
from gateway.store._sqlite_file import SQLiteFile
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

__all__ = ["SQLiteStore", "sqlite_path"]

_logger = structlog.get_logger("gateway.store")

T = TypeVar("T")

# An open connection, and the fd of the lock held for it (exclusive stores).
_Opened = tuple[sqlite3.Connection, int | None]

_SQL = SQLITE
_PROBE_GAP = 2.0
"""Seconds between ``ping``'s write probes while the file fails (each one fsyncs)."""


def sqlite_path(url: str, root: Path) -> Path:
    """The file of a ``sqlite:///rel`` (relative to ``root``) or ``sqlite:////abs`` URL."""
    prefix = url.partition("://")[2]
    if not prefix.startswith("/") or prefix == "/":
        raise InvalidInput(f"a SQLite URL looks like sqlite:///var/gateway.db, got {url!r}")
    rest = prefix[1:]
    path = Path(rest)
    return path if path.is_absolute() else root / path


class SQLiteStore:
    """``ThreadStore`` over one SQLite file.

    Args:
        path: the database file.
        lease_seconds: lease of the runs this instance inserts (see ``gateway.store.base``).
        exclusive: hold ``<path>.lock`` while open, so no other process opens the file
            with ``exclusive`` meanwhile (``open`` raises ``NotReady``). The server's
            store (``open_store``) is exclusive; tests open several stores on one file
            to play replicas.
    """

    shared = False

    def __init__(
        self,
        path: Path,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        exclusive: bool = False,
    ) -> None:
        self.path = path
        self.owner = c.new_owner()
        self.lease_seconds = lease_seconds
        self.exclusive = exclusive
        self._lock_fd: int | None = None
        # Used in the store's thread only, once open: the connection (None while the file
        # put back under ``path`` cannot be opened), and the files it opened (``_checked``).
        self._conn: sqlite3.Connection | None = None
        self._file = SQLiteFile(path)
        self._opened = 0  # how many times the file was (re)opened
        self._executor: ThreadPoolExecutor | None = None
        self._health = Health(path)
        self._next_probe = 0.0  # monotonic: ping's next write probe while failing

    # -- plumbing -----------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        """Run ``fn`` on the connection in the store's thread.

        Raises:
            NotReady: the database failed (``_failures``: said once in the log, in
                words to the client); ``write``: a commit here says it serves again.
        """
        executor = self._executor
        if executor is None:
            raise NotReady("the thread store is not open")
        opened = self._opened
        try:
            # A cancelled caller does not cancel the statement: a write that started completes.
            result = await asyncio.get_running_loop().run_in_executor(executor, self._call, fn)
        except Exception as exc:
            if not is_failure(exc):  # a rule (Conflict, NotFound) or a bug: not the database
                raise
            raise self._health.failed(exc) from exc
        self._health.ok(write=write, reopened=self._opened != opened)
        return result

    async def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """``body`` in one write transaction (``_tx``)."""
        return await self._run(lambda conn: self._tx(conn, body), write=True)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return fn(self._checked())

    def _checked(self) -> sqlite3.Connection:
        """The connection, once ``path`` is checked to still name the file it opened.

        A deleted file fails every call until a file is put back (restored from a
        backup); a file put in its place is opened (``_reopen``). See ``_sqlite_file``.

        Raises:
            FileChanged: the file was deleted.
            sqlite3.Error: the file now at ``path`` cannot be opened.
        """
        if self._file.check() and self._conn is not None:
            return self._conn
        return self._reopen()

    def _reopen(self) -> sqlite3.Connection:
        """Close the connection to the file that was at ``path`` and open the one there now,
        its old ``-wal`` and ``-shm`` dropped in between (``SQLiteFile.drop_journal``)."""
        old, self._conn = self._conn, None
        if old is not None:
            _logger.warning("store.file_replaced", database=str(self.path))
            try:
                old.close()
            except sqlite3.Error:
                _logger.warning("store.close_failed", database=str(self.path), exc_info=True)
            self._file.drop_journal()
        try:
            conn = self._open_connection(create=False)
        except _SchemaTooNew as exc:
            raise FileChanged(f"the file put in its place: {exc}", deleted=False) from None
        self._conn = conn
        self._opened += 1
        _logger.warning("store.file_reopened", database=str(self.path))
        return conn

    @staticmethod
    def _tx(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one write transaction: committed whole, or rolled back whole.

        SQLite rolls a transaction back by itself on some errors (disk full, I/O):
        rolling back again would raise "no transaction is active" in place of the
        cause. A COMMIT that fails may leave the transaction open: it is rolled
        back, or every later ``BEGIN`` would fail ("within a transaction").
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    def _lock(self) -> int:
        """Take ``<path>.lock``, writing our pid in it for the next comer; returns its fd.

        ``flock``: released by the kernel when the process dies, however it dies, so a
        crash never leaves the file locked. Close-on-exec: no child inherits it.

        Raises:
            NotReady: another process holds it (its pid in the message).
        """
        lock_path = private_file(self.path.with_name(self.path.name + ".lock"))
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise NotReady(
                f"{self.path} is in use by another gateway process (pid {holder}): a SQLite "
                "thread store serves one gateway; stop the other one, give this one its own "
                "file, or share a PostgreSQL database between several"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def _open_connection(self, *, create: bool) -> sqlite3.Connection:
        """Connect, set the pragmas and migrate; ``create``: make the file (0600) if missing,
        else open only a file that is there (a file put back: never an empty one in its place).
        """
        if create:
            # Readable by the server's user alone: sandboxed actions must not read threads.
            target = str(private_file(self.path))
            conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        else:
            self.path.chmod(0o600)
            uri = self.path.resolve().as_uri() + "?mode=rw"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=10000")
            self._tx(conn, _migrate)
        except BaseException:
            conn.close()
            raise
        self._file.remember()
        return conn

    def _connect(self) -> _Opened:
        lock = self._lock() if self.exclusive else None
        try:
            conn = self._open_connection(create=True)
        except BaseException:
            if lock is not None:
                os.close(lock)  # releases the flock
            raise
        return conn, lock

    async def open(self) -> None:
        """Create the file (and its directory) if needed and migrate the schema; idempotent.

        On failure nothing stays open (neither the file nor the store's thread), so
        ``open`` can be called again.

        Raises:
            NotReady: the file cannot serve (not a database, a directory, not writable,
                its schema newer than this gateway, held by another process), naming it.
        """
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        connecting = executor.submit(self._connect)
        try:
            conn, self._lock_fd = await asyncio.wrap_future(connecting)
        except BaseException as exc:
            # Cancelled, the connect goes on in the thread: its connection is closed when
            # it is made. The thread ends once its one task is over.
            connecting.add_done_callback(_close_made)
            executor.shutdown(wait=False)
            if isinstance(exc, sqlite3.Error | OSError | _SchemaTooNew):
                # Not a database, a directory, unwritable, newer: one line naming the file.
                raise NotReady(f"the SQLite file {self.path} cannot be used: {exc}") from exc
            raise
        self._executor, self._conn = executor, conn

    async def close(self) -> None:
        """Close the connection; the store can be opened again."""
        if self._executor is None:
            return
        executor, lock = self._executor, self._lock_fd
        self._executor = self._lock_fd = None
        await asyncio.get_running_loop().run_in_executor(executor, self._close_connection)
        executor.shutdown(wait=True)
        if lock is not None:
            os.close(lock)  # releases the flock once the connection is closed

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def ping(self) -> bool:
        """True when the file answers: a trivial query on the file still at ``path``.

        While the store fails, at most every ``_PROBE_GAP`` seconds a write (one tiny
        transaction), which ends the failure when it commits, so ``/ready`` sees a freed
        disk with no traffic; between those, and always for a damaged file (failing until
        it is replaced, see ``_failures.Health``), only the trivial query, which reopens a
        file put in place of the failing one.
        """
        select = lambda conn: conn.execute("SELECT 1").fetchone() == (1,)  # noqa: E731
        try:
            if self._health.failing is None:
                return await self._run(select)
            if self._health.damaged or time.monotonic() < self._next_probe:
                await self._run(select)
            else:
                self._next_probe = time.monotonic() + _PROBE_GAP
                await self._write(_probe)
        except NotReady:
            return False
        return self._health.failing is None

    # -- threads ------------------------------------------------------------------

    async def create_thread(
        self, assistant: str, metadata: dict[str, Any] | None = None
    ) -> ThreadRecord:
        """Insert a new thread for ``assistant``."""
        record = c.new_thread(assistant, metadata)
        await self._write(lambda cx: _insert_thread(cx, record))
        return record

    async def get_thread(self, thread_id: str) -> ThreadRecord | None:
        """The thread, or None."""
        sql = _SQL.select_thread
        row = await self._run(lambda conn: conn.execute(sql, (thread_id,)).fetchone())
        return c.thread_from_row(row) if row else None

    async def delete_thread(self, thread_id: str) -> bool:
        """Delete the thread with its messages, runs and event logs."""

        def body(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(_SQL.delete_thread, (thread_id,))
            return cur.rowcount > 0

        return await self._write(body)

    # -- messages -----------------------------------------------------------------

    async def append_message(
        self,
        thread_id: str,
        message: ChatMessage,
        run_id: str | None = None,
        *,
        message_id: str | None = None,
    ) -> StoredMessage:
        """Append ``message`` durably at the end of the thread."""
        mid, created = message_id or c.new_id("msg"), c.now()
        seq = await self._write(lambda cx: _append(cx, thread_id, message, run_id, mid, created))
        return c.stored(
            message, thread_id=thread_id, run_id=run_id, mid=mid, seq=seq, created=created
        )

    async def append_run_message(
        self, run_id: str, message: ChatMessage, *, message_id: str | None = None
    ) -> StoredMessage | None:
        """Append a running run's message to its thread; None (nothing stored) once the run
        is not ours and active."""
        mid, created = message_id or c.new_id("msg"), c.now()

        def body(conn: sqlite3.Connection) -> tuple[str, int] | None:
            thread_id = _lock_run(conn, _SQL.lock_own_run, (run_id, self.owner))
            if thread_id is None:
                return None
            return thread_id, _append(conn, thread_id, message, run_id, mid, created)

        done = await self._write(body)
        if done is None:
            return None
        thread_id, seq = done
        return c.stored(
            message, thread_id=thread_id, run_id=run_id, mid=mid, seq=seq, created=created
        )

    async def list_messages(
        self, thread_id: str, limit: int | None = None, *, before: int | None = None
    ) -> list[StoredMessage]:
        """Messages in order; with ``before``, those whose ``seq`` is lower; with ``limit``,
        the newest ``limit`` of them."""
        sql, params = _SQL.messages_query(thread_id, limit, before)
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [c.message_from_row(row) for row in reversed(rows)]

    # -- runs ---------------------------------------------------------------------

    async def create_run(self, run: RunRecord) -> None:
        """Insert ``run``; Conflict when the thread already has an active run."""
        await self._write(lambda cx: self._insert_run(cx, run))

    async def begin_run(
        self, run: RunRecord, message: ChatMessage, *, thread: ThreadRecord | None = None
    ) -> StoredMessage:
        """Insert ``thread`` (if new), ``run`` and its user ``message`` in one transaction."""
        mid, created = c.new_id("msg"), c.now()

        def body(conn: sqlite3.Connection) -> int:
            if thread is not None:
                _insert_thread(conn, thread)
            self._insert_run(conn, run)
            return _append(conn, run.thread_id, message, run.id, mid, created)

        seq = await self._write(body)
        return c.stored(
            message, thread_id=run.thread_id, run_id=run.id, mid=mid, seq=seq, created=created
        )

    async def update_run(self, run: RunRecord) -> bool:
        """Store the run's new status, usage, timings and error; False if it had ended.
        Ending it keeps its live batches as its final log (see ``_compact``)."""

        def body(conn: sqlite3.Connection) -> bool:
            if _lock_run(conn, _SQL.lock_active_run_to_write, (run.id,)) is None:
                return False
            _update_run(conn, run)
            if run.status not in c.ACTIVE_STATUSES:
                _compact(conn, run.id)
            return True

        return await self._write(body)

    async def finish_run(
        self,
        run: RunRecord,
        events: list[bytes],
        messages: Sequence[tuple[ChatMessage, str]] = (),
    ) -> bool:
        """Append ``messages``, store the final record and the event log in one transaction;
        False (nothing stored) once the run is not ours and active."""
        created = c.now()

        def body(conn: sqlite3.Connection) -> bool:
            if _lock_run(conn, _SQL.lock_own_run_to_write, (run.id, self.owner)) is None:
                return False
            for message, mid in messages:
                _append(conn, run.thread_id, message, run.id, mid, created)
            _update_run(conn, run)
            _save_events(conn, run.id, events)
            return True

        return await self._write(body)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None."""
        sql = _SQL.select_run
        row = await self._run(lambda conn: conn.execute(sql, (run_id,)).fetchone())
        return c.run_from_row(row) if row else None

    async def list_active_runs(self) -> list[RunRecord]:
        """Runs still queued or in progress."""
        sql = _SQL.select_active_runs
        rows = await self._run(lambda conn: conn.execute(sql).fetchall())
        return [c.run_from_row(row) for row in rows]

    async def renew_leases(self, run_ids: Collection[str]) -> set[str]:
        """Extend the leases of those of ``run_ids`` this store owns and still runs."""
        if not run_ids:
            return set()
        params = (self.lease_seconds, self.owner, c.dumps(list(run_ids)))

        def body(conn: sqlite3.Connection) -> set[str]:
            return {row[0] for row in conn.execute(_SQL.renew_leases, params).fetchall()}

        return await self._write(body)

    async def expire_leases(self, thread_id: str) -> list[RunRecord]:
        """Fail the thread's active run whose lease lapsed; returns it (if any)."""
        return await self._write(lambda cx: _expire(cx, thread_id))

    def _insert_run(self, conn: sqlite3.Connection, run: RunRecord) -> None:
        _expire(conn, run.thread_id)
        try:
            conn.execute(_SQL.insert_run, (*c.run_row(run), self.owner, self.lease_seconds))
        except sqlite3.IntegrityError as exc:
            text = str(exc)
            if "FOREIGN KEY" in text:
                raise NotFound("thread", run.thread_id) from None
            if "runs.thread_id" in text:
                raise Conflict(f"thread {run.thread_id!r} already has an active run") from None
            raise

    async def save_run_events(self, run_id: str, events: list[bytes]) -> None:
        """Persist a finished run's encoded event log (replaces an earlier one)."""
        await self._write(lambda cx: _save_events(cx, run_id, events))

    async def load_run_events(self, run_id: str) -> list[bytes] | None:
        """The saved event log, or None when the run has none (yet)."""
        sql = _SQL.load_events
        row = await self._run(lambda conn: conn.execute(sql, (run_id,)).fetchone())
        return c.split_events(bytes(row[0])) if row else None

    async def append_run_events(self, run_id: str, first_seq: int, events: list[bytes]) -> bool:
        """Append a batch of a running run's events; False once the run is not ours and active."""
        last_seq = first_seq + len(events) - 1
        params = (run_id, first_seq, last_seq, c.join_events(events), run_id, self.owner)

        def body(conn: sqlite3.Connection) -> bool:
            return conn.execute(_SQL.append_batch, params).fetchone() is not None

        return await self._write(body)

    async def load_run_events_after(self, run_id: str, after: int) -> RunEventsPage:
        """The run's stored events past ``after`` (final log, else live batches)."""
        sql, params = _SQL.load_events_after, (run_id, run_id, after)
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return c.page_from_rows(rows, after)

    def run_event_notices(self, run_id: str) -> AbstractAsyncContextManager[RunEventNotices]:
        """No notifications in one process (its own runs are followed in memory): timeouts."""
        del run_id
        return _notify.polling()


class _SchemaTooNew(Exception):
    """The file's schema was written by a newer gateway: this one must not touch it."""


def _close_made(connecting: Future[_Opened]) -> None:
    """Close the connection (and lock) ``connecting`` made, if it made one (nobody awaits
    it any more)."""
    if not connecting.cancelled() and connecting.exception() is None:
        conn, lock = connecting.result()
        conn.close()
        if lock is not None:
            os.close(lock)


def _probe(conn: sqlite3.Connection) -> None:
    """A write as small as they come (one page, ``schema_version``'s), for ``ping``: a real
    change, undone in the same transaction (SQLite writes nothing for ``SET x = x``)."""
    conn.execute("UPDATE schema_version SET version = version + 1")
    conn.execute("UPDATE schema_version SET version = version - 1")


def _append(
    conn: sqlite3.Connection,
    thread_id: str,
    message: ChatMessage,
    run_id: str | None,
    message_id: str,
    created: float,
) -> int:
    row = conn.execute(_SQL.next_seq, (thread_id,)).fetchone()
    if row is None:
        raise NotFound("thread", thread_id)
    seq = int(row[0])
    values = (message_id, thread_id, seq, created, *c.message_row(message), run_id)
    conn.execute(_SQL.insert_message, values)
    return seq


def _lock_run(conn: sqlite3.Connection, sql: str, params: tuple[str, ...]) -> str | None:
    # Within BEGIN IMMEDIATE: no other writer until the commit, so the check holds.
    row = conn.execute(sql, params).fetchone()
    return str(row[0]) if row else None


def _insert_thread(conn: sqlite3.Connection, thread: ThreadRecord) -> None:
    conn.execute(_SQL.insert_thread, c.thread_row(thread))


def _expire(conn: sqlite3.Connection, thread_id: str) -> list[RunRecord]:
    params = (c.now(), c.dumps(INTERRUPTED), thread_id, LEGACY_LEASE_SECONDS)
    rows = conn.execute(_SQL.expire_leases, params).fetchall()
    expired = [c.run_from_row(row) for row in rows]
    for run in expired:
        _compact(conn, run.id)
    return expired


def _compact(conn: sqlite3.Connection, run_id: str) -> None:
    """Store the live batches of a run that ended elsewhere as its final log, in the
    transaction that ends it (as ``postgres._compact``)."""
    rows = conn.execute(_SQL.load_events_after, (run_id, run_id, 0)).fetchall()
    if rows:
        _save_events(conn, run_id, c.page_from_rows(rows, 0).events)


def _update_run(conn: sqlite3.Connection, run: RunRecord) -> None:
    row = c.run_row(run)
    values = (run.status, run.manifest_version, run.completed_at, *row[7:], run.id)
    conn.execute(_SQL.update_run, values)


def _save_events(conn: sqlite3.Connection, run_id: str, events: list[bytes]) -> None:
    conn.execute(_SQL.save_events, (run_id, c.join_events(events)))
    conn.execute(_SQL.delete_batches, (run_id,))


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    current = int(row[0]) if row else 0
    if row is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (0)")
    if current > len(_SQL.migrations):
        raise _SchemaTooNew(
            f"the database schema is version {current}, newer than this gateway "
            f"({len(_SQL.migrations)}); upgrade the gateway"
        )
    for statements in _SQL.migrations[current:]:
        for statement in statements:
            conn.execute(statement)
    conn.execute("UPDATE schema_version SET version = ?", (len(_SQL.migrations),))


@register_store("sqlite")
def _factory(url: str, root: Path, lease_seconds: float) -> SQLiteStore:
    return SQLiteStore(sqlite_path(url, root), lease_seconds=lease_seconds, exclusive=True)
