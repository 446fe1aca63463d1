"""Parent side of Python action introspection: one isolated subprocess per load.

The server never imports user code. ``inspect_functions`` starts
``python -I -B _introspect.py`` once for all the Python actions of a manifest set,
with the gateway root first on ``sys.path``, a minimal environment and a
timeout, and returns per reference either the inferred ``parameters`` or the
error to report (module not importable, attribute missing, not callable), and
the source of every user module the import compiled (``Catalog.code``: what
the sandbox will run), up to ``MAX_SOURCE_BYTES``.

Imports only the standard library, msgspec and ``gateway.manifests.catalog``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from gateway.manifests.catalog import SourceModule

__all__ = ["MAX_SOURCE_BYTES", "FunctionInfo", "Introspection", "TooLarge", "inspect_functions"]

_SCRIPT = Path(__file__).with_name("_introspect.py")
_MARKER = "\x00gateway-introspect\x00"
TIMEOUT_S = 60.0
MAX_SOURCE_BYTES = 32 * 1024 * 1024
"""Most bytes of Python source a manifest set may import from under the gateway root.

The catalog keeps that source (the sandbox runs it, not the disk), in the server
and in each zygote that imports user code; a set importing more is refused with
the largest files named (a large library belongs in the environment's
site-packages, which is not copied)."""


class FunctionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """What the child found for one ``module:callable`` reference."""

    error: str | None = None
    parameters: dict[str, Any] | None = None
    summary: str = ""
    is_async: bool = False


class TooLarge(msgspec.Struct, frozen=True, kw_only=True):
    """The user source imported adds up to more than ``MAX_SOURCE_BYTES``."""

    bytes: int
    largest: list[tuple[str, int]] = []


class Introspection(msgspec.Struct, frozen=True, kw_only=True):
    """The child's answer: per reference info, the user source files it imported, and
    the modules it compiled with their source (or, past the limit, ``too_large``)."""

    functions: dict[str, FunctionInfo] = {}
    files: list[str] = []
    modules: list[SourceModule] = []
    too_large: TooLarge | None = None


def inspect_functions(refs: list[str], gateway_root: Path) -> Introspection:
    """Import ``refs`` in a fresh isolated interpreter and describe each callable.

    Args:
        refs: ``module:callable`` references (duplicates allowed).
        gateway_root: directory put first on the child's ``sys.path`` (its cwd too).

    Returns:
        One ``FunctionInfo`` per distinct reference. A child that crashes or
        times out yields an error for every reference, never an exception.
    """
    unique = sorted(set(refs))
    if not unique:
        return Introspection()
    request = json.dumps(
        {"root": str(gateway_root), "functions": unique, "max_source_bytes": MAX_SOURCE_BYTES}
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-B", str(_SCRIPT)],
            input=request.encode(),
            capture_output=True,
            cwd=gateway_root if gateway_root.is_dir() else None,
            env=env,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return _all_failed(unique, f"importing the action modules took over {TIMEOUT_S:g}s")
    # User code may write any bytes to fd 1 or 2 at import: never decode strictly.
    stdout = proc.stdout.decode("utf-8", errors="replace")
    stderr = proc.stderr.decode("utf-8", errors="replace")
    _, marker, payload = stdout.rpartition(_MARKER)
    if proc.returncode != 0 or not marker:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return _all_failed(unique, f"importing the action modules failed: {last[:300]}")
    try:
        found = msgspec.json.decode(payload.strip(), type=Introspection)
    except msgspec.DecodeError as exc:  # our own child's output; a bug must not crash the load
        return _all_failed(unique, f"introspection returned malformed output: {exc}")
    return _under_root_as_given(found, gateway_root)


def _under_root_as_given(found: Introspection, gateway_root: Path) -> Introspection:
    """``found`` with its modules' ``file`` and ``locations`` under ``gateway_root`` as
    given, not resolved (the child imports below the resolved root).

    The sandbox keeps ``file`` as a module's ``__file__``: with git-sync's
    ``current -> rev1`` root, a resolved one named a revision deleted after a later
    flip, and files next to the module could no longer be read there. ``real``
    stays resolved (it keys the snapshot and the watched files).
    """
    given = str(gateway_root.absolute())
    resolved = str(Path(given).resolve())
    if resolved == given:
        return found

    def moved(path: str) -> str:
        if path == resolved or path.startswith(resolved + os.sep):
            return given + path[len(resolved) :]
        return path

    modules = [
        msgspec.structs.replace(
            module,
            file=moved(module.file),
            locations=None if module.locations is None else tuple(map(moved, module.locations)),
        )
        for module in found.modules
    ]
    return msgspec.structs.replace(found, modules=modules)


def _all_failed(refs: list[str], message: str) -> Introspection:
    return Introspection(functions={ref: FunctionInfo(error=message) for ref in refs})
