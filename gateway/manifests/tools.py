"""OpenAI tool schemas for an assistant, generated from its actions and built-ins.

Chat Completions form (``{"type": "function", "function": {...}}``) is the
default and is what ``Catalog.tools`` precomputes at load; the Responses API
form is flat (``{"type": "function", "name": ...}``). ``strict=True`` rewrites
each ``parameters`` schema for OpenAI's strict mode: every object gets
``additionalProperties: false`` and lists all its properties as required,
properties that were optional become nullable, and keywords strict mode
refuses (``default``, length limits...) move into the description. A schema
that cannot be made strict (a free-form object, a property without a type,
``$ref``...) is sent non-strict, with a warning.

Imports ``gateway.manifests.model``, ``gateway.manifests.catalog`` and ``errors``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import structlog

from gateway.errors import NotFound
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action, Assistant

__all__ = [
    "BUILTIN_TOOLS",
    "DATA_KEYWORDS",
    "Api",
    "NotStrictable",
    "assistant_tools",
    "builtin_parameters",
    "declared_arguments",
    "strict_parameters",
    "tool_schemas",
]

Api = Literal["chat", "responses"]
BUILTIN_TOOLS = ("code_interpreter", "file_search")
"""Names of the built-in tools; no action may take them."""
DATA_KEYWORDS = frozenset({"enum", "const", "default", "examples"})
"""JSON Schema keywords whose values are data, not subschemas: walks over a schema skip them
(an ``examples`` entry shaped like ``{"type": "array"}`` is a value, not a schema)."""

_EMPTY: dict[str, Any] = {"type": "object", "properties": {}}
# Keywords OpenAI's strict mode refuses: dropped from the schema, noted in the description.
_NOTED = ("default", "minLength", "maxLength", "minProperties", "maxProperties", "uniqueItems")
_DROPPED = ("examples", "contains", "minContains", "maxContains", "propertyNames", "$schema")
_NOT_STRICT = ("$ref", "not", "if", "then", "else", "patternProperties", "dependentSchemas")


_OPEN_KEYWORDS = ("additionalProperties", "patternProperties", "unevaluatedProperties", "$ref")
"""Keywords by which a ``parameters`` schema says itself which other names it takes."""
_COMPOSED = ("allOf", "anyOf", "oneOf", "if", "then", "else", "dependentSchemas")
"""Keywords whose subschemas may declare more names (``not`` declares none: it forbids)."""


def declared_arguments(schema: Mapping[str, Any] | None) -> frozenset[str] | None:
    """The argument names an action's ``parameters`` take, or ``None`` when the schema
    says itself which others it allows (``additionalProperties``, ``patternProperties``,
    ``unevaluatedProperties`` or a ``$ref``, at any level below), or there is none (an
    ``Action`` built in code: the loader gives every Python action one, from its
    signature).

    Names come from ``properties``, ``required`` and ``dependentRequired``, and from
    those of every subschema that may add names (``allOf``/``anyOf``/``oneOf``,
    ``if``/``then``/``else`` and ``dependentSchemas``, nested as deep as they go). Any
    other name is refused before the call runs (JSON Schema alone would let it
    through, into a template's ``{% if %}`` or a function's keyword argument).
    """
    if schema is None:
        return None
    names: set[str] = set()
    return frozenset(names) if _collect(schema, names, 0) else None


def _collect(schema: Mapping[str, Any], names: set[str], depth: int) -> bool:
    """Add the names ``schema`` declares to ``names``; False if it is open (see above)."""
    if depth > 32 or any(keyword in schema for keyword in _OPEN_KEYWORDS):
        return False
    names.update(k for k in schema.get("properties") or () if isinstance(k, str))
    required = schema.get("required")
    if isinstance(required, list):
        names.update(k for k in required if isinstance(k, str))
    for targets in (schema.get("dependentRequired") or {}).values():
        if isinstance(targets, list):
            names.update(k for k in targets if isinstance(k, str))
    for keyword in _COMPOSED:
        branches = schema.get(keyword)
        if isinstance(branches, Mapping) and keyword == "dependentSchemas":
            branches = list(branches.values())
        for branch in branches if isinstance(branches, list) else [branches]:
            if isinstance(branch, Mapping) and not _collect(branch, names, depth + 1):
                return False
    return True


class NotStrictable(ValueError):
    """A schema cannot be expressed in OpenAI strict mode; the message says where."""


def tool_schemas(
    catalog: Catalog,
    assistant: str | Assistant,
    *,
    api: Api = "chat",
    strict: bool = False,
    warnings: list[str] | None = None,
) -> list[dict[str, Any]]:
    """The tool schemas sent to the model for ``assistant``, built-ins included.

    Args:
        catalog: the loaded manifest set.
        assistant: an assistant name or object from ``catalog``.
        api: ``"chat"`` (Chat Completions) or ``"responses"`` (Responses API).
        strict: rewrite for OpenAI strict mode (falls back per tool, see module doc).
        warnings: when given, strict-mode fallbacks are appended here instead of logged.

    Raises:
        NotFound: ``assistant`` is not in the catalog.
    """
    name = assistant if isinstance(assistant, str) else assistant.name
    found = catalog.assistants.get(name)
    if found is None:
        raise NotFound("assistant", name)
    if api == "chat" and not strict and name in catalog.tools:
        return copy.deepcopy(catalog.tools[name])
    return assistant_tools(found, catalog.actions, api=api, strict=strict, warnings=warnings)


def assistant_tools(
    assistant: Assistant,
    actions: Mapping[str, Action],
    *,
    api: Api = "chat",
    strict: bool = False,
    warnings: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Tool schemas for ``assistant`` from ``actions`` (used by the loader to build a catalog).

    Actions come in the assistant's order, then ``code_interpreter``, then
    ``file_search``. Unknown action names are skipped (validation reports them).
    """
    tools: list[dict[str, Any]] = []
    for entry in _entries(assistant, actions):
        name, description, parameters = entry
        tools.append(_tool(name, description, parameters, api, strict, warnings))
    return tools


def _entries(
    assistant: Assistant, actions: Mapping[str, Action]
) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for action_name in assistant.actions:
        action = actions.get(action_name)
        if action is not None:
            yield action.name, action.description, action.parameters or _EMPTY
    if assistant.code_interpreter:
        yield (
            "code_interpreter",
            "Run Python code in a sandbox with no network and return what it prints. "
            "Use it for calculations, data analysis and anything that needs exact computation.",
            builtin_parameters("code_interpreter"),
        )
    if assistant.file_search is not None:
        names = ", ".join(f.rsplit("/", 1)[-1] for f in assistant.file_search.files)
        yield (
            "file_search",
            "Search the assistant's knowledge files and return the best passages, "
            f"each with its source. Files: {names}.",
            builtin_parameters("file_search"),
        )


def builtin_parameters(name: str) -> dict[str, Any]:
    """The ``parameters`` schema of a built-in tool (``code_interpreter`` or ``file_search``)."""
    if name == "code_interpreter":
        arg, text = "code", "Python source to run; print() what you want to see."
    elif name == "file_search":
        arg, text = "query", "What to look for, in a few words."
    else:
        raise NotFound("built-in tool", name)
    return {
        "type": "object",
        "properties": {arg: {"type": "string", "description": text}},
        "required": [arg],
    }


def _tool(
    name: str,
    description: str,
    parameters: dict[str, Any],
    api: Api,
    strict: bool,
    warnings: list[str] | None,
) -> dict[str, Any]:
    params = copy.deepcopy(parameters)
    is_strict = False
    if strict:
        try:
            params = strict_parameters(parameters)
            is_strict = True
        except NotStrictable as exc:
            message = f"tool {name!r} sent non-strict: {exc}"
            if warnings is not None:
                warnings.append(message)
            else:
                structlog.get_logger("gateway.manifests").warning(
                    "strict_fallback", tool=name, reason=str(exc)
                )
    _complete_arrays(params)
    if params.get("type") == "object" and "properties" not in params:
        # OpenAI refuses a tool whose parameters lack `properties` ("object schema
        # missing properties"); `{}` means the same: no named arguments.
        params["properties"] = {}
    if not any(k in params for k in (*_OPEN_KEYWORDS, *_COMPOSED, "dependentRequired")) and set(
        params.get("required") or ()
    ) <= set(params.get("properties") or ()):
        # The runner refuses undeclared names (`declared_arguments`): say so to the model.
        params["additionalProperties"] = False
    function: dict[str, Any] = {"name": name, "description": description, "parameters": params}
    if strict or api == "responses":
        # The Responses API treats a missing `strict` as true: always say it.
        function["strict"] = is_strict
    if api == "responses":
        return {"type": "function", **function}
    return {"type": "function", "function": function}


def _complete_arrays(schema: Any) -> None:
    """Give every array schema without ``items`` an ``items: {}``, in place.

    The same meaning in JSON Schema (absent ``items`` allows anything), but
    OpenAI refuses a tool whose schema has an array without ``items`` ("array
    schema missing items"), strict or not; bare ``list`` or ``tuple[int, str]``
    hints infer such arrays, and hand-written schemas have them too.
    """
    if isinstance(schema, dict):
        types = schema.get("type")
        is_array = types == "array" or (isinstance(types, list) and "array" in types)
        if is_array and "items" not in schema:
            schema["items"] = {}
        for key, value in schema.items():
            if key not in DATA_KEYWORDS:
                _complete_arrays(value)
    elif isinstance(schema, list):
        for value in schema:
            _complete_arrays(value)


def strict_parameters(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Rewrite a ``type: object`` JSON Schema for OpenAI strict mode.

    Raises:
        NotStrictable: the schema cannot be expressed in strict mode.
    """
    if schema.get("type") != "object":
        raise NotStrictable("the parameters schema is not `type: object`")
    return _strict(schema, "parameters")


def _strict(schema: Mapping[str, Any], where: str) -> dict[str, Any]:  # noqa: C901 - one keyword each
    if not isinstance(schema, Mapping):
        raise NotStrictable(f"{where} is not a schema object")
    for keyword in _NOT_STRICT:
        if keyword in schema:
            raise NotStrictable(f"{where} uses `{keyword}`")
    out: dict[str, Any] = {}
    notes: list[str] = []
    for key, value in schema.items():
        if key in _NOTED:
            notes.append(f"{key}: {json.dumps(value)}")
        elif key not in _DROPPED:
            out[key] = copy.deepcopy(value)
    if "oneOf" in out:
        out["anyOf"] = out.pop("oneOf")
    if "allOf" in out:
        raise NotStrictable(f"{where} uses `allOf`")
    if "anyOf" in out:
        out["anyOf"] = [_strict(s, f"{where}.anyOf[{i}]") for i, s in enumerate(out["anyOf"])]
    types = out.get("type")
    type_set = set(types) if isinstance(types, list) else {types} if types else set()
    if not type_set and not any(k in out for k in ("enum", "const", "anyOf")):
        raise NotStrictable(f"{where} has no type")
    if "object" in type_set:
        properties = out.get("properties")
        extra = out.get("additionalProperties", False)
        if not properties and extra is not False:
            raise NotStrictable(f"{where} is a free-form object (no fixed properties)")
        if where != "parameters" and "properties" not in out and "additionalProperties" not in out:
            # A nested `type: object` alone (a bare `dict` hint) takes any keys; closed, the
            # model could only ever send `{}`. (The top level alone means: no arguments.)
            raise NotStrictable(f"{where} is a free-form object (no fixed properties)")
        if extra not in (False, None):
            raise NotStrictable(f"{where} allows additional properties")
        required = set(out.get("required", ()))
        props = properties or {}
        out["properties"] = {
            key: _strict(sub, f"{where}.{key}")
            if key in required
            else _nullable(_strict(sub, f"{where}.{key}"))
            for key, sub in props.items()
        }
        out["required"] = list(props)
        out["additionalProperties"] = False
    if "array" in type_set:
        items = out.get("items")
        if not isinstance(items, Mapping):
            raise NotStrictable(f"{where} is an array without an `items` schema")
        out["items"] = _strict(items, f"{where}.items")
    if notes:
        text = out.get("description", "")
        out["description"] = (text + " " if text else "") + f"({'; '.join(notes)})"
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    types = out.get("type")
    if "anyOf" in out:
        if not any(s.get("type") == "null" for s in out["anyOf"]):
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
        return out
    if "const" in out or types is None:
        description = out.pop("description", None)
        nullable: dict[str, Any] = {"anyOf": [out, {"type": "null"}]}
        if description is not None:
            nullable["description"] = description
        return nullable
    if isinstance(types, list):
        if "null" not in types:
            out["type"] = [*types, "null"]
    elif types != "null":
        out["type"] = [types, "null"]
    if "enum" in out and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    return out
