"""File helpers of the server: private files it writes, user files it reads safely.

``private_file``: the thread store and the knowledge cache. Sandboxed actions
run as another uid (or, in containers, behind Landlock), so mode 0600 keeps
every user's conversations out of their reach. SQLite gives its ``-wal`` and
``-shm`` files the database file's mode, so creating the database file first
with 0600 covers them too.

``open_regular``: files from a Git checkout (manifests, code, knowledge files)
that anyone who can push may have turned into a FIFO or a symlink to
``/dev/zero`` since they were checked: opened without blocking and refused
unless regular, so a reload's worker thread never waits forever on a pipe.

``resolved``: a path with its symlinks resolved that never raises, for files
swapped since they were checked for a symlink loop.

Imports nothing of the gateway.
"""

from __future__ import annotations

import os
import stat
from io import BufferedReader
from pathlib import Path

__all__ = ["NotRegularFile", "open_regular", "private_file", "resolved"]


class NotRegularFile(OSError):
    """A path to read is a FIFO, device, socket or directory (``strerror`` says so)."""


def open_regular(path: Path) -> BufferedReader:
    """Open ``path`` (symlinks followed) for reading in binary, if it is a regular file.

    ``O_NONBLOCK``: opening a FIFO no one writes to would otherwise block until
    someone does; the descriptor is then checked with ``fstat``, so the open file
    is the regular file (no race with a swap after a ``stat`` of the path).

    Raises:
        NotRegularFile: it is a FIFO, a device, a socket or a directory.
        OSError: it cannot be opened.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(0, "not a regular file (a FIFO, device, socket or directory)")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


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


def resolved(path: Path) -> Path:
    """``path`` absolute with its symlinks resolved; when they loop, its folder's resolved
    (the loop itself kept), else ``path`` absolute as it is.

    ``Path.resolve`` raises ``RuntimeError`` on a symlink loop: a file swapped for
    one after validation must fail the one read (its ``stat`` fails with ``ELOOP``,
    so it is missing), not every caller that merely names it. Its folder is
    resolved still, so a file in a symlinked root (git-sync) stays inside it.
    """
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        pass
    try:
        return path.parent.resolve() / path.name
    except (RuntimeError, OSError):
        return path.absolute()
