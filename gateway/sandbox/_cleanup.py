# os.path on purpose: the zygote imports this, and pathlib would grow every fork.
# ruff: noqa: PTH101, PTH106
"""Removing a call's directory, including the folders the call locked.

``shutil.rmtree`` gives up on a folder it cannot list or change: a call that
ran ``chmod 0`` (or took away the write bit) on folders of its own directory
left them, and everything in them, on disk for as long as the zygote lived
(and, when the gateway is not root, after it: the zygote and the server have
the call's uid then, and no capability overrides the mode). Whoever removes
the tree owns those folders (same uid, or uid 0 without capabilities under
``calls_run_as: root``), so giving them back their owner's bits is allowed; a
symbolic link is never followed (the walk is by descriptor, race-free: another
call with the same uid may swap a folder for a link to anywhere while it runs).
Nor does a tree of any depth end the zygote (see ``_MAX_DEPTH``). Only called
once the call and all its processes are gone. With a ``budget``, ``remove_tree``
gives up after that many entries, so the zygote can hand a large tree to a remover
process instead of blocking on it (``zygote._Zygote.remove``). Imports only the
standard library.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat

__all__ = ["remove_tree"]


def remove_tree(path: str, budget: int | None = None) -> bool:
    """Remove ``path`` and everything below it, best effort (never raises).

    Walks the tree by descriptor, without recursion and with at most
    ``_MAX_DEPTH`` folders open (see ``_remove_below``), giving each folder it
    enters its owner's read, write and search bits (folders only, symbolic
    links never followed).

    Args:
        path: the folder to remove.
        budget: give up once more than this many entries were listed (None: no
            bound); what is left stays for another ``remove_tree``.

    Returns:
        False if the budget ran out first, else True (``path`` is gone, or what
        is left could not be removed).
    """
    if not _remove_below(path, budget):
        return False
    with contextlib.suppress(OSError):
        os.rmdir(path)
    return True


_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""A folder by descriptor: a symbolic link (or anything else) in its place fails the open."""
_MAX_DEPTH = 32
"""Folders ``_remove_below`` holds open at once. A call can nest folders thousands deep
(``mkdir a; cd a`` in a loop): ``shutil.rmtree`` recursed once per level and raised
``RecursionError`` (not an ``OSError``, so not ignored) past about a thousand, which
ended the zygote, failed every call running on it, and left the tree on disk for good."""


def _remove_below(path: str, budget: int | None = None) -> bool:
    """Empty the folder ``path``: files unlinked, folders emptied depth first, then removed.

    A folder found ``_MAX_DEPTH`` levels down is not entered but moved up to
    ``path`` under a fresh name (``renameat``, by descriptor) and emptied from
    there later: a tree of any depth costs neither recursion nor more than
    ``_MAX_DEPTH`` descriptors. False if more than ``budget`` entries (listed, in
    all folders) were found before the end: it stops there.
    """
    try:
        top = _opened(os.open(path, _PATH_FLAGS))
    except OSError:
        return True
    if top is None:
        return True
    prefix = f".gw-removing-{os.urandom(6).hex()}-"
    moved = 0
    left = [budget]  # entries that may still be listed (None: no bound)
    frames: list[tuple[int, str, list[tuple[str, bool]]]] = [(top, "", _entries(top, left))]
    try:
        while frames:
            if left[0] is not None and left[0] < 0:
                return False
            fd, name, entries = frames[-1]
            if not entries:
                frames.pop()
                os.close(fd)
                if frames:
                    with contextlib.suppress(OSError):
                        os.rmdir(name, dir_fd=frames[-1][0])
                continue
            entry, is_folder = entries.pop()
            if not is_folder:
                with contextlib.suppress(OSError):
                    os.unlink(entry, dir_fd=fd)
                continue
            with contextlib.suppress(OSError):
                os.rmdir(entry, dir_fd=fd)  # most folders are empty by now
                continue
            try:
                folder = os.open(entry, _PATH_FLAGS, dir_fd=fd)
            except OSError:
                continue  # gone, or no longer a folder
            if len(frames) < _MAX_DEPTH:
                child = _opened(folder)
                if child is not None:
                    frames.append((child, entry, _entries(child, left)))
                continue
            moved += 1
            try:
                # Moving a folder to another parent needs its own write bit: give it back.
                _unlock(folder)
                os.rename(entry, f"{prefix}{moved}", src_dir_fd=fd, dst_dir_fd=top)
            except OSError:
                continue
            finally:
                os.close(folder)
            frames[0][2].append((f"{prefix}{moved}", True))
    finally:
        for fd, _, _ in frames:
            os.close(fd)
    return True


def _entries(folder: int, left: list[int | None]) -> list[tuple[str, bool]]:
    """(name, is a folder) of what ``folder`` (a readable descriptor) holds; links are not.

    ``left[0]``: how many entries may still be listed (None: all); one more than that
    is read at most, and the count is taken off it (below 0: the budget ran out).
    """
    try:
        with os.scandir(folder) as found:
            listed = found if left[0] is None else itertools.islice(found, left[0] + 1)
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in listed]
    except OSError:
        return []
    if left[0] is not None:
        left[0] -= len(entries)
    return entries


def _unlock(folder: int) -> None:
    """Give ``folder`` (an ``O_PATH`` descriptor) its owner's read, write and search bits."""
    mode = os.fstat(folder).st_mode
    if mode & stat.S_IRWXU != stat.S_IRWXU:
        # fchmod refuses O_PATH descriptors; their /proc link is this inode, not a name.
        os.chmod(f"/proc/self/fd/{folder}", stat.S_IMODE(mode) | stat.S_IRWXU)


def _opened(folder: int) -> int | None:
    """Give ``folder`` (an ``O_PATH`` descriptor, closed here) its owner's bits; a readable
    descriptor of it, or None if that failed."""
    try:
        _unlock(folder)
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=folder)
    except OSError:
        return None
    finally:
        os.close(folder)
