"""Child-side script: import Python actions and describe their functions, out of the server.

Run as ``python -I _introspect.py`` by ``_pyfunc.inspect_functions`` (never
imported by the server): it reads ``{"root": ..., "functions": ["mod:attr",
...], "read": [...], "protected": [...], "write": [...]}`` as JSON on stdin,
confines itself (``_confine.confine``: Landlock, before any user module's
top-level code runs, so that code reads what a call reads and not ``.env``, the
thread store or the server's environment, and writes only ``write``: its private
TMPDIR and HOME), imports each module with ``root`` first on
``sys.path``, and writes one JSON result after a marker line on stdout: for
each reference either an error, or the callable's JSON Schema ``parameters``
inferred from its signature and its Google- or NumPy-style docstring (types,
defaults, descriptions; ``Literal`` -> ``enum``; ``X | None`` -> optional),
plus the source files of the modules the import loaded under ``root`` and,
for each user module it compiled, the exact bytes it compiled (base64): the
catalog's code snapshot, which the sandbox runs instead of re-reading the disk
(at most ``max_source_bytes`` of it; past that, only the total and the largest
files, for the loader to report). Before each reference it writes a ``STARTED``
line, and ``DESCRIBED`` after the last: when user code ends the process at import
(``os._exit``, a crash) or hangs, the parent knows which reference did it, reports
it, and describes the others in a new child.

Standard library only: it must run before anything of the gateway is importable.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import enum
import importlib
import importlib.machinery
import inspect
import io
import json
import os
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

MARKER = "\x00gateway-introspect\x00"
STARTED = "\x00gateway-introspect-started\x00"
DESCRIBED = "\x00gateway-introspect-described\x00"
_NONE = type(None)


class _FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles user modules from source, never from ``__pycache__``.

    A checkout that rewrites a file with the same size within the same second
    leaves a ``.pyc`` that looks valid; reading it would describe old code.
    """

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


_COMPILED: dict[str, tuple[str, bytes]] = {}
"""Module name -> (path, the source bytes compiled), for the user modules imported here."""


class _RecordingLoader(_FreshSourceLoader):
    """Keeps the bytes it compiled: the snapshot is what was validated, not a later read."""

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        data = self.get_data(path)
        _COMPILED[fullname] = (path, data)
        return self.source_to_code(data, path)


def _fresh_imports_under(root: str) -> None:
    """Import user code under ``root`` from source; third-party packages keep their caches."""
    details = [
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES),
        (_RecordingLoader, importlib.machinery.SOURCE_SUFFIXES),
    ]

    def hook(path: str) -> importlib.machinery.FileFinder:
        resolved = str(Path(path).resolve())
        if resolved != root and not _is_user_file(resolved, root):
            raise ImportError("not user code")  # let the default finders handle it
        return importlib.machinery.FileFinder(path, *details)

    sys.path_hooks.insert(0, hook)
    sys.path_importer_cache.clear()


def main() -> None:
    """Read the request from stdin, write the result after ``MARKER`` on stdout."""
    sys.dont_write_bytecode = True
    request = json.loads(sys.stdin.read())
    root = str(Path(request["root"]).resolve())
    # Before the first user import: its top-level code reads what calls may read.
    hint = _confined(
        root, request.get("read", []), request.get("protected", []), request.get("write", [])
    )
    sys.path.insert(0, root)
    _fresh_imports_under(root)
    before = set(sys.modules)
    results: dict[str, Any] = {}
    sink = io.StringIO()
    out = sys.stdout
    # User modules may print at import time: keep that out of our result.
    with contextlib.redirect_stdout(sink):
        for ref in request["functions"]:
            _progress(out, STARTED + ref)  # flushed: a crash in describe leaves it read
            results[ref] = describe(ref, hint)
    _progress(out, DESCRIBED)
    loaded = set(sys.modules) - before
    files = sorted(
        {
            str(Path(path).resolve())
            for name in loaded
            if (path := getattr(sys.modules[name], "__file__", None))
            and _is_user_file(str(Path(path).resolve()), root)
        }
    )
    code = _snapshot(loaded, root, int(request.get("max_source_bytes", 0)))
    try:
        answer = json.dumps({"functions": results, "files": files, **code}, allow_nan=False)
    except ValueError:  # a NaN left in some schema (an enum of floats, say): say so per reference
        error = {"error": "the inferred parameters hold NaN or Infinity, which JSON cannot carry"}
        answer = json.dumps({"functions": dict.fromkeys(results, error), "files": files, **code})
    sys.stdout.write(MARKER + answer + "\n")


def _confined(
    root: str, read: list[str], protected: list[str], write: list[str]
) -> typing.Callable[[BaseException], str] | None:
    """Confine this process with ``_confine.confine`` (loaded by path: stdlib only).

    Where the kernel has no Landlock the child goes on unconfined, as the
    README's sandbox section says.

    Returns:
        Once confined, ``_confine.confined_hint`` (what to add to an import error
        the confinement may have caused); else None.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_gateway_confine", Path(__file__).with_name("_confine.py")
    )
    assert spec is not None and spec.loader is not None
    confine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(confine)
    if confine.confine(root, read, protected, write) is not None:
        return None
    hint: typing.Callable[[BaseException], str] = confine.confined_hint
    return hint


def _progress(out: typing.TextIO, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def _snapshot(loaded: set[str], root: str, limit: int) -> dict[str, Any]:
    """The user modules among ``loaded``, with the source each was compiled from.

    ``{"modules": [...]}`` (the loader's ``SourceModule`` fields, source in base64),
    or ``{"too_large": {"bytes": total, "largest": [[path, bytes], ...]}}`` when the
    sources add up to more than ``limit`` bytes. A namespace package (a directory
    without ``__init__.py``) under ``root`` is kept too, without source, so that the
    sandbox does not look for it on disk, where a later push may have put an
    ``__init__.py``. Modules compiled by another loader (an extension module, one a
    module loaded itself from a file) are left out: the sandbox reads them from disk.
    """
    modules: list[dict[str, Any]] = []
    sizes: list[tuple[int, str]] = []
    for name in sorted(loaded):
        module = sys.modules.get(name)
        spec = getattr(module, "__spec__", None)
        if spec is None:
            continue
        search = spec.submodule_search_locations
        locations = None if search is None else [str(p) for p in search]
        compiled = _COMPILED.get(name)
        if isinstance(spec.loader, _RecordingLoader) and compiled is not None:
            path, data = compiled
            real = str(Path(path).resolve())
            if not _is_user_file(real, root):
                continue
            sizes.append((len(data), real))
            source: str | None = base64.b64encode(data).decode("ascii")
        elif spec.origin is None and locations:  # a namespace package
            if not all(_is_user_file(str(Path(p).resolve()), root) for p in locations):
                continue
            path = real = ""
            source = None
        else:
            continue
        modules.append(
            {"name": name, "file": path, "real": real, "source": source, "locations": locations}
        )
    total = sum(size for size, _ in sizes)
    if total > limit:
        largest = [[path, size] for size, path in sorted(sizes, reverse=True)[:5]]
        return {"too_large": {"bytes": total, "largest": largest}}
    return {"modules": modules}


def _is_user_file(path: str, root: str) -> bool:
    if not path.startswith(root + os.sep):
        return False
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    inside_env = any(path.startswith(p + os.sep) for p in prefixes)
    return not inside_env and "site-packages" not in Path(path).parts


def describe(ref: str, hint: typing.Callable[[BaseException], str] | None = None) -> dict[str, Any]:
    """Import ``module:attr`` and describe the callable, or say why it cannot be used.

    ``hint`` (given once confined) adds to an import error what the confinement
    allows, when the error looks like its refusal.
    """
    module_name, _, attr_path = ref.partition(":")
    if not module_name or not attr_path:
        return {"error": f"{ref!r} is not of the form module:function"}
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # any import failure is the user's to read
        said = f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        return {"error": said + (hint(exc) if hint is not None else "")}
    target: Any = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            return {"error": f"module {module_name!r} has no attribute {attr_path!r}"}
    if not callable(target):
        return {"error": f"{ref!r} is not callable (it is a {type(target).__name__})"}
    try:
        parameters, summary = infer_parameters(target)
    except Exception as exc:  # report, never crash the whole load
        return {"error": f"cannot read the signature of {ref!r}: {exc}"}
    if required_positional := _required_positional_only(target):
        names = ", ".join(repr(name) for name in required_positional)
        return {
            "error": f"{ref!r} takes {names} positional-only, but calls pass arguments by name; "
            "wrap it in a function of your own"
        }
    return {
        "parameters": parameters,
        "summary": summary,
        "is_async": inspect.iscoroutinefunction(target),
    }


def _required_positional_only(func: Any) -> list[str]:
    """Positional-only parameters without a default: a call by keywords cannot fill them."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind is p.POSITIONAL_ONLY and p.default is p.empty]


def infer_parameters(func: Any) -> tuple[dict[str, Any], str]:
    """JSON Schema (``type: object``) for ``func``'s arguments, and its docstring summary."""
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable annotations: no types
        hints = {}
    summary, docs = parse_docstring(inspect.getdoc(func) or "")
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in signature.parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            continue  # positional-only: a call passes arguments by name, it never gets one
        annotation = hints.get(name, param.annotation)
        schema, optional = type_schema(annotation)
        described = docs.get(name)
        if described and "description" not in schema:
            schema["description"] = described
        if param.default is not inspect.Parameter.empty:
            default = _json_value(param.default)
            # `None` means "absent": the function gets it when the model leaves the argument out.
            if default is not _UNSET and default is not None:
                schema["default"] = default
        elif not optional:
            required.append(name)
        properties[name] = schema
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if not any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        # The function cannot take other names: an extra argument from the model is
        # an `invalid_arguments` tool error naming it, not a TypeError inside the call.
        result["additionalProperties"] = False
    return result, summary


_UNSET = object()


def _json_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        json.dumps(value, allow_nan=False)  # JSON has no NaN or Infinity
    except (TypeError, ValueError):
        return _UNSET
    return value


def type_schema(tp: Any) -> tuple[dict[str, Any], bool]:  # noqa: C901 - one branch per type
    """JSON Schema for a type hint, and whether ``None`` is allowed (an optional argument)."""
    if tp is inspect.Parameter.empty or tp is Any:
        return {}, False
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        schema, optional = type_schema(args[0])
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema = {**schema, "description": notes[0]}
        return schema, optional
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not _NONE]
        optional = len(members) < len(args)
        if len(members) == 1:
            return type_schema(members[0])[0], optional
        return {"anyOf": [type_schema(m)[0] for m in members]}, optional
    if origin is typing.Literal:
        values = [v.value if isinstance(v, enum.Enum) else v for v in args]
        optional = None in values
        values = [v for v in values if v is not None]
        kinds = {_json_type(v) for v in values}
        if len(kinds) == 1:
            return {"type": kinds.pop(), "enum": values}, optional
        return {"enum": values}, optional
    if tp is _NONE:
        return {"type": "null"}, True
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        kinds = {_json_type(v) for v in values}
        return (
            {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}
        ), False
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if tp in simple:
        return {"type": simple[tp]}, False
    if tp in (datetime.datetime, datetime.date, datetime.time):
        fmt = {datetime.datetime: "date-time", datetime.date: "date", datetime.time: "time"}[tp]
        return {"type": "string", "format": fmt}, False
    if tp in (list, tuple, set, frozenset) or origin in (list, set, frozenset):
        items = type_schema(args[0])[0] if args else {}
        return ({"type": "array", "items": items} if args else {"type": "array"}), False
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": type_schema(args[0])[0]}, False
        return {"type": "array", "prefixItems": [type_schema(a)[0] for a in args]}, False
    if tp is dict or origin is dict:
        if len(args) == 2:
            return {"type": "object", "additionalProperties": type_schema(args[1])[0]}, False
        return {"type": "object"}, False
    if typing.is_typeddict(tp):
        return _object_from_hints(tp, getattr(tp, "__required_keys__", frozenset())), False
    model = _model_schema(tp)
    if model is not None:
        return model, False
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        required = {
            f.name
            for f in dataclasses.fields(tp)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        return _object_from_hints(tp, required), False
    return {}, False


def _model_schema(tp: Any) -> dict[str, Any] | None:
    """msgspec Structs and pydantic models describe themselves (imported only if user code did)."""
    if not isinstance(tp, type):
        return None
    schema: Any = None
    if hasattr(tp, "__struct_fields__") and "msgspec" in sys.modules:
        schema = sys.modules["msgspec"].json.schema(tp)
    elif callable(describe := getattr(tp, "model_json_schema", None)):
        schema = describe()
    if not isinstance(schema, dict):
        return None
    defs = schema.pop("$defs", {})
    inlined = _inline_refs(schema, defs, 0)
    return inlined if isinstance(inlined, dict) else None


def _inline_refs(node: Any, defs: dict[str, Any], depth: int) -> Any:
    if depth > 20:  # a recursive model: stop expanding, accept any value there
        return {}
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            target = defs.get(ref.removeprefix("#/$defs/"), {})
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline_refs(target, defs, depth + 1), **_inline_refs(rest, defs, depth)}
        return {k: _inline_refs(v, defs, depth) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_inline_refs(v, defs, depth) for v in node]
    return node


def _object_from_hints(tp: Any, required: Any) -> dict[str, Any]:
    hints = typing.get_type_hints(tp)
    props = {name: type_schema(hint)[0] for name, hint in hints.items()}
    schema: dict[str, Any] = {"type": "object", "properties": props}
    req = [name for name in hints if name in required]
    if req:
        schema["required"] = req
    return schema


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    return "string"


_GOOGLE_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments):\s*$"
)
_GOOGLE_ITEM = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ITEM = re.compile(r"^(\*{0,2}\w+)\s*(:.*)?$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Summary paragraph and per-argument descriptions from a Google or NumPy docstring."""
    lines = doc.expandtabs().splitlines()
    summary_lines: list[str] = []
    for line in lines:
        if not line.strip():
            break
        summary_lines.append(line.strip())
    summary = " ".join(summary_lines)
    for i, line in enumerate(lines):
        stripped = line.strip()
        underlined = i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"}
        if stripped in ("Parameters", "Other Parameters") and underlined:
            return summary, _numpy_items(lines[i + 2 :])
        if _GOOGLE_SECTION.match(stripped):
            return summary, _google_items(lines[i + 1 :], _indent(line))
    return summary, {}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _google_items(lines: list[str], section_indent: int) -> dict[str, str]:
    items: dict[str, list[str]] = {}
    current: str | None = None
    item_indent: int | None = None
    for line in lines:
        if not line.strip():
            continue
        indent = _indent(line)
        if indent <= section_indent:
            break
        if item_indent is None:
            item_indent = indent
        match = _GOOGLE_ITEM.match(line.strip())
        if indent == item_indent and match:
            current = match.group(1).lstrip("*")
            items[current] = [match.group(3).strip()]
        elif current is not None and indent > item_indent:
            items[current].append(line.strip())
    return {k: " ".join(p for p in v if p) for k, v in items.items()}


def _numpy_items(lines: list[str]) -> dict[str, str]:
    items: dict[str, list[str]] = {}
    current: str | None = None
    base: int | None = None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if nxt and set(nxt) == {"-"}:
            break  # the next section starts here
        indent = _indent(line)
        if base is None:
            base = indent
        match = _NUMPY_ITEM.match(line.strip())
        if indent == base and match:
            for name in match.group(1).split(","):
                current = name.strip().lstrip("*")
                items[current] = []
        elif current is not None and indent > base:
            items[current].append(line.strip())
    return {k: " ".join(v) for k, v in items.items()}


if __name__ == "__main__":
    main()
