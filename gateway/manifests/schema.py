"""The manifest JSON Schema (draft 2020-12), generated from the model, never hand-written.

``manifest_schema()`` asks msgspec for the schema of every document Struct and
of every registered action kind's config, then shapes the result for YAML
authors and editors: a document is selected by its ``kind`` (``if``/``then``,
so an error points into the right kind instead of a ``oneOf`` soup), an action
takes exactly one registered kind key, and the loader's internal fields
(``kind_key``, ``config``) are hidden. The committed
``schemas/manifest.schema.json`` is this output; a test fails when they drift.

Imports ``gateway.manifests.model`` only. Action kinds must be registered first
(``import gateway.executors``).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import msgspec

from gateway.manifests.model import (
    ACTION_KINDS,
    KINDS,
    NAME_PATTERN,
    NAME_RULE,
    NEWLINE_GUARD,
    Action,
)

__all__ = ["manifest_schema", "manifest_schema_json"]

_INTERNAL_ACTION_FIELDS = ("kind_key", "config")


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema every manifest document must satisfy (one document, not a file).

    Returns:
        A JSON-compatible dict; ``$defs`` holds one definition per Struct.
    """
    kinds = sorted(ACTION_KINDS.items())
    structs: list[Any] = [KINDS[k] for k in sorted(KINDS)] + [cls for _, cls in kinds]
    _, defs = msgspec.json.schema_components(structs, ref_template="#/$defs/{name}")
    action = defs[Action.__name__]
    for field in _INTERNAL_ACTION_FIELDS:
        action["properties"].pop(field, None)
    defs.pop("ActionConfig", None)
    for key, cls in kinds:
        action["properties"][key] = {"$ref": f"#/$defs/{cls.__name__}"}
    if kinds:
        action["oneOf"] = [{"required": [key]} for key, _ in kinds]
    action["description"] = (
        "`kind: action`: a tool the model may call. Exactly one of "
        + ", ".join(f"`{key}`" for key, _ in kinds)
        + " says how it runs. `parameters` is a JSON Schema of `type: object`; "
        "a Python action may omit it to have it inferred from the function's signature."
    )
    for definition in defs.values():
        if isinstance(definition.get("description"), str):
            definition["description"] = _clean(definition["description"])
    _say_patterns(defs)
    names = sorted(KINDS)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Gateway manifest document",
        "description": (
            "One YAML document of a gateway manifest set: an assistant, an action, "
            "a database or a model provider, selected by `kind`."
        ),
        "type": "object",
        "required": ["kind"],
        "properties": {"kind": {"enum": names}},
        "allOf": [
            {
                "if": {"properties": {"kind": {"const": name}}, "required": ["kind"]},
                "then": {"$ref": f"#/$defs/{KINDS[name].__name__}"},
            }
            for name in names
        ],
        "$defs": dict(sorted(defs.items())),
    }


def manifest_schema_json() -> str:
    """``manifest_schema()`` as the exact text committed in ``schemas/manifest.schema.json``."""
    return json.dumps(manifest_schema(), indent=2, ensure_ascii=False) + "\n"


def _say_patterns(node: object) -> None:
    """Give every ``pattern`` a ``patternErrorMessage`` (VS Code's YAML extension shows it
    instead of the regex): a name's rule in words, else the pattern without its
    ``(?!\\n)`` guard, which is there only for Python's ``$`` (see ``model.NAME_PATTERN``)."""
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            node["patternErrorMessage"] = (
                f"Use {NAME_RULE}."
                if pattern == NAME_PATTERN
                else f"Must match {pattern.replace(NEWLINE_GUARD, '')}"
            )
        for value in node.values():
            _say_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _say_patterns(value)


def _clean(doc: str) -> str:
    """Docstring -> description: dedented, reST double backticks as Markdown code."""
    return inspect.cleandoc(doc).replace("``", "`")
