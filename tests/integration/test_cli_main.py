"""The `gateway` group as a whole: its command list, every --help, and the shared error paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from gateway.cli import main

REPO = Path(__file__).resolve().parents[2]
BROKEN = REPO / "tests" / "fixtures" / "broken"
COMMANDS = [
    "serve",
    "validate",
    "schema",
    "tools",
    "invoke",
    "test",
    "chat",
    "index",
    "import-seed",
    "doctor",
]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A runner in an empty working directory (no .env), with no gateway variables set."""
    monkeypatch.chdir(tmp_path)
    for var in ("GATEWAY_MANIFESTS", "GATEWAY_ROOT", "GATEWAY_PORT", "ENVIRONMENT", "GATEWAY_KEY"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def test_help_lists_every_command_in_order(cli: CliRunner) -> None:
    """`gateway --help` lists the ten commands in the documented order, each with a summary."""
    result = cli.invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed if line.strip()] == COMMANDS
    assert all("..." not in line for line in listed)  # summaries are whole, never cut


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(cli: CliRunner, command: str) -> None:
    """Each command's --help exits 0 with a usage line and a description."""
    result = cli.invoke(main, [command, "--help"], prog_name="gateway")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: gateway {command} ")
    assert len(result.output.split("\n\n")[1].strip()) > 20


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["validate"],
        ["tools", "support"],
        ["invoke", "get_order_status"],
        ["test"],
        ["chat"],
        ["index"],
        ["doctor"],
    ],
)
def test_a_malformed_setting_is_one_line_and_exit_1(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """A bad variable (GATEWAY_PORT=abc) names itself and exits 1, with no traceback."""
    monkeypatch.setenv("GATEWAY_PORT", "abc")
    result = cli.invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "Error: GATEWAY_PORT must be a port number from 0 to 65535, got 'abc'" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["tools", "lost"], ["invoke", "ok_action"], ["test"], ["index"]])
def test_invalid_manifests_print_every_problem_and_exit_1(cli: CliRunner, args: list[str]) -> None:
    """Commands that load one manifest set print all its located problems and exit 1."""

    def located(output: str) -> list[str]:
        return [line for line in output.splitlines() if line.startswith(str(BROKEN))]

    expected = located(cli.invoke(main, ["validate", str(BROKEN)]).output)
    assert len(expected) >= 25  # one or more per file of the broken set
    result = cli.invoke(main, [*args, "--manifests", str(BROKEN)])
    assert result.exit_code == 1, result.output
    assert located(result.output) == expected
    assert "Traceback" not in result.output


def test_serve_refuses_production_without_keys(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`ENVIRONMENT=production` with no key and no GATEWAY_AUTH=none is a clear error, exit 1."""
    monkeypatch.setenv("ENVIRONMENT", "production")
    for var in ("GATEWAY_API_KEYS", "GATEWAY_ADMIN_KEYS", "GATEWAY_AUTH"):
        monkeypatch.delenv(var, raising=False)
    result = cli.invoke(main, ["serve", "--manifests", str(REPO / "manifests")])
    assert result.exit_code == 1, result.output
    assert "Error:" in result.output and "GATEWAY_AUTH=none" in result.output


@pytest.mark.parametrize(
    ("var", "value", "says"),
    [
        ("GATEWAY_API_KEYS", "ok=k-1234,web@=s3cret-key", "GATEWAY_API_KEYS entry 2: after '@'"),
        ("GATEWAY_API_KEYS", "web@a b=s3cret-key", "GATEWAY_API_KEYS entry 1: after '@'"),
        ("GATEWAY_API_KEYS", "web=", "GATEWAY_API_KEYS entry 1: no key after '='"),
        ("GATEWAY_ADMIN_KEYS", "ops@helper=s3cret-key", "GATEWAY_ADMIN_KEYS entry 1 ('ops')"),
    ],
)
def test_serve_refuses_a_malformed_key_entry(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, var: str, value: str, says: str
) -> None:
    """A key entry whose NAME does not parse (it used to become an unlimited anonymous key whose
    secret was the whole entry), an empty key, or an admin key with `@` stops `serve`: one error
    naming the variable and the entry's position, exit 1, never the key."""
    for name in ("GATEWAY_API_KEYS", "GATEWAY_ADMIN_KEYS", "GATEWAY_AUTH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(var, value)
    result = cli.invoke(main, ["serve", "--manifests", str(REPO / "manifests")])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {says}"), result.output
    assert "s3cret" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("mysql://gw:s3cret-pw@db/gateway", "unsupported database URL scheme 'mysql'"),
        ("postgresql://gw:s3cret-pw@db:5432/gateway?bogus=1", "bogus"),
    ],
)
def test_serve_refuses_a_database_url_no_store_takes(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, url: str, says: str
) -> None:
    """A bad GATEWAY_DATABASE_URL stops `serve` at once: one error naming it, exit 1, no secret."""
    monkeypatch.setenv("GATEWAY_DATABASE_URL", url)
    result = cli.invoke(main, ["serve", "--manifests", str(REPO / "manifests")])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: GATEWAY_DATABASE_URL: "), result.output
    assert says in result.output
    assert "s3cret-pw" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("option", [True, False])
def test_serve_refuses_a_host_that_is_no_name(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, option: bool
) -> None:
    """A --host / GATEWAY_HOST with an empty label is one error before startup, not a traceback."""
    args = ["serve", "--manifests", str(REPO / "manifests")]
    if option:
        args += ["--host", "gateway..internal"]
    else:
        monkeypatch.setenv("GATEWAY_HOST", "gateway..internal")
    result = cli.invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "Error: --host / GATEWAY_HOST: 'gateway..internal' is not a host name" in result.output
    assert isinstance(result.exception, SystemExit)


SEED = '{"name": "Helper", "instructions": "Help.", "function_names": ["lookup"]}'


@pytest.mark.parametrize(
    "args",
    [
        ["validate", str(REPO / "manifests")],
        ["schema"],
        ["tools", "concierge", "--manifests", str(REPO / "manifests")],
        ["import-seed", "seed.json"],
        ["chat", "helper", "--url", "http://127.0.0.1:1"],
    ],
    ids=lambda args: args[0],
)
def test_every_command_logs_through_the_gateways_setup(
    cli: CliRunner, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    """A command's log lines are the gateway's (stderr, no frame locals), never structlog's default.

    `gateway validate`, `tools`, `schema`, `import-seed` and `chat` left logging
    unconfigured: whatever logged in them went through structlog's default console
    renderer, to stdout (into the JSON or YAML a user pipes on), with a traceback
    that prints every frame's local variables, which may hold secrets.
    """
    Path("seed.json").write_text(SEED)
    cli.invoke(main, args)
    capsys.readouterr()
    secret = "s3cr3t-token-value"  # a local of the failing frame
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger("gateway.test").exception("command_failed", token_set=bool(secret))
    out, err = capsys.readouterr()
    assert out == ""  # stdout carries only the command's result
    assert "event=command_failed" in err and "RuntimeError: boom" in err
    assert secret not in err
