# os.path on purpose, like the zygote: this runs in it.
# ruff: noqa: PTH101, PTH102, PTH103, PTH112, PTH114, PTH115, PTH116, PTH118, PTH119, PTH120, PTH208, PTH211
"""Without Landlock: read-only mounts over what its policy keeps calls out of.

Landlock (``_fs_policy.landlock_rules``, ``read_guard``) keeps a call out of the
gateway root's files that are not action code or manifests (``.env`` with the
provider keys, ``var/`` with the thread store), the thread store wherever
``GATEWAY_DATABASE_URL`` puts it, ``/run/secrets`` and ``/var/run/secrets``, and
(calls without a uid of their own) what in ``/etc`` other users cannot read.
A kernel without Landlock (before 5.13: Debian 11, Ubuntu 20.04, RHEL 8) has
none of that, and a call under the server's uid read them all. There the zygote,
when it has a mount namespace of its own (``_private``), covers them once, before
it imports user modules (whose top-level code runs in the zygote) or forks
anything. Calls cannot undo it: their seccomp filter refuses ``mount``
and ``umount2``, and they have no capability (root-mode calls lost theirs, a
non-root zygote drops its user namespace's).

A mount on one path goes with that path: when the host renames a file over it or
deletes it (``.env`` rotated by ``sed -i`` or a deploy tool, the store restored
with a new ``-wal``, ``git pull``), the kernel drops the mount in every other
namespace and the new file shows through. So a folder holding protected paths is
covered by an allow-list instead (``plan``, ``_allow_list``): a read-only tmpfs
over the folder holding only the entries calls may use, each bound back from the
original. What is made or renamed into the folder later is not in the tmpfs;
what changes inside a kept folder shows as before. A kept *file* replaced by a
rename keeps showing its old content (its bind holds the old inode) until the
zygote is replaced.

- The gateway root keeps the entries that are, hold or lie below what calls read
  (``readable``: ``sys.path``, the interpreter, the gateway package, action code,
  manifests), the directories of the SQLite databases of the zygote's ``sql``
  actions (``FsPolicy.databases``: reachable by all its calls, where Landlock
  gives each call only its own action's) and the calls' directories; a folder
  leading to one deeper gets an allow-list of its own, one level down (at most
  ``_MAX_DEPTH``: past it, or where a folder cannot be listed, it is covered whole).
- The folder of each symbolic link on the way to the gateway root as configured
  (``FsPolicy.links``: git-sync's ``current -> rev-N``) gets the same, so the link
  is a copy pointing where it did and the live revision is all of its folder
  (``_pin_links``).
- The other protected paths (the thread store and its ``-wal``, ``-shm`` and
  ``-journal``, ``./.env``): their folder, which Landlock grants nothing of,
  keeps only what leads to what calls read, like the gateway root (the store's
  knowledge index and backups beside it go too). A folder calls may use whole
  (a ``sql`` action's, where SQLite makes its journal) or a system folder
  (``/etc``: see below) has them covered path by path, and there a protected
  file made or renamed there later is not covered. A protected folder (``/run/secrets``)
  gets an empty tmpfs: rotation replaces files, not a whole mount point. A
  protected file in ``/`` itself is covered on its own path (no tmpfs over
  ``/``), and replacing it unmasks it (``masked_detail`` says so).
- ``/etc``'s private files (calls without a uid of their own) are still covered
  path by path: an allow-list over ``/etc`` would pin ``resolv.conf`` and
  ``hosts`` to their content at the start wherever they are replaced by a rename;
  replacing one of them (``passwd`` renames ``shadow``) unmasks it.

A symbolic link is never a mount target (a mount would cover its target,
anywhere): an allowed folder copies its links, whose targets are judged as
themselves.

Imports only the standard library and ``gateway.sandbox``'s ``_linux``,
``_fs_policy`` and ``protocol``.
"""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

import msgspec

from gateway.manifests._confine import private_below
from gateway.sandbox import _linux
from gateway.sandbox._fs_policy import (
    _DATA_DIRS,
    _PRIVATE_SCANNED,
    _SYSTEM_DIRS,
    protected_paths,
    readable,
)
from gateway.sandbox.protocol import FsPolicy, PrivateView

__all__ = ["Cover", "cover_protected", "plan", "will_mask"]

_SQLITE_SIBLINGS = ("-wal", "-shm", "-journal")
_FLAGS = _linux.MS_RDONLY | _linux.MS_NOSUID | _linux.MS_NODEV | _linux.MS_NOEXEC
_DIR_MASK = "mode=0555,size=4k,nr_inodes=4"
"""An empty directory that no one, root included, can write in (read-only)."""
_MAX_DEPTH = 16
"""Folders deep an allow-list follows a kept path; past it the folder is covered whole."""


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
    cover = plan(fs, tmp, None if call_user == "own" else os.geteuid())
    refused: list[str] = []
    lost: list[str] = []
    for folder in sorted(cover.allowed):
        try:
            lost += _allow_list(folder, cover.allowed[folder])
        except OSError as exc:
            refused.append(f"{folder} ({exc.strerror or exc})")
    done, refused_paths = _mount_over(cover.denied, tmp)
    refused += refused_paths
    total = len(cover.allowed) + len(cover.denied)
    if refused:
        shown = "; ".join(refused[:3]) + ("..." if len(refused) > 3 else "")
        detail = (
            f"no Landlock, and covering {len(refused)} of {total} protected folders and "
            f"paths was refused, which calls may read: {shown}"
        )
    else:
        detail = (
            f"no Landlock: {len(cover.allowed)} folders holding paths calls must not read "
            "(the gateway root, the thread store's, .env's) show calls only the entries "
            "they may read, as they were when the zygote started (an entry made or renamed "
            f"there later is not seen), and {len(done)} paths (secret mounts, /etc's private "
            "files) are covered by empty read-only mounts"
        )
        if cover.by_path:
            detail += (
                f"; {len(cover.by_path)} of them (in / itself, in a system folder such as "
                "/etc, in a sql action's database folder) are covered one by one: replacing "
                "one by a rename unmasks it, and one made there later is not covered"
            )
    if lost:
        detail += f"; {len(lost)} entries to keep could not be shown again (calls cannot read them)"
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


class Cover(NamedTuple):
    """What ``plan`` chose to mount, before anything is mounted.

    Attributes:
        allowed: directory -> the names of its entries that stay (each as it is now):
            a read-only tmpfs goes over the directory, holding only these, each bound
            back from the original (a symbolic link is copied). What is created or
            renamed into the directory later is not in it.
        denied: covered whole: a directory by an empty read-only tmpfs, a file by an
            empty file (a protected directory, a subtree past ``_MAX_DEPTH`` or one that
            could not be listed, ``/etc``'s private files).
        by_path: paths of ``denied`` whose folder gets no allow-list (files in ``/``
            itself, ``/etc``'s private files): replacing one (a rename) drops its
            mount and unmasks it.
    """

    allowed: dict[str, list[str]]
    denied: list[str]
    by_path: list[str]


def plan(fs: FsPolicy, tmp: str, calls_uid: int | None) -> Cover:
    """What to cover (resolved paths): see the module's docstring. Blocking; mounts nothing.

    The gateway root keeps only the entries leading to what calls read
    (``readable``), to the SQLite folders of the zygote's ``sql`` actions and to
    the calls' directories; the other protected paths (the thread store and its
    SQLite siblings, ``./.env``, ``_ALWAYS_PROTECTED``) are left out of their
    folder's allow-list, a protected folder is denied whole.
    """
    protected = protected_paths(fs, tmp)
    roots = {os.path.realpath(p) for p in fs.list_only}
    real_tmp = os.path.realpath(tmp)
    keep = [*readable(fs, protected), *(os.path.realpath(d) for d in fs.databases), real_tmp]
    cover = Cover({}, [], [])
    for root in sorted(roots):
        _allow_only(root, keep, cover)
    system = [os.path.realpath(d) for d in (*_SYSTEM_DIRS, *_DATA_DIRS)]
    for given in fs.links:
        _pin_links(given, keep, system, cover)
    left_out: dict[str, set[str]] = {}
    candidates = [
        c
        for path in protected - roots - {real_tmp}
        for c in (path, *(path + s for s in _SQLITE_SIBLINGS))
    ]
    for path in sorted(candidates):
        if path == "/" or not os.path.lexists(path) or os.path.islink(path):
            continue  # a mount would cover a link's target, anywhere: judged as itself
        if _hidden(path, cover):
            continue
        # Masked even in a folder left reachable (a sql action's): only what it
        # holds is kept (and the calls' directories).
        if any(k.startswith(path.rstrip("/") + "/") for k in keep):
            _allow_only(path, keep, cover)
        elif os.path.isdir(path):
            cover.denied.append(path)  # rotation replaces files, not a whole mount point
        elif os.path.dirname(path) == "/":
            cover.denied.append(path)
            cover.by_path.append(path)
        else:
            left_out.setdefault(os.path.dirname(path), set()).add(os.path.basename(path))
    for folder, names in left_out.items():
        if folder in cover.allowed:
            cover.allowed[folder] = [n for n in cover.allowed[folder] if n not in names]
            continue
        if _within(folder, keep) or _within(folder, system):
            # Calls may use the folder itself (a sql action's: SQLite makes its journal
            # there, which a read-only tmpfs would refuse), or it is a system folder
            # whose other files must stay live (an allow-list pins each to its content
            # at the start: /etc/resolv.conf): each protected file on its own path.
            files = [os.path.join(folder, n) for n in sorted(names)]
            cover.denied.extend(files)
            cover.by_path.extend(files)
            continue
        # Landlock grants nothing in it: only what leads to what calls read (often
        # nothing; the calls' directories when TMPDIR is there) stays, so the store's
        # neighbours (its knowledge index, backups) go too.
        _allow_only(folder, keep, cover)
    if calls_uid is not None:
        private = sorted(private_below(os.path.realpath(_PRIVATE_SCANNED), calls_uid))
        cover.denied.extend(private)
        cover.by_path.extend(private)
    cover.denied.sort()
    return cover


def _pin_links(given: str, keep: list[str], system: list[str], cover: Cover) -> None:
    """Allow-list the folder of each symbolic link on the way to the gateway root as
    configured (``given``): git-sync's ``current -> rev-N`` is then a copy pointing where
    it did at the start, and ``rev-N+1`` (a new revision, its ``.env``), like the
    repository beside it, is out of the calls' sight until a reload's new zygotes take
    it; without this, switching the link showed it all to the running zygotes' calls
    (and for good, were the new revision's manifests rejected). Not in ``/`` or a
    system folder, whose other entries must stay live."""
    current = "/"
    for part in [p for p in given.split("/") if p]:
        entry = os.path.join(current, part)
        if os.path.islink(entry):
            folder = current
            if folder != "/" and folder not in cover.allowed and not _within(folder, system):
                _allow_only(folder, keep, cover)
            current = os.path.realpath(entry)
        else:
            current = entry


def _within(path: str, keep: list[str]) -> bool:
    """Whether ``path`` is, or lies below, one of ``keep``."""
    return any(path == k or path.startswith(k.rstrip("/") + "/") for k in keep)


def _hidden(path: str, cover: Cover) -> bool:
    """Whether ``path`` is out of sight already: below a denied path, or below an
    allowed folder that does not keep the entry leading to it."""
    if any(path == d or path.startswith(d.rstrip("/") + "/") for d in cover.denied):
        return True
    for folder, names in cover.allowed.items():
        prefix = folder.rstrip("/") + "/"
        if path.startswith(prefix) and path[len(prefix) :].split("/", 1)[0] not in names:
            return True
    return False


def _allow_only(path: str, keep: list[str], cover: Cover, depth: int = 0) -> None:
    """Plan ``path``'s allow-list: the entries that are, hold or lie below one of
    ``keep`` (a folder holding one gets an allow-list of its own, one level down), and
    its symbolic links. Nothing when ``path`` is kept whole. Past ``_MAX_DEPTH`` or
    when it cannot be listed, ``path`` is denied whole (never left readable)."""
    if _within(path, keep):
        return  # reachable as a whole
    if os.path.islink(path) or not os.path.isdir(path):
        return
    if depth > _MAX_DEPTH:
        cover.denied.append(path)
        return
    try:
        names = os.listdir(path)
    except OSError:
        cover.denied.append(path)
        return
    kept: list[str] = []
    prefix = path.rstrip("/") + "/"
    for name in sorted(names):
        entry = prefix + name
        below = entry + "/"
        if os.path.islink(entry) or _within(entry, keep):
            kept.append(name)
        elif any(k.startswith(below) for k in keep):
            kept.append(name)
            _allow_only(entry, keep, cover, depth + 1)
        elif path == "/":  # never a tmpfs over "/": each entry on its own
            cover.denied.append(entry)
            cover.by_path.append(entry)
    if path != "/":
        cover.allowed[path] = kept


def _allow_list(folder: str, names: list[str]) -> list[str]:
    """Mount a tmpfs over ``folder`` holding only ``names``, each bound back from the
    original; return the names that could not be (left empty: hidden, not exposed).

    Each original is opened (``O_PATH``) before the tmpfs hides it, and bound back from
    ``/proc/self/fd/N``, which reaches it through the tmpfs; ``MS_REC`` brings the mounts
    below it (the calls' tmpfs, a kept folder's own allow-list). A bind keeps its source
    mount's flags (code stays executable); the tmpfs itself is read-only, nosuid, nodev
    and noexec, its mode the original's without write bits.

    Raises:
        OSError: the kernel refused the tmpfs (``folder`` is as it was) or making it
            read-only (reported as refused all the same).
    """
    mode = os.stat(folder).st_mode & 0o555
    opened: dict[str, tuple[int, bool]] = {}
    links: dict[str, str] = {}
    lost: list[str] = []
    try:
        for name in names:
            path = os.path.join(folder, name)
            try:
                if os.path.islink(path):
                    links[name] = os.readlink(path)
                    continue
                fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue  # gone since it was listed
            opened[name] = (fd, stat.S_ISDIR(os.fstat(fd).st_mode))
        size = f"size=64k,nr_inodes={len(names) + 16},mode=0700"
        _linux.mount("gw-allowed", folder, "tmpfs", _FLAGS & ~_linux.MS_RDONLY, size)
        for name, (fd, is_dir) in opened.items():
            target = os.path.join(folder, name)
            try:
                if is_dir:
                    os.mkdir(target, 0o555)
                else:
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
                _linux.mount(f"/proc/self/fd/{fd}", target, None, _linux.MS_BIND | _linux.MS_REC)
            except OSError as exc:
                lost.append(f"{target} ({exc.strerror or exc})")
        for name, target in links.items():
            try:
                os.symlink(target, os.path.join(folder, name))
            except OSError as exc:
                lost.append(f"{os.path.join(folder, name)} ({exc.strerror or exc})")
        os.chmod(folder, mode)
        _linux.mount(None, folder, None, _linux.MS_REMOUNT | _FLAGS)
    finally:
        for fd, _ in opened.values():
            os.close(fd)
    return lost


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
