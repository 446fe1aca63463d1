"""``SandboxRunner``: the engine's ``ActionRunner``, dispatching tools to the sandbox.

For every tool call: parse the model's arguments (invalid JSON is a tool
error), drop ``null`` values of optional properties, nested ones too (OpenAI
strict mode sends them), refuse argument names ``parameters`` does not declare (unless it says
itself which others it takes: ``additionalProperties``...), validate against
the action's JSON Schema and apply defaults (an invalid call names the
argument and does not run), read the declared secrets
from the server's environment, and hand a ``CallContext`` (with the URL of
the action's own database only, never the others) to the
``Supervisor``, or, for an action with ``isolation: inline``, to the
``InlineExecutor`` (in the server process, pooled connections). The choice is
read from the catalog of each call, so a reload that switches an action takes
effect on its next call. ``code_interpreter`` runs the model's code in the
sandbox with the network off; ``file_search`` asks the knowledge index. Never
raises for a failing call: every failure is a ``ToolResult``.

Imports ``gateway.executors``, ``gateway.sandbox``, ``gateway.manifests``,
``gateway.errors``, and ``PdfLimits`` of ``gateway.knowledge`` (the index itself
comes in through the ``Knowledge`` protocol).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import jsonschema
import msgspec
import structlog

from gateway._files import resolved
from gateway._nesting import MAX_JSON_DEPTH, too_deep, value_too_deep
from gateway.errors import InvalidArguments
from gateway.executors.base import ToolResult
from gateway.executors.builtins import (
    CODE_INTERPRETER,
    FILE_SEARCH,
    code_interpreter_action,
    file_search_action,
)
from gateway.executors.inline import InlineExecutor
from gateway.knowledge import PdfLimits
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action, CallContext
from gateway.manifests.tools import declared_arguments
from gateway.sandbox.supervisor import Supervisor, error_output

__all__ = ["Knowledge", "SandboxRunner", "validate_arguments"]

log = structlog.get_logger("gateway.executors")


class Knowledge(Protocol):
    """What ``file_search`` needs from the knowledge index (``gateway.knowledge``)."""

    def search(
        self,
        files: Sequence[Path],
        query: str,
        max_results: int,
        *,
        root: Path | None = None,
        within: Path | None = None,
        max_file_bytes: int = ...,
        max_total_bytes: int = ...,
        pdf_limits: PdfLimits | None = ...,
    ) -> list[Any]:
        """Return the best passages for ``query`` from ``files`` (only those inside ``within``).

        Files over ``max_file_bytes``, or past ``max_total_bytes`` together, are not read;
        PDFs are parsed within ``pdf_limits``.
        """
        ...


def validate_arguments(action: Action, arguments: str | dict[str, Any]) -> dict[str, Any]:
    """Parse, clean, default and validate the model's arguments for ``action``.

    Raises:
        InvalidArguments: naming the offending argument when there is one.
    """
    too_deep_message = f"the arguments are nested too deeply (more than {MAX_JSON_DEPTH} levels)"
    if isinstance(arguments, str):
        text = arguments.strip() or "{}"
        if too_deep(text):
            raise InvalidArguments(action.name, too_deep_message)
        try:
            parsed = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise InvalidArguments(
                action.name, f"the arguments are not valid JSON: {exc}"
            ) from None
        except RecursionError:  # msgspec's own depth guard, not a DecodeError
            raise InvalidArguments(action.name, too_deep_message) from None
    else:
        if value_too_deep(arguments):  # deepcopy recurses: about 500 levels overflowed it
            raise InvalidArguments(action.name, too_deep_message)
        parsed = copy.deepcopy(arguments)
    if not isinstance(parsed, dict):
        raise InvalidArguments(action.name, "the arguments must be a JSON object")
    schema = action.parameters or {"type": "object", "properties": {}}
    _drop_nulls(schema, parsed)
    declared = declared_arguments(action.parameters)
    unexpected = sorted(set(parsed) - declared) if declared is not None else []
    if declared is not None and unexpected:
        names = ", ".join(repr(_cut(name, 120)) for name in unexpected[:5])
        takes = ", ".join(sorted(declared)) or "none"
        raise InvalidArguments(
            action.name,
            f"unexpected argument{'s' if len(unexpected) > 1 else ''} {names} "
            f"(the action takes: {_cut(takes, 400)})",
            _cut(unexpected[0], 120),
        )
    _apply_defaults(schema, parsed)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(parsed))
    if error is not None:
        argument = _cut(_argument_of(error), 120)
        where = f"argument {argument!r}: " if argument else ""
        raise InvalidArguments(action.name, f"invalid {where}{_cut(error.message, 400)}", argument)
    return parsed


def _cut(text: str, limit: int) -> str:
    """``text``, or its start and end around an ellipsis when longer than ``limit``.

    The model's bad value (or name) is quoted in jsonschema's message; a
    100 KB one would go back to the model whole. The end says what was wrong.
    """
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return text[:half] + "…" + text[-half:]


def _allows_null(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return True
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_allows_null(s) for s in schema.get("anyOf", []) + schema.get("oneOf", []))


def _drop_nulls(schema: Any, instance: Any) -> None:
    """Remove, in place, ``null`` values of optional properties whose schema does not
    allow ``null``, at any depth (objects, and objects in arrays): OpenAI strict mode
    makes every optional property nullable, nested ones too, and sends ``null`` for
    "not given"."""
    if not isinstance(schema, dict):
        return
    if isinstance(instance, list):
        items = schema.get("items")
        for item in instance:
            _drop_nulls(items, item)
        return
    if not isinstance(instance, dict):
        return
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return
    required = set(schema.get("required") or ())
    for name in [k for k, v in instance.items() if v is None and k not in required]:
        if name in properties and not _allows_null(properties[name]):
            del instance[name]
    for name, value in instance.items():
        _drop_nulls(properties.get(name), value)


def _apply_defaults(schema: Any, instance: Any) -> None:
    if not isinstance(schema, dict) or not isinstance(instance, dict):
        return
    for name, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, dict):
            continue
        if name not in instance and "default" in sub:
            instance[name] = copy.deepcopy(sub["default"])
        if name in instance:
            _apply_defaults(sub, instance[name])


def _argument_of(error: jsonschema.exceptions.ValidationError) -> str:
    if error.absolute_path:
        return ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        for name in error.validator_value if isinstance(error.validator_value, list) else []:
            if name not in error.instance:
                return str(name)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        allowed = set(schema.get("properties") or ())
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            return str(extra[0])
    return ""


class SandboxRunner:
    """Runs actions and built-in tools for the engine (implements ``ActionRunner``).

    Args:
        supervisor: the started ``Supervisor``.
        knowledge: the file_search index; without it ``file_search`` is a tool error.
        environ: where declared secrets are read from (default ``os.environ``).
        inline: runs ``isolation: inline`` actions (default: one of its own with
            the default concurrency cap, whose pools open on first use); ``aclose``
            closes it.
    """

    def __init__(
        self,
        supervisor: Supervisor,
        knowledge: Knowledge | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        inline: InlineExecutor | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._knowledge = knowledge
        self._environ = environ
        self._inline = inline if inline is not None else InlineExecutor()

    async def reload(self, catalog: Catalog) -> None:
        """Close the inline database pools ``catalog`` no longer uses (after a swap)."""
        await self._inline.retain(catalog)

    async def aclose(self) -> None:
        """Close the inline HTTP client and database pools (the supervisor is the caller's)."""
        await self._inline.aclose()

    async def run(
        self,
        catalog: Catalog,
        name: str,
        arguments: str | dict[str, Any],
        *,
        correlation_id: str = "",
        assistant: str | None = None,
    ) -> ToolResult:
        """Validate ``arguments`` and run tool ``name``; every failure is a ``ToolResult``.

        ``assistant`` names the calling assistant: ``file_search`` searches only its
        files, and without one it is a tool error (never every assistant's files).
        """
        started = time.perf_counter()
        try:
            if name == CODE_INTERPRETER:
                return await self._code(catalog, arguments, correlation_id)
            if name == FILE_SEARCH:
                return await self._file_search(catalog, arguments, assistant, started)
            action = catalog.actions.get(name)
            if action is None:
                return _fail(started, "not_found", f"there is no tool named {name!r}")
            args = validate_arguments(action, arguments)
            env = os.environ if self._environ is None else self._environ
            missing = [s for s in action.secrets if s not in env]
            if missing:
                log.error(
                    "executors.secret_missing",
                    action=name,
                    secrets=missing,
                    correlation_id=correlation_id,
                )
                return _fail(
                    started,
                    "configuration_error",
                    f"the action's secret {missing[0]} is not set on the server",
                )
            secrets = {s: env[s] for s in action.secrets}
            undecodable = [s for s, v in secrets.items() if not _utf8(v)]
            if undecodable:
                # os.environ holds bytes that are not UTF-8 as surrogates: no frame, header
                # or JSON result can carry them, and each would fail as a bare encode error.
                log.error(
                    "executors.secret_invalid",
                    action=name,
                    secrets=undecodable,
                    correlation_id=correlation_id,
                )
                return _fail(
                    started,
                    "configuration_error",
                    f"the action's secret {undecodable[0]} is not valid UTF-8 text on the server",
                )
            call = CallContext(
                action=name,
                arguments=args,
                secrets=secrets,
                databases=_databases_of(action, catalog),
                root=str(catalog.gateway_root),
                timeout=action.timeout,
                substituted=_substituted_of(action, catalog),
            )
            if action.isolation == "inline":
                return await self._inline.call(action, call, correlation_id=correlation_id)
            return await self._supervisor.call(action, call, correlation_id=correlation_id)
        except InvalidArguments as exc:
            return _fail(started, exc.type, exc.message, argument=exc.argument)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("executors.run_error", tool=name, correlation_id=correlation_id)
            return _fail(started, "internal_error", f"the tool could not run: {type(exc).__name__}")

    async def _code(
        self, catalog: Catalog, arguments: str | dict[str, Any], correlation_id: str
    ) -> ToolResult:
        action = code_interpreter_action()
        args = validate_arguments(action, arguments)
        call = CallContext(
            action=CODE_INTERPRETER,
            arguments=args,
            root=str(catalog.gateway_root),
            timeout=action.timeout,
        )
        return await self._supervisor.call(action, call, correlation_id=correlation_id)

    async def _file_search(
        self,
        catalog: Catalog,
        arguments: str | dict[str, Any],
        assistant: str | None,
        started: float,
    ) -> ToolResult:
        args = validate_arguments(file_search_action(), arguments)
        if self._knowledge is None:
            return _fail(started, "unavailable", "file_search is not available on this server")
        if assistant is None:
            # Each assistant may search only its own files: with no caller, nothing.
            return _fail(
                started,
                "invalid_call",
                "file_search searches the calling assistant's files; no assistant was given",
            )
        owner = catalog.assistants.get(assistant)
        config = owner.file_search if owner is not None else None
        if config is None:
            return _fail(
                started, "unavailable", f"assistant {assistant!r} has no files for file_search"
            )
        files: list[Path] = []
        for name in config.files:
            path = resolved(catalog.root / name)  # a symlink loop since: missing, not a crash
            if path not in files:
                files.append(path)
        # Validation kept the files inside the manifests root when the set loaded; a
        # file swapped since for a symlink out of it (the last good set keeps serving
        # when the new one is rejected) must not be read: ``within`` checks each read.
        passages = await asyncio.to_thread(
            functools.partial(
                self._knowledge.search,
                files,
                str(args["query"]),
                config.max_results,
                within=catalog.root,
                # Validation refused larger files, but one may have grown since while
                # the last good set keeps serving: the index checks at every read.
                max_file_bytes=config.max_file_size_mb << 20,
                max_total_bytes=config.max_total_size_mb << 20,
                pdf_limits=PdfLimits(**msgspec.structs.asdict(config.pdf)),
            )
        )
        output = msgspec.json.encode(msgspec.to_builtins(passages)).decode()
        return ToolResult(status="succeeded", output=output, duration_ms=_ms(started))


def _databases_of(action: Action, catalog: Catalog) -> dict[str, str]:
    """The URL of the one database ``action`` names (a ``sql`` action's), else nothing.

    Only what the call needs travels with it: the action's code runs in the
    child that holds the ``CallContext``, so any URL in it (passwords included)
    is readable by that code.
    """
    name = getattr(action.config, "database", None)
    url = catalog.database_urls().get(name) if isinstance(name, str) else None
    return {name: url} if isinstance(name, str) and url is not None else {}


def _substituted_of(action: Action, catalog: Catalog) -> tuple[str, ...]:
    """The values ``${VAR}`` put into ``action``'s kind config and its database's URL (a
    ``sql`` action's, password included): masked in what the call sends back."""
    found = catalog.substituted.get(f"action/{action.name}", ())
    name = getattr(action.config, "database", None)
    if isinstance(name, str):
        found += catalog.substituted.get(f"database/{name}", ())
    return found


def _utf8(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8 (an environment variable's bytes may not)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _fail(started: float, error_type: str, message: str, **extra: Any) -> ToolResult:
    return ToolResult(
        status="failed",
        output=error_output(error_type, message, **{k: v for k, v in extra.items() if v}),
        duration_ms=_ms(started),
        error_type=error_type,
    )
