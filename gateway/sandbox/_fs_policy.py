# os.path on purpose on the zygote side: it runs in the zygote, whose heap every fork shares.
# ruff: noqa: PTH110, PTH118, PTH120, PTH208
"""The Landlock filesystem policy: what a sandboxed call may read, list or write.

Supervisor side (blocking, runs in the server): ``catalog_fs_policy`` turns a
catalog into a zygote's ``FsPolicy`` (readable code and manifests, the gateway
root only listable, the thread store and ``.env`` protected), and
``database_dirs`` gives a ``sql`` call its SQLite database's directory. Zygote
side: ``landlock_rules`` turns that policy, the interpreter's prefixes and
``sys.path`` into the children's final allow-list once, carving protected
paths out of system directories (``pruned`` merges the rules), and
``import_rules`` the zygote's own layer, enforced before it imports user
modules (what calls may use, plus what the zygote and every child need). It runs inside
the ``python -I -B`` zygote, so at runtime it imports only the standard
library, ``gateway.sandbox._linux`` and ``gateway.sandbox.protocol``; the
manifest types are for annotations only.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from gateway.sandbox import _linux
from gateway.sandbox.protocol import FsPolicy

if TYPE_CHECKING:
    from collections.abc import Iterable

    from gateway.manifests.catalog import Catalog
    from gateway.manifests.model import Action, CallContext

__all__ = [
    "catalog_fs_policy",
    "database_dirs",
    "import_policy",
    "import_rules",
    "landlock_rules",
    "protected_paths",
    "pruned",
    "readable",
]


def database_dirs(action: Action, call: CallContext) -> dict[str, list[str]]:
    """The directory of the SQLite database ``action`` uses: readable, or writable too.

    ``Start.fs_read``/``fs_write`` (empty for other kinds and other databases):
    only a ``sql`` action reaches its own database file, with its journal.
    """
    name = getattr(action.config, "database", None)
    url = call.databases.get(name) if isinstance(name, str) else None
    database = None if url is None else _sqlite_file(url)
    if database is None:
        return {}
    directory = str(Path(database).parent)
    if getattr(action.config, "readonly", True) is False:
        return {"fs_write": [directory]}
    # A WAL-mode database is read through its -shm and -wal files (``Start.fs_wal``).
    return {"fs_read": [directory], "fs_wal": [database]}


def _sqlite_file(url: str) -> str | None:
    """The resolved database file of a ``sqlite:`` URL; None for another URL."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split("://", 1)[-1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path  # as the sql kind reads it
    if not path.startswith("/"):
        return None  # relative or :memory: (the catalog resolves relative paths)
    return str(Path(path).resolve())


def _sqlite_directory(url: str) -> str | None:
    """The directory of a ``sqlite:`` URL's database file; None for another URL."""
    database = _sqlite_file(url)
    return None if database is None else str(Path(database).parent)


def catalog_fs_policy(
    modules: list[str],
    catalog: Catalog | None,
    gateway_root: Path,
    store_url: str,
    actions: Iterable[Action] = (),
) -> FsPolicy:
    """The catalog's part of a zygote's filesystem allow-list (blocking: reads directories).

    Readable: the manifests root and the action code (each code file's directory,
    or the file itself when it sits at the gateway root, and the top-level
    packages under the gateway root its modules come from). The gateway root
    itself may only be listed. Protected: the gateway root, the thread store
    (``GATEWAY_DATABASE_URL`` when SQLite) and ``./.env``. ``databases``: the
    SQLite directories of ``actions`` (the zygote's), which Landlock grants per
    call and the mounts of ``_masks`` must leave reachable.
    """
    root = gateway_root.resolve()
    read: list[str] = []

    def allow(path: Path) -> None:
        if path.exists() and str(path) not in read:
            read.append(str(path))

    if catalog is not None:
        allow(catalog.root.resolve())
        for code in catalog.code_files:
            code = code.resolve()
            allow(code if code.parent == root else code.parent)
    for module in modules:
        top = module.partition(":")[0].split(".")[0]
        package = root / top
        if package.is_dir():
            allow(package)
        for suffix in (".py", ".pyc", ".so"):
            allow(root / f"{top}{suffix}")
    try:
        cwd: Path | None = Path.cwd()
    except FileNotFoundError:  # a revision git-sync deleted under the server: no .env there
        cwd = None
    protected = [str(root), *([str(cwd / ".env")] if cwd is not None else [])]
    if store_url.startswith("sqlite:///"):
        rest = store_url[len("sqlite:///") :].split("?", 1)[0]
        if rest and rest != ":memory:" and (cwd is not None or rest.startswith("/")):
            protected.append(str(((cwd or Path("/")) / rest).resolve()))
    databases: list[str] = []
    urls = catalog.database_urls() if catalog is not None else {}
    for action in actions:
        name = getattr(action.config, "database", None)
        url = urls.get(name) if isinstance(name, str) else None
        directory = None if url is None else _sqlite_directory(url)
        if directory is not None and directory not in databases:
            databases.append(directory)
    given = str(gateway_root.absolute())
    return FsPolicy(
        read=read,
        list_only=[str(root)],
        protected=protected,
        databases=sorted(databases),
        links=[given] if given != str(root) else [],
    )


_SYSTEM_DIRS = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/opt")
"""Read and execute beneath these (libraries, interpreters, DNS and TLS configuration)."""
_DATA_DIRS = ("/dev", "/proc", "/sys", "/run")
"""Read (no execute) beneath these."""
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
"""Also writable (and ``ioctl``)."""
_ALWAYS_PROTECTED = ("/run/secrets", "/var/run/secrets")
"""Docker and Kubernetes mount secrets here: never readable by an action."""
_PRIVATE_SCANNED = "/etc"
"""Whose files and folders other users cannot read are carved out (see
``gateway.manifests._confine.private_below``)."""


def landlock_rules(fs: FsPolicy | None, tmp: str) -> _linux.LandlockRules | None:
    """The children's filesystem allow-list, computed once; None without Landlock.

    System directories (read, and execute where code lives), this interpreter's
    prefixes and ``sys.path`` entries, the gateway package, and what the
    supervisor listed (``fs``); the folders holding what meta-path finders
    map to (``finder_parents``: editable installs) listable only. No rule
    covers a protected path (the gateway root, the thread store, ``.env``,
    secret mounts, the zygote's call directories): a system directory holding
    one is replaced by its other entries; a ``sys.path`` entry holding one
    (``/`` for ``""``) is dropped. The call's own directory and database
    directories are added per call. What in ``/etc`` other users cannot read
    is kept out by ``read_guard``.
    """
    if fs is None:
        return None
    try:
        abi = _linux.landlock_abi()
    except OSError:
        return None
    protected = protected_paths(fs, tmp)
    rules: list[tuple[str, int]] = []

    def carve(path: str, access: int) -> None:
        rules.extend(_carved(path, access, protected))

    read_only = _linux.FS_READ_FILE | _linux.FS_READ_DIR
    for base, access in [
        *((d, _linux.FS_READ) for d in _SYSTEM_DIRS),
        *((d, read_only) for d in _DATA_DIRS),
    ]:
        real = os.path.realpath(base)
        if os.path.exists(real):
            carve(real, access)
    device = _linux.FS_READ_FILE | _linux.FS_WRITE_FILE | _linux.FS_IOCTL_DEV
    rules += [(d, device) for d in _DEVICES if os.path.exists(d)]
    rules += [(real, _linux.FS_READ) for real in readable(fs, protected)]
    rules += [(os.path.realpath(p), _linux.FS_READ_DIR) for p in fs.list_only]
    from gateway.manifests._confine import finder_parents

    rules += [(p, _linux.FS_READ_DIR) for p in finder_parents() if not _covers(p, protected)]
    handled = _linux.landlock_handled(abi)
    return _linux.LandlockRules(handled, pruned(rules), _linux.landlock_scoped(abi))


def import_policy(fs: FsPolicy, tmp: str) -> FsPolicy:
    """``fs`` with the entries of its ``list_only`` roots that hold Python code readable.

    What the zygote may read while it imports user modules, whose top-level code
    runs then: the children's list is computed after the imports (it adds the
    top-level packages they loaded, ``_imported_tops``), so before them every
    entry holding code (``gateway.manifests._confine.code_entries``: a sibling
    package an action imports) is allowed, never a protected one or one holding
    one (``.env``, ``var/`` with the thread store) nor a data folder.
    """
    from gateway.manifests._confine import code_entries

    hidden = frozenset(protected_paths(fs, tmp))
    code = [e for root in fs.list_only for e in code_entries(os.path.realpath(root), hidden)]
    return msgspec.structs.replace(fs, read=[*fs.read, *code])


def import_rules(fs: FsPolicy | None, tmp: str) -> _linux.LandlockRules | None:
    """The zygote's own Landlock layer, enforced before it imports user modules.

    ``landlock_rules`` of ``import_policy`` (so not ``.env``, the thread store, the
    knowledge index, the gateway root's other entries, ``/run/secrets``), plus
    what the zygote and its children need afterwards and may only narrow: the
    call-directory root ``tmp`` whole, every ``sql`` action's SQLite directory
    (``fs.databases``: each call gets its own action's), and ``/proc`` writable
    (a spare sets its own ``oom_score_adj``). None without Landlock (or policy).
    """
    if fs is None:
        return None
    rules = landlock_rules(import_policy(fs, tmp), tmp)
    if rules is None:
        return None
    proc = _linux.FS_READ_FILE | _linux.FS_READ_DIR | _linux.FS_WRITE_FILE
    extra = [(tmp, _linux.FS_ALL), *((d, _linux.FS_ALL) for d in fs.databases), ("/proc", proc)]
    return rules._replace(rules=pruned([*rules.rules, *extra]))


def protected_paths(fs: FsPolicy, tmp: str) -> set[str]:
    """What no rule of ``landlock_rules`` covers (resolved): ``fs.protected``, the
    secret mounts of ``_ALWAYS_PROTECTED`` and the calls' directories (``tmp``)."""
    return {os.path.realpath(p) for p in (*fs.protected, *_ALWAYS_PROTECTED, tmp)}


def readable(fs: FsPolicy, protected: set[str]) -> list[str]:
    """The Python and code paths calls read (resolved): this interpreter's prefixes,
    ``sys.path``, what its meta-path finders map to (``finder_paths``: editable
    installs), the gateway package, ``fs.read`` and the modules the zygote imported
    from ``fs.list_only``, less those that are, or hold, one of ``protected``."""
    from gateway.manifests._confine import finder_paths

    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # gateway/
    python = [sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path, package, *fs.read]
    python += finder_paths()  # editable installs through an import hook
    python += _imported_tops(fs.list_only)
    found: list[str] = []
    for entry in python:
        if not entry:
            continue  # "" is the working directory: "/" for the zygote
        real = os.path.realpath(entry)
        if real != "/" and not _covers(real, protected) and os.path.exists(real):
            found.append(real)
    return found


def read_guard(calls_uid: int) -> _linux.LandlockRules | None:
    """A Landlock layer that keeps what in ``/etc`` ``calls_uid`` owns, and others
    cannot read, out of reach; None when there is nothing such.

    For calls without a uid of their own (``calls_run_as: root``, or the
    server's uid): the zygote enforces it on itself once, so every call
    inherits it at no cost. It handles reading only and allows it everywhere
    else (each entry of ``/``, with ``/etc`` and the folders holding a private
    file replaced by their other entries); the per-call allow-list of
    ``landlock_rules`` is a second layer on top. Carving the private files out
    of that per-call list instead took about 170 more rules, built in every
    child: 0.6 ms of CPU per call.
    """
    from gateway.manifests._confine import private_below

    private = private_below(os.path.realpath(_PRIVATE_SCANNED), calls_uid)
    if not private:
        return None
    read = _linux.FS_READ_FILE | _linux.FS_READ_DIR
    rules = [r for name in sorted(os.listdir("/")) for r in _carved("/" + name, read, private)]
    return _linux.LandlockRules(read, pruned(rules))


def _covers(path: str, protected: set[str]) -> bool:
    """Whether ``path`` is, or holds, one of ``protected``."""
    prefix = path.rstrip("/") + "/"
    return any(p == path or p.startswith(prefix) for p in protected)


def _carved(path: str, access: int, protected: set[str], depth: int = 0) -> list[tuple[str, int]]:
    """Rules granting ``access`` to ``path``, except the ``protected`` paths in it.

    A folder holding a protected path is replaced by its other entries, as deep
    as needed (at most 16 levels); a protected path gets no rule.
    """
    if not _covers(path, protected):
        return [(path, access)]
    if path in protected or depth > 16:
        return []
    try:
        names = os.listdir(path)
    except OSError:
        return []
    return [
        rule
        for name in sorted(names)
        for rule in _carved(os.path.join(path, name), access, protected, depth + 1)
    ]


def _imported_tops(roots: list[str]) -> list[str]:
    """Top-level packages (or modules) under ``roots`` that the zygote imported.

    An action module may import a sibling package of the gateway root (``helpers``
    next to ``actions``); the child may need to read it again (lazy submodules,
    tracebacks).
    """
    tops: list[str] = []
    for root in roots:
        prefixes = {root.rstrip("/") + "/", os.path.realpath(root).rstrip("/") + "/"}
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None)
            if not isinstance(file, str):
                continue
            for prefix in prefixes:
                if file.startswith(prefix):
                    top = os.path.join(prefix, file[len(prefix) :].split("/", 1)[0])
                    if top not in tops:
                        tops.append(top)
    return tops


def pruned(rules: list[tuple[str, int]]) -> tuple[tuple[str, int], ...]:
    """Merge rules per path; drop one whose ancestor already grants all its rights."""
    merged: dict[str, int] = {}
    for path, access in rules:
        merged[path] = merged.get(path, 0) | access
    kept = []
    for path, access in merged.items():
        parent, current = os.path.dirname(path), path
        while parent != current and merged.get(parent, 0) & access != access:
            parent, current = os.path.dirname(parent), parent
        if parent == current:  # reached "/" without a covering ancestor
            kept.append((path, access))
    return tuple(kept)
