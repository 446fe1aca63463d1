"""SQLite and file helpers of the knowledge index: WAL, write transactions, safe reads.

Imports structlog and the standard library only.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import structlog

__all__ = ["PAUSE", "enable_wal", "read_regular", "write_transaction"]

log = structlog.get_logger("gateway.knowledge")


def enable_wal(db: sqlite3.Connection, wait: float = 5.0) -> None:
    """Switch ``db`` to WAL, retrying while another connection holds the file.

    Switching a new file to WAL needs it alone and does not call the busy
    handler: processes opening one new cache at once get 'database is locked'
    straight away.
    """
    _while_busy(db, "PRAGMA journal_mode = WAL", time.monotonic() + wait, 0.01)


@contextlib.contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on error.

    IMMEDIATE takes the write lock up front, waiting ``busy_timeout`` for another
    process: a deferred transaction that reads first and then writes fails at
    once with 'database is locked' when another connection wrote meanwhile.
    """
    _begin_immediate(db)
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # SQLite already rolled back on some errors (disk full, I/O): rolling back
        # again would hide the cause. A failed COMMIT may leave the transaction
        # open, and every later BEGIN would fail: it is rolled back.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


_POLL = 0.002  # seconds between two tries of a waiting writer


def _begin_immediate(db: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, trying again every 2 ms for up to ``busy_timeout``.

    SQLite's own busy handler sleeps up to 100 ms between tries, so it could miss
    every pause of a long write done in batches (``PAUSE`` between them) and give
    up; polling this often takes the lock in the first pause.
    """
    (timeout_ms,) = db.execute("PRAGMA busy_timeout").fetchone()
    deadline = time.monotonic() + timeout_ms / 1000
    db.execute("PRAGMA busy_timeout = 0")
    try:
        _while_busy(db, "BEGIN IMMEDIATE", deadline, _POLL)
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")


def _while_busy(db: sqlite3.Connection, statement: str, deadline: float, pause: float) -> None:
    """Run ``statement``, again every ``pause`` seconds while the file is busy (locked by
    another connection), until ``deadline`` (monotonic); other errors raise at once."""
    while True:
        try:
            db.execute(statement)
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
        else:
            return


PAUSE = 0.01
"""Seconds a long write waits between its transactions: the others' turn."""


def read_regular(path: Path, limit: int | None = None) -> bytes:
    """The bytes of the regular file at the resolved ``path``.

    With ``limit``, at most ``limit + 1`` bytes are read: a file that grew past
    the caller's size cap since its ``stat`` costs no more memory than that, and
    the caller sees it is too large by the length.

    Opened without following a final symlink and without blocking (a FIFO swapped
    in since the ``stat``), then checked through the descriptor: still a regular
    file, and still at ``path`` (no directory on the way was swapped for a symlink).

    Raises:
        OSError: it cannot be opened or read (``strerror`` says why: permission
            denied, out of descriptors, not a regular file, moved since).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(0, "not a regular file (swapped since it was found)")
        try:
            real = str(Path(f"/proc/self/fd/{fd}").readlink())
        except OSError:  # no /proc: the O_NOFOLLOW open of a resolved path has to do
            real = str(path)
        if real != str(path):
            log.warning("knowledge_file_moved", file=str(path))
            raise OSError(0, "moved, or a folder on its path swapped for a symlink")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read() if limit is None else fh.read(limit + 1)
    finally:
        os.close(fd)
