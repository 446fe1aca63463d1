"""The thread store and the knowledge cache are files only the server's user can read."""

from __future__ import annotations

import stat
from pathlib import Path

from gateway._files import private_file
from gateway.knowledge import KnowledgeIndex
from gateway.providers.base import ChatMessage
from gateway.store import open_store


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_file_creates_0600_and_tightens_an_existing_file(tmp_path: Path) -> None:
    """A new file is 0600 in a new 0700 folder; an old world-readable one is tightened."""
    created = private_file(tmp_path / "new" / "db.sqlite3")
    assert mode(created) == 0o600
    assert mode(created.parent) == 0o700
    old = tmp_path / "old.db"
    old.write_text("x")
    old.chmod(0o644)
    (tmp_path / "old.db-wal").write_text("")
    (tmp_path / "old.db-wal").chmod(0o644)
    private_file(old)
    assert mode(old) == 0o600
    assert mode(tmp_path / "old.db-wal") == 0o600


async def test_sqlite_store_files_are_private(tmp_path: Path) -> None:
    """The SQLite thread store and its WAL are 0600, so sandboxed actions cannot read threads."""
    db = tmp_path / "var" / "gateway.db"
    store = open_store(f"sqlite:///{db}", root=tmp_path)
    await store.open()
    try:
        thread = await store.create_thread("support")
        await store.append_message(thread.id, ChatMessage(role="user", content="secret"))
        files = [p for p in db.parent.iterdir() if p.name.startswith("gateway.db")]
        assert db in files and any(p.name.endswith("-wal") for p in files)
        assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    finally:
        await store.close()


def test_knowledge_cache_is_private(tmp_path: Path) -> None:
    """The knowledge index's cache database and its lock file are 0600."""
    index = KnowledgeIndex(cache_dir=tmp_path / "cache")
    try:
        assert index.file is not None and mode(index.file) == 0o600
        assert mode(index.file.with_suffix(".lock")) == 0o600
    finally:
        index.close()
