"""Migrating from the Assistants API end to end: import-seed, validate, tools, invoke."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main

CONFIG = {
    "assistant_name": "Weather Helper",
    "instructions": "You answer questions about the weather.\nBe brief.",
    "initial_message": "Hi! Ask me about the weather.",
    "model": "gpt-4o",
    "function_names": ["get_weather", "get-forecast"],
    "code_interpreter": True,
    "file_search": True,
    "vector_store_name": "climate",
    "vector_store_file_paths": ["docs/climate.md"],
}


def test_an_old_assistant_config_becomes_a_working_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's migration steps work: import, write the stub functions, validate, invoke."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEWAY_ROOT", raising=False)
    monkeypatch.setenv("GATEWAY_MANIFESTS", str(tmp_path / "manifests"))
    cli = CliRunner()
    (tmp_path / "assistant-config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    (tmp_path / "manifests" / "docs").mkdir(parents=True)
    (tmp_path / "manifests" / "docs" / "climate.md").write_text("# Climate\n", encoding="utf-8")

    imported = cli.invoke(main, ["import-seed", "assistant-config.json"])
    assert imported.exit_code == 0, imported.output
    (tmp_path / "manifests" / "weather.yaml").write_text(imported.stdout, encoding="utf-8")

    # Until the functions exist, validate names the one thing left to do.
    missing = cli.invoke(main, ["validate"])
    assert missing.exit_code == 1
    assert "cannot import module 'actions.tools'" in missing.stdout

    # The stub module printed as comments at the end is ready to paste.
    stub = imported.stdout.split('# """Actions imported', 1)[1]
    code = '"""Actions imported' + "\n".join(
        line.removeprefix("#").removeprefix(" ") for line in stub.splitlines()
    )
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "actions" / "tools.py").write_text(code, encoding="utf-8")
    valid = cli.invoke(main, ["validate"])
    assert valid.exit_code == 0, valid.output

    tools = cli.invoke(main, ["tools", "weather-helper"])
    assert tools.exit_code == 0, tools.output
    assert [t["function"]["name"] for t in json.loads(tools.stdout)] == [
        "get_weather",
        "get-forecast",
        "code_interpreter",
        "file_search",
    ]
    stubbed = cli.invoke(main, ["invoke", "get_weather", "--args", '{"query": "Paris"}'])
    assert stubbed.exit_code == 1
    assert "NotImplementedError" in stubbed.stdout

    (tmp_path / "actions" / "tools.py").write_text(
        code.replace("raise NotImplementedError", "return f'sunny in {query}'", 1),
        encoding="utf-8",
    )
    works = cli.invoke(main, ["invoke", "get_weather", "--args", '{"query": "Paris"}'])
    assert works.exit_code == 0, works.output
    assert works.stdout.strip() == "sunny in Paris"


def test_import_seed_reads_a_config_saved_with_a_bom(tmp_path: Path) -> None:
    """A config saved with a UTF-8 BOM (Windows PowerShell 5's utf8) converts like any other."""
    (seed := tmp_path / "assistant-config.json").write_text(
        json.dumps(CONFIG), encoding="utf-8-sig"
    )
    imported = CliRunner().invoke(main, ["import-seed", str(seed)])
    assert imported.exit_code == 0, imported.output
    assert "name: weather-helper" in imported.stdout
