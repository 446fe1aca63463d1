"""OpenAI tool schemas: golden files for chat, strict and responses forms, and strict rewriting.

The golden files in ``golden/`` are the exact JSON the model receives for the
``travel`` assistant of ``tests/fixtures/toolset`` (signature inference with
defaults, Literal enums, X | None optionals, Google and NumPy docstrings, a
nested explicit schema, built-ins). Regenerate them after an intended change
with ``GATEWAY_UPDATE_GOLDEN=1 uv run --frozen pytest tests/unit/manifests``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import NotFound
from gateway.manifests.catalog import Catalog
from gateway.manifests.loader import load_catalog
from gateway.manifests.tools import (
    NotStrictable,
    builtin_parameters,
    strict_parameters,
    tool_schemas,
)

GOLDEN = Path(__file__).parent / "golden"
TOOLSET = Path(__file__).resolve().parents[2] / "fixtures" / "toolset" / "manifests"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(TOOLSET, environ={})


def check_golden(name: str, value: Any) -> None:
    path = GOLDEN / name
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("GATEWAY_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the generated schemas"


@pytest.mark.parametrize(
    ("golden", "api", "strict"),
    [
        ("travel.chat.json", "chat", False),
        ("travel.chat.strict.json", "chat", True),
        ("travel.responses.json", "responses", False),
        ("travel.responses.strict.json", "responses", True),
    ],
)
def test_tool_schemas_match_the_golden_files(
    catalog: Catalog, golden: str, api: str, strict: bool
) -> None:
    """The schemas for every API form and mode are exactly the reviewed golden JSON."""
    warnings: list[str] = []
    tools = tool_schemas(catalog, "travel", api=api, strict=strict, warnings=warnings)  # type: ignore[arg-type]
    check_golden(golden, tools)
    assert bool(warnings) == strict


def test_signature_inference_details(catalog: Catalog) -> None:
    """Inferred parameters carry types, defaults, Literal enums and leave X | None optional."""
    params = catalog.actions["book_flight"].parameters
    assert params is not None
    props = params["properties"]
    assert params["required"] == ["origin", "destination", "depart_on"]
    assert props["cabin"] == {
        "type": "string",
        "enum": ["economy", "premium", "business"],
        "description": "Cabin class.",
        "default": "economy",
    }
    assert props["passengers"]["default"] == 1
    assert props["passengers"]["description"] == "How many travellers, adults and children alike."
    assert props["return_on"] == {
        "type": "string",
        "format": "date",
        "description": "Day of the return flight; one-way when omitted.",
    }
    hotels = catalog.actions["search_hotels"].parameters
    assert hotels is not None
    assert hotels["properties"]["max_price"]["description"] == "Highest nightly price in euros."
    assert hotels["properties"]["amenities"]["items"]["enum"] == ["pool", "gym", "spa"]
    assert hotels["properties"]["stars"]["description"] == "Minimum star rating"
    assert catalog.actions["ping"].parameters == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }


def test_the_catalog_precomputes_the_chat_form(catalog: Catalog) -> None:
    """Catalog.tools holds the same Chat Completions schemas tool_schemas returns."""
    assert catalog.tools["travel"] == tool_schemas(catalog, "travel")
    names = [t["function"]["name"] for t in catalog.tools["travel"]]
    assert names[-2:] == ["code_interpreter", "file_search"]


def test_returned_schemas_are_copies(catalog: Catalog) -> None:
    """Mutating a returned schema does not change the catalog."""
    tools = tool_schemas(catalog, "travel")
    tools[0]["function"]["name"] = "changed"
    assert catalog.tools["travel"][0]["function"]["name"] == "book_flight"


def test_unknown_assistant_is_not_found(catalog: Catalog) -> None:
    """Asking for an assistant the catalog lacks raises NotFound."""
    with pytest.raises(NotFound):
        tool_schemas(catalog, "nobody")


def test_strict_fallback_is_logged_without_a_warning_list(catalog: Catalog) -> None:
    """Without a warnings list, a strict-mode fallback still returns a non-strict tool."""
    tools = tool_schemas(catalog, "travel", strict=True)
    tagged = {t["function"]["name"]: t["function"]["strict"] for t in tools}
    assert tagged["tag_photos"] is False and tagged["book_flight"] is True


def test_builtin_parameters() -> None:
    """The built-ins take one required string: code for code_interpreter, query for file_search."""
    assert builtin_parameters("code_interpreter")["required"] == ["code"]
    assert builtin_parameters("file_search")["properties"]["query"]["type"] == "string"
    with pytest.raises(NotFound):
        builtin_parameters("web_search")


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        (
            {"type": "object", "properties": {"a": {"type": "string", "enum": ["x", "y"]}}},
            {
                "type": "object",
                "properties": {"a": {"type": ["string", "null"], "enum": ["x", "y", None]}},
                "required": ["a"],
                "additionalProperties": False,
            },
        ),
        (
            {"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}]}}},
            {
                "type": "object",
                "properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
                "required": ["a"],
                "additionalProperties": False,
            },
        ),
        (
            {"type": "object", "properties": {"a": {"const": 1}}, "required": ["a"]},
            {
                "type": "object",
                "properties": {"a": {"const": 1}},
                "required": ["a"],
                "additionalProperties": False,
            },
        ),
        (
            {
                "type": "object",
                "properties": {
                    "a": {"type": "array", "items": {"type": "object", "properties": {}}}
                },
                "required": ["a"],
            },
            {
                "type": "object",
                "properties": {
                    "a": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {},
                            "required": [],
                            "additionalProperties": False,
                        },
                    }
                },
                "required": ["a"],
                "additionalProperties": False,
            },
        ),
    ],
)
def test_strict_rewrites(schema: dict[str, Any], expected: dict[str, Any]) -> None:
    """Strict mode makes every property required, optional ones nullable, objects closed."""
    assert strict_parameters(schema) == expected


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "array"}, "not `type: object`"),
        ({"type": "object", "properties": {"a": {}}}, "has no type"),
        ({"type": "object", "properties": {"a": {"$ref": "#/x"}}}, "`$ref`"),
        ({"type": "object", "properties": {"a": {"type": "array"}}}, "without an `items`"),
        ({"type": "object", "additionalProperties": {"type": "string"}}, "free-form"),
        (
            {"type": "object", "properties": {"a": {"type": "object"}}},
            "parameters.a is a free-form",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "object"}}}},
            "parameters.a.items is a free-form",
        ),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "string"}},
                "additionalProperties": True,
            },
            "additional",
        ),
        ({"type": "object", "properties": {"a": {"allOf": [{"type": "string"}]}}}, "`allOf`"),
    ],
)
def test_schemas_strict_mode_cannot_express_are_refused(
    schema: dict[str, Any], reason: str
) -> None:
    """A schema strict mode cannot express raises NotStrictable saying why and where."""
    with pytest.raises(NotStrictable, match=re.escape(reason)):
        strict_parameters(schema)


def _arrays_without_items(schema: Any, where: str = "parameters") -> list[str]:
    """Where a schema has `type: array` but no `items` (OpenAI: "array schema missing items")."""
    found: list[str] = []
    if isinstance(schema, dict):
        types = schema.get("type")
        if (types == "array" or (isinstance(types, list) and "array" in types)) and (
            "items" not in schema
        ):
            found.append(where)
        for key, value in schema.items():
            if key not in ("enum", "const", "default", "examples"):
                found += _arrays_without_items(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found += _arrays_without_items(value, f"{where}[{i}]")
    return found


def test_every_array_sent_to_the_model_has_items(tmp_path: Path) -> None:
    """OpenAI refuses a tool whose schema has an array without `items`, strict or not.

    Bare `list`, `set` and fixed `tuple[...]` hints and hand-written
    `{type: array}` used to reach the model as such, and every chat with the
    assistant failed with a 400 from the provider.
    """
    (tmp_path / "arrays_mod.py").write_text(
        "def tag(names: list, sizes: set, pair: tuple[int, str], rows: list[list]) -> str:\n"
        '    """Tag things."""\n'
        "    return ''\n"
    )
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "a.yaml").write_text(
        "kind: action\nname: tag\ndescription: Tag things.\n"
        "python: {function: 'arrays_mod:tag'}\n---\n"
        "kind: action\nname: fetch\ndescription: Fetch things.\n"
        "parameters: {type: object, properties: {ids: {type: [array, 'null']},"
        " nested: {type: object, properties: {more: {type: array}}}}}\n"
        "http: {method: GET, url: 'https://a.example/'}\n---\n"
        "kind: assistant\nname: a\nactions: [tag, fetch]\n"
    )
    catalog = load_catalog(root, environ={}, gateway_root=tmp_path)
    for api in ("chat", "responses"):
        tools = tool_schemas(catalog, "a", api=api)  # type: ignore[arg-type]
        assert _arrays_without_items(tools) == [], api
    assert catalog.actions["fetch"].parameters == {
        "type": "object",
        "properties": {
            "ids": {"type": ["array", "null"]},
            "nested": {"type": "object", "properties": {"more": {"type": "array"}}},
        },
    }  # the manifest's own schema is left as written


def test_parameters_without_properties_are_sent_with_empty_properties(tmp_path: Path) -> None:
    """OpenAI refuses `parameters: {type: object}` ("object schema missing properties")."""
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "a.yaml").write_text(
        "kind: action\nname: ping\ndescription: Ping.\nparameters: {type: object}\n"
        "http: {method: GET, url: 'https://a.example/'}\n---\n"
        "kind: assistant\nname: a\nactions: [ping]\n"
    )
    catalog = load_catalog(root, environ={}, gateway_root=tmp_path)
    [chat] = tool_schemas(catalog, "a")
    closed = {"type": "object", "properties": {}, "additionalProperties": False}
    assert chat["function"]["parameters"] == closed
    [flat] = tool_schemas(catalog, "a", api="responses")
    assert flat["parameters"] == closed
    assert catalog.actions["ping"].parameters == {"type": "object"}
