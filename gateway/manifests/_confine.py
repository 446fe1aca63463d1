# os.path on purpose: it runs in the zygote too, whose heap every fork shares.
# ruff: noqa: PTH110, PTH112, PTH117, PTH118, PTH120, PTH208
"""Which gateway-root entries hold Python code, and a Landlock allow-list for the
introspection child, which runs user modules' import-time code.

``code_entries`` is shared by the introspection child (``_introspect``) and
the sandbox's zygote (``gateway.sandbox._fs_policy.import_rules``): both run a
module's top-level code before any call, and both may read of the gateway root
only the entries that hold Python code (never ``.env``, the thread store's
folder, the knowledge index or other data). ``confine`` is the introspection
child's confinement: a Landlock ruleset (system directories, the interpreter,
``sys.path``, the action code and manifests read-only; the gateway root only
listable; nothing writable but its private TMPDIR and HOME, ``/dev/null`` and
its kind), enforced after
``no_new_privs`` and before the first user import. Of ``/proc`` it may read only
its own entry: Landlock's ptrace rule does not keep it from reading another
process's ``/proc/<pid>/environ`` (measured), the server's included. The domain
also keeps it from signalling outside it (ABI 6).

Standard library only: the introspection child loads this file by path before
anything of the gateway is imported (the manifests package must not depend on
``gateway.sandbox``, which has the general Landlock wrappers).
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys

__all__ = [
    "CONFINED_HINT",
    "code_entries",
    "confine",
    "confined_hint",
    "finder_parents",
    "finder_paths",
    "private_below",
]

_CODE_SUFFIXES = (".py", ".pyc", ".so", ".pth")
_SCAN_DEPTH = 3
"""Folders deep ``code_entries`` looks for a code file below a top-level folder."""


def code_entries(root: str, protected: frozenset[str] = frozenset()) -> list[str]:
    """The top-level entries of ``root`` that are, or hold, Python code.

    A file ending in ``.py``, ``.pyc``, ``.so`` or ``.pth``, or a folder with such a
    file at most ``_SCAN_DEPTH`` levels down (a package, a namespace package, a
    folder of modules); none that is, or holds, one of ``protected``; no hidden
    entry (``.env``, ``.git``, ``.venv``: the interpreter's own prefix is read
    through ``sys.prefix``). Not ``var/`` (the thread store), not the knowledge
    index's folder, not a data folder: import-time code reads what calls read.
    """
    found: list[str] = []
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return found
    for name in names:
        path = os.path.join(root, name)
        if name.startswith(".") or _holds(path, protected):
            continue
        if os.path.isdir(path):
            if _has_code(path, _SCAN_DEPTH):
                found.append(path)
        elif name.endswith(_CODE_SUFFIXES):
            found.append(path)
    return found


def _holds(path: str, protected: frozenset[str]) -> bool:
    prefix = path.rstrip("/") + "/"
    return any(p == path or p.startswith(prefix) for p in protected)


def _has_code(folder: str, depth: int) -> bool:
    try:
        with os.scandir(folder) as entries:
            listed = list(entries)
    except OSError:
        return False
    if any(e.name.endswith(_CODE_SUFFIXES) and e.is_file() for e in listed):
        return True
    return depth > 1 and any(
        e.is_dir(follow_symlinks=False)
        and not e.name.startswith(".")
        and _has_code(e.path, depth - 1)
        for e in listed
    )


def finder_paths() -> list[str]:
    """The folders and files that this process's meta-path finders import from.

    An editable install through an import hook (setuptools' ``pip install -e`` of a
    flat layout: an ``__editable__.<name>.pth`` that registers a finder whose module
    holds ``MAPPING = {package: source folder}`` and ``NAMESPACES = {name: [folders]}``)
    imports from folders outside ``sys.path``. Read from any finder (or its module)
    with such a dict of names to paths; only paths that exist.
    """
    found: list[str] = []
    for finder in list(sys.meta_path):
        owners = [finder, sys.modules.get(getattr(finder, "__module__", "") or "")]
        for owner in owners:
            for attribute in ("MAPPING", "NAMESPACES"):
                mapping = getattr(owner, attribute, None)
                if not isinstance(mapping, dict):
                    continue
                for value in list(mapping.values()):
                    paths = value if isinstance(value, (list, tuple)) else [value]
                    found += [
                        path
                        for path in paths
                        if isinstance(path, str)
                        and os.path.isabs(path)
                        and path not in found
                        and os.path.exists(path)
                    ]
    return found


def finder_parents() -> list[str]:
    """The folders holding ``finder_paths``, to be listed (not read): a finder may look
    its package up with ``PathFinder`` in the folder above it. Never ``/``."""
    parents = {os.path.dirname(os.path.realpath(p)) for p in finder_paths()}
    return sorted(p for p in parents if p != "/")


CONFINED_HINT = (
    "module imports run confined: read-only outside their code, no .env or thread store, "
    "writable only TMPDIR and HOME (README: 'Import-time code runs confined like calls')"
)


def confined_hint(exc: BaseException) -> str:
    """``"; " + CONFINED_HINT`` when ``exc`` looks like a refusal of the confinement, else ""."""
    refused = isinstance(exc, PermissionError) or (
        isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM)
    )
    if refused or "No usable temporary directory" in str(exc):
        return "; " + CONFINED_HINT
    return ""


# linux/landlock.h (x86_64 and aarch64 share the syscall numbers).
_CREATE, _ADD_RULE, _RESTRICT = 444, 445, 446
_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1, 2, 4, 8
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
_FILE_RIGHTS = _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
_READ = _EXECUTE | _READ_FILE | _READ_DIR
_ALL = (1 << 16) - 1
_SYSTEM = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt")
_DATA = ("/dev", "/sys", "/run")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_SECRETS = ("/run/secrets", "/var/run/secrets")
_PR_SET_NO_NEW_PRIVS = 38


class _Attr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _Beneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]


def _handled(abi: int) -> int:
    """The filesystem rights ABI ``abi`` knows (as ``gateway.sandbox._landlock``)."""
    return {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}.get(
        abi, (1 << 16) - 1
    )


def private_below(top: str, owner: int) -> set[str]:
    """Files (and folders) below ``top`` owned by ``owner`` that others may not read.

    ``/etc`` is read for DNS, TLS and users, but holds the host's secrets too
    (``shadow``, ``ssh/ssh_host_*_key``, ``ssl/private``), kept private by
    their mode alone. A call under its own uid cannot read them anyway; uid 0
    without capabilities (``calls_run_as: root``) can, as their owner, and so
    can a call with the server's uid read the server's files, and so can the
    introspection child (``confine``). Blocking; about 8 ms for a Debian ``/etc``.
    """
    found: set[str] = set()
    for folder, dirs, files in os.walk(top):
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            mode = info.st_mode
            if info.st_uid != owner:
                continue  # not readable by its owner's bits, so the call has no access
            if stat.S_ISDIR(mode):
                private = not mode & stat.S_IXOTH  # nothing below it is reachable then
                if private:
                    dirs.remove(name)
            else:
                private = stat.S_ISREG(mode) and not mode & stat.S_IROTH
            if private:
                found.add(path)
    return found


def confine(
    root: str, read: list[str], protected: list[str], write: list[str] | None = None
) -> str | None:
    """Restrict this process to reading what import-time code may read; why not, if not.

    Readable (and executable): the system directories, this interpreter's
    prefixes and ``sys.path`` entries, what its meta-path finders map to
    (``finder_paths``: editable installs), ``code_entries(root)`` and ``read``
    (the manifests root); ``/dev``, ``/proc``, ``/sys`` and ``/run`` readable
    only; ``root`` and ``finder_parents`` listable only; ``write`` (the child's private TMPDIR and
    HOME) writable. No rule covers ``root`` itself, ``protected``
    (``.env``, the thread store), the secret mounts, or anything holding them (a
    system directory holding one is replaced by its other entries).

    Returns:
        None once enforced; else the reason (no Landlock in this kernel, or it
        refused), and the process goes on unconfined.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = int(libc.syscall(ctypes.c_long(_CREATE), None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
    if abi < 1:
        return f"no Landlock ({os.strerror(ctypes.get_errno())})"
    real_root = os.path.realpath(root)
    # /etc's private files (shadow, ssh host keys, ssl/private) are out as for calls: the
    # child runs as the server's uid, their owner when it is root.
    private = private_below(os.path.realpath("/etc"), os.geteuid())
    hidden = frozenset(os.path.realpath(p) for p in (real_root, *protected, *_SECRETS, *private))
    rules: list[tuple[str, int]] = []
    for base in _SYSTEM:
        rules += _carved(os.path.realpath(base), _READ, hidden)
    for base in _DATA:
        rules += _carved(os.path.realpath(base), _READ_FILE | _READ_DIR, hidden)
    rules += _proc()
    rules += [(d, _READ_FILE | _WRITE_FILE | _IOCTL_DEV) for d in _DEVICES]
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path, *finder_paths(), *read]
    python += code_entries(real_root, hidden)
    for entry in python:
        real = os.path.realpath(entry) if entry else "/"
        if real != "/" and not _holds(real, hidden):
            rules.append((real, _READ))
    rules.append((real_root, _READ_DIR))
    rules += [(p, _READ_DIR) for p in finder_parents() if not _holds(p, hidden)]
    writable = [os.path.realpath(w) for w in write or []]
    rules += [(w, _ALL) for w in writable if not _holds(w, hidden)]
    handled = _handled(abi)
    scoped = 3 if abi >= 6 else 0  # signals and abstract Unix sockets stay in the domain
    attr = _Attr(handled, 0, scoped)
    size = ctypes.sizeof(attr) if scoped else ctypes.sizeof(ctypes.c_uint64)
    fd = int(libc.syscall(ctypes.c_long(_CREATE), ctypes.byref(attr), ctypes.c_size_t(size), 0))
    if fd < 0:
        return f"Landlock refused a ruleset ({os.strerror(ctypes.get_errno())})"
    try:
        for path, access in rules:
            _add(libc, fd, path, access & handled)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return f"no_new_privs refused ({os.strerror(ctypes.get_errno())})"
        if int(libc.syscall(ctypes.c_long(_RESTRICT), ctypes.c_int(fd), ctypes.c_uint32(0))) < 0:
            return f"Landlock refused to restrict ({os.strerror(ctypes.get_errno())})"
    finally:
        os.close(fd)
    return None


def _proc() -> list[tuple[str, int]]:
    """``/proc`` listable; readable: this process's own folder and the entries that are
    no process's (``meminfo``, ``sys``...). Not another process's ``environ``: Landlock's
    ptrace rule did not keep a child from reading its parent's (Linux 6.18, root)."""
    rules = [("/proc", _READ_DIR), (f"/proc/{os.getpid()}", _READ_FILE | _READ_DIR)]
    try:
        names = os.listdir("/proc")
    except OSError:
        return rules
    skip = {"self", "thread-self"}
    rules += [
        (f"/proc/{n}", _READ_FILE | _READ_DIR) for n in names if not n.isdigit() and n not in skip
    ]
    return rules


def _add(libc: ctypes.CDLL, ruleset: int, path: str, access: int) -> None:
    """Add one path-beneath rule; a path that cannot be opened gets none (stays denied)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FILE_RIGHTS
        if access:
            beneath = _Beneath(access, fd)
            libc.syscall(
                ctypes.c_long(_ADD_RULE),
                ctypes.c_int(ruleset),
                ctypes.c_int(1),
                ctypes.byref(beneath),
                ctypes.c_uint32(0),
            )
    finally:
        os.close(fd)


def _carved(
    path: str, access: int, hidden: frozenset[str], depth: int = 0
) -> list[tuple[str, int]]:
    """``(path, access)``, or the rules for its entries when it holds one of ``hidden``."""
    if not _holds(path, hidden):
        return [(path, access)] if os.path.exists(path) else []
    if path in hidden or depth > 16:
        return []
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return []
    return [r for n in names for r in _carved(os.path.join(path, n), access, hidden, depth + 1)]
