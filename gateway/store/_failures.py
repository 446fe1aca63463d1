"""How the embedded store says its database failed: one line for the operator, words for a client.

Private to ``gateway.store``. A SQLite file can fail while the gateway serves
(damaged pages, a disk I/O error, a full disk, a read-only remount, the file
deleted or replaced under it). ``Health`` turns each such failure into
``NotReady`` (503) whose message says, in words, what failed (the disk is
full, the file is damaged): never SQL, a table or a path. The operator gets
one ERROR ``store.failed`` line naming the file and SQLite's own error; while
the same failure lasts its repeats are counted, not logged (a full disk fails
every request), and the first write that commits again is one WARNING
``store.recovered`` line saying how many failed meanwhile. A damaged file
(``SQLITE_CORRUPT``, ``SQLITE_NOTADB``) stays failing until it is replaced (a
backup restored in its place): some of its pages may still read and write,
but nothing it holds can be trusted, so a write that happens to commit does
not end the failure. Imports structlog and ``gateway.errors``.
"""

from __future__ import annotations

import errno
import sqlite3
import time
from pathlib import Path

import structlog

from gateway.errors import NotReady

__all__ = ["FileChanged", "Health", "is_failure"]

_logger = structlog.get_logger("gateway.store")

# SQLite's primary result code (the extended name's first two words) -> what failed, as
# a client may read it.
# A damaged file: only replacing it ends the failure.
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_WHAT = {
    "SQLITE_CORRUPT": "its database file is damaged",
    "SQLITE_NOTADB": "its database file is damaged",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_READONLY": "its database cannot be written",
    "SQLITE_IOERR": "a disk I/O error",
    "SQLITE_CANTOPEN": "its database file cannot be opened",
    "SQLITE_BUSY": "its database is locked",
    "SQLITE_LOCKED": "its database is locked",
    "SQLITE_PERM": "its database cannot be written",
    "SQLITE_AUTH": "its database cannot be written",
}


class FileChanged(Exception):
    """The database file was deleted (``deleted``) or could not be reopened after it was
    replaced: the store serves nothing from the file it opened any more."""

    def __init__(self, message: str, *, deleted: bool) -> None:
        super().__init__(message)
        self.deleted = deleted


def is_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the database failing (503), not a bug in a statement (500).

    ``IntegrityError`` (a rule the store maps itself), ``ProgrammingError`` (SQL
    misuse), ``DataError`` and ``NotSupportedError`` are the gateway's bugs.
    """
    if isinstance(exc, FileChanged | OSError):  # OSError: the file cannot even be stat'ed
        return True
    bugs = (
        sqlite3.IntegrityError,
        sqlite3.ProgrammingError,
        sqlite3.DataError,
        sqlite3.NotSupportedError,
    )
    return isinstance(exc, sqlite3.Error) and not isinstance(exc, bugs)


def _describe(exc: BaseException) -> tuple[str, str]:
    """SQLite's error name and what failed in a client's words."""
    if isinstance(exc, FileChanged):
        if exc.deleted:
            return "FILE_DELETED", "its database file was deleted"
        return "FILE_UNUSABLE", "its database file cannot be used"
    if isinstance(exc, OSError):
        return errno.errorcode.get(exc.errno or 0, type(exc).__name__), "a disk I/O error"
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    primary = "_".join(name.split("_")[:2])
    return name, _WHAT.get(primary, "a database error")


class Health:
    """Whether the store's file is failing, said once per failure and once on recovery.

    Used on the event loop only (``SQLiteStore._run``), so it needs no lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failing: str | None = None  # SQLite's error, while the store fails
        self.what = ""  # what failed, in a client's words
        self._damaged = False
        self._repeats = 0
        self._since = 0.0

    @property
    def damaged(self) -> bool:
        """The file is failing as damaged: only a file put in its place ends that."""
        return self.failing is not None and self._damaged

    def failed(self, exc: BaseException) -> NotReady:
        """Record ``exc`` (logged if it is new) and return the ``NotReady`` to raise."""
        code, what = _describe(exc)
        error = str(exc)
        if error != self.failing:
            if self.failing is None:
                self._since, self._repeats = time.monotonic(), 0
            _logger.error("store.failed", database=str(self.path), error=error, code=code)
            self.failing, self.what = error, what
            self._damaged = code.startswith(_DAMAGED)
        else:
            self._repeats += 1
        return NotReady(f"the thread store failed: {what}; retry later")

    def ok(self, *, write: bool, reopened: bool) -> None:
        """A call succeeded: a ``write`` committed (unless the file is damaged), or it ran on
        a file ``reopened`` in place of the failing one, so the store serves again (said once).
        """
        if self.failing is None or not (reopened or (write and not self._damaged)):
            return
        _logger.warning(
            "store.recovered",
            database=str(self.path),
            error=self.failing,
            failed_again=self._repeats,
            seconds=round(time.monotonic() - self._since, 1),
        )
        self.failing, self.what, self._damaged = None, "", False
