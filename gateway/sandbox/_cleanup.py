# os.path on purpose: the zygote imports this, and pathlib would grow every fork.
# ruff: noqa: PTH101
"""Removing a call's directory, including the folders the call locked.

``shutil.rmtree`` gives up on a folder it cannot list or change: a call that
ran ``chmod 0`` (or took away the write bit) on folders of its own directory
left them, and everything in them, on disk for as long as the zygote lived
(and, when the gateway is not root, after it: the zygote and the server have
the call's uid then, and no capability overrides the mode). Whoever removes
the tree owns those folders (same uid, or uid 0 without capabilities under
``calls_run_as: root``), so giving them back their owner's bits is allowed.
Only called once the call and all its processes are gone. Imports only the
standard library.
"""

from __future__ import annotations

import contextlib
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


def _open_up(path: str) -> None:
    """``chmod u+rwx`` on ``path`` and every folder below it (iterative: any depth)."""
    stack = [path]
    while stack:
        folder = stack.pop()
        with contextlib.suppress(OSError):
            mode = os.lstat(folder).st_mode
            if not stat.S_ISDIR(mode):
                continue
            if mode & stat.S_IRWXU != stat.S_IRWXU:
                os.chmod(folder, stat.S_IMODE(mode) | stat.S_IRWXU)
            with os.scandir(folder) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
