"""The catalog: one immutable snapshot of a valid manifest set.

Built whole by ``loader.load_catalog`` (which validates everything first) and
swapped in one assignment by the reloader; a request or run reads
``CatalogRef.current`` once and keeps that object, so a reload never changes
what a run in flight sees. ``version`` is a content hash of every source file
(manifests, the Python action code they import and the knowledge files
under ``file_search``), so two replicas on the same Git revision report the
same version, and an edited knowledge file is a new version.

``code`` is the Python the load validated, byte for byte (``SourceModule``):
the sandbox's zygotes compile the catalog's user modules from it, never from
disk, so a push the reload rejected (or one landing after the load imported
the code) never runs under this catalog, however often a zygote restarts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from gateway.manifests.model import Action, Assistant, Database, Provider

__all__ = ["Catalog", "CatalogRef", "ShortVariable", "SourceModule", "SourceRef"]


class SourceRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where a document came from: file (relative to the manifests root) and line."""

    file: str
    line: int


class SourceModule(msgspec.Struct, frozen=True, kw_only=True):
    """One user module as the load imported it (``_introspect``): what zygotes run.

    Attributes:
        name: the module's dotted name (``actions.weather``).
        file: its ``__file__`` at the load (under the resolved gateway root); the
            zygote keeps it as ``__file__`` and as the code's file name, so a
            traceback names the real file and files next to the module resolve.
            Empty for a namespace package (a directory without ``__init__.py``).
        real: ``file`` with every symlink resolved, as in ``Catalog.code_files``.
        source: the bytes the load compiled; None for a namespace package.
        locations: where a package's submodules are looked for (its ``__path__``);
            None for a module that is not a package.
    """

    name: str
    file: str = ""
    real: str = ""
    source: bytes | None = None
    locations: tuple[str, ...] | None = None


class ShortVariable(msgspec.Struct, frozen=True, kw_only=True):
    """A ``${VAR}`` whose value (1 to 3 characters) went where values are masked, too short
    to be: its name, how long it is, and where it is used first (never the value)."""

    name: str
    length: int
    file: str
    line: int


class Catalog(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a running gateway needs from the manifests, precomputed.

    Attributes:
        version: short content hash of the source files.
        root: the manifests root (absolute).
        gateway_root: the directory put on ``sys.path`` for Python actions.
        loaded_at: UNIX time the set was built.
        files: source files (relative to ``root``), sorted.
        assistants / actions / databases / providers: documents by name;
            every ``Action.parameters`` is resolved (inferred ones filled in).
        sources: ``"kind/name"`` -> where it was declared.
        substituted: ``"action/name"`` or ``"database/name"`` -> the values ``${VAR}``
            put into that action's kind config or that database's URL (4+ characters):
            secrets as much as declared ones, masked in what a call of that action (or
            of a ``sql`` action on that database) sends back.
        short_variables: ``"kind/name"`` -> the ``${VAR}`` values too short to mask
            that went into that action's kind config, that database's URL or that
            provider (``validate.variable_warnings`` says so).
        tools: assistant name -> its tool schemas in Chat Completions form
            (``{"type": "function", "function": {...}}``), built-ins included.
        knowledge_files: absolute paths of every file_search file (watched).
        code_files: absolute paths of the Python action modules (watched, hashed).
        code: the user modules the load imported, with the source it validated
            (see ``SourceModule``); the sandbox runs these, not what is on disk
            now. A user module the load did not import (one imported only at
            call time) is not here and is read from disk when first imported.
    """

    version: str
    root: Path
    gateway_root: Path
    loaded_at: float
    files: tuple[str, ...] = ()
    assistants: dict[str, Assistant] = {}
    actions: dict[str, Action] = {}
    databases: dict[str, Database] = {}
    providers: dict[str, Provider] = {}
    sources: dict[str, SourceRef] = {}
    substituted: dict[str, tuple[str, ...]] = {}
    short_variables: dict[str, tuple[ShortVariable, ...]] = {}
    tools: dict[str, list[dict[str, Any]]] = {}
    knowledge_files: tuple[Path, ...] = ()
    code_files: tuple[Path, ...] = ()
    code: tuple[SourceModule, ...] = ()

    def code_sources(self) -> dict[str, bytes]:
        """Resolved path -> the source the load validated, for each module in ``code``."""
        return {m.real: m.source for m in self.code if m.source is not None}

    def database_urls(self) -> dict[str, str]:
        """Database name -> URL with relative sqlite paths resolved against ``root``."""
        urls: dict[str, str] = {}
        for name, db in self.databases.items():
            url = db.url
            prefix = "sqlite:///"
            if url.startswith(prefix) and not url.startswith("sqlite:////"):
                url = prefix + str(self.root / url[len(prefix) :])
            urls[name] = url
        return urls


class CatalogRef:
    """The live catalog: read ``current`` once per request; replaced in one assignment."""

    __slots__ = ("current",)

    def __init__(self, catalog: Catalog | None = None) -> None:
        self.current: Catalog | None = catalog
