"""Which file a SQLite connection serves: checked (one ``stat``) before every call.

Private to ``gateway.store``. A file deleted under a live connection still
takes its writes: into the unlinked inode and a ``-wal`` that SQLite later
replays into whatever file comes next at the path, so they would be
acknowledged and lost, or corrupt that file. ``SQLiteFile`` remembers the
identities (device, inode) of the files a connection opened (the database,
its ``-wal`` and ``-shm``) and tells the store whether the path still names
them (``check``), and drops the old journal before a file put in its place is
opened (``drop_journal``). Imports ``gateway.store._failures``.
"""

from __future__ import annotations

from pathlib import Path

from gateway.store._failures import FileChanged

__all__ = ["SQLiteFile"]

_JOURNAL = ("-wal", "-shm")


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


class SQLiteFile:
    """The database file at ``path`` and the files its open connection uses.

    Used from the store's thread only.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._opened: dict[str, tuple[int, int]] = {}  # suffix ("", "-wal", "-shm") -> identity

    def _at(self, suffix: str) -> Path:
        return self.path.with_name(self.path.name + suffix)

    def remember(self) -> None:
        """Note the files a connection just opened (after its first write: the -wal is made)."""
        self._opened.clear()
        for suffix in ("", *_JOURNAL):
            found = _identity(self._at(suffix))
            if found is not None:
                self._opened[suffix] = found

    def check(self) -> bool:
        """True while ``path`` names the file opened; False when another file is there (a
        backup restored in its place: to be opened instead).

        Raises:
            FileChanged: no file is there (deleted): every call fails until one is put back.
        """
        found = _identity(self.path)
        if found is None:
            raise FileChanged(
                "the file was deleted while the gateway used it; put it back (restore a "
                "backup) or restart the gateway",
                deleted=True,
            )
        return found == self._opened.get("")

    def drop_journal(self) -> None:
        """Remove the ``-wal`` and ``-shm`` left by the file that was at ``path`` (the same
        inodes as opened), once its connection is closed: SQLite would replay that journal
        into the file now there. A journal that came with the new file stays."""
        for suffix in _JOURNAL:
            side = self._at(suffix)
            if suffix in self._opened and self._opened[suffix] == _identity(side):
                side.unlink(missing_ok=True)
