"""One cache file per schema version of the knowledge index, held while in use.

Gateways of several versions may share a cache directory (replicas on one
volume during a rolling upgrade, ``gateway index`` run by CI next to a running
server). Each schema version keeps its own file, ``knowledge.vN.sqlite3``, so
no version ever drops or rewrites the tables another one is using. A process
using version N holds a shared ``flock`` on ``knowledge.vN.lock`` from before it
opens the database until it closes it (or exits: the kernel drops the lock of a
killed process too). ``remove_unused`` removes another version's files only
under an exclusive lock on its lock file, taken without waiting: it cannot be
had while any process uses that version, and a process opening that version
meanwhile waits for the removal to end, sees its lock file gone and starts a
fresh one (``hold`` checks the file it locked is still the one at the path).

A cache written by a gateway older than this scheme (``knowledge.sqlite3``,
no version in its name) is never removed: those gateways take no lock, so
nothing tells whether one still uses it.

Imports the standard library only.
"""

from __future__ import annotations

import fcntl
import os
import re
from pathlib import Path

__all__ = ["SIDECARS", "cache_file", "hold", "remove_unused"]

SIDECARS = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database."""

_NAME = re.compile(r"knowledge\.v(\d{1,9})\.(?:sqlite3(?:-wal|-shm|-journal)?|lock)")


def cache_file(cache_dir: Path, version: int) -> Path:
    """The database of schema ``version`` in ``cache_dir``."""
    return cache_dir / f"knowledge.v{version}.sqlite3"


def _lock_file(cache_dir: Path, version: int) -> Path:
    return cache_dir / f"knowledge.v{version}.lock"


def hold(cache_dir: Path, version: int) -> int:
    """Say that this process uses schema ``version`` in ``cache_dir`` until the descriptor
    returned is closed (a shared lock on its lock file; the directory is made, 0700).

    Waits only while another process removes that version's files (a moment).

    Raises:
        OSError: the directory or the lock file cannot be made (a read-only volume).
    """
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = _lock_file(cache_dir, version)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            if _still_at(fd, lock):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # removed while we waited: lock the new one


def remove_unused(cache_dir: Path, version: int) -> list[int]:
    """Remove the files of every schema version but ``version`` that no process holds.

    Returns the versions removed. A version in use (its lock held) is left alone;
    so is anything that cannot be removed (it is tried again next time).
    """
    try:
        names = [path.name for path in cache_dir.iterdir()]
    except OSError:
        return []
    others = {int(m[1]) for name in names if (m := _NAME.fullmatch(name))} - {version}
    removed = []
    for other in sorted(others):
        lock = _lock_file(cache_dir, other)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not _still_at(fd, lock):
                continue
            db = cache_file(cache_dir, other)
            for stale in (db, *(db.with_name(db.name + s) for s in SIDECARS)):
                stale.unlink(missing_ok=True)
            lock.unlink()  # last: a process waiting on it then starts afresh
            removed.append(other)
        except OSError:  # BlockingIOError: in use
            continue
        finally:
            os.close(fd)
    return removed


def _still_at(fd: int, path: Path) -> bool:
    """Whether the file open as ``fd`` is still the one at ``path``."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
