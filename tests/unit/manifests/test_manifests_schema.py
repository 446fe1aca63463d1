"""The manifest JSON Schema: generated from the model, committed, and never drifting."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from gateway.manifests.model import ACTION_KINDS
from gateway.manifests.schema import manifest_schema, manifest_schema_json

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "schemas" / "manifest.schema.json"


def test_committed_schema_matches_the_model() -> None:
    """schemas/manifest.schema.json is exactly what `gateway schema` prints (`just schema`)."""
    assert COMMITTED.read_text(encoding="utf-8") == manifest_schema_json()


def test_schema_is_valid_draft_2020_12() -> None:
    """The generated schema passes the draft 2020-12 meta-schema."""
    jsonschema.Draft202012Validator.check_schema(manifest_schema())


def test_actions_take_exactly_one_registered_kind_and_hide_internals() -> None:
    """Every registered kind is a property of Action, exactly one is required, internals hidden."""
    action = manifest_schema()["$defs"]["Action"]
    assert set(ACTION_KINDS) <= set(action["properties"])
    assert {"kind_key", "config"}.isdisjoint(action["properties"])
    assert action["oneOf"] == [{"required": [k]} for k in sorted(ACTION_KINDS)]
    assert "ActionConfig" not in manifest_schema()["$defs"]


def _http_action(**fields: object) -> dict[str, object]:
    return {
        "kind": "action",
        "name": "a",
        "description": "d",
        "http": {"url": "https://api.example.com/a"},
        **fields,
    }


@pytest.mark.parametrize(
    ("document", "valid"),
    [
        ({"kind": "assistant", "name": "a"}, True),
        ({"kind": "assistant", "name": "a", "extra": 1}, False),
        ({"kind": "database", "name": "d", "url": "sqlite:///x.db"}, True),
        (
            {
                "kind": "action",
                "name": "a",
                "description": "d",
                "sql": {"database": "d", "query": "q"},
            },
            True,
        ),
        ({"kind": "action", "name": "a", "description": "d"}, False),
        (
            {
                "kind": "action",
                "name": "a",
                "description": "d",
                "sql": {"database": "d", "query": "q"},
                "python": {"function": "m:f"},
            },
            False,
        ),
        (
            {
                "kind": "action",
                "name": "a",
                "description": "d",
                "config": {},
                "sql": {"database": "d", "query": "q"},
            },
            False,
        ),
        ({"kind": "nope"}, False),
        ({"name": "x"}, False),
        # `parameters` is a JSON Schema of `type: object`, for editors as for the loader.
        (_http_action(parameters={"type": "object", "properties": {}}), True),
        (_http_action(parameters={"type": "string"}), False),
        (_http_action(parameters={"properties": {"x": {"type": "string"}}}), False),
    ],
)
def test_schema_accepts_and_refuses_documents(document: dict[str, object], valid: bool) -> None:
    """Editors using the committed schema see the same verdict as the loader."""
    validator = jsonschema.Draft202012Validator(json.loads(COMMITTED.read_text(encoding="utf-8")))
    assert validator.is_valid(document) is valid


def test_every_demo_document_validates_against_the_committed_schema() -> None:
    """Each document under manifests/ passes the committed schema (what editors check)."""
    validator = jsonschema.Draft202012Validator(json.loads(COMMITTED.read_text(encoding="utf-8")))
    files = sorted((REPO / "manifests").rglob("*.yaml"))
    assert files
    for file in files:
        for document in yaml.safe_load_all(file.read_text(encoding="utf-8")):
            errors = [e.message for e in validator.iter_errors(document)]
            assert errors == [], f"{file}: {errors}"


def _patterned(node: object) -> list[dict[str, object]]:
    if isinstance(node, dict):
        found = [node] if "pattern" in node else []
        return found + [n for value in node.values() for n in _patterned(value)]
    if isinstance(node, list):
        return [n for value in node for n in _patterned(value)]
    return []


def test_every_pattern_says_its_rule_in_words_to_editors() -> None:
    """An editor showed a bad name as "does not match '^[A-Za-z0-9_-]{1,64}(?!\\n)$'"
    (the newline guard is there for Python's ``$`` only); every pattern carries a
    ``patternErrorMessage`` (VS Code's YAML extension shows it), a name's in words."""
    schema = json.loads(COMMITTED.read_text(encoding="utf-8"))
    patterned = _patterned(schema)
    assert len(patterned) >= 6
    for node in patterned:
        message = node.get("patternErrorMessage")
        assert isinstance(message, str) and "(?!" not in message, node
    assert schema["$defs"]["Assistant"]["properties"]["name"]["patternErrorMessage"] == (
        "Use 1 to 64 letters, digits, '_' or '-'."
    )
