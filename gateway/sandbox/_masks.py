# os.path on purpose, like the zygote: this runs in it.
# ruff: noqa: PTH103, PTH114, PTH118, PTH208
"""Without Landlock: empty read-only mounts over what its policy keeps calls out of.

Landlock (``_fs_policy.landlock_rules``, ``read_guard``) keeps a call out of the
gateway root's files that are not action code or manifests (``.env`` with the
provider keys, ``var/`` with the thread store), the thread store wherever
``GATEWAY_DATABASE_URL`` puts it, ``/run/secrets`` and ``/var/run/secrets``, and
(calls without a uid of their own) what in ``/etc`` other users cannot read.
A kernel without Landlock (before 5.13: Debian 11, Ubuntu 20.04, RHEL 8) has
none of that, and a call under the server's uid read them all. There the zygote,
when it has a mount namespace of its own (``_private``), covers each such path
once, before it forks anything: a directory with an empty read-only tmpfs, a
file with a read-only bind mount of an empty file (made in a small tmpfs of its
own, below the calls' directory root). Calls cannot undo it: their seccomp
filter refuses ``mount`` and ``umount2``, and they have no capability (root-mode
calls lost theirs, a non-root zygote drops its user namespace's).

``masked_paths`` chooses what ``landlock_rules`` would have left out: below the
gateway root every entry that neither is nor holds a path calls read (``readable``:
``sys.path``, the interpreter, the gateway package, action code, manifests), the
other protected paths and the SQLite siblings (``-wal``, ``-shm``, ``-journal``)
of each, and ``/etc``'s private files. Left reachable: the directories of the
SQLite databases of the zygote's ``sql`` actions (``FsPolicy.databases``), for
all its calls (Landlock gives each call only its own action's: that narrowing is
lost here), and the calls' directories. Not masked: a symbolic link (a mount
would cover its target), and a sibling that did not exist when the zygote started
(a thread store outside the gateway root whose ``-wal`` came later).

Imports only the standard library and ``gateway.sandbox``'s ``_linux``,
``_fs_policy`` and ``protocol``.
"""

from __future__ import annotations

import os
import stat

import msgspec

from gateway.sandbox import _linux
from gateway.sandbox._fs_policy import (
    _PRIVATE_SCANNED,
    _private_below,
    protected_paths,
    readable,
)
from gateway.sandbox.protocol import FsPolicy, PrivateView

__all__ = ["cover_protected", "masked_paths", "will_mask"]

_SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")
_FLAGS = _linux.MS_RDONLY | _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
_DIR_MASK = "mode=0555,size=4k,nr_inodes=4"
"""An empty directory that no one, root included, can write in (read-only)."""
_MAX_DEPTH = 16


def cover_protected(
    view: PrivateView,
    landlock: _linux.LandlockRules | None,
    fs: FsPolicy | None,
    tmp: str,
    call_user: str,
    own_mounts: bool,
) -> PrivateView:
    """Mask what Landlock would keep out, where there is no Landlock (``landlock`` None).

    With Landlock (or no policy) returns ``view`` as it is, having done nothing.
    Without it, returns ``view`` with ``masked`` and why; a mount refused is named
    there, never skipped silently, and the zygote goes on. Mounts only in a zygote
    with a mount namespace of its own (``own_mounts``: ``_private.enter`` made one):
    elsewhere a mount would reach the host's. ``call_user`` other than ``own``: calls run as
    this uid, whose private files in ``/etc`` are masked too.
    """
    if landlock is not None or fs is None:
        return view
    if not own_mounts:
        return msgspec.structs.replace(
            view,
            masked=False,
            masked_detail="no Landlock, and no mount namespace of its own to cover them in: "
            "calls read the gateway root's files (.env), the thread store and secret mounts "
            "wherever their uid may",
        )
    paths = masked_paths(fs, tmp, None if call_user == "own" else os.geteuid())
    done, refused = _mount_over(paths, tmp)
    if refused:
        shown = "; ".join(refused[:3]) + ("..." if len(refused) > 3 else "")
        detail = (
            f"no Landlock, and covering {len(refused)} of {len(done) + len(refused)} "
            f"protected paths was refused, which calls may read: {shown}"
        )
    else:
        detail = (
            f"no Landlock: {len(done)} paths calls must not read (the gateway root's entries "
            "other than code and manifests, .env, the thread store, secret mounts, /etc's "
            "private files) are covered by empty read-only mounts"
        )
    return msgspec.structs.replace(view, masked=not refused, masked_detail=detail)


def will_mask() -> bool:
    """Whether the kernel lacks Landlock, so ``cover_protected`` will mount (once a
    policy comes): a non-root zygote then makes its network namespace's user namespace
    with a mount namespace, which it owns, to mount in."""
    try:
        _linux.landlock_abi()
    except OSError:
        return True
    return False


def masked_paths(fs: FsPolicy, tmp: str, calls_uid: int | None) -> list[str]:
    """What to cover (resolved, sorted): see the module's docstring. Blocking."""
    protected = protected_paths(fs, tmp)
    roots = {os.path.realpath(p) for p in fs.list_only}
    real_tmp = os.path.realpath(tmp)
    keep = [*readable(fs, protected), *(os.path.realpath(d) for d in fs.databases), real_tmp]
    found: set[str] = set()
    for root in roots:
        found.update(_kept_out(root, keep, root=True))
    for path in protected - roots - {real_tmp}:
        for candidate in (path, *(path + s for s in _SQLITE_SIBLINGS)):
            # Masked even in a directory left reachable (a sql action's): only what
            # it holds is kept (and the calls' directories).
            below = [k for k in keep if k.startswith(candidate.rstrip("/") + "/")]
            found.update(_kept_out(candidate, [*below, real_tmp]))
    if calls_uid is not None:
        found.update(_private_below(os.path.realpath(_PRIVATE_SCANNED), calls_uid))
    return sorted(found)


def _kept_out(path: str, keep: list[str], *, root: bool = False, depth: int = 0) -> list[str]:
    """``path`` if nothing in ``keep`` is at, above or below it; else, when one is below
    it, its entries (recursively) that hold none. ``root``: never ``path`` itself."""
    if any(path == k or path.startswith(k.rstrip("/") + "/") for k in keep):
        return []  # reachable as a whole
    if os.path.islink(path):
        return []  # a mount would cover its target, anywhere: judged as itself
    prefix = path.rstrip("/") + "/"
    if not any(k.startswith(prefix) for k in keep):
        return [] if root or not os.path.lexists(path) else [path]
    if depth > _MAX_DEPTH:
        return []
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return [
        p
        for name in sorted(names)
        for p in _kept_out(os.path.join(path, name), keep, depth=depth + 1)
    ]


def _mount_over(paths: list[str], tmp: str) -> tuple[list[str], list[str]]:
    """Cover each of ``paths`` (sorted) with an empty read-only mount: (covered, refused).

    A path below one covered already is hidden with it; a symbolic link is left
    alone (the mount would land on its target, anywhere).
    """
    done: list[str] = []
    refused: list[str] = []
    empty: str | OSError | None = None
    for path in paths:
        if any(path.startswith(d.rstrip("/") + "/") for d in done):
            continue
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue  # gone since it was listed
        if stat.S_ISLNK(mode):
            continue
        try:
            if stat.S_ISDIR(mode):
                _linux.mount("gw-masked", path, "tmpfs", _FLAGS, _DIR_MASK)
            else:
                if empty is None:
                    try:
                        empty = _empty_file(tmp)
                    except OSError as exc:
                        empty = exc  # made once: each file then reports the same reason
                if isinstance(empty, OSError):
                    raise empty
                # The bind takes the source mount's flags: read-only, nosuid, noexec.
                _linux.mount(empty, path, None, _linux.MS_BIND)
        except OSError as exc:
            refused.append(f"{path} ({exc.strerror or exc})")
            continue
        done.append(path)
    return done, refused


def _empty_file(tmp: str) -> str:
    """An empty file on a tmpfs of its own mounted read-only (below ``tmp``), to bind.

    Raises:
        OSError: the kernel refused the tmpfs (each file to cover then reports it).
    """
    folder = os.path.join(tmp, "masks")
    os.makedirs(folder, mode=0o755, exist_ok=True)
    _linux.mount("gw-masks", folder, "tmpfs", _FLAGS & ~_linux.MS_RDONLY, "size=4k,nr_inodes=4")
    path = os.path.join(folder, "empty")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
    _linux.mount(None, folder, None, _linux.MS_REMOUNT | _linux.MS_BIND | _FLAGS)
    return path
