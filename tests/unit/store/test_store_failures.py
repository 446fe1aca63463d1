"""How the embedded store words a failing database: for the client, once for the operator."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.errors import NotReady
from gateway.store import sqlite as sqlite_store
from gateway.store._failures import Health, is_failure


def _error(tmp_path: Path, setup: str, statement: str, *, uri: str = "") -> sqlite3.Error:
    """The error SQLite itself raises for ``statement`` (``uri``: how the file is opened)."""
    path = tmp_path / "x.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(setup)
    conn.close()
    target = f"{path.as_uri()}{uri}"
    conn = sqlite3.connect(target, uri=True)
    try:
        conn.execute(statement)
    except sqlite3.Error as exc:
        return exc
    finally:
        conn.close()
    raise AssertionError(f"{statement} did not fail")


def test_a_read_only_database_is_said_in_words(tmp_path: Path) -> None:
    """SQLite's "attempt to write a readonly database" (a file opened read-only here; a
    read-only remount cannot be made under an open file) is a 503 saying it cannot be
    written, and one ERROR line with SQLite's own text and code."""
    exc = _error(tmp_path, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)", uri="?mode=ro")
    assert is_failure(exc)
    health = Health(tmp_path / "x.db")
    with capture_logs() as logs:
        failed = health.failed(exc)
    assert isinstance(failed, NotReady)
    assert failed.message == "the thread store failed: its database cannot be written; retry later"
    assert logs == [
        {
            "event": "store.failed",
            "log_level": "error",
            "database": str(tmp_path / "x.db"),
            "error": "attempt to write a readonly database",
            "code": "SQLITE_READONLY",
        }
    ]


def test_a_statement_the_gateway_got_wrong_is_no_store_failure(tmp_path: Path) -> None:
    """A bug (bad SQL, a constraint the store does not map) stays a 500, not a 503 that
    would send an operator looking at a disk that is fine."""
    setup = "CREATE TABLE t (x UNIQUE); INSERT INTO t VALUES (1)"
    assert not is_failure(_error(tmp_path, setup, "INSERT INTO t VALUES (1)"))
    assert not is_failure(sqlite3.ProgrammingError("Incorrect number of bindings supplied"))


@pytest.mark.parametrize(
    ("write", "reopened", "recovered"),
    [(False, False, False), (True, False, False), (False, True, True)],
)
def test_a_damaged_file_recovers_only_once_replaced(
    tmp_path: Path, write: bool, reopened: bool, recovered: bool
) -> None:
    """A damaged file stays failing when a write happens to commit on its healthy pages (it
    would flap between failed and recovered with every request); replacing it ends it."""
    health = Health(tmp_path / "x.db")
    damaged = sqlite3.DatabaseError("database disk image is malformed")
    damaged.sqlite_errorname = "SQLITE_CORRUPT"  # type: ignore[attr-defined]
    with capture_logs() as logs:
        health.failed(damaged)
        health.ok(write=write, reopened=reopened)
    assert (health.failing is None) is recovered
    assert [entry["event"] for entry in logs] == (
        ["store.failed", "store.recovered"] if recovered else ["store.failed"]
    )


def test_repeats_are_counted_and_a_commit_ends_the_failure(tmp_path: Path) -> None:
    """The same failure again is not logged again (a full disk fails every request); a
    different one is; the first commit after them says how many failed meanwhile."""
    health = Health(tmp_path / "x.db")
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
    io = sqlite3.OperationalError("disk I/O error")
    io.sqlite_errorname = "SQLITE_IOERR_WRITE"  # type: ignore[attr-defined]
    with capture_logs() as logs:
        for exc in (full, full, full, io):
            message = health.failed(exc).message
        health.ok(write=False, reopened=False)  # a read says nothing of writes
        assert health.failing == "disk I/O error"
        health.ok(write=True, reopened=False)
    assert message == "the thread store failed: a disk I/O error; retry later"
    assert [(e["event"], e.get("error"), e.get("failed_again")) for e in logs] == [
        ("store.failed", "database or disk is full", None),
        ("store.failed", "disk I/O error", None),
        ("store.recovered", "disk I/O error", 2),
    ]


@pytest.mark.parametrize(("code", "writes"), [("SQLITE_CORRUPT", 0), ("SQLITE_FULL", 1)])
async def test_ready_probes_write_into_a_failing_file_sparingly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: str, writes: int
) -> None:
    """While the file fails, /ready's ping writes a tiny transaction to see a freed disk
    with no traffic: it did so on every probe (fsync included), even into a file known
    damaged, which only a replaced file ends. A damaged file gets no write (only whether
    it was replaced is looked at); a failing one at most one per ``_PROBE_GAP``."""
    store = sqlite_store.SQLiteStore(tmp_path / "gateway.db")
    await store.open()
    probes: list[object] = []

    def error() -> sqlite3.DatabaseError:
        failure = sqlite3.OperationalError("database or disk is full")
        failure.sqlite_errorname = code  # type: ignore[attr-defined]
        return failure

    def still_full(conn: sqlite3.Connection) -> None:
        probes.append(conn)
        raise error()

    monkeypatch.setattr(sqlite_store, "_probe", still_full)
    try:
        store._health.failed(error())
        for _ in range(5):
            assert await store.ping() is False
    finally:
        await store.close()
    assert len(probes) == writes
