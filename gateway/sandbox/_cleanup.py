# os.path on purpose: the zygote imports this, and pathlib would grow every fork.
# ruff: noqa: PTH101
"""Removing a call's directory, including the folders the call locked.

``shutil.rmtree`` gives up on a folder it cannot list or change: a call that
ran ``chmod 0`` (or took away the write bit) on folders of its own directory
left them, and everything in them, on disk for as long as the zygote lived
(and, when the gateway is not root, after it: the zygote and the server have
the call's uid then, and no capability overrides the mode). Whoever removes
the tree owns those folders (same uid, or uid 0 without capabilities under
``calls_run_as: root``), so giving them back their owner's bits is allowed; a
symbolic link is never followed (by descriptor: race-free, see ``_open_up``).
Only called once the call and all its processes are gone. Imports only the
standard library.
"""

from __future__ import annotations

import os
import shutil
import stat

__all__ = ["remove_tree"]


def remove_tree(path: str) -> None:
    """Remove ``path`` and everything below it, best effort (never raises).

    Tries ``shutil.rmtree`` first; if the tree is still there, gives every
    folder below ``path`` its owner's read, write and search bits (folders
    only, symbolic links never followed) and tries once more.
    """
    shutil.rmtree(path, ignore_errors=True)
    if not os.path.lexists(path):
        return
    _open_up(path)
    shutil.rmtree(path, ignore_errors=True)


_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""A folder by descriptor: a symbolic link (or anything else) in its place fails the open."""


def _open_up(path: str) -> None:
    """``chmod u+rwx`` on ``path`` and every folder below it, never through a symbolic link.

    Walks by file descriptor (another call with the same uid may swap a folder for a
    link to anywhere while this runs): each folder is opened with ``_PATH_FLAGS``
    relative to its parent's descriptor, and its mode is read from and set on that
    descriptor's inode, never looked up by name again. Iterative, one descriptor open
    per level of the folder being opened up.
    """
    try:
        top = _enter(os.open(path, _PATH_FLAGS))
    except OSError:
        return
    if top is None:
        return
    frames = [top]
    try:
        while frames:
            fd, names = frames[-1]
            if not names:
                frames.pop()
                os.close(fd)
                continue
            try:
                child = os.open(names.pop(), _PATH_FLAGS, dir_fd=fd)
            except OSError:
                continue  # gone, or no longer a folder
            listed = _enter(child)
            if listed is not None:
                frames.append(listed)
    finally:
        for fd, _ in frames:
            os.close(fd)


def _enter(folder: int) -> tuple[int, list[str]] | None:
    """Give ``folder`` (an ``O_PATH`` descriptor, closed here) its owner's bits; a readable
    descriptor of it and the names of its subfolders, or None if that failed."""
    try:
        mode = os.fstat(folder).st_mode
        if mode & stat.S_IRWXU != stat.S_IRWXU:
            # fchmod refuses O_PATH descriptors; their /proc link is this inode, not a name.
            os.chmod(f"/proc/self/fd/{folder}", stat.S_IMODE(mode) | stat.S_IRWXU)
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder)
    except OSError:
        return None
    finally:
        os.close(folder)
    try:
        with os.scandir(fd) as entries:
            names = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        os.close(fd)
        return None
    return fd, names
