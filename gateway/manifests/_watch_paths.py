"""What the reloader watches: real directories, symlink parents, and which events count.

A pure function of the paths on disk and the live catalog, recomputed on every
file event: when its result changes (a symlink now points elsewhere, a
directory was deleted and recreated with a new inode, the catalog names new
code or knowledge files), the watchers restart on the new plan.

Imports: ``gateway.manifests.catalog`` only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from gateway.manifests.catalog import Catalog

__all__ = ["WatchPlan", "inside", "links_on", "make_plan", "relevant"]

# Files that change under a manifests root without changing the manifests
# (SQLite databases of `kind: database`, their journals, scratch files).
_NOISE_SUFFIXES = (".db", ".sqlite", ".sqlite3", "-journal", "-wal", "-shm", ".tmp", ".log")


class WatchPlan(NamedTuple):
    """Directories to watch and how to read their events.

    Attributes:
        recursive: real directories watched with their subtrees (manifests, code).
        flat: directories watched without recursion (symlink parents, the
            root's parent, knowledge files' and top-level code's folders).
        interesting: exact paths whose events count inside a flat directory.
        anchors: the paths on the way to the root (symlinks, the root itself):
            an event on one means the watchers must move.
        code_dirs: flat directories where any ``*.py`` event counts.
        identity: link targets and inodes; when it changes, re-plan.
    """

    recursive: tuple[str, ...]
    flat: tuple[str, ...]
    interesting: frozenset[str]
    anchors: frozenset[str]
    code_dirs: frozenset[str]
    identity: tuple[tuple[str, str], ...]


def relevant(path: str, plan: WatchPlan) -> bool:
    """Whether an event on ``path`` may change the manifest set."""
    if path in plan.interesting:
        return True
    if inside(path, plan.recursive):
        return not path.endswith(_NOISE_SUFFIXES)
    return str(Path(path).parent) in plan.code_dirs and path.endswith(".py")


def make_plan(
    manifests: Path, catalog: Catalog | None, *, gateway_root: Path | None = None
) -> WatchPlan:
    """Resolve what to watch for ``manifests`` (as configured) and the live catalog.

    Without a live catalog (the first load failed) the code files are unknown:
    then the Python packages directly under ``gateway_root`` are watched, so
    fixing the code that broke the first load is noticed too.
    """
    recursive: set[str] = set()
    flat: set[str] = set()
    interesting: set[str] = set()
    anchors: set[str] = set()
    code_dirs: set[str] = set()
    identity: list[tuple[str, str]] = []

    absolute = Path(os.path.normpath(manifests.absolute()))
    for link, target in links_on(absolute):
        flat.add(str(link.parent))
        anchors.add(str(link))
        identity.append((str(link), target))
    root = _real(absolute)
    # The nearest existing ancestor sees the root deleted, recreated or renamed.
    child, parent = root, root.parent
    while parent != child and not parent.is_dir():
        child, parent = parent, parent.parent
    flat.add(str(parent))
    anchors.add(str(child))
    if root.is_dir():
        recursive.add(str(root))
        identity.append((str(root), _inode(root)))
    if catalog is not None:
        for file in catalog.code_files:
            folder = _real(file.parent)
            if inside(str(folder), recursive) or not folder.is_dir():
                continue
            if root.is_relative_to(folder):  # e.g. the gateway root: no recursion into .venv
                flat.add(str(folder))
                code_dirs.add(str(folder))
            else:
                recursive.add(str(folder))
                identity.append((str(folder), _inode(folder)))
        for file in catalog.knowledge_files:
            real = _real(file)
            if not inside(str(real), recursive):
                flat.add(str(real.parent))
                interesting.add(str(real))
    elif gateway_root is not None and _real(gateway_root).is_dir():
        base = _real(gateway_root)
        flat.add(str(base))
        code_dirs.add(str(base))
        for package in sorted(base.glob("*/__init__.py")):
            if not package.parent.name.startswith("."):
                recursive.add(str(package.parent))
    kept = sorted(r for r in recursive if not inside(r, recursive - {r}))
    return WatchPlan(
        recursive=tuple(kept),
        flat=tuple(sorted(f for f in flat if Path(f).is_dir())),
        interesting=frozenset(interesting | anchors),
        anchors=frozenset(anchors),
        code_dirs=frozenset(code_dirs),
        identity=tuple(identity),
    )


def links_on(path: Path) -> list[tuple[Path, str]]:
    """Every symlink met while resolving ``path``: (the link, under a real parent; its target)."""
    found: list[tuple[Path, str]] = []
    current = Path(path.anchor)
    for part in path.parts[1:]:
        current = current / part
        if len(found) > 40:  # a loop; resolve() gives up the same way
            break
        if current.is_symlink():
            try:
                found.append((current, str(current.readlink())))
                current = current.resolve()
            except (OSError, RuntimeError):
                break
    return found


def _real(path: Path) -> Path:
    """``path`` with symlinks resolved, never raising.

    ``Path.resolve`` raises RuntimeError on a symlink loop; a loop pushed in
    place of a watched file must make the next load fail, not kill the watcher
    (which would end hot reload for good). ``os.path.realpath`` stops at the loop.
    """
    return Path(os.path.realpath(path))


def _inode(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return f"{st.st_dev}:{st.st_ino}"


def inside(path: str, roots: Iterable[str]) -> bool:
    """Whether ``path`` is one of ``roots`` or below one of them (no resolving)."""
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)
