"""A SQLite file that fails while the gateway serves: a real server, a real file, a real disk.

The disk fills up (a small tmpfs), the file is damaged in the middle of a run (pages
overwritten), deleted, replaced: each is a 503 saying in words what failed, one
ERROR line naming the file and SQLite's error, ``/ready`` 503 while it lasts, and
the gateway serving again by itself once the file is fixed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import ServerFactory
from httpx_sse import connect_sse

_OTHER = {"assistant": "other", "message": "hi"}


def _env(db: Path) -> dict[str, str]:
    """A gateway on SQLite file ``db``, logging JSON at INFO (the tests read its log)."""
    return {
        "GATEWAY_DATABASE_URL": f"sqlite:///{db}",
        "LOG_FORMAT": "json",
        "LOGGING_LEVEL": "INFO",
    }


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, to fill up; skipped where the kernel refuses to mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs CAP_SYS_ADMIN: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:  # lazily: the server is stopped after this fixture's test, not before
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until ``disk`` has not one byte left; returns it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == 28  # ENOSPC
    finally:
        os.close(fd)
    return filler


def _checkpoint(db: Path) -> None:
    """Move the file's -wal into it and empty the -wal, so the next write must grow a file
    (a -wal keeps its room once written; a write that fits in it needs no new space)."""
    side = sqlite3.connect(db)
    try:
        assert side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    finally:
        side.close()


def _logs(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]


def _errors(lines: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(event, database, error) of every ERROR line."""
    return [
        (line["event"], line.get("database", ""), line.get("error", ""))
        for line in lines
        if line["level"] in ("error", "critical")
    ]


def _assert_store_failed(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert (error["type"], error["message"]) == (
        "not_ready",
        f"the thread store failed: {what}; retry later",
    )


def test_a_full_disk_is_a_503_said_once_until_space_is_freed(
    small_disk: Path,
    gateway_server: ServerFactory,
    api_manifests: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A full disk under the SQLite file was a 503 quoting SQLite's text, logged nowhere
    (a 503 is no server error), and /ready stayed 200 (its SELECT 1 writes nothing); each
    request is now a 503 saying the disk is full, the log says it once at ERROR naming
    the file and SQLite's error, /ready is 503 meanwhile, and once space is freed /ready
    finds it (no request needed) and chats work again."""
    db = small_disk / "gateway.db"
    server = gateway_server(api_manifests, env=_env(db))
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/chat", json=_OTHER).status_code == 200
        _checkpoint(db)
        filler = _fill(small_disk)
        full = [c.post("/chat", json=_OTHER), c.post("/chat", json=_OTHER)]
        full_ready = c.get("/ready")
        filler.unlink()
        # /ready writes into a failing file at most every 2 s (_PROBE_GAP): poll it.
        deadline = time.monotonic() + 15
        while (freed_ready := c.get("/ready")).status_code != 200:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        again = c.post("/chat", json=_OTHER)
    server.stop()  # before capsys closes the stream the server logs to
    for response in full:
        _assert_store_failed(response, "the disk is full")
    assert full_ready.status_code == 503, full_ready.text
    assert freed_ready.status_code == 200, freed_ready.text
    assert again.status_code == 200, again.text
    lines = _logs(capsys)
    assert _errors(lines) == [("store.failed", str(db), "database or disk is full")]
    [recovered] = [line for line in lines if line["event"] == "store.recovered"]
    assert recovered["database"] == str(db) and recovered["failed_again"] >= 2
    assert not [line for line in lines if "exception" in line]


def _corrupt_messages(db: Path, backup: Path) -> None:
    """Back the file up, then overwrite the root pages of the ``messages`` table and its
    indexes with garbage, under the gateway's open connection."""
    _checkpoint(db)  # every page in the file itself, none newer in the -wal
    side = sqlite3.connect(db, isolation_level=None)
    try:
        copy = sqlite3.connect(backup)
        side.backup(copy)
        copy.close()
        size = side.execute("PRAGMA page_size").fetchone()[0]
        roots = [
            row[0]
            for row in side.execute(
                "SELECT rootpage FROM sqlite_schema WHERE tbl_name = 'messages'"
            )
        ]
        with db.open("r+b") as file:
            for root in roots:
                file.seek((root - 1) * size)
                file.write(b"\xff" * size)
        # Any commit by another connection makes the gateway's drop the pages it cached.
        side.execute("BEGIN IMMEDIATE")
        side.execute("UPDATE schema_version SET version = version + 1")
        side.execute("UPDATE schema_version SET version = version - 1")
        side.execute("COMMIT")
    finally:
        side.close()


def test_a_file_damaged_during_a_run_fails_the_run_stored_and_a_restored_file_is_served(
    tmp_path: Path,
    gateway_server: ServerFactory,
    api_manifests: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Pages of the SQLite file damaged while a run waits for its action: storing the tool's
    result fails, so the run fails ``not_ready`` (not a crash), and since the runs' pages
    still write, it is stored so; one ERROR line names the file and SQLite's error; /ready
    stays 503 (a damaged file is not trusted even where a write commits) until a backup
    is put in its place, which the gateway then opens and serves by itself."""
    db, backup = tmp_path / "gateway.db", tmp_path / "backup.db"
    server = gateway_server(api_manifests, env=_env(db))
    body = {"assistant": "helper", "message": "wait 1 seconds (slow)", "stream": True}
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.Client(base_url=server.url, timeout=30) as c:
        with connect_sse(c, "POST", "/chat", json=body) as source:
            for sse in source.iter_sse():
                events.append((sse.event, json.loads(sse.data)))
                if sse.event == "thread.run.step.created":  # the action sleeps now
                    _corrupt_messages(db, backup)
        thread_id, run_id = events[0][1]["thread_id"], events[0][1]["run_id"]
        record = c.get(f"/threads/{thread_id}/runs/{run_id}")
        messages = c.get(f"/threads/{thread_id}/messages")
        damaged_ready = c.get("/ready")
        backup.replace(db)  # restored from the backup taken before the damage
        restored_ready = c.get("/ready")
        restored = c.get(f"/threads/{thread_id}/runs/{run_id}")
        again = c.post("/chat", json=_OTHER)
    server.stop()  # before capsys closes the stream the server logs to
    failed = [data for name, data in events if name == "thread.run.failed"]
    assert failed == [
        {
            "run_id": run_id,
            "error": {
                "type": "not_ready",
                "message": "the thread store failed: its database file is damaged; retry later",
            },
        }
    ]
    assert record.status_code == 200, record.text
    assert record.json()["status"] == "failed"
    assert record.json()["error"]["type"] == "not_ready"
    _assert_store_failed(messages, "its database file is damaged")
    assert damaged_ready.status_code == 503, damaged_ready.text
    assert restored_ready.status_code == 200, restored_ready.text
    # The backup's record (taken while the run went), not the damaged file's journal
    # replayed into it.
    assert restored.json()["status"] == "in_progress"
    assert again.status_code == 200, again.text
    lines = _logs(capsys)
    assert _errors(lines) == [("store.failed", str(db), "database disk image is malformed")]
    assert [line["event"] for line in lines if line["event"].startswith("store.")] == [
        "store.failed",
        "store.file_replaced",
        "store.file_reopened",
        "store.recovered",
    ]
    assert not [line for line in lines if "exception" in line]


def test_a_deleted_file_fails_every_call_until_it_is_put_back(
    tmp_path: Path,
    gateway_server: ServerFactory,
    api_manifests: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A SQLite file deleted under the gateway still took its writes (into the unlinked
    file and a -wal SQLite would later replay into whatever file came next): answers were
    acknowledged and lost. Every call is now a 503 saying the file was deleted, /ready
    says so without traffic, and putting the file back serves it again."""
    db = tmp_path / "gateway.db"
    kept = tmp_path / "kept.db"
    server = gateway_server(api_manifests, env=_env(db))
    with httpx.Client(base_url=server.url, timeout=30) as c:
        first = c.post("/chat", json=_OTHER)
        assert first.status_code == 200, first.text
        os.link(db, kept)
        db.unlink()
        deleted_ready = c.get("/ready")
        deleted = c.post("/chat", json=_OTHER)
        kept.rename(db)  # put back
        back_ready = c.get("/ready")
        again = c.post("/chat", json=_OTHER)
        history = c.get(f"/threads/{first.json()['thread_id']}/messages")
    server.stop()  # before capsys closes the stream the server logs to
    assert deleted_ready.status_code == 503, deleted_ready.text
    _assert_store_failed(deleted, "its database file was deleted")
    assert back_ready.status_code == 200, back_ready.text
    assert again.status_code == 200, again.text
    assert [m["role"] for m in history.json()] == ["user", "assistant"]
    lines = _logs(capsys)
    [(event, database, error)] = _errors(lines)
    assert (event, database) == ("store.failed", str(db))
    assert error.startswith("the file was deleted while the gateway used it")
