"""Parent side of Python action introspection: one isolated subprocess per load.

The server never imports user code. ``inspect_functions`` starts
``python -I -B _introspect.py`` once for all the Python actions of a manifest set,
with the gateway root first on ``sys.path``, a minimal environment (TMPDIR and
HOME: a fresh private folder, mode 0700, removed when the child is done, even
killed at the timeout) and a timeout; the child confines itself with Landlock
before the first user import (``_confine``: the modules' top-level code reads
what calls read, never the server's ``/proc/<pid>/environ``, ``.env`` or thread
store, and writes only that private folder). It returns per
reference either the inferred ``parameters`` or the
error to report (module not importable, attribute missing, not callable), and
the source of every user module the import compiled (``Catalog.code``: what
the sandbox will run), up to ``MAX_SOURCE_BYTES``. A module whose import ends
the process is reported at its reference and the rest described by one more
subprocess (the set fails to load, so only the last one's files and sources
are kept).

Imports only the standard library, msgspec and ``gateway.manifests.catalog``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from gateway.manifests.catalog import SourceModule

__all__ = ["MAX_SOURCE_BYTES", "FunctionInfo", "Introspection", "TooLarge", "inspect_functions"]

_SCRIPT = Path(__file__).with_name("_introspect.py")
_MARKER = "\x00gateway-introspect\x00"
_STARTED = "\x00gateway-introspect-started\x00"
_DESCRIBED = "\x00gateway-introspect-described\x00"
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


def inspect_functions(
    refs: list[str], gateway_root: Path, readable: tuple[Path, ...] = ()
) -> Introspection:
    """Import ``refs`` in a fresh isolated interpreter and describe each callable.

    A reference whose import ends the interpreter (``os._exit``, a crash) is
    reported as such and the others are described in a new child, so one
    broken module does not hide the others' problems (nor fail their checks).
    All children together get ``TIMEOUT_S``: a reference still importing when
    it runs out is reported, the ones not described by then say so.

    Args:
        refs: ``module:callable`` references (duplicates allowed).
        gateway_root: directory put first on the child's ``sys.path`` (its cwd too).
        readable: more paths the modules' import-time code may read (the manifests root).

    Returns:
        One ``FunctionInfo`` per distinct reference, never an exception.
    """
    pending = sorted(set(refs))
    if not pending:
        return Introspection()
    deadline = time.monotonic() + TIMEOUT_S
    stopped: dict[str, FunctionInfo] = {}
    while pending:
        outcome = _child(pending, gateway_root, deadline, readable)
        if isinstance(outcome, Introspection):
            found = _under_root_as_given(outcome, gateway_root)
            return msgspec.structs.replace(found, functions={**found.functions, **stopped})
        culprit, error, rest = outcome
        if culprit is None:  # not a reference's doing: each of them says so
            stopped.update((ref, FunctionInfo(error=error)) for ref in pending)
            break
        stopped[culprit] = FunctionInfo(error=error)
        pending = [ref for ref in pending if ref != culprit]
        if rest is not None:  # out of time: the others are not checked
            stopped.update((ref, FunctionInfo(error=rest)) for ref in pending)
            break
    return Introspection(functions=stopped)


class _Stopped(NamedTuple):
    """A child that gave no answer: the reference it was describing (None: unknown),
    the error to report for it, and for the others when no time is left (else None)."""

    culprit: str | None
    error: str
    rest: str | None = None


def _child(
    refs: list[str], gateway_root: Path, deadline: float, readable: tuple[Path, ...]
) -> Introspection | _Stopped:
    """One child describing ``refs``: its answer, or where and why it stopped.

    The child confines itself before the first user import (``_confine``): of the
    gateway root it reads only the entries holding code, never ``protected`` (the
    server's ``./.env``), and nothing outside but the system, the interpreter,
    ``sys.path`` and ``readable``.
    """
    timeout = deadline - time.monotonic()
    out_of_time = f"importing the action modules took over {TIMEOUT_S:g}s"
    if timeout <= 0:
        return _Stopped(None, out_of_time)
    try:
        protected = [str(Path.cwd() / ".env")]
    except FileNotFoundError:  # a revision git-sync deleted under the server: no .env there
        protected = []
    request: dict[str, object] = {
        "root": str(gateway_root),
        "functions": refs,
        "max_source_bytes": MAX_SOURCE_BYTES,
        "read": [str(p) for p in readable],
        "protected": protected,
    }
    # Import-time code may want a temporary directory or a cache under HOME (tempfile,
    # matplotlib, platformdirs): a fresh private one, the only place it may write.
    private = tempfile.mkdtemp(prefix="gateway-import-")
    try:
        return _run_child(request, private, gateway_root, timeout, out_of_time)
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _run_child(
    request: dict[str, object],
    private: str,
    gateway_root: Path,
    timeout: float,
    out_of_time: str,
) -> Introspection | _Stopped:
    """Run the child on ``request`` with ``private`` as its TMPDIR and HOME."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TMPDIR": private,
        "HOME": private,
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-B", str(_SCRIPT)],
            input=json.dumps({**request, "write": [private]}).encode(),
            capture_output=True,
            cwd=gateway_root if gateway_root.is_dir() else None,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # its output so far is in exc.stdout
        culprit = _describing(_text(exc.stdout))
        if culprit is None:
            return _Stopped(None, out_of_time)
        module = culprit.partition(":")[0]
        return _Stopped(
            culprit,
            f"cannot import module {module!r}: it was still importing when the "
            f"{TIMEOUT_S:g}s for importing the action modules ran out",
            f"not checked: the {TIMEOUT_S:g}s for importing the action modules ran out "
            f"while {module!r} was importing",
        )
    # User code may write any bytes to fd 1 or 2 at import: never decode strictly.
    stdout, stderr = _text(proc.stdout), _text(proc.stderr)
    _, marker, payload = stdout.rpartition(_MARKER)
    if proc.returncode != 0 or not marker:
        last = (stderr.strip().splitlines() or [""])[-1][:300]
        culprit = _describing(stdout)
        if culprit is None:
            return _Stopped(None, f"importing the action modules failed: {last or 'no output'}")
        module = culprit.partition(":")[0]
        said = f"; its last output: {last}" if last else ""
        ended = _how_it_ended(proc.returncode)
        return _Stopped(culprit, f"cannot import module {module!r}: {ended}{said}")
    try:
        return msgspec.json.decode(payload.strip(), type=Introspection)
    except msgspec.DecodeError as exc:  # our own child's output; a bug must not crash the load
        return _Stopped(None, f"introspection returned malformed output: {exc}")


def _text(output: bytes | None) -> str:
    return (output or b"").decode("utf-8", errors="replace")


def _describing(stdout: str) -> str | None:
    """The reference the child had started and not finished describing, if any."""
    _, started, rest = stdout.rpartition(_STARTED)
    if not started or _DESCRIBED in rest:
        return None
    return rest.partition("\n")[0] or None


def _how_it_ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"importing it killed the process ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"importing it killed the process (signal {-returncode})"
    return f"importing it ended the process (exit status {returncode})"


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
