"""`gateway import-seed`: old Assistants-API configs become manifests that load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.errors import InvalidInput, ManifestError
from gateway.manifests.loader import load_catalog
from gateway.manifests.seed import convert_seed

SEED = {
    "assistant_name": "Weather Helper",
    "instructions": "You help with weather.\nBe brief.",
    "initial_message": "Hi! Ask me about the weather.",
    "model": "gpt-4o",
    "function_names": ["get_weather", "get-forecast"],
    "code_interpreter": True,
    "file_search": True,
    "vector_store_files": [],
    "vector_store_name": "weather-docs",
    "vector_store_file_paths": ["docs/climate.md"],
}


def test_a_full_config_converts_to_an_assistant_and_stub_actions() -> None:
    """Every field lands in the assistant; each function becomes a stub Python action."""
    docs = list(yaml.safe_load_all(convert_seed(json.dumps(SEED), source="cfg.json")))
    assistant, *actions = docs
    assert assistant == {
        "kind": "assistant",
        "name": "weather-helper",
        "display_name": "Weather Helper",
        "model": "gpt-4o",
        "instructions": "You help with weather.\nBe brief.",
        "initial_message": "Hi! Ask me about the weather.",
        "actions": ["get_weather", "get-forecast"],
        "code_interpreter": True,
        "file_search": {"files": ["docs/climate.md"]},
    }
    assert [a["python"]["function"] for a in actions] == [
        "actions.tools:get_weather",
        "actions.tools:get_forecast",
    ]
    assert all(a["description"].startswith("TODO") for a in actions)


def test_output_carries_the_schema_comment_and_a_stub_module() -> None:
    """The YAML starts with the editor schema comment and ends with the Python to write."""
    text = convert_seed(json.dumps(SEED), module="actions.weather")
    assert text.startswith("# yaml-language-server: $schema=../schemas/manifest.schema.json\n")
    assert "# def get_forecast(query: str) -> str:" in text
    assert "actions/weather.py" in text
    assert "instructions: |-\n  You help with weather.\n  Be brief.\n" in text


def test_file_search_without_files_leaves_a_todo() -> None:
    """file_search on with no file paths keeps the assistant valid and says what to add."""
    text = convert_seed(json.dumps({"assistant_name": "x", "file_search": True}))
    assert "file_search" not in yaml.safe_load(text)
    assert "# TODO: file_search was on" in text


def test_converted_manifests_load_once_the_functions_exist(tmp_path: Path) -> None:
    """The output is a valid manifest set: only the TODO functions are missing until written."""
    root = tmp_path / "manifests"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "climate.md").write_text("# Climate\n", encoding="utf-8")
    (root / "weather.yaml").write_text(convert_seed(json.dumps(SEED)), encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_catalog(root, environ={})
    assert {p.message.split(":")[0] for p in info.value.problems} == {
        "cannot import module 'actions.tools'"
    }
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "actions" / "tools.py").write_text(
        "def get_weather(city: str) -> str:\n    return city\n\n"
        "def get_forecast(city: str) -> str:\n    return city\n",
        encoding="utf-8",
    )
    catalog = load_catalog(root, environ={})
    assert set(catalog.actions) == {"get_weather", "get-forecast"}
    assert catalog.assistants["weather-helper"].code_interpreter is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "cfg.json:1:2: not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"function_names": "f"}', "`function_names` must be a list of strings"),
        ('{"code_interpreter": "yes"}', "`code_interpreter` must be true or false"),
        ('{"instructions": 3}', "`instructions` must be a string"),
    ],
)
def test_bad_configs_are_clear_errors(text: str, message: str) -> None:
    """Malformed input raises InvalidInput with the file and what is wrong, never a traceback."""
    with pytest.raises(InvalidInput, match=message):
        convert_seed(text, source="cfg.json")


def test_minimal_config_gets_a_default_name() -> None:
    """An empty object still converts to a loadable assistant."""
    assert yaml.safe_load(convert_seed("{}")) == {"kind": "assistant", "name": "assistant"}


def test_dollar_signs_in_imported_text_survive_loading(tmp_path: Path) -> None:
    """Imported text loads back exactly: `${X}` and `$$` in it are not interpolated.

    The old configs knew nothing of `${VAR}`: instructions that mention
    `${API_KEY}` as a placeholder must not pull the server's variable into the
    prompt, and `$$x$$` math must not lose a dollar.
    """
    instructions = "Prices look like $5.\nFill ${API_KEY} in the form; math: $$x^2$$ and $${y}$."
    seed = {
        "assistant_name": "Price $ Bot",
        "instructions": instructions,
        "initial_message": "Costs ${NAME}?",
    }
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "a.yaml").write_text(convert_seed(json.dumps(seed)), encoding="utf-8")
    catalog = load_catalog(root, environ={"API_KEY": "sk-server-secret", "NAME": "n"})
    [assistant] = catalog.assistants.values()
    assert assistant.instructions == instructions
    assert assistant.initial_message == "Costs ${NAME}?"
    assert assistant.display_name == "Price $ Bot"


def test_names_with_a_trailing_newline_are_slugged() -> None:
    """A function name ending in a newline is slugged like any invalid name (it was kept:
    `$` matches before a final newline), and the stub's comment that names it stays on one
    line (the newline ended the comment, so the output was not YAML)."""
    seed = {"assistant_name": "support\n", "function_names": ["get_weather\n"]}
    assistant, action = yaml.safe_load_all(convert_seed(json.dumps(seed)))
    assert (assistant["name"], assistant["actions"]) == ("support", ["get_weather"])
    assert action["name"] == "get_weather"
