"""Load a manifests root into one validated, immutable ``Catalog``, or fail with every problem.

``load_catalog`` finds every ``*.yaml``/``*.yml`` under the root (sorted, so
the result is deterministic; hidden directories skipped, symlinks followed),
reads each document with node positions and ``${VAR}`` interpolation
(``_yaml``), decodes it in two steps (read ``kind``; then the kind's Struct,
and for an action its one kind key with that kind's config Struct), runs the
checks of ``validate`` in order, imports the Python actions in an isolated
subprocess to check them and infer missing ``parameters`` (``_pyfunc``), and
builds the catalog with its tool schemas and content-hash version. Every
stage runs whatever an earlier one found: a document that fails its schema
still has its sound parts (``_salvage``: its Python function, its SQL
template...) checked by the later stages, so one load reports all of a push's
problems; only a set without any problem becomes a catalog. The code
that import compiled is kept in the catalog (``Catalog.code``) and hashed into
its version from those bytes: a push landing on disk after the import changes
neither what this catalog runs nor its version (the reload it triggers loads it).

Reloads are incremental: what one file yields on its own (its documents, their
decoded Structs and their own problems, and the action kinds' checks of them)
is remembered from the last load under the file's bytes and the environment,
so a reload re-reads every file but parses and checks again only the ones that
changed; everything that spans documents runs every time. A load forgets what
the previous one remembered for files that are gone.

Blocking: call it with ``asyncio.to_thread`` from async code. Action kinds must
be registered first (``import gateway.executors``). Imports ``gateway.manifests``
modules, ``errors`` and ``_files`` only.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from gateway._files import NotRegularFile, open_regular
from gateway._unicode import fs_text, printable
from gateway.errors import ManifestError, Problem
from gateway.manifests import _pyfunc, validate
from gateway.manifests._pyfunc import Introspection, inspect_functions
from gateway.manifests._salvage import salvage
from gateway.manifests._yaml import (
    Path_,
    RawDocument,
    YamlError,
    format_path,
    parse_path,
    read_documents,
    redact,
)
from gateway.manifests.catalog import Catalog, ShortVariable, SourceRef
from gateway.manifests.model import ACTION_KINDS, KINDS, Action, CheckContext
from gateway.manifests.tools import assistant_tools
from gateway.manifests.validate import Entry, at

__all__ = [
    "MAX_FILE_BYTES",
    "SUFFIXES",
    "default_gateway_root",
    "discover",
    "forget_previous_load",
    "load_catalog",
]

SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 8 * 1024 * 1024
"""Largest manifest file read (a thousand manifests take about 400 KB)."""


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
            ``default_gateway_root``, as ``Settings.root``).

    Raises:
        ManifestError: with every problem found, sorted by file, line and column.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    root_abs = root.absolute()
    if not root_abs.is_dir():
        # lexists: a symlink loop or a dangling link exists, as a link that is not a directory
        what = "is not a directory" if os.path.lexists(root_abs) else "does not exist"
        raise ManifestError([_root_problem(root, f"the manifests root {what}")])
    code_root = (gateway_root or default_gateway_root(root)).absolute()
    problems: list[Problem] = []
    files = discover(root_abs)
    if not files:
        raise ManifestError([_root_problem(root, "no manifest files (*.yaml, *.yml) here")])

    contents: dict[str, bytes] = {}
    rel_of: dict[str, str] = {}
    global _REMEMBERED
    last = _REMEMBERED  # one snapshot: its documents stay alive while its ids are keys
    previous, remembered = last.files, {}
    environment = _environment_digest(env)
    declared: dict[str, set[str]] = {kind: set() for kind in KINDS}
    first: dict[tuple[str, str], RawDocument] = {}
    entries: list[Entry] = []  # the documents that decoded cleanly: the catalog's
    salvaged: list[Entry] = []  # the sound parts of the others, for the later checks only
    originals: list[Any] = []  # each checked entry's value as decoded (inference may replace it)
    documents = 0
    for rel in files:
        shown = str(root / rel)
        if fs_text(rel) is not rel:
            problems.append(_undecodable_name(root, rel))
            continue
        rel_of[shown] = rel
        try:
            data = _read_manifest(root_abs / rel)
        except OSError as exc:
            message = exc.strerror if isinstance(exc, _NotAManifest | NotRegularFile) else str(exc)
            problems.append(Problem(file=shown, line=1, col=1, message=f"cannot read: {message}"))
            continue
        contents[rel] = data
        key = (shown, environment)
        parsed = previous.get(key)
        if parsed is None or parsed.data != data:
            parsed = _parse_file(shown, data, env)
        remembered[key] = parsed
        problems += parsed.problems
        for doc, decoded in parsed.documents:
            documents += 1
            problems += decoded.problems
            if decoded.declares is not None:
                declared[decoded.declares[0]].add(decoded.declares[1])
            problems += _duplicate(doc, first)
            # A fresh Entry: inferring parameters below replaces its value.
            if decoded.value is not None:
                entries.append(Entry(doc, decoded.kind, decoded.value))
                originals.append(decoded.value)
            elif decoded.salvaged is not None:
                salvaged.append(Entry(doc, decoded.kind, decoded.salvaged))
    if not documents and not problems:
        raise ManifestError([_root_problem(root, "the manifest files hold no documents")])

    # A salvaged entry's document has problems already: it never reaches _assemble.
    checked = entries + salvaged
    originals += [e.value for e in salvaged]
    problems += validate.cross_problems(checked, declared=declared, root=root_abs, environ=env)
    refs = [ref for e in checked if (ref := _python_ref(e)) is not None]
    found = inspect_functions(refs, code_root, (root_abs,)) if refs else Introspection()
    # Defence in depth: import-time code is confined (``_confine``), but where the
    # kernel has no Landlock a module could read the server's environment and raise it.
    problems += [
        msgspec.structs.replace(p, message=redact(p.message, _environment_secrets(env)))
        for p in validate.python_problems(checked, found)
    ]
    problems += _code_size_problems(checked, found, code_root)
    _fill_inferred_parameters(checked, found)
    problems += validate.example_problems(checked)
    ctx = CheckContext(root=root_abs, databases=frozenset(declared["database"]))
    found_by_kinds, kind_checks = _kind_checks(checked, originals, ctx, last.kind_checks)
    problems += found_by_kinds
    _REMEMBERED = _Memory(remembered, kind_checks)
    if problems:
        raise ManifestError(_sorted(_redacted(problems, remembered.values())))
    return _assemble(root_abs, code_root, rel_of, contents, entries, found)


_KindChecks = dict[tuple[int, Path, frozenset[str]], list[Problem]]


def _kind_checks(
    entries: list[Entry], originals: list[Any], ctx: CheckContext, last: _KindChecks
) -> tuple[list[Problem], _KindChecks]:
    """Every action's kind check, reusing ``last`` for values decoded as before.

    Returns the problems and what to remember: results keyed by (id of the
    decoded value, context). A value replaced by parameters inferred from code
    is checked every time and not remembered.
    """
    problems: list[Problem] = []
    remember: _KindChecks = {}
    for entry, decoded in zip(entries, originals, strict=True):
        if not isinstance(entry.value, Action):
            continue
        if entry.value is not decoded:
            problems += validate.kind_check(entry, entry.value, ctx)
            continue
        key = (id(decoded), ctx.root, ctx.databases)
        checked = last.get(key)
        remember[key] = checked if checked is not None else validate.kind_check(entry, decoded, ctx)
        problems += remember[key]
    return problems, remember


class _Decoded(NamedTuple):
    """One document on its own: its Struct (None if invalid), problems, declared name,
    and when invalid the Struct of its sound parts the later checks read (``_salvage``)."""

    kind: str
    value: Any
    problems: list[Problem]
    declares: tuple[str, str] | None
    salvaged: Any = None


class _ParsedFile(NamedTuple):
    """What one file yields on its own, remembered under its bytes (see the module doc)."""

    data: bytes
    documents: list[tuple[RawDocument, _Decoded]]
    problems: list[Problem]


class _Memory(NamedTuple):
    """The last load's per-file results, and the kinds' checks of their documents.

    ``kind_checks`` (a kind's ``check`` of one action, which depends only on the
    action's document and the ``CheckContext``) is keyed by the ``id`` of decoded
    values held in ``files``: they live as long as this object, so an id cannot
    be reused while it is a key.
    """

    files: dict[tuple[str, str], _ParsedFile]
    kind_checks: _KindChecks


_REMEMBERED = _Memory({}, {})
"""Replaced wholesale by each load; a load never mutates what another may be reading."""


def forget_previous_load() -> None:
    """Make the next load parse and check every file (as a first load; for benchmarks)."""
    global _REMEMBERED
    _REMEMBERED = _Memory({}, {})


def _environment_digest(env: Mapping[str, str]) -> str:
    """A digest of the environment, which ``${VAR}`` interpolation depends on."""
    digest = hashlib.sha256()
    for name, value in sorted(env.items()):
        digest.update(f"{len(name)}:{name}:{len(value)}:{value}".encode(errors="replace"))
    return digest.hexdigest()


def _parse_file(shown: str, data: bytes, env: Mapping[str, str]) -> _ParsedFile:
    """Read and decode every document of one file, with the problems of each."""
    problems: list[Problem] = []
    try:
        raw = read_documents(data.decode("utf-8"), shown, env)
    except YamlError as exc:
        raw = exc.documents  # before and after the broken parts, which `more` lists too
        for error in (exc, *exc.more):
            problems.append(
                Problem(file=shown, line=error.line, col=error.col, message=error.message)
            )
    except UnicodeDecodeError as exc:
        return _ParsedFile(data, [], [_not_utf8(shown, data, exc)])
    documents = []
    for doc in raw:
        own: list[Problem] = []
        declared: dict[str, set[str]] = {kind: set() for kind in KINDS}
        kind, value, salvaged = _decode(doc, own, declared)
        names = [(k, name) for k, found in declared.items() for name in found]
        declares = names[0] if names else None
        documents.append((doc, _Decoded(kind, value, own, declares, salvaged)))
    return _ParsedFile(data, documents, problems)


def _not_utf8(shown: str, data: bytes, exc: UnicodeDecodeError) -> Problem:
    """Where the first byte that is not UTF-8 is: its line, and its column in characters."""
    start = data.rfind(b"\n", 0, exc.start) + 1
    line = data.count(b"\n", 0, exc.start) + 1
    col = len(data[start : exc.start].decode("utf-8", errors="replace")) + 1
    byte = data[exc.start : exc.start + 1].hex()
    message = f"cannot read: byte 0x{byte} is not UTF-8 ({exc.reason}); save the file as UTF-8"
    return Problem(file=shown, line=line, col=col, message=message)


def default_gateway_root(manifests: Path) -> Path:
    """The parent of the manifests root, absolute but not resolved (``..`` removed).

    With git-sync's layout (``/git/current/manifests``, ``current -> revs/r5``) it
    is ``/git/current``: modules' ``__file__`` stay under the link, so their data
    files are those of the revision it points to (r5 is deleted after the next
    flip), and the root is the same after every flip (a zygote is replaced when
    its root changes, so a manifest-only push would restart them all).
    """
    return Path(os.path.abspath(manifests)).parent  # noqa: PTH100 - normalizes, no resolving


def discover(root: Path) -> list[str]:
    """Manifest files under ``root`` as sorted POSIX paths relative to it.

    Follows symlinks (git-sync, Kubernetes ConfigMaps), skips hidden files and
    directories, and never visits the same real directory twice. A name that is
    not UTF-8 comes as ``os.walk`` decodes it (lone surrogates): ``load_catalog``
    reports it and reads it not.
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


class _NotAManifest(OSError):
    """A path named like a manifest that must not be read (``strerror`` says why)."""


def _read_manifest(path: Path) -> bytes:
    """The bytes of one manifest file: a regular file of at most ``MAX_FILE_BYTES``.

    Symlinks are followed, so a pushed ``x.yaml -> /dev/zero`` or a FIFO would
    otherwise block the reload forever or read until memory runs out: the file
    is opened with ``open_regular``.

    Raises:
        OSError: it cannot be opened, is not a regular file, or is too large.
    """
    with open_regular(path) as file:
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise _NotAManifest(0, f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return data


def _redacted(problems: list[Problem], files: Iterable[_ParsedFile]) -> list[Problem]:
    """Problems with every value any ``${VAR}`` of the set substituted masked as ``***``.

    ``validate.at`` masks the values of the problem's own document; this also
    covers a check quoting another document (an assistant's "known: ..." list
    of action names, one of them built from a variable).
    """
    values: set[str] = set()
    for parsed in files:
        for doc, _ in parsed.documents:
            values |= doc.locator.substituted
    if not values:
        return problems
    return [msgspec.structs.replace(p, message=redact(p.message, values)) for p in problems]


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|DATABASE_URL", re.I)
"""Environment variables whose values an import error must never show."""
_SECRET_MIN = 8
"""Shorter values (and parts of lists) are not masked: they would mask ordinary words."""


def _environment_secrets(env: Mapping[str, str]) -> set[str]:
    """The values of ``env``'s secret-looking variables (``OPENAI_API_KEY``,
    ``GATEWAY_ADMIN_KEYS``, ``GATEWAY_DATABASE_URL``...), whole and, for key lists
    (``name:key,name:key``), each key, that are at least ``_SECRET_MIN`` long."""
    values: set[str] = set()
    for name, value in env.items():
        if not _SECRET_NAME.search(name):
            continue
        parts = [value, *re.split(r"[,\s]+", value)]
        parts += [part.partition(":")[2] for part in parts]
        values |= {part for part in parts if len(part) >= _SECRET_MIN}
    return values


def _undecodable_name(root: Path, rel: str) -> Problem:
    """A manifest whose path is not UTF-8: not read (no output could name it as it is)."""
    return Problem(
        file=fs_text(str(root / rel)),
        line=1,
        col=1,
        message="the file name is not valid UTF-8 (the bytes shown as \\x..): "
        "the file was not read; rename it",
    )


def _root_problem(root: Path, message: str) -> Problem:
    return Problem(file=str(root), line=1, col=1, message=message)


def _malformed_variable(doc: RawDocument, path: Path_, line: int, name: str, end: str) -> Problem:
    """A ``${`` that is neither ``${NAME}`` nor ``$${``, at its line (in a ``|`` block too).

    Kept as written, ``${PGPASS:-changeme}`` would become the password itself. Only
    the name-like text after ``${`` is quoted (never what follows: a default value).
    """
    written = "${" + name[:64]
    if not end:
        why = f"`{written}` has no closing `}}`"
    elif end == "}":
        why = f"`{written}}}` is not a variable name (letters, digits and _, not a digit first)"
    else:
        why = f"`{written}` is followed by {end!r}, not `}}`"
    line_no, col = doc.locator.inner(path, line)
    message = (
        f"{why}: a variable is written ${{NAME}} (no default, no spaces); "
        "write $${ for a literal ${"
    )
    return Problem(
        file=doc.file,
        line=line_no,
        col=col,
        message=doc.locator.redact(printable(message)),
        path=format_path(path),
    )


def _sorted(problems: list[Problem]) -> list[Problem]:
    unique = {(p.file, p.line, p.col, p.message): p for p in problems}
    return [unique[k] for k in sorted(unique)]


def _decode(
    doc: RawDocument, problems: list[Problem], declared: dict[str, set[str]]
) -> tuple[str, Any, Any]:
    """Two-step decode of one document; appends its problems.

    Returns its kind (``""`` if unknown), its Struct if clean (else None), and
    when not clean the Struct of its sound parts (``_salvage``) or None.
    """
    data = doc.data
    known = ", ".join(sorted(KINDS))
    if not isinstance(data, dict):
        problems.append(at(doc, (), f"a manifest document must be a mapping with `kind` ({known})"))
        return "", None, None
    kind = data.get("kind")
    if kind is None:
        problems.append(at(doc, (), f"missing `kind` (one of {known})"))
        return "", None, None
    if not isinstance(kind, str) or kind not in KINDS:
        problems.append(at(doc, ("kind",), f"unknown kind {kind!r}; known kinds: {known}"))
        return "", None, None
    name = data.get("name")
    if isinstance(name, str):
        declared[kind].add(name)
    before = len(problems)
    problems.extend(
        at(doc, path, f"environment variable {var} is not set") for path, var in doc.locator.missing
    )
    problems.extend(_malformed_variable(doc, *found) for found in doc.locator.malformed)
    kind_key = _kind_key(doc, data, problems) if kind == "action" else None
    problems += validate.schema_problems(doc, kind)
    if len(problems) == before:
        value = _convert(doc, data, kind, kind_key)
        if not isinstance(value, Problem):
            return kind, value, None
        problems.append(value)
    broken = [parse_path(p.path) for p in problems[before:]]
    return kind, None, salvage(data, kind, kind_key, broken)


def _convert(doc: RawDocument, data: dict[str, Any], kind: str, kind_key: str | None) -> Any:
    """A document that passed the schema as its kind's Struct, or the problem msgspec found.

    Not strict: the schema (generated from these Structs) has passed, and JSON Schema's
    ``integer`` is any number without a fraction, so ``max_tool_rounds: 8.0`` is 8, as
    the committed schema (an editor's check) says it is. Strict, msgspec refused it.
    """
    try:
        if kind_key is None:
            return msgspec.convert(data, KINDS[kind], strict=False)
        rest = {k: v for k, v in data.items() if k != kind_key}
        action = msgspec.convert(rest, Action, strict=False)
    except msgspec.ValidationError as exc:
        return validate.decode_problem(doc, exc)
    try:
        config = msgspec.convert(data[kind_key], ACTION_KINDS[kind_key], strict=False)
    except msgspec.ValidationError as exc:
        return validate.decode_problem(doc, exc, (kind_key,))
    return msgspec.structs.replace(action, kind_key=kind_key, config=config)


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


def _code_size_problems(
    entries: list[Entry], found: Introspection, code_root: Path
) -> list[Problem]:
    """One problem, at the first Python action, when the code to keep is over the limit."""
    if found.too_large is None:
        return []
    first = next((e for e in entries if _python_ref(e) is not None), None)
    if first is None:
        return []
    mib = 1024 * 1024
    largest = ", ".join(
        f"{_shown(Path(path), code_root)} ({_size(size)})" for path, size in found.too_large.largest
    )
    message = (
        f"the Python actions import {_size(found.too_large.bytes)} of source from "
        f"the gateway root {code_root}, over the {_pyfunc.MAX_SOURCE_BYTES // mib} MiB the gateway "
        f"keeps as the validated copy its sandbox runs (largest: {largest}); install large "
        "libraries into the environment (site-packages is not copied)"
    )
    return [first.at(("python", "function"), message)]


def _size(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:.1f} KiB"


def _shown(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


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
    substituted: dict[str, tuple[str, ...]] = {}
    short_variables: dict[str, tuple[ShortVariable, ...]] = {}
    for entry in entries:
        by_kind[entry.kind][entry.name] = entry.value
        sources[f"{entry.kind}/{entry.name}"] = SourceRef(
            file=rel_of[entry.doc.file], line=entry.doc.locator.start[0]
        )
        if values := _substituted(entry):
            substituted[f"{entry.kind}/{entry.name}"] = values
        if short := _short_variables(entry, rel_of[entry.doc.file]):
            short_variables[f"{entry.kind}/{entry.name}"] = short
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
    code = tuple(found.modules)
    compiled = {m.real: m.source for m in code if m.source is not None}
    return Catalog(
        version=_version(root, code_root, contents, knowledge, code_files, compiled),
        root=root,
        gateway_root=code_root,
        loaded_at=time.time(),
        files=tuple(sorted(rel_of.values())),
        assistants=assistants,
        actions=actions,
        databases=by_kind["database"],
        providers=by_kind["provider"],
        sources=sources,
        substituted=substituted,
        short_variables=short_variables,
        tools={name: assistant_tools(a, actions) for name, a in assistants.items()},
        knowledge_files=tuple(knowledge),
        code_files=code_files,
        code=code,
    )


def _substituted(entry: Entry) -> tuple[str, ...]:
    """The values ``${VAR}`` put into ``entry`` that its calls mask (``Catalog.substituted``).

    A database's: all (its URL). An action's: those its kind's config holds (an
    http header, a sql query), which its call's child receives anyway; never one
    only in its description or examples, which the child must not learn from
    the values it masks (a python action's code runs there), nor one only in a
    URL's scheme and host (``url: ${API_BASE}/items``): public by contract, and
    quoted by the answers it gives (links); credentials (``user:pass@``) stay.
    """
    values = entry.doc.locator.substituted
    if not values or entry.kind not in ("action", "database"):
        return ()
    if isinstance(entry.value, Action):
        texts = [
            _without_origin(text) for text in _strings(msgspec.to_builtins(entry.value.config))
        ]
        values = {v for v in values if any(v in text for text in texts)}
    return tuple(sorted(values))


def _short_variables(entry: Entry, file: str) -> tuple[ShortVariable, ...]:
    """The ``${VAR}`` values too short to mask (``Locator.short``) that went where values
    are masked: anywhere in a database or a provider; in an action, into its kind config
    (as ``_substituted``: not its description, nor only a URL's origin)."""
    locator = entry.doc.locator
    if not locator.short or entry.kind not in ("action", "database", "provider"):
        return ()
    value = entry.value
    kind = value.kind_key if isinstance(value, Action) else ""
    url = getattr(value.config, "url", None) if isinstance(value, Action) else None
    found: dict[str, ShortVariable] = {}
    for path, names in sorted(locator.interpolated.items(), key=lambda i: locator.value(i[0])):
        if kind and path[:1] != (kind,):
            continue
        for name in names:
            short = locator.short.get(name)
            if short is None or name in found:
                continue
            origin_only = isinstance(url, str) and short not in _without_origin(url)
            if kind and path == (kind, "url") and origin_only:
                continue
            line = locator.value(path)[0]
            found[name] = ShortVariable(name=name, length=len(short), file=file, line=line)
    return tuple(found.values())


_URL_ORIGIN = re.compile(r"^https?://[^/?#\s]+")
"""A URL's scheme and authority (credentials, host, port)."""


def _without_origin(text: str) -> str:
    """``text`` without its URL scheme and host, unless they carry credentials
    (``user:pass@``): then whole, so that a variable holding them is masked."""
    origin = _URL_ORIGIN.match(text)
    if origin is None or "@" in origin.group():
        return text
    return text[origin.end() :]


def _strings(node: Any) -> list[str]:
    """Every string (keys included) in decoded JSON ``node``."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _version(
    root: Path,
    code_root: Path,
    contents: dict[str, bytes],
    knowledge: list[Path],
    code_files: tuple[Path, ...],
    sources: Mapping[str, bytes],
) -> str:
    """Short sha256 over (relative path, bytes) of manifests, and (relative path, sha256)
    of code and knowledge files; a code file's from ``sources`` (what the load compiled)
    when it is there."""
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
            source = sources.get(str(path)) if group == "code" else None
            digest_of = _file_digest(path) if source is None else hashlib.sha256(source).digest()
            add(f"{group}/{label}", digest_of)
    return digest.hexdigest()[:12]


def _file_digest(path: Path) -> bytes:
    """The sha256 of the file at ``path`` (``b""`` when unreadable), read in blocks.

    Knowledge files may be hundreds of MiB (``file_search.max_total_size_mb``):
    read whole, every reload would hold each one in memory at once. Opened with
    ``open_regular``: validation found a regular file, but a FIFO swapped in since
    (or a symlink to ``/dev/zero``) would hang the reloader's worker thread.
    """
    try:
        with open_regular(path) as fh:
            return hashlib.file_digest(fh, "sha256").digest()
    except OSError:
        return b""
