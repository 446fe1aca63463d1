"""``gateway import-seed``: an old Assistants-API ``assistant-config.json`` as manifest YAML.

The Assistant Service that preceded the gateway kept one JSON file per
assistant (``assistant_name``, ``instructions``, ``initial_message``,
``model``, ``function_names``, ``code_interpreter``, ``file_search``,
``vector_store_files``, ``vector_store_name``, ``vector_store_file_paths``).
``convert_seed`` turns it into one ``kind: assistant`` document plus one stub
``kind: action`` per function name, pointing at a Python function to write
(the stub module is appended as comments, ready to paste).

Imports ``gateway.errors`` and the standard library only (and PyYAML to dump).
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from gateway.errors import InvalidInput
from gateway.manifests.model import NAME_PATTERN

__all__ = ["convert_seed"]

_NAME = re.compile(NAME_PATTERN)
_STRING_FIELDS = ("assistant_name", "instructions", "initial_message", "model", "vector_store_name")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so instructions stay readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def convert_seed(text: str, *, module: str = "actions.tools", source: str = "config") -> str:
    """Convert the JSON text of an ``assistant-config.json`` to manifest YAML.

    Args:
        text: the file's content.
        module: the Python module the stub actions point at (``actions.tools``).
        source: the file name, for error messages.

    Raises:
        InvalidInput: the text is not JSON, not an object, or a field has the wrong type.
    """
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(
            f"{source}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}"
        ) from None
    if not isinstance(config, dict):
        raise InvalidInput(f"{source}: expected a JSON object, got {type(config).__name__}")
    for field in _STRING_FIELDS:
        if field in config and config[field] is not None and not isinstance(config[field], str):
            raise InvalidInput(f"{source}: `{field}` must be a string", field)
    functions = _string_list(config, "function_names", source)
    assistant, notes = _assistant(config, functions, source)
    header = "# yaml-language-server: $schema=../schemas/manifest.schema.json\n"
    header += f"# Imported from {source} by `gateway import-seed`.\n"
    parts = [header + _dump(assistant) + "".join(n + "\n" for n in notes)]
    for function in functions:
        action = {
            "kind": "action",
            "name": _slug(function),
            "description": f"TODO: say what {function} does; the model reads this.",
            "python": {"function": f"{module}:{_identifier(function)}"},
        }
        parts.append(_dump(action))
    out = "---\n".join(parts)
    if functions:
        out += _stub_module(module, functions)
    return out


def _assistant(
    config: dict[str, Any], functions: list[str], source: str
) -> tuple[dict[str, Any], list[str]]:
    """The ``kind: assistant`` document, and YAML comments for what needs a human."""
    display = (config.get("assistant_name") or "assistant").strip()
    assistant: dict[str, Any] = {"kind": "assistant", "name": _slug(display)}
    if display != assistant["name"]:
        assistant["display_name"] = display
    for field in ("model", "instructions", "initial_message"):
        if config.get(field):
            assistant[field] = config[field]
    if functions:
        assistant["actions"] = [_slug(f) for f in functions]
    if _flag(config, "code_interpreter", source):
        assistant["code_interpreter"] = True
    files = _string_list(config, "vector_store_file_paths", source) or [
        f for f in _list(config, "vector_store_files") if isinstance(f, str)
    ]
    notes: list[str] = []
    if files:
        assistant["file_search"] = {"files": files}
    elif _flag(config, "file_search", source):
        notes.append(
            "# TODO: file_search was on: list its files (relative to the manifests root):\n"
            "# file_search:\n#   files: [docs/handbook.pdf]"
        )
    if config.get("vector_store_name"):
        notes.append(
            f"# The vector store {config['vector_store_name']!r} becomes file_search.files."
        )
    return assistant, notes


def _dump(document: dict[str, Any]) -> str:
    return yaml.dump(
        _escape(document), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )


def _escape(value: Any) -> Any:
    """Every ``${`` in a string value written ``$${``, so loading gives back the text imported.

    The loader replaces ``${VAR}`` and reads ``$${`` as ``${``; the old configs
    had no such syntax, and a placeholder like ``${API_KEY}`` in their
    instructions would otherwise pull the server's variable into the prompt.
    """
    if isinstance(value, str):
        return value.replace("${", "$${")
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    return value


def _list(config: dict[str, Any], field: str) -> list[Any]:
    value = config.get(field)
    return value if isinstance(value, list) else []


def _string_list(config: dict[str, Any], field: str, source: str) -> list[str]:
    value = config.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidInput(f"{source}: `{field}` must be a list of strings", field)
    return [v for v in value if v.strip()]


def _flag(config: dict[str, Any], field: str, source: str) -> bool:
    value = config.get(field, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidInput(f"{source}: `{field}` must be true or false", field)
    return value


def _slug(text: str) -> str:
    if _NAME.match(text):
        return text
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", text.strip()).strip("-").lower()
    return (slug or "assistant")[:64]


def _identifier(text: str) -> str:
    ident = re.sub(r"\W+", "_", text).strip("_") or "action"
    return f"_{ident}" if ident[0].isdigit() else ident


def _stub_module(module: str, functions: list[str]) -> str:
    path = module.replace(".", "/") + ".py"
    lines = [
        "",
        f"# TODO: write these functions in {path}; their type hints and docstring",
        "# become the tool's parameters (or give `parameters:` in each action).",
        "#",
        f'# """Actions imported from the Assistants API ({module})."""',
    ]
    for function in functions:
        lines += [
            "#",
            f"# def {_identifier(function)}(query: str) -> str:",
            f'#     """TODO: what {_slug(function)} does.',  # one line: a comment
            "#",
            "#     Args:",
            "#         query: TODO: what the model must pass.",
            '#     """',
            "#     raise NotImplementedError",
        ]
    return "\n".join(lines) + "\n"
