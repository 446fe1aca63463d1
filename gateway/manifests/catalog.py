"""The catalog: one immutable snapshot of a valid manifest set.

Built whole by ``loader.load_catalog`` (which validates everything first) and
swapped in one assignment by the reloader; a request or run reads
``CatalogRef.current`` once and keeps that object, so a reload never changes
what a run in flight sees. ``version`` is a content hash of every source file
(manifests, the Python action code they import and the knowledge files
under ``file_search``), so two replicas on the same Git revision report the
same version, and an edited knowledge file is a new version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from gateway.manifests.model import Action, Assistant, Database, Provider

__all__ = ["Catalog", "CatalogRef", "ShortVariable", "SourceRef"]


class SourceRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where a document came from: file (relative to the manifests root) and line."""

    file: str
    line: int


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
