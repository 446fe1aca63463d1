"""Load a manifests root into one validated, immutable ``Catalog``, or fail with every problem.

``load_catalog`` finds every ``*.yaml``/``*.yml`` under the root (sorted, so
the result is deterministic; hidden directories skipped, symlinks followed),
reads each document with node positions and ``${VAR}`` interpolation
(``_yaml``), decodes it in two steps (read ``kind``; then the kind's Struct,
and for an action its one kind key with that kind's config Struct), runs the
checks of ``validate`` in order, imports the Python actions in an isolated
subprocess to check them and infer missing ``parameters`` (``_pyfunc``), and
builds the catalog with its tool schemas and content-hash version.

Blocking: call it with ``asyncio.to_thread`` from async code. Action kinds must
be registered first (``import gateway.executors``). Imports ``gateway.manifests``
modules and ``errors`` only.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from gateway.errors import ManifestError, Problem
from gateway.manifests import validate
from gateway.manifests._pyfunc import Introspection, inspect_functions
from gateway.manifests._yaml import RawDocument, YamlError, read_documents
from gateway.manifests.catalog import Catalog, SourceRef
from gateway.manifests.model import ACTION_KINDS, KINDS, Action, CheckContext
from gateway.manifests.tools import assistant_tools
from gateway.manifests.validate import Entry, at

__all__ = ["SUFFIXES", "discover", "load_catalog"]

SUFFIXES = (".yaml", ".yml")


def load_catalog(
    root: Path,
    *,
    environ: Mapping[str, str] | None = None,
    gateway_root: Path | None = None,
) -> Catalog:
    """Load, validate and assemble the manifest set under ``root``.

    Args:
        root: the manifests root; problems name files as ``root / relative``.
        environ: variables for ``${VAR}`` and ``secrets`` (default ``os.environ``).
        gateway_root: directory on ``sys.path`` for Python actions (default:
            the parent of the resolved root, as ``Settings.root``).

    Raises:
        ManifestError: with every problem found, sorted by file, line and column.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    root_abs = root.absolute()
    code_root = (gateway_root or root_abs.resolve().parent).absolute()
    problems: list[Problem] = []
    if not root_abs.is_dir():
        raise ManifestError([_root_problem(root, "the manifests root is not a directory")])
    files = discover(root_abs)
    if not files:
        raise ManifestError([_root_problem(root, "no manifest files (*.yaml, *.yml) here")])

    contents: dict[str, bytes] = {}
    rel_of: dict[str, str] = {}
    raw: list[RawDocument] = []
    for rel in files:
        shown = str(root / rel)
        rel_of[shown] = rel
        try:
            data = (root_abs / rel).read_bytes()
            contents[rel] = data
            raw += read_documents(data.decode("utf-8"), shown, env)
        except YamlError as exc:
            raw += exc.documents
            problems.append(Problem(file=shown, line=exc.line, col=exc.col, message=exc.message))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(file=shown, line=1, col=1, message=f"cannot read: {exc}"))
    if not raw and not problems:
        raise ManifestError([_root_problem(root, "the manifest files hold no documents")])

    declared: dict[str, set[str]] = {kind: set() for kind in KINDS}
    first: dict[tuple[str, str], RawDocument] = {}
    entries: list[Entry] = []
    for doc in raw:
        entry = _decode(doc, problems, declared)
        problems += _duplicate(doc, first)
        if entry is not None:
            entries.append(entry)

    problems += validate.cross_problems(entries, declared=declared, root=root_abs, environ=env)
    refs = [ref for e in entries if (ref := _python_ref(e)) is not None]
    found = inspect_functions(refs, code_root) if refs else Introspection()
    problems += validate.python_problems(entries, found)
    _fill_inferred_parameters(entries, found)
    problems += validate.example_problems(entries)
    ctx = CheckContext(root=root_abs, databases=frozenset(declared["database"]))
    problems += validate.kind_problems(entries, ctx)
    if problems:
        raise ManifestError(_sorted(problems))
    return _assemble(root_abs, code_root, rel_of, contents, entries, found)


def discover(root: Path) -> list[str]:
    """Manifest files under ``root`` as sorted POSIX paths relative to it.

    Follows symlinks (git-sync, Kubernetes ConfigMaps), skips hidden files and
    directories, and never visits the same real directory twice.
    """
    found: list[str] = []
    seen: set[str] = set()
    for current, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(current).relative_to(root)
        for name in names:
            if name.endswith(SUFFIXES) and not name.startswith("."):
                found.append((base / name).as_posix())
    return sorted(found)


def _root_problem(root: Path, message: str) -> Problem:
    return Problem(file=str(root), line=1, col=1, message=message)


def _sorted(problems: list[Problem]) -> list[Problem]:
    unique = {(p.file, p.line, p.col, p.message): p for p in problems}
    return [unique[k] for k in sorted(unique)]


def _decode(
    doc: RawDocument, problems: list[Problem], declared: dict[str, set[str]]
) -> Entry | None:
    """Two-step decode of one document; appends its problems and returns it if clean."""
    data = doc.data
    known = ", ".join(sorted(KINDS))
    if not isinstance(data, dict):
        problems.append(at(doc, (), f"a manifest document must be a mapping with `kind` ({known})"))
        return None
    kind = data.get("kind")
    if kind is None:
        problems.append(at(doc, (), f"missing `kind` (one of {known})"))
        return None
    if not isinstance(kind, str) or kind not in KINDS:
        problems.append(at(doc, ("kind",), f"unknown kind {kind!r}; known kinds: {known}"))
        return None
    name = data.get("name")
    if isinstance(name, str):
        declared[kind].add(name)
    before = len(problems)
    problems.extend(
        at(doc, path, f"environment variable {var} is not set") for path, var in doc.locator.missing
    )
    kind_key = _kind_key(doc, data, problems) if kind == "action" else None
    problems += validate.schema_problems(doc, kind)
    if len(problems) > before:
        return None
    try:
        if kind_key is None:
            return Entry(doc, kind, msgspec.convert(data, KINDS[kind]))
        rest = {k: v for k, v in data.items() if k != kind_key}
        action = msgspec.convert(rest, Action)
    except msgspec.ValidationError as exc:
        problems.append(validate.decode_problem(doc, exc))
        return None
    try:
        config = msgspec.convert(data[kind_key], ACTION_KINDS[kind_key])
    except msgspec.ValidationError as exc:
        problems.append(validate.decode_problem(doc, exc, (kind_key,)))
        return None
    return Entry(doc, kind, msgspec.structs.replace(action, kind_key=kind_key, config=config))


def _duplicate(doc: RawDocument, first: dict[tuple[str, str], RawDocument]) -> list[Problem]:
    """A problem if ``doc`` reuses a kind's name; checked on every document, valid or not."""
    data = doc.data
    if not isinstance(data, dict):
        return []
    kind, name = data.get("kind"), data.get("name")
    if not isinstance(kind, str) or kind not in KINDS or not isinstance(name, str):
        return []
    seen = first.setdefault((kind, name), doc)
    if seen is doc:
        return []
    where = f"{seen.file}:{seen.locator.start[0]}"
    return [at(doc, ("name",), f"duplicate {kind} name {name!r} (first declared at {where})")]


def _kind_key(doc: RawDocument, data: dict[str, Any], problems: list[Problem]) -> str | None:
    """The one registered kind key of an action document; reports none, several, internal keys."""
    for internal in ("kind_key", "config"):
        if internal in data:
            problems.append(
                at(doc, (internal,), f"`{internal}` is set by the loader, not in YAML", key=True)
            )
    present = [k for k in data if k in ACTION_KINDS]
    if len(present) == 1:
        return present[0]
    kinds = ", ".join(sorted(ACTION_KINDS)) or "(no action kinds are registered)"
    if not present:
        problems.append(at(doc, (), f"an action needs exactly one of: {kinds}"))
    else:
        problems.append(
            at(
                doc,
                (present[1],),
                f"an action takes exactly one of {kinds}; this one has {' and '.join(present)}",
                key=True,
            )
        )
    return None


def _python_ref(entry: Entry) -> str | None:
    return validate.python_function(entry.value) if isinstance(entry.value, Action) else None


def _fill_inferred_parameters(entries: list[Entry], found: Introspection) -> None:
    """Python actions without ``parameters`` take the ones inferred from their signature."""
    for entry in entries:
        value = entry.value
        ref = _python_ref(entry)
        info = found.functions.get(ref) if ref is not None else None
        inferred = info.parameters if info is not None else None
        if isinstance(value, Action) and value.parameters is None and inferred is not None:
            entry.value = msgspec.structs.replace(value, parameters=inferred)


def _assemble(
    root: Path,
    code_root: Path,
    rel_of: dict[str, str],
    contents: dict[str, bytes],
    entries: list[Entry],
    found: Introspection,
) -> Catalog:
    by_kind: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    sources: dict[str, SourceRef] = {}
    for entry in entries:
        by_kind[entry.kind][entry.name] = entry.value
        sources[f"{entry.kind}/{entry.name}"] = SourceRef(
            file=rel_of[entry.doc.file], line=entry.doc.locator.start[0]
        )
    assistants = by_kind["assistant"]
    actions = by_kind["action"]
    knowledge = sorted(
        {
            root / file
            for assistant in assistants.values()
            if assistant.file_search is not None
            for file in assistant.file_search.files
        }
    )
    code_files = tuple(Path(p) for p in found.files)
    return Catalog(
        version=_version(root, code_root, contents, knowledge, code_files),
        root=root,
        gateway_root=code_root,
        loaded_at=time.time(),
        files=tuple(sorted(rel_of.values())),
        assistants=assistants,
        actions=actions,
        databases=by_kind["database"],
        providers=by_kind["provider"],
        sources=sources,
        tools={name: assistant_tools(a, actions) for name, a in assistants.items()},
        knowledge_files=tuple(knowledge),
        code_files=code_files,
    )


def _version(
    root: Path,
    code_root: Path,
    contents: dict[str, bytes],
    knowledge: list[Path],
    code_files: tuple[Path, ...],
) -> str:
    """Short sha256 over (relative path, bytes) of manifests, code and knowledge files."""
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{len(label)}:{label}:{len(data)}:".encode())
        digest.update(data)

    for rel in sorted(contents):
        add(f"manifest/{rel}", contents[rel])
    for group, paths, base in (("code", code_files, code_root), ("knowledge", knowledge, root)):
        for path in sorted(paths):
            try:
                label = path.relative_to(base).as_posix()
            except ValueError:
                label = path.as_posix()
            try:
                add(f"{group}/{label}", path.read_bytes())
            except OSError:
                add(f"{group}/{label}", b"")
    return digest.hexdigest()[:12]
