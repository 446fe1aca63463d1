"""`gateway invoke`, `gateway test` and `gateway doctor` against the demo manifests."""

from __future__ import annotations

import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main

DEMO = Path(__file__).resolve().parents[2] / "manifests"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    """A CLI runner in an empty working directory (no stray .env)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEWAY_MANIFESTS", raising=False)
    return CliRunner()


def test_demo_examples_pass(cli: CliRunner) -> None:
    """Every example in the demo manifests passes through the real sandbox."""
    result = cli.invoke(main, ["test", "--manifests", str(DEMO)])
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output
    assert result.output.count("ok  ") >= 1


def test_test_with_an_unknown_action_fails_instead_of_passing_nothing(cli: CliRunner) -> None:
    """`gateway test --action typo` exits 1 naming it; before, CI saw "0 passed" and exit 0."""
    result = cli.invoke(
        main, ["test", "--manifests", str(DEMO), "--action", "get_order_status", "--action", "nope"]
    )
    assert result.exit_code == 1
    assert "unknown action 'nope'" in result.output
    assert "get_order_status" in result.output  # the known ones are listed


def test_invoke_prints_the_output(cli: CliRunner) -> None:
    """invoke runs one action and prints its output; a bad call exits 1."""
    ok = cli.invoke(
        main,
        ["invoke", "get_order_status", "--args", '{"order_id": 1042}', "--manifests", str(DEMO)],
    )
    assert ok.exit_code == 0, ok.output
    assert "1042" in ok.stdout
    bad = cli.invoke(
        main,
        ["invoke", "get_order_status", "--args", '{"order_id": "x"}', "--manifests", str(DEMO)],
    )
    assert bad.exit_code == 1
    assert "Error: --args: invalid argument 'order_id': 'x' is not of type 'integer'" in bad.output
    unknown = cli.invoke(main, ["invoke", "nope", "--manifests", str(DEMO)])
    assert unknown.exit_code == 1
    assert "unknown action" in unknown.output


def test_invoke_file_search_searches_an_assistants_files(cli: CliRunner) -> None:
    """invoke file_search searches the files of --assistant (or of the only assistant with
    file_search), as the server would for that assistant."""
    args = ["--args", '{"query": "refund"}', "--manifests", str(DEMO)]
    for extra in ([], ["--assistant", "support"]):
        result = cli.invoke(main, ["invoke", "file_search", *args, *extra])
        assert result.exit_code == 0, result.output
        assert "faq.md" in result.stdout
    unknown = cli.invoke(main, ["invoke", "file_search", *args, "--assistant", "nope"])
    assert unknown.exit_code == 1
    assert "unknown assistant" in unknown.output


def test_an_argument_the_function_cannot_take_is_refused(cli: CliRunner) -> None:
    """An extra argument is an invalid_arguments error naming it, and the action does not run."""
    result = cli.invoke(
        main,
        [
            "invoke",
            "calculate",
            "--args",
            '{"formula": "1+1", "extra": 1}',
            "--manifests",
            str(DEMO),
        ],
    )
    assert result.exit_code == 1
    assert "Error: --args: invalid argument 'extra'" in result.output


def test_doctor_reports_capabilities(cli: CliRunner) -> None:
    """doctor lists each isolation feature and a successful sandboxed round trip."""
    result = cli.invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    for feature in ("network_namespace", "drop_privileges", "seccomp", "landlock"):
        assert feature in result.stdout
    assert "process_limit      " in result.stdout
    assert "memory_limit       " in result.stdout
    assert "sandboxed call      succeeded" in result.stdout


HOSTILE_OUTPUT = '''
def shout() -> str:
    """Answer with lines a CI log or a terminal would obey."""
    return "fine\\n::error file=app.py,line=1::injected\\n\\x1b[2Jcleared"
'''


def test_test_prints_a_failing_outputs_escaped(cli: CliRunner, tmp_path: Path) -> None:
    """A failing example's output was printed raw: an action (or the API it calls) could
    start a line with "::" (a GitHub Actions workflow command: a fake annotation, a mask)
    or send terminal escape codes into the CI log. Now it is printed escaped, on one line."""
    manifests = _one_action(tmp_path / "deploy", "shout", HOSTILE_OUTPUT, expect="quiet")
    # A file name of the same kind: shown (where to fix it) escaped too.
    (manifests / "a.yaml").rename(manifests / "a\n::error file=x::y\x1b[2J.yaml")
    result = cli.invoke(main, ["test", "--manifests", str(manifests)])
    assert result.exit_code == 1, result.output
    assert "FAIL shout[0]" in result.output
    # Where to fix it: the action's file and line (a CI log does not show the manifests).
    where = f"{manifests}/a\\n::error file=x::y\\x1b[2J.yaml:1"
    assert f"     in {where} (examples[0])" in result.output, result.output
    assert not any(line.startswith("::") for line in result.output.splitlines()), result.output
    assert "\x1b" not in result.output
    assert "::error file=app.py" in result.output  # shown, escaped


TYPED_RESULTS = '''
def nothing() -> None:
    """Return nothing: JSON null."""


def affirm() -> bool:
    """Return JSON true."""
    return True


def text() -> str:
    """Return the text True."""
    return "True"
'''

TYPED_EXAMPLES = """
kind: action
name: {name}
description: Typed.
python: {{function: 'actions.typed:{name}'}}
examples:
"""


def test_test_compares_equals_as_typed_json(cli: CliRunner, tmp_path: Path) -> None:
    """`equals: null` is a condition (it meant none), and equals compares JSON by type: the
    text result "True" passed `equals: true`, since the expected value's Python text was
    accepted as the output."""
    root = tmp_path / "deploy"
    (root / "manifests").mkdir(parents=True)
    (root / "actions").mkdir()
    (root / "actions" / "__init__.py").write_text("")
    (root / "actions" / "typed.py").write_text(TYPED_RESULTS)
    expectations = {
        "nothing": ["{equals: null}", "{equals: 'null'}", "{equals: false}"],
        "affirm": ["{equals: true}", "{equals: 'True'}", "{equals: 1}", "{equals: null}"],
        "text": ["{equals: 'True'}", "{equals: true}", "{equals: null}"],
    }
    documents = [
        TYPED_EXAMPLES.format(name=name) + "".join(f"  - expect: {expect}\n" for expect in expects)
        for name, expects in expectations.items()
    ]
    (root / "manifests" / "a.yaml").write_text("---".join(documents))
    result = cli.invoke(main, ["test", "--manifests", str(root / "manifests")])
    assert result.exit_code == 1, result.output
    marks = [line[:4].strip() + " " + line.split()[1] for line in result.stdout.splitlines()]
    assert [m for m in marks if m.startswith(("ok", "FAIL"))] == [
        "ok affirm[0]",
        "FAIL affirm[1]",
        "FAIL affirm[2]",
        "FAIL affirm[3]",
        "ok nothing[0]",
        "ok nothing[1]",  # a string expected: the output's text
        "FAIL nothing[2]",
        "ok text[0]",
        "FAIL text[1]",
        "FAIL text[2]",
    ]
    assert "output is 'True', expected true" in result.stdout
    assert "output is 'null', expected false" in result.stdout


ZYGOTE_KILLER = '''
import os, sys
if "gateway.sandbox.zygote" in sys.modules:
    os._exit(3)  # only where the zygote imports it: the loader's own check passes

def hello() -> str:
    """Say hello."""
    return "hi"
'''


def _one_action(root: Path, function: str, code: str, *, expect: str) -> Path:
    """A deployment under ``root`` with one python action, ``function`` of ``code``
    (``actions/tool.py``), whose example expects output containing ``expect``; its
    manifests folder."""
    (root / "manifests").mkdir(parents=True)
    (root / "actions").mkdir()
    (root / "actions" / "__init__.py").write_text("")
    (root / "actions" / "tool.py").write_text(code)
    (root / "manifests" / "a.yaml").write_text(
        f"kind: action\nname: {function}\ndescription: The action.\n"
        f"python: {{function: 'actions.tool:{function}'}}\n"
        f"examples:\n  - args: {{}}\n    expect: {{contains: {expect}}}\n"
    )
    return root / "manifests"


def _deployment_whose_zygote_dies(root: Path) -> Path:
    return _one_action(root, "hello", ZYGOTE_KILLER, expect="hi")


@pytest.mark.parametrize("command", [["invoke", "hello"], ["test"]])
def test_a_sandbox_that_does_not_start_is_one_line_not_a_traceback(
    cli: CliRunner, tmp_path: Path, command: list[str]
) -> None:
    """An action module that kills the zygote as it imports (os._exit, a crashing C
    extension) left invoke and test with a RuntimeError traceback; like doctor, they now
    say the sandbox does not start and exit 1."""
    manifests = _deployment_whose_zygote_dies(tmp_path / "deploy")
    result = cli.invoke(main, [*command, "--manifests", str(manifests)])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "the sandbox does not start: the sandbox zygote did not start" in result.output
    assert "it exited with status 3" in result.output


def test_invoke_runs_an_inline_action_without_starting_the_sandbox(
    cli: CliRunner, tmp_path: Path
) -> None:
    """An ``isolation: inline`` action runs in the CLI's process: invoke no longer starts
    the sandbox for it, so a broken python action elsewhere in the set (its module kills
    the zygote as it imports) does not stop the operator from checking this one."""
    manifests = _deployment_whose_zygote_dies(tmp_path / "deploy")
    sqlite3.connect(manifests / "scratch.db").close()
    (manifests / "db.yaml").write_text(
        "kind: database\nname: mem\ndescription: Scratch.\nurl: 'sqlite:///scratch.db'\n---\n"
        "kind: action\nname: add\ndescription: Add.\nisolation: inline\n"
        "parameters: {type: object, properties: {n: {type: integer}}, required: [n]}\n"
        "sql: {database: mem, query: 'SELECT {{ n }} + 1 AS total'}\n"
    )
    result = cli.invoke(
        main, ["invoke", "add", "--args", '{"n": 41}', "--manifests", str(manifests)]
    )
    assert result.exit_code == 0, result.output
    assert '"total":42' in result.output.replace(" ", ""), result.output


@pytest.mark.parametrize(
    ("action", "args_json", "says"),
    [
        ("hello", '{"x": ', "--args: the arguments are not valid JSON"),
        ("hello", "[1]", "--args: the arguments must be a JSON object"),
        ("hello", '{"extra": 1}', "--args: invalid argument 'extra'"),
        ("code_interpreter", "{}", "--args: invalid argument 'code'"),
        ("file_search", '{"query": ""}', "--args: invalid argument 'query'"),
    ],
)
def test_invoke_refuses_bad_args_before_starting_the_sandbox(
    cli: CliRunner, tmp_path: Path, action: str, args_json: str, says: str
) -> None:
    """Malformed or invalid --args was refused only after the sandbox had started (seconds);
    now it is refused first: with a zygote that cannot start, the error is about --args."""
    manifests = _deployment_whose_zygote_dies(tmp_path / "deploy")
    (manifests / "faq.md").write_text("Refunds take five days.\n")
    (manifests / "b.yaml").write_text(
        "kind: assistant\nname: helper\ninstructions: Help.\nactions: [hello]\n"
        "file_search: {files: [faq.md]}\n"
    )
    result = cli.invoke(
        main, ["invoke", action, "--args", args_json, "--manifests", str(manifests)]
    )
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"Error: {says}" in result.output
    assert "sandbox" not in result.output
    assert result.stdout == ""


def test_doctor_without_a_memory_controller_says_why_and_still_runs_calls(
    tmp_path: Path,
) -> None:
    """Where no memory cgroup controller can be had (here: the v1 memory hierarchy
    unmounted in a mount namespace of its own, leaving a cgroup2 mount that does not
    offer it), the sandbox warns once (sandbox.memory_limit) with the reason, doctor
    shows memory_limit no with it, and calls still run."""
    unshare = shutil.which("unshare")
    memory = Path("/sys/fs/cgroup/memory")
    if os.geteuid() != 0 or unshare is None or not memory.is_mount():
        pytest.skip("needs root, unshare and a cgroup v1 memory hierarchy")
    doctor = f"{shlex.quote(sys.executable)} -c 'from gateway.cli import main; main()' doctor"
    result = subprocess.run(
        [
            unshare,
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"umount {memory} && {doctor}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    log = result.stdout + result.stderr
    warnings = [line for line in log.splitlines() if "event=sandbox.memory_limit" in line]
    assert len(warnings) == 1 and "level=warning" in warnings[0], warnings
    line = next(line for line in result.stdout.splitlines() if line.startswith("memory_limit"))
    assert line.split()[1] == "no" and "memory controller is not available" in line, line
    assert "sandboxed call      succeeded" in result.stdout
