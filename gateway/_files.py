"""Files only the server's user may read: the thread store and the knowledge cache.

Sandboxed actions run as another uid (or, in containers, behind Landlock), so
mode 0600 keeps every user's conversations out of their reach. SQLite gives
its ``-wal`` and ``-shm`` files the database file's mode, so creating the
database file first with 0600 covers them too. Imports nothing of the gateway.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["private_file"]


def private_file(path: Path) -> Path:
    """Create ``path`` (and missing parents, 0700) as a 0600 file; tighten it if it exists.

    Returns ``path`` for chaining into ``sqlite3.connect``.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600))
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if candidate.exists():
            candidate.chmod(0o600)
    return path
