"""Validation of a manifest set: schema first, then across documents; every problem located.

The loader calls these checks in order and collects everything they return,
so one run reports all problems. A document that fails 1 or 2 is not
dropped from 3-6: they read the fields of it that are sound (the loader's
``_salvage``), so its import, templates and secrets are checked in the same run:

1. ``schema_problems``: each document against the generated JSON Schema
   (``jsonschema``, all errors, each mapped to the offending node's line:col);
2. ``decode_problem``: a msgspec conversion error mapped the same way;
3. ``cross_problems``: unknown actions and providers in an
   assistant, reserved built-in names, missing knowledge files, undeclared
   secrets, invalid ``parameters`` JSON Schemas, ``isolation: inline`` on a
   kind without it (or with sandbox limits it would ignore);
4. ``python_problems``: what the out-of-process import of Python actions found;
5. ``example_problems``: each example's ``args`` against its action's
   ``parameters`` (after those inferred from the code are filled in);
6. ``kind_check``: each action kind's own ``check`` (templates, hosts,
   databases), one action at a time, so the loader can reuse the result for an
   action decoded as before.

``secret_warnings`` looks at a valid set's declared secrets in the environment
(a value too short to be masked, or not UTF-8), ``variable_warnings`` at the
``${VAR}`` values too short to be masked where they went (an action's kind
config, a database URL, a provider): warnings, not problems, shown by
``gateway validate`` and ``/manifests/status``. ``template_warnings`` (shown by
``gateway validate``) names template variables ``parameters`` does not declare.

``format_problems`` renders the result for the CLI: ``file:line:col: message``
lines, GitHub annotations, or JSON. A value that came from ``${VAR}`` is never
printed back in a message.

Imports ``gateway.manifests`` modules and ``errors`` only.
"""

from __future__ import annotations

import collections
import difflib
import hashlib
import re
import threading
import urllib.parse
from collections.abc import Container, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import jsonschema
import msgspec
from jsonschema.exceptions import ValidationError, best_match

from gateway._unicode import printable
from gateway.errors import Problem
from gateway.manifests._pyfunc import Introspection
from gateway.manifests._yaml import Path_, RawDocument, format_path, parse_path
from gateway.manifests.catalog import ShortVariable, SourceRef
from gateway.manifests.model import (
    ACTION_KINDS,
    NAME_PATTERN,
    NAME_RULE,
    NEWLINE_GUARD,
    Action,
    Assistant,
    CheckContext,
    Database,
    FileSearch,
    Provider,
)
from gateway.manifests.schema import manifest_schema
from gateway.manifests.tools import BUILTIN_TOOLS, DATA_KEYWORDS, declared_arguments

__all__ = [
    "BUILTIN_PROVIDERS",
    "Entry",
    "Format",
    "cross_problems",
    "decode_problem",
    "example_problems",
    "format_problems",
    "problem_line",
    "python_problems",
    "schema_problems",
    "secret_warnings",
    "template_warnings",
    "variable_warnings",
]

Format = Literal["text", "github", "json"]
BUILTIN_PROVIDERS = ("openai", "offline")
_INTERNAL_KEYS = ("kind_key", "config")
_KindsKey = tuple[str, tuple[tuple[str, str], ...]]
_VALIDATORS: dict[_KindsKey, jsonschema.protocols.Validator] = {}
_META = jsonschema.Draft202012Validator(jsonschema.Draft202012Validator.META_SCHEMA)


def at(doc: RawDocument, path: Path_, message: str, *, key: bool = False) -> Problem:
    """A problem at the node ``path`` of ``doc`` (its key when ``key``).

    Any value a ``${VAR}`` put into ``doc`` is masked in ``message`` (see
    ``Locator.redact``), whatever check wrote it, and the message is one line.
    """
    line, col = doc.locator.key(path) if key else doc.locator.value(path)
    message = _one_line(doc.locator.redact(message))
    return Problem(file=doc.file, line=line, col=col, message=message, path=format_path(path))


def _one_line(message: str) -> str:
    """Line breaks (an exception raised by user code at import, say) joined with " / ".

    ``file:line:col: message`` is one problem a line; CI and editors parse it so.
    """
    if "\n" not in message and "\r" not in message:
        return message
    return " / ".join(part.strip() for part in message.splitlines() if part.strip())


class Entry:
    """A decoded document: its raw form (for positions), kind, name and Struct."""

    __slots__ = ("doc", "kind", "name", "value")

    def __init__(
        self, doc: RawDocument, kind: str, value: Action | Assistant | Database | Provider
    ) -> None:
        self.doc = doc
        self.kind = kind
        self.name = value.name
        self.value = value

    def at(self, path: Path_, message: str, *, key: bool = False) -> Problem:
        """A problem at ``path`` inside this document."""
        return at(self.doc, path, message, key=key)


# --- 1. JSON Schema --------------------------------------------------------------


def _validator(kind: str) -> jsonschema.protocols.Validator:
    """The validator for one kind: its definition from the manifest schema, refs inlined.

    Same verdicts as the whole schema (whose ``if``/``then`` selects by ``kind``),
    without re-testing every kind and resolving ``$ref`` on each document; the
    model has no recursive types, so inlining terminates.
    """
    key = (kind, tuple(sorted((k, cls.__qualname__) for k, cls in ACTION_KINDS.items())))
    validator = _VALIDATORS.get(key)
    if validator is None:
        schema = manifest_schema()
        defs = schema["$defs"]
        name = next(
            branch["then"]["$ref"]
            for branch in schema["allOf"]
            if branch["if"]["properties"]["kind"]["const"] == kind
        )
        validator = jsonschema.Draft202012Validator(_inline({"$ref": name}, defs))
        _VALIDATORS[key] = validator
    return validator


def _inline(node: Any, defs: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline(defs[ref.removeprefix("#/$defs/")], defs), **_inline(rest, defs)}
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def schema_problems(doc: RawDocument, kind: str) -> list[Problem]:
    """Every JSON Schema error of ``doc`` (a mapping whose ``kind`` is known), located.

    An error about the value of an unset ``${VAR}`` (too short, not matching a
    pattern) is left to the "not set" problem; one about its type is kept.
    """
    problems: list[Problem] = []
    parameters = doc.data.get("parameters") if isinstance(doc.data, dict) else None
    unset = {path for path, _ in doc.locator.missing}
    for error in _validator(kind).iter_errors(doc.data):
        path = tuple(error.absolute_path)
        deepest = _deepest(error)
        if tuple(deepest.absolute_path) in unset and deepest.validator != "type":
            # "not set" says it: the value is unknown (its string stood in as ""),
            # and a string in place of a number is wrong whatever the variable holds.
            continue
        if kind == "action" and not path and error.validator == "oneOf":
            continue  # the loader's kind-key check says it better
        if kind == "action" and path[:1] == ("parameters",) and isinstance(parameters, dict):
            continue  # parameters_problems says it better (the meta-schema, `type: object`)
        problems.extend(_schema_error(doc, error, kind))
    return problems


def _schema_error(doc: RawDocument, error: ValidationError, kind: str) -> list[Problem]:
    path: Path_ = tuple(error.absolute_path)
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        allowed = sorted(schema.get("properties", {}))
        problems = []
        for extra in instance:
            if extra in allowed or (kind == "action" and not path and extra in _INTERNAL_KEYS):
                continue
            problems.append(
                at(doc, (*path, extra), f"unknown field {extra!r}{_hint(extra, allowed)}", key=True)
            )
        return problems
    if error.validator == "required" and isinstance(instance, dict):
        required = error.validator_value if isinstance(error.validator_value, list) else []
        missing = [r for r in required if r not in instance]
        where = f" in {format_path(path)}" if path else ""
        text = ", ".join(repr(m) for m in missing)
        return [at(doc, path, f"missing required field {text}{where}")]
    error = _deepest(error)
    path = tuple(error.absolute_path)
    if doc.locator.secret(path):
        message = f"the value from an environment variable fails `{error.validator}`"
    elif error.validator == "pattern" and isinstance(error.validator_value, str):
        message = _pattern_message(error.instance, error.validator_value)
    elif (written := _read_as_other(doc, path, error)) is not None:
        message = written
    else:
        message = error.message
    prefix = f"{format_path(path)}: " if path else ""
    return [at(doc, path, prefix + message)]


def _read_as_other(doc: RawDocument, path: Path_, error: ValidationError) -> str | None:
    """For text expected where YAML read a bare word as a boolean, null or number
    (``name: NO`` is false, ``initial_message: yes`` true): what was written, and to
    quote it. None for any other error."""
    written = doc.locator.plain.get(path)
    expected = error.validator_value
    types = expected if isinstance(expected, list) else [expected]
    if error.validator != "type" or written is None or "string" not in types:
        return None
    value = error.instance
    what = "a boolean" if isinstance(value, bool) else "null" if value is None else "a number"
    shown = msgspec.json.encode(value).decode()
    return (
        f"{written} is read by YAML as {what} ({shown}), not text; "
        f'write it in quotes for the text: "{written}"'
    )


def _pattern_message(value: object, pattern: str) -> str:
    """Why ``value`` fails ``pattern``, readable: a name's rule in words, and no
    ``(?!\\n)`` (there only for Python's ``$``, see ``model.NAME_PATTERN``) shown."""
    if pattern == NAME_PATTERN:
        return f"{value!r} is not a valid name: use {NAME_RULE}"
    return f"{value!r} does not match `{pattern.replace(NEWLINE_GUARD, '')}`"


def _hint(word: str, choices: Iterable[str], label: str = "allowed") -> str:
    choices = sorted(choices)
    close = difflib.get_close_matches(word, choices, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; {label}: {', '.join(choices)}" if choices else ""


def _deepest(error: ValidationError) -> ValidationError:
    """For ``anyOf``/``oneOf`` failures, the alternative that explains it best."""
    while error.validator in ("anyOf", "oneOf") and error.context:
        # A branch that failed only on `type` explains less than one whose type fit.
        fitting = [e for e in error.context if e.validator != "type"]
        error = best_match(fitting or error.context)
    return error


# --- 2. msgspec conversion -------------------------------------------------------

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")


def decode_problem(doc: RawDocument, exc: msgspec.ValidationError, base: Path_ = ()) -> Problem:
    """Map a msgspec conversion error (``... - at `$.a[0]```) to the node it names."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any text
    message = match.group("msg")
    path = (*base, *parse_path(match.group("path") or "$"))
    if unknown := _UNKNOWN.match(message):
        field = unknown.group("field")
        return at(doc, (*path, field), f"unknown field {field!r}", key=True)
    if missing := _MISSING.match(message):
        return at(doc, path, f"missing required field {missing.group('field')!r}")
    if doc.locator.secret(path):
        message = "the value from an environment variable has the wrong type or form"
    prefix = f"{format_path(path)}: " if path else ""
    return at(doc, path, prefix + message)


# --- 3. Across documents ---------------------------------------------------------


def cross_problems(
    entries: list[Entry],
    *,
    declared: Mapping[str, set[str]],
    root: Path,
    environ: Mapping[str, str],
) -> list[Problem]:
    """Problems between documents and with the environment and file system.

    Args:
        entries: the documents that decoded cleanly, and the sound parts of
            the others (``_salvage``: their problems are reported already).
        declared: kind -> every name declared, including documents that failed
            to decode (so one bad action does not also make its assistant fail).
        root: the manifests root, for knowledge files.
        environ: the environment, for ``secrets``.
    """
    problems: list[Problem] = []
    for entry in entries:
        value = entry.value
        if isinstance(value, Assistant):
            problems += _assistant_problems(entry, value, declared, root)
        elif isinstance(value, Action):
            problems += _action_problems(entry, value, environ)
    return problems


def _assistant_problems(
    entry: Entry, assistant: Assistant, declared: Mapping[str, set[str]], root: Path
) -> list[Problem]:
    problems = []
    actions = declared.get("action", set())
    listed: set[str] = set()
    for i, name in enumerate(assistant.actions):
        if name in listed:
            problems.append(entry.at(("actions", i), f"action {name!r} is listed twice"))
        listed.add(name)
        if name in BUILTIN_TOOLS:
            problems.append(
                entry.at(("actions", i), f"{name!r} is a built-in tool: use `{name}:` instead")
            )
        elif name not in actions:
            hint = _hint(name, actions, "known")
            problems.append(entry.at(("actions", i), f"unknown action {name!r}{hint}"))
    providers = declared.get("provider", set()) | set(BUILTIN_PROVIDERS)
    if assistant.provider is not None and assistant.provider not in providers:
        problems.append(
            entry.at(
                ("provider",),
                f"unknown provider {assistant.provider!r}"
                + _hint(assistant.provider, providers, "known"),
            )
        )
    if assistant.file_search is not None:
        usable: list[int] = []
        for i, file in enumerate(assistant.file_search.files):
            message = _knowledge_file_problem(root, file)
            if message is not None:
                problems.append(entry.at(("file_search", "files", i), message))
            else:
                usable.append(i)
        problems += _knowledge_size_problems(entry, assistant.file_search, root, usable)
    return problems


_MIB = 1 << 20


def _knowledge_size_problems(
    entry: Entry, config: FileSearch, root: Path, usable: list[int]
) -> list[Problem]:
    """Knowledge files over ``max_file_size_mb``, and a total over ``max_total_size_mb``.

    The index would refuse to read them anyway (it checks the same caps at every
    read); saying so here rejects the set, names the file, and shows it in
    ``gateway validate`` and ``/manifests/status`` rather than in a log line.
    Only sizes are read (``stat``), never contents. A file listed twice (or
    twice through a symlink) counts once in the total; a file over the per-file
    cap is reported alone, not again in the total.
    """
    problems: list[Problem] = []
    total = 0
    seen: set[Path] = set()
    for i in usable:
        file = config.files[i]
        try:
            path = (root / file).resolve()
            size = path.stat().st_size
        except OSError:  # gone since the check above: the index treats it as missing
            continue
        if path in seen:
            continue
        seen.add(path)
        if size <= config.max_file_size_mb * _MIB:
            total += size
        else:  # reported once, here; not again in the total
            problems.append(
                entry.at(
                    ("file_search", "files", i),
                    f"knowledge file {file!r} is {_mib(size)}, over the limit of "
                    f"{config.max_file_size_mb} MiB (file_search.max_file_size_mb)",
                )
            )
    if total > config.max_total_size_mb * _MIB:
        problems.append(
            entry.at(
                ("file_search",),
                f"the knowledge files add up to {_mib(total)}, over the limit of "
                f"{config.max_total_size_mb} MiB (file_search.max_total_size_mb)",
                key=True,
            )
        )
    return problems


def _mib(size: int) -> str:
    """``size`` in MiB, rounded up to a tenth: a file one byte over 32 MiB is not "32.0"."""
    return f"{-(-size * 10 // _MIB) / 10:.1f} MiB"


def _knowledge_file_problem(root: Path, file: str) -> str | None:
    """Why ``file`` cannot be a knowledge file, or None.

    Knowledge files are indexed in the server process and their passages are
    shown to chat users, so they must stay inside the manifests root (after
    resolving symlinks): ``/proc/self/environ`` or ``../.env`` would publish
    the server's secrets.
    """
    path = root / file
    try:
        outside = Path(file).is_absolute() or not path.resolve().is_relative_to(root.resolve())
        exists = outside or path.is_file()
    except RuntimeError as exc:  # pathlib raises RuntimeError on a symlink loop
        return f"knowledge file {file!r} cannot be resolved: {exc}"
    except (OSError, ValueError) as exc:  # a NUL in the name, a name too long
        shown = file if len(file) <= 80 else f"{file[:40]}…{file[-39:]}"
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return f"knowledge file {shown!r} is not a usable file name ({why})"
    if outside:
        return f"knowledge file {file!r} is outside the manifests root; keep it inside"
    if not exists:
        # Named for what it is: "does not exist" next to it in a listing misleads.
        if path.is_dir():
            return f"knowledge file {file!r} is a directory: list the files in it"
        if path.exists():
            return f"knowledge file {file!r} is not a regular file (a FIFO, device or socket)"
        return f"knowledge file {file!r} does not exist (paths are relative to the manifests root)"
    return None


def _action_problems(entry: Entry, action: Action, environ: Mapping[str, str]) -> list[Problem]:
    problems = []
    if action.name in BUILTIN_TOOLS:
        problems.append(
            entry.at(("name",), f"{action.name!r} is the name of a built-in tool; choose another")
        )
    for i, secret in enumerate(action.secrets):
        if secret not in environ:
            problems.append(
                entry.at(("secrets", i), f"secret {secret} is not set in the environment")
            )
    if action.parameters is not None:
        problems += parameters_problems(entry, action.parameters)
    if action.isolation == "inline" and action.config is not None:  # None: salvaged, no kind
        problems += _inline_problems(entry, action)
    return problems


MIN_MASKED_SECRET = 4
"""Shortest secret value the sandbox masks (``gateway.sandbox._mask.MIN_MASKED``; a
test holds the two equal: manifests may not import the sandbox)."""


def secret_warnings(actions: Iterable[Action], environ: Mapping[str, str]) -> list[str]:
    """Warnings about the values of the ``actions``' declared secrets; never the values.

    A value shorter than ``MIN_MASKED_SECRET`` characters is never masked in the
    action's output and errors (it would mangle ordinary text), so it can reach
    the model and the client as is; a value that is not UTF-8 (``os.environ``
    holds such bytes as surrogates) makes every call of the action fail with
    ``configuration_error``. Neither stops the set from loading: a missing
    secret is a problem (``cross_problems``), these are warnings.
    """
    warnings = []
    for action in actions:
        for secret in action.secrets:
            value = environ.get(secret)
            if value is None:
                continue
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                warnings.append(
                    f"action {action.name!r}: secret {secret} is not valid UTF-8; every call "
                    "of the action fails (configuration_error)"
                )
                continue
            if len(value) < MIN_MASKED_SECRET:
                warnings.append(
                    f"action {action.name!r}: secret {secret} is {len(value)} "
                    f"character{'' if len(value) == 1 else 's'} long; values shorter than "
                    f"{MIN_MASKED_SECRET} are never masked in the action's output and errors"
                )
    return warnings


def template_warnings(actions: Iterable[Action], sources: Mapping[str, SourceRef]) -> list[str]:
    """Warnings about names an action's templates read that its ``parameters`` do not
    declare (``{% if include_hidden %}`` with no ``include_hidden`` property): the runner
    refuses an undeclared argument, so the template never gets one. Each names the file,
    line, action and names; actions without ``parameters``, or whose schema says itself
    which other names it takes, are left alone (``declared_arguments``)."""
    warnings = []
    for action in actions:
        declared = declared_arguments(action.parameters) if action.parameters else None
        if declared is None or action.config is None:
            continue
        unknown = sorted(action.config.template_names() - declared)
        if not unknown:
            continue
        source = sources.get(f"action/{action.name}")
        where = f"{source.file}:{source.line}: " if source is not None else ""
        names = ", ".join(repr(name) for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        warnings.append(
            f"{where}action {action.name!r}: its template reads {names}, which parameters "
            f"does not declare; a call cannot set {'them' if plural else 'it'} (undeclared "
            "arguments are refused)"
        )
    return warnings


_MASKED_IN = {
    "action": "the action's output and errors",
    "database": "the output and errors of the sql actions on it",
    "provider": "the provider's errors and validation messages",
}


def variable_warnings(
    short: Mapping[str, Iterable[ShortVariable]], *, files: Container[str] | None = None
) -> list[str]:
    """Warnings about ``${VAR}`` values too short to mask (``Catalog.short_variables``),
    each naming the file, line and variable, never the value.

    A value ``${VAR}`` puts into an action's kind config, a database URL or a
    provider is masked like a declared secret in what the gateway shows, unless
    it is shorter than ``MIN_MASKED_SECRET`` (as a declared secret that short:
    ``secret_warnings``). ``files``: only those of these files (relative to the
    manifests root).
    """
    warnings = []
    for key, variables in short.items():
        kind, _, name = key.partition("/")
        for var in variables:
            if files is not None and var.file not in files:
                continue
            plural = "" if var.length == 1 else "s"
            warnings.append(
                f"{var.file}:{var.line}: {kind} {name!r}: ${{{var.name}}} is {var.length} "
                f"character{plural} long; values shorter than {MIN_MASKED_SECRET} are never "
                f"masked in {_MASKED_IN.get(kind, 'what the gateway shows')}"
            )
    return warnings


def _inline_problems(entry: Entry, action: Action) -> list[Problem]:
    """``isolation: inline`` only for kinds that have it, and without limits it would ignore.

    Inline calls run in the server process, so of the ``sandbox:`` block only
    ``max_output_kb`` applies; any other key there would be silently ignored.
    """
    if action.config is None or not type(action.config).inline:
        kinds = " and ".join(sorted(k for k, c in ACTION_KINDS.items() if c.inline)) or "no"
        return [
            entry.at(
                ("isolation",),
                f"isolation: inline is only for {kinds} actions; "
                f"{action.kind_key} actions always run in the sandbox",
            )
        ]
    raw = entry.doc.data.get("sandbox") if isinstance(entry.doc.data, dict) else None
    return [
        entry.at(
            ("sandbox", key),
            f"sandbox.{key} has no effect with isolation: inline (only max_output_kb "
            "applies there); remove it or run the action in the sandbox",
            key=True,
        )
        for key in (raw if isinstance(raw, dict) else {})
        if key != "max_output_kb"
    ]


def parameters_problems(entry: Entry, parameters: dict[str, Any]) -> list[Problem]:
    """``parameters`` must be a valid draft 2020-12 JSON Schema of ``type: object``."""
    problems = [
        entry.at(("parameters", *path), f"parameters is not a valid JSON Schema: {message}")
        for path, message in _meta_errors(msgspec.json.encode(parameters))
    ]
    if not problems and parameters.get("type") != "object":
        path: Path_ = ("parameters", "type") if "type" in parameters else ("parameters",)
        problems.append(entry.at(path, "parameters must be a JSON Schema with `type: object`"))
    return problems or default_problems(entry, parameters)


def default_problems(entry: Entry, parameters: dict[str, Any]) -> list[Problem]:
    """Each property's ``default`` must match that property's own schema (``default:
    "ten"`` on an integer, one outside its ``enum``): the runner applies it to every call
    that leaves the argument out, and each such call would fail, blaming the model."""
    validator = jsonschema.Draft202012Validator(parameters)
    problems = []
    for path, name, sub in _defaulted(parameters, ("parameters",), ""):
        error = best_match(validator.evolve(schema=sub).iter_errors(sub["default"]))
        if error is not None:
            problems.append(
                entry.at(
                    (*path, "default"),
                    f"the default of parameter {name!r} does not match its own schema: "
                    + _one_line(error.message)[:300],
                )
            )
    return problems


def _defaulted(
    schema: Mapping[str, Any], path: Path_, name: str
) -> Iterable[tuple[Path_, str, Mapping[str, Any]]]:
    """``(path, dotted name, subschema)`` of each property with a ``default``, nested too."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return
    for key, sub in properties.items():
        if not isinstance(sub, Mapping):
            continue
        where = (*path, "properties", key)
        dotted = f"{name}.{key}" if name else key
        if "default" in sub:
            yield where, dotted, sub
        yield from _defaulted(sub, where, dotted)


_META_CACHE: collections.OrderedDict[bytes, tuple[tuple[Path_, str], ...]] = (
    collections.OrderedDict()
)
_META_CACHE_SIZE = 4096
_META_LOCK = threading.Lock()  # loads may run in worker threads


def _meta_errors(schema_json: bytes) -> tuple[tuple[Path_, str], ...]:
    """Meta-schema errors of one ``parameters`` schema, then why it could not validate.

    Cached by content: checking against the 2020-12 meta-schema is the
    costliest step of a load; a reload sees mostly unchanged schemas, and many
    actions share one. The cache keeps a digest of the schema, not the schema:
    keyed by its bytes, it held megabytes of a schema long after the set that
    had it was replaced.
    """
    key = hashlib.blake2b(schema_json, digest_size=20).digest()
    with _META_LOCK:
        found = _META_CACHE.get(key)
        if found is not None:
            _META_CACHE.move_to_end(key)
            return found
    schema = msgspec.json.decode(schema_json)
    errors = tuple(
        (tuple(error.absolute_path), error.message)
        for error in map(_deepest, _META.iter_errors(schema))
    )
    found = errors or tuple(_unusable(schema, schema, ()))
    with _META_LOCK:
        _META_CACHE[key] = found
        if len(_META_CACHE) > _META_CACHE_SIZE:
            _META_CACHE.popitem(last=False)
    return found


def _unusable(node: Any, root: Any, path: Path_) -> Iterable[tuple[Path_, str]]:
    """What the meta-schema allows but validating arguments would crash on.

    A ``$ref`` that resolves nowhere (or to another document, which is never
    fetched) and a ``pattern`` Python cannot compile both raise inside
    jsonschema when an argument reaches them: at load for ``examples``, and
    on every call of the action otherwise.
    """
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _unusable(item, root, (*path, i))
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and "$id" not in node:
        problem = _ref_problem(ref, root)
        if problem is not None:
            yield (*path, "$ref"), problem
    pattern = node.get("pattern")
    if isinstance(pattern, str) and (problem := _regex_problem(pattern)) is not None:
        yield (*path, "pattern"), problem
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict):
        for key in patterns:
            if (problem := _regex_problem(key)) is not None:
                yield (*path, "patternProperties"), f"{key!r}: {problem}"
    for key, value in node.items():
        if key not in DATA_KEYWORDS:
            yield from _unusable(value, root, (*path, key))


def _anchors(node: Any) -> set[str]:
    """Every ``$anchor`` name declared in a schema (data keywords excluded)."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("$anchor"), str):
            found.add(node["$anchor"])
        for key, value in node.items():
            if key not in DATA_KEYWORDS:
                found |= _anchors(value)
    elif isinstance(node, list):
        for value in node:
            found |= _anchors(value)
    return found


def _regex_problem(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"not a valid regular expression: {exc}"
    return None


def _ref_problem(ref: str, root: Any) -> str | None:
    """Why ``ref`` does not resolve inside ``root`` (the ``parameters`` schema), or None."""
    if not ref.startswith("#"):
        return f"$ref {ref!r}: only local references (#/...) are supported"
    fragment = urllib.parse.unquote(ref[1:])
    if fragment and not fragment.startswith("/"):  # a plain name: some `$anchor` must declare it
        if fragment in _anchors(root):
            return None
        return f"$ref {ref!r}: no $anchor {fragment!r} inside parameters"
    node = root
    for token in fragment.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return f"$ref {ref!r} does not resolve inside parameters"
    return None


# --- 4. Python actions -----------------------------------------------------------


def python_function(action: Action) -> str | None:
    """The ``module:callable`` of a Python action, or None for other kinds."""
    if action.kind_key != "python":
        return None
    ref = getattr(action.config, "function", None)
    return ref if isinstance(ref, str) else None


def python_problems(entries: list[Entry], found: Introspection) -> list[Problem]:
    """Problems the isolated import of the Python actions reported, at ``python.function``."""
    problems = []
    for entry in entries:
        if not isinstance(entry.value, Action):
            continue
        ref = python_function(entry.value)
        info = found.functions.get(ref) if ref is not None else None
        if info is not None and info.error is not None:
            problems.append(entry.at(("python", "function"), info.error))
    return problems


# --- 5. Examples -----------------------------------------------------------------


def example_problems(entries: list[Entry]) -> list[Problem]:
    """Each example's ``args`` must satisfy its action's ``parameters`` (after inference)."""
    problems = []
    for entry in entries:
        action = entry.value
        if not isinstance(action, Action) or not action.examples or not action.parameters:
            continue
        if _meta_errors(msgspec.json.encode(action.parameters)):
            continue  # already reported as an invalid schema
        validator = jsonschema.Draft202012Validator(action.parameters)
        for i, example in enumerate(action.examples):
            for error in validator.iter_errors(example.args):
                path: Path_ = ("examples", i, "args", *error.absolute_path)
                problems.append(
                    entry.at(path, f"example args do not match parameters: {error.message}")
                )
    return problems


# --- 6. Each kind's own check ----------------------------------------------------


def kind_check(entry: Entry, action: Action, ctx: CheckContext) -> list[Problem]:
    """One action's kind ``check``, located (nothing for an action without a config)."""
    problems = []
    if action.config is not None:
        try:
            found = action.config.check(action, ctx)
        except Exception as exc:  # a kind's bug must not hide the other problems
            return [entry.at((action.kind_key,), f"the {action.kind_key} check failed: {exc!r}")]
        for kind_problem in found:
            path = (action.kind_key, *parse_path(kind_problem.path))
            problems.append(_kind_problem(entry, path, kind_problem.message))
    return problems


_TEMPLATE_LINE = re.compile(r"\(line (\d+)\)")


def _kind_problem(entry: Entry, path: Path_, message: str) -> Problem:
    """Locate a kind's problem; "(line N)" of a block-scalar template becomes its file line."""
    found = _TEMPLATE_LINE.search(message)
    if found is None or path not in entry.doc.locator.blocks:
        return entry.at(path, message)
    line, col = entry.doc.locator.inner(path, int(found.group(1)))
    message = _one_line(entry.doc.locator.redact(message))
    return Problem(file=entry.doc.file, line=line, col=col, message=message, path=format_path(path))


# --- Output ----------------------------------------------------------------------


def format_problems(problems: list[Problem], fmt: Format = "text") -> str:
    """Render problems: ``file:line:col: message`` lines, GitHub annotations, or a JSON list."""
    if fmt == "json":
        return msgspec.json.encode(problems).decode() + "\n"
    if fmt == "github":
        return "".join(
            f"::error file={_gh(p.file, True)},line={p.line},col={p.col}::{_gh(p.message)}\n"
            for p in problems
        )
    return "".join(f"{problem_line(p)}\n" for p in problems)


def problem_line(problem: Problem) -> str:
    """``file:line:col: message`` on one line a terminal or a CI log cannot obey.

    A file name may hold a newline and a GitHub workflow command (``::error``, a
    mask), or terminal escapes: control characters are shown escaped (``\\n``,
    ``\\x1b``), as ``repr`` would.
    """
    return printable(str(problem))


def _gh(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text
