"""The README's HTTP API examples (blocks tagged `api-example`) run against a live demo gateway."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import GatewayServer

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"^```(sh|python) api-example\n(.*?)^```", re.S | re.M)


def examples() -> list[tuple[str, str]]:
    """(language, code) of every tagged block in README.md."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer((ROOT / "README.md").read_text())]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A gateway over a copy of the demo deployment (manifests/ and actions/)."""
    site = tmp_path_factory.mktemp("demo")
    shutil.copytree(ROOT / "manifests", site / "manifests")
    shutil.copytree(
        ROOT / "actions", site / "actions", ignore=shutil.ignore_patterns("__pycache__")
    )
    environ = {
        "GATEWAY_MANIFESTS": str(site / "manifests"),
        "GATEWAY_DATABASE_URL": f"sqlite:///{site}/gateway.db",
        "GATEWAY_WATCH": "false",
        "LOGGING_LEVEL": "WARNING",
    }
    server = GatewayServer(Settings.from_env(environ, dotenv=None)).start()
    yield server
    server.stop()


def test_the_readme_has_tagged_examples() -> None:
    """The README keeps curl and Python (httpx, websockets, openai) examples under test."""
    code = "\n".join(c for _, c in examples())
    assert {lang for lang, _ in examples()} == {"sh", "python"}
    for needle in ("curl ", "httpx", "websockets", "from openai import OpenAI"):
        assert needle in code, needle


@pytest.mark.parametrize("index", range(len(examples())))
def test_readme_example_runs(demo: GatewayServer, index: int) -> None:
    """Each tagged example exits 0 and prints something when pointed at the demo gateway."""
    if shutil.which("curl") is None and examples()[index][0] == "sh":
        pytest.skip("curl is not installed")
    lang, code = examples()[index]
    code = code.replace("localhost:8000", f"127.0.0.1:{demo.port}")
    command = (
        ["bash", "-euo", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{lang} example failed:\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip()
    if lang == "sh":
        assert '"thread_id"' in done.stdout
        assert "event: done" in done.stdout
        assert "chat.completion" in done.stdout


def readme_commands() -> list[list[str]]:
    """The arguments of every `gateway ...` line in the README's untagged sh blocks.

    Left out: `serve` and `chat` (a server, a terminal; tested on their own),
    `import-seed`, whose input file tests/integration/test_cli_migrate.py provides
    while it runs the README's migration steps, and `invoke` and `test`, which
    tests/integration/test_sandbox_cli.py runs on the demo as written (each starts
    a sandbox: seconds).
    """
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", readme, re.S | re.M):
        for line in block.splitlines():
            if not line.startswith("gateway "):
                continue  # other tools (curl, docker, pip...), continuation lines
            words = shlex.split(line, comments=True)
            if words[1] not in ("serve", "chat", "import-seed", "invoke", "test"):
                commands.append(words[1:])
    return commands


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo deployment, with its manifests twice (`manifests/`, `other/`) for
    the README's `gateway validate manifests other/` (several roots)."""
    site = tmp_path_factory.mktemp("site")
    for source, target in (
        ("manifests", "manifests"),
        ("actions", "actions"),
        ("manifests", "other"),
    ):
        shutil.copytree(ROOT / source, site / target, ignore=shutil.ignore_patterns("__pycache__"))
    return site


def test_the_readme_shows_the_commands() -> None:
    """The README's command blocks are found (so the test below cannot pass on nothing)."""
    names = {args[0] for args in readme_commands()}
    assert {"validate", "tools", "index", "doctor"} <= names


@pytest.mark.parametrize("args", readme_commands(), ids=" ".join)
def test_readme_command_runs_on_the_demo(
    demo_site: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """Each `gateway` command the README shows exits 0 and prints something, run as written
    in the demo deployment's directory."""
    from click.testing import CliRunner

    from gateway.cli import main

    monkeypatch.chdir(demo_site)
    for var in ("GATEWAY_MANIFESTS", "GATEWAY_ROOT", "GATEWAY_DATABASE_URL", "ENVIRONMENT"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, f"gateway {' '.join(args)}:\n{result.output}"
    assert result.output.strip()


def test_the_settings_table_names_every_variable() -> None:
    """Every environment variable Settings reads has a row in the README's Settings table."""
    from gateway.settings import _VARIABLES

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", "\n".join(r.split(" | ")[0] for r in rows)))
    assert documented == set(_VARIABLES)


def test_the_fake_openai_example_runs() -> None:
    """The README's FakeOpenAI example (scripted tool calls, then text) runs as written."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Testing your assistants with the fake OpenAI server\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "FakeOpenAI()" in code
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_the_provider_example_loads(tmp_path: Path) -> None:
    """The YAML of the README's Models and providers section is a valid manifest set."""
    import gateway.executors  # noqa: F401  (registers the action kinds the loader decodes)
    from gateway.manifests.loader import load_catalog

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Models and providers\n", 1)[1]
    (tmp_path / "example.yaml").write_text(
        section.split("```yaml\n", 1)[1].split("```", 1)[0], encoding="utf-8"
    )
    catalog = load_catalog(tmp_path, environ={"LOCAL_LLM_KEY": "k"})
    assert catalog.assistants["support"].provider == "local"
    assert catalog.providers["local"].default_headers == {"X-Team": "support"}


def test_the_reload_status_example_has_the_real_fields() -> None:
    """The README's /manifests/status example shows exactly the fields the endpoint returns."""
    import json

    import msgspec

    from gateway.manifests.watch import ReloadResult, ReloadStatus

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Hot reload (GitOps)\n", 1)[1]
    example = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    assert set(example) == {f.name for f in msgspec.structs.fields(ReloadStatus)}
    attempt = example["last_attempt"]
    assert set(attempt) == {f.name for f in msgspec.structs.fields(ReloadResult)}
    msgspec.convert(example, ReloadStatus)
