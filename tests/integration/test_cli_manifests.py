"""The manifest commands end to end: validate, schema, tools, import-seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from conftest import ServerFactory

from gateway.cli import main

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
BROKEN = REPO / "tests" / "fixtures" / "broken"
BROKEN_PROBLEMS = 33  # tests/unit/manifests/test_manifests_broken.py EXPECTED lists each one
Invoke = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """Run the CLI in an empty directory (no .env) with the demo as GATEWAY_MANIFESTS."""
    monkeypatch.chdir(tmp_path)
    for var in ("GATEWAY_ROOT", "GATEWAY_TEST_UNSET_VARIABLE", "GATEWAY_TEST_UNSET_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GATEWAY_MANIFESTS", str(MANIFESTS))

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    return invoke


def test_validate_the_demo_exits_0(run: Invoke) -> None:
    """`gateway validate` with no argument checks GATEWAY_MANIFESTS and exits 0 when valid."""
    result = run("validate")
    assert result.exit_code == 0, result.output
    assert "ok (2 assistants" in result.output


def test_validate_broken_lists_every_problem_and_exits_1(run: Invoke) -> None:
    """Each problem prints as file:line:col: message; no traceback; exit status 1."""
    result = run("validate", str(BROKEN), "--gateway-root", str(BROKEN.parent))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(str(BROKEN))]
    assert len(lines) == BROKEN_PROBLEMS
    assert f"{BROKEN}/unknown_action.yaml:5:5: unknown action 'no_such_action'" in result.output
    assert (
        f"{BROKEN}/inline_python.yaml:5:12: isolation: inline is only for http and sql "
        "actions; python actions always run in the sandbox"
    ) in result.output
    assert "Traceback" not in result.output
    assert f"{BROKEN_PROBLEMS} problem(s)" in result.output


def test_validate_github_format(run: Invoke) -> None:
    """--format github prints workflow annotations with file, line and col."""
    result = run("validate", str(BROKEN), "--format", "github")
    assert result.exit_code == 1
    assert f"::error file={BROKEN}/wrong_type.yaml,line=4,col=10::timeout: 500" in result.output


def test_validate_json_format(run: Invoke) -> None:
    """--format json prints a list of problems, and [] when everything is valid."""
    bad = run("validate", str(BROKEN), "--format", "json")
    data = json.loads(bad.stdout)
    assert bad.exit_code == 1 and len(data) == BROKEN_PROBLEMS
    assert {"file", "line", "col", "message", "path"} == set(data[0])
    good = run("validate", str(MANIFESTS), "--format", "json")
    assert good.exit_code == 0 and json.loads(good.stdout) == []


def test_validate_a_single_file_shows_only_its_problems(
    run: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file argument is checked in its root's context but only its own problems are printed."""
    monkeypatch.setenv("GATEWAY_MANIFESTS", str(BROKEN))
    result = run("validate", str(BROKEN / "unknown_action.yaml"))
    assert result.exit_code == 1
    assert [line for line in result.stdout.splitlines() if line] == [
        f"{BROKEN}/unknown_action.yaml:5:5: unknown action 'no_such_action'; "
        "did you mean 'ok_action'?"
    ]


def test_validate_a_missing_root(run: Invoke, tmp_path: Path) -> None:
    """A root that does not exist is a located problem, not a crash."""
    result = run("validate", str(tmp_path / "nope"))
    assert result.exit_code == 1
    assert f"{tmp_path / 'nope'}:1:1: no such file or directory" in result.stdout


def test_a_hostile_manifest_file_name_cannot_write_its_own_lines_into_the_log(
    run: Invoke, tmp_path: Path
) -> None:
    """A manifest whose file name holds a newline and a GitHub workflow command (legal on
    Linux, pushed by anyone who may push) was printed raw by ``gateway validate`` (and on
    stderr by the other commands): the CI log got a line starting with '::' (a fake
    annotation, a mask) and terminal escapes. The name is printed escaped."""
    root = tmp_path / "m"
    root.mkdir()
    (root / "x\n::error file=app.py::pwned\x1b[2J.yaml").write_text(
        "kind: assistant\nname: a\nbogus: 1\n"
    )
    for result in (run("validate", str(root)), run("tools", "a", "--manifests", str(root))):
        assert result.exit_code == 1, result.output
        assert "unknown field 'bogus'" in result.output
        assert not any(line.startswith("::") for line in result.output.splitlines()), result.output
        assert "\x1b" not in result.output
        assert "x\\n::error file=app.py::pwned\\x1b[2J.yaml:3:1: " in result.output


def test_validate_says_which_path_is_missing_and_checks_the_others(
    run: Invoke, tmp_path: Path
) -> None:
    """A mistyped file is "no such file or directory", and the other paths are still
    checked; it was "the manifests root is not a directory", for a file."""
    typo = MANIFESTS / "suport.yaml"
    result = run("validate", str(typo), str(MANIFESTS))
    assert result.exit_code == 1
    assert result.stdout == f"{typo}:1:1: no such file or directory\n"
    assert f"{MANIFESTS}: ok (" in result.output


def test_a_missing_manifests_root_is_said_to_be_missing(tmp_path: Path) -> None:
    """The loader (the server's, every command's) says a root that does not exist does not
    exist, and one that is a file is not a directory."""
    from gateway.errors import ManifestError
    from gateway.manifests.loader import load_catalog

    (tmp_path / "file").write_text("")
    for root, says in (
        (tmp_path / "nope", "does not exist"),
        (tmp_path / "file", "is not a directory"),
    ):
        with pytest.raises(ManifestError) as refused:
            load_catalog(root)
        assert [p.message for p in refused.value.problems] == [f"the manifests root {says}"]


def test_schema_prints_the_committed_schema(run: Invoke) -> None:
    """`gateway schema` prints exactly schemas/manifest.schema.json."""
    result = run("schema")
    assert result.exit_code == 0
    assert result.stdout == (REPO / "schemas" / "manifest.schema.json").read_text(encoding="utf-8")


def test_tools_prints_chat_schemas(run: Invoke) -> None:
    """`gateway tools support` prints the Chat Completions tools, built-ins included."""
    result = run("tools", "support")
    assert result.exit_code == 0, result.output
    tools = json.loads(result.stdout)
    names = [t["function"]["name"] for t in tools]
    assert names == [
        "get_order_status",
        "search_orders",
        "search_customers",
        "create_ticket",
        "file_search",
    ]


def test_tools_responses_and_strict(run: Invoke) -> None:
    """--api responses gives the flat form; --strict closes objects and nulls optionals."""
    result = run(
        "tools", "concierge", "--api", "responses", "--strict", "--manifests", str(MANIFESTS)
    )
    assert result.exit_code == 0, result.output
    tools = {t["name"]: t for t in json.loads(result.stdout)}
    convert = tools["convert_units"]
    assert convert["type"] == "function" and convert["strict"] is True
    assert convert["parameters"]["additionalProperties"] is False
    assert convert["parameters"]["required"] == ["value", "unit", "decimals"]
    assert convert["parameters"]["properties"]["decimals"]["type"] == ["integer", "null"]
    assert "code_interpreter" in tools


def test_tools_unknown_assistant(run: Invoke) -> None:
    """An unknown assistant is a one-line error listing the known ones, exit 1."""
    result = run("tools", "nobody")
    assert result.exit_code == 1
    assert "unknown assistant 'nobody' (known: concierge, support)" in result.output


def test_tools_with_invalid_manifests(run: Invoke) -> None:
    """`gateway tools` on a broken set prints the problems and exits 1."""
    result = run("tools", "lost", "--manifests", str(BROKEN))
    assert result.exit_code == 1
    assert "unknown action 'no_such_action'" in result.output


def test_import_seed(run: Invoke, tmp_path: Path) -> None:
    """import-seed prints manifest YAML; bad JSON is a clear error with exit 1."""
    config = tmp_path / "assistant-config.json"
    config.write_text(
        json.dumps({"assistant_name": "helper", "function_names": ["f"]}), encoding="utf-8"
    )
    result = run("import-seed", str(config))
    assert result.exit_code == 0
    assert "kind: assistant\nname: helper\n" in result.stdout
    config.write_text("{oops", encoding="utf-8")
    bad = run("import-seed", str(config))
    assert bad.exit_code == 1
    assert "not valid JSON" in bad.output and "Traceback" not in bad.output
    missing = run("import-seed", str(tmp_path / "absent.json"))
    assert missing.exit_code == 1 and "cannot read" in missing.output


def test_validate_in_a_real_process(tmp_path: Path) -> None:
    """The installed entry point runs as a process: exit codes and stdout as documented."""
    code = "from gateway.cli import main; main()"
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_MANIFESTS": str(MANIFESTS)}
    ok = subprocess.run(
        [sys.executable, "-c", code, "validate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-c", code, "validate", str(BROKEN)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert bad.stdout.count("\n") == BROKEN_PROBLEMS


def test_validate_survives_hostile_yaml_in_a_real_process(tmp_path: Path) -> None:
    """Nesting deep enough to overflow the C parser's stack is a located problem, not a crash."""
    root = tmp_path / "manifests"
    root.mkdir()
    depth = 200_000
    (root / "deep.yaml").write_text("kind: assistant\nname: a\nx: " + "[" * depth + "]" * depth)
    code = "from gateway.cli import main; main()"
    bad = subprocess.run(
        [sys.executable, "-c", code, "validate", str(root)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1, (bad.returncode, bad.stderr[-500:])
    assert "Traceback" not in bad.stderr
    assert bad.stdout.startswith(f"{root / 'deep.yaml'}:3:")
    assert "nested" in bad.stdout


ONE_PUSH = {
    "slow.yaml": """\
kind: action
name: slow
description: Its timeout is over the maximum, and its module does not exist.
timeout: 900
python:
  function: pushactions.gone:run
""",
    "fetch.yaml": """\
kind: action
name: fetch
description: Its module does not exist.
python:
  function: pushactions.missing:fetch
""",
    "report.yaml": """\
kind: database
name: shop
url: sqlite:///shop.db
---
kind: action
name: report
description: A misspelled field, and a SQL template that does not parse.
timout: 5
sql:
  database: shop
  query: |
    SELECT * FROM orders
    {% if status %}WHERE status = {{ status }}
""",
}


def test_validate_lists_every_stage_s_problems_of_a_push_in_one_run(tmp_path: Path) -> None:
    """A schema problem, an import problem and a SQL template problem in three actions,
    two of them with a schema problem beside, all print in one run, once each, in file
    and line order (the import and template of an action failing its schema were left
    unchecked: a second push showed them)."""
    root = tmp_path / "manifests"
    root.mkdir()
    for name, text in ONE_PUSH.items():
        (root / name).write_text(text, encoding="utf-8")
    code = "from gateway.cli import main; main()"
    run = subprocess.run(
        [sys.executable, "-c", code, "validate", str(root)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stderr
    no_module = "cannot import module '{}': ModuleNotFoundError: No module named '{}'"
    assert run.stdout.splitlines() == [
        f"{root}/fetch.yaml:5:13: {no_module.format('pushactions.missing', 'pushactions')}",
        f"{root}/report.yaml:8:1: unknown field 'timout'; did you mean 'timeout'?",
        f"{root}/report.yaml:13:5: the SQL template does not parse (line 2): Unexpected end of "
        "template. Jinja was looking for the following tags: 'elif' or 'else' or 'endif'. "
        "The innermost block that needs to be closed is 'if'.",
        f"{root}/slow.yaml:4:10: timeout: 900 is greater than the maximum of 300",
        f"{root}/slow.yaml:6:13: {no_module.format('pushactions.gone', 'pushactions')}",
    ]
    assert run.stderr.splitlines()[-1] == "5 problem(s)"


SECRET_ACTIONS = """
kind: action
name: short_key
description: Uses a short secret.
secrets: [GATEWAY_TEST_SHORT_SECRET]
http: {method: GET, url: "https://example.com/a"}
---
kind: action
name: bad_key
description: Uses a secret that is not UTF-8.
secrets: [GATEWAY_TEST_BAD_SECRET]
http: {method: GET, url: "https://example.com/b"}
---
kind: action
name: good_key
description: Uses a fine secret.
secrets: [GATEWAY_TEST_GOOD_SECRET]
http: {method: GET, url: "https://example.com/c"}
---
kind: assistant
name: keys
model: m
actions: [short_key, bad_key, good_key]
"""
SHORT_WARNING = (
    "action 'short_key': secret GATEWAY_TEST_SHORT_SECRET is 2 characters long; values "
    "shorter than 4 are never masked in the action's output and errors"
)
BAD_WARNING = (
    "action 'bad_key': secret GATEWAY_TEST_BAD_SECRET is not valid UTF-8; every call "
    "of the action fails (configuration_error)"
)


@pytest.fixture
def secret_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A manifest set whose actions declare a 2-character secret, a non-UTF-8 one, a good one."""
    root = tmp_path / "keys" / "manifests"
    root.mkdir(parents=True)
    (root / "keys.yaml").write_text(SECRET_ACTIONS)
    monkeypatch.setenv("GATEWAY_TEST_SHORT_SECRET", "x7")
    monkeypatch.setenv("GATEWAY_TEST_BAD_SECRET", "k\udcff\udcfe-long-enough")  # bytes ff fe
    monkeypatch.setenv("GATEWAY_TEST_GOOD_SECRET", "a-fine-secret")
    return root


def test_validate_warns_about_secrets_that_are_short_or_not_utf8(
    run: Invoke, secret_manifests: Path
) -> None:
    """A declared secret under 4 characters (never masked) or not UTF-8 (every call fails)
    is a warning naming action and secret, never its value; the set is still valid (exit 0).

    `gateway validate` said nothing: the operator learnt of the first from a leak, of the
    second from every call failing.
    """
    result = run("validate", str(secret_manifests))
    assert result.exit_code == 0, result.output
    assert f"warning: {SHORT_WARNING}" in result.stderr
    assert f"warning: {BAD_WARNING}" in result.stderr
    assert "good_key" not in result.stderr
    assert "x7" not in result.stderr.replace(SHORT_WARNING, "")
    assert "long-enough" not in result.stderr


def test_manifests_status_lists_the_secret_warnings(
    gateway_server: ServerFactory, secret_manifests: Path
) -> None:
    """/manifests/status lists the same secret warnings (names only), and the set serves."""
    server = gateway_server(secret_manifests)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        status = c.get("/manifests/status")
        assert status.status_code == 200, status.text
        assert status.json()["warnings"] == [SHORT_WARNING, BAD_WARNING]
        assert "x7" not in status.text.replace(SHORT_WARNING, "")
        assert c.get("/ready").status_code == 200


def test_validate_one_file_shows_only_that_files_secret_warnings(
    run: Invoke, secret_manifests: Path
) -> None:
    """`gateway validate FILE` reports only FILE's warnings, as it reports only its problems."""
    (secret_manifests / "other.yaml").write_text(
        "kind: action\nname: other\ndescription: Other.\n"
        'http: {method: GET, url: "https://example.com/o"}\n'
    )
    result = run("validate", str(secret_manifests / "other.yaml"))
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.stderr
    result = run("validate", str(secret_manifests / "keys.yaml"))
    assert f"warning: {SHORT_WARNING}" in result.stderr


def test_validate_warns_about_template_names_parameters_do_not_declare(
    run: Invoke, tmp_path: Path
) -> None:
    """A template reading a name ``parameters`` does not declare (``{% if include_hidden
    %}``) can never get it (the runner refuses undeclared arguments): a warning naming
    file, line, action and names; the set is still valid (exit 0). Declared names, an
    open schema and an action without parameters give none."""
    root = tmp_path / "tpl" / "manifests"
    root.mkdir(parents=True)
    (root / "a.yaml").write_text(
        "kind: database\nname: lite\nurl: sqlite:///t.db\n---\n"
        "kind: action\nname: rows\ndescription: Rows.\n"
        "parameters: {type: object, properties: {name: {type: string}}}\n"
        "sql:\n  database: lite\n  query: >-\n"
        "    SELECT 1 WHERE {% if include_hidden %}1{% endif %} {{ name }} {{ limit }}\n"
        "    {% for x in range(2) %}{{ x }}{% endfor %}\n---\n"
        "kind: action\nname: open\ndescription: Open.\n"
        "parameters: {type: object, additionalProperties: true}\n"
        "sql: {database: lite, query: 'SELECT {{ anything }}'}\n---\n"
        "kind: action\nname: fetch\ndescription: Fetch.\n"
        "parameters: {type: object, properties: {q: {type: string}}}\n"
        "http:\n  url: https://example.com/{{ q }}\n"
        "  headers: {X-Key: '{{ secrets.K }}', X-Page: '{{ args.page }}{{ page }}'}\n"
    )
    result = run("validate", str(root))
    assert result.exit_code == 0, result.output
    warnings = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert warnings == [
        "warning: a.yaml:5: action 'rows': its template reads 'include_hidden', 'limit', "
        "which parameters does not declare; a call cannot set them (undeclared arguments "
        "are refused)",
        "warning: a.yaml:21: action 'fetch': its template reads 'page', which parameters "
        "does not declare; a call cannot set it (undeclared arguments are refused)",
    ], result.stderr


VARIABLE_DOCS = """\
kind: action
name: short_header
description: Calls with a short token from ${GATEWAY_TEST_VAR_DESC}.
http:
  method: GET
  url: "https://example.com/a"
  headers:
    Authorization: "Bearer ${GATEWAY_TEST_VAR_TOKEN}"
---
kind: action
name: long_header
description: Calls with a long token.
http:
  method: GET
  url: "${GATEWAY_TEST_VAR_ORIGIN}/b"
  headers: {X-Key: "${GATEWAY_TEST_VAR_LONG}"}
---
kind: database
name: shop
url: "postgresql://shop:${GATEWAY_TEST_VAR_DB}@127.0.0.1:5/shop"
---
kind: provider
name: local
base_url: http://127.0.0.1:5/v1
api_key: ${GATEWAY_TEST_VAR_KEY}
---
kind: assistant
name: vars
model: m
actions: [short_header, long_header]
"""
VARIABLE_WARNINGS = [
    "vars.yaml:8: action 'short_header': ${GATEWAY_TEST_VAR_TOKEN} is 3 characters long; "
    "values shorter than 4 are never masked in the action's output and errors",
    "vars.yaml:20: database 'shop': ${GATEWAY_TEST_VAR_DB} is 2 characters long; "
    "values shorter than 4 are never masked in the output and errors of the sql actions on it",
    "vars.yaml:25: provider 'local': ${GATEWAY_TEST_VAR_KEY} is 1 character long; "
    "values shorter than 4 are never masked in the provider's errors and validation messages",
]
_VARIABLE_VALUES = {
    "GATEWAY_TEST_VAR_DESC": "q9",  # only in a description: nothing masks it, nothing to say
    "GATEWAY_TEST_VAR_TOKEN": "t0k",
    "GATEWAY_TEST_VAR_ORIGIN": "https://a.example",  # a URL's origin: public by contract
    "GATEWAY_TEST_VAR_LONG": "a-long-enough-token",
    "GATEWAY_TEST_VAR_DB": "pw",
    "GATEWAY_TEST_VAR_KEY": "K",
}


@pytest.fixture
def variable_manifests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A manifest set whose ${VAR}s put values under 4 characters into an http header, a
    database URL and a provider's key (and others elsewhere, and one long enough)."""
    root = tmp_path / "vars" / "manifests"
    root.mkdir(parents=True)
    (root / "vars.yaml").write_text(VARIABLE_DOCS)
    for name, value in _VARIABLE_VALUES.items():
        monkeypatch.setenv(name, value)
    return root


def _without_warnings(text: str) -> str:
    for warning in VARIABLE_WARNINGS:
        text = text.replace(warning, "")
    return text


def test_validate_warns_about_short_variable_values_where_they_are_masked(
    run: Invoke, variable_manifests: Path
) -> None:
    """A ${VAR} value under 4 characters put into an http/sql config, a database URL or a
    provider is never masked, like a declared secret that short, but passed `gateway
    validate` in silence; it is a warning naming the file, line and variable (never the
    value), and the set is still valid."""
    result = run("validate", str(variable_manifests))
    assert result.exit_code == 0, result.output
    warnings = [x[len("warning: ") :] for x in result.stderr.splitlines() if "warning:" in x]
    assert warnings == VARIABLE_WARNINGS
    rest = _without_warnings(result.stderr)
    assert not any(value in rest for value in ("t0k", "q9", "a-long-enough"))


def test_a_short_variable_warning_prints_a_hostile_file_name_escaped(
    run: Invoke, variable_manifests: Path
) -> None:
    """The short-${VAR} warning named its manifest file raw: a file name holding a newline
    and a workflow command wrote a fake annotation of its own into the CI log (the other
    lines naming a file are escaped)."""
    hostile = variable_manifests / "x\n::error file=app.py::pwned\x1b[2J.yaml"
    (variable_manifests / "vars.yaml").rename(hostile)
    result = run("validate", str(variable_manifests))
    assert result.exit_code == 0, result.output
    assert not any(line.startswith("::") for line in result.output.splitlines()), result.output
    assert "\x1b" not in result.output
    assert "warning: x\\n::error file=app.py::pwned\\x1b[2J.yaml:8: action" in result.stderr


def test_manifests_status_lists_the_short_variable_warnings(
    gateway_server: ServerFactory, variable_manifests: Path
) -> None:
    """/manifests/status lists the same warnings (names only), and the set serves."""
    server = gateway_server(variable_manifests)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        status = c.get("/manifests/status")
        assert status.status_code == 200, status.text
        assert status.json()["warnings"] == VARIABLE_WARNINGS
        assert "t0k" not in _without_warnings(status.text)
        assert c.get("/ready").status_code == 200


def test_validate_one_file_shows_only_that_files_variable_warnings(
    run: Invoke, variable_manifests: Path
) -> None:
    """`gateway validate FILE` reports only FILE's short-variable warnings."""
    (variable_manifests / "other.yaml").write_text(
        "kind: action\nname: other\ndescription: Other.\n"
        'http: {method: GET, url: "https://example.com/o"}\n'
    )
    result = run("validate", str(variable_manifests / "other.yaml"))
    assert result.exit_code == 0, result.output
    assert "warning:" not in result.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_manifest_name_that_is_not_utf8_is_a_named_problem(tmp_path: Path, fmt: str) -> None:
    """A pushed file named ``ok\\xff.yaml`` made `gateway validate` (both formats) print a
    traceback (UnicodeEncodeError): it is a problem naming the file with the stray byte
    escaped, the file is not read, and the other files are still checked."""
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "a.yaml").write_text("kind: assistant\nname: a\nbogus: 1\n")
    (root / os.fsdecode(b"ok\xff.yaml")).write_text("kind: assistant\nname: b\n")
    code = "from gateway.cli import main; main()"
    bad = subprocess.run(
        [sys.executable, "-c", code, "validate", str(root), "--format", fmt],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1, bad.stderr[-1000:]
    assert "Traceback" not in bad.stderr
    named = f"{root}/ok\\xff.yaml"
    message = "the file name is not valid UTF-8 (the bytes shown as \\x..): the file was not read"
    if fmt == "json":
        problems = {p["file"]: p["message"] for p in json.loads(bad.stdout)}
        assert problems[named].startswith(message)
        assert "unknown field 'bogus'" in problems[f"{root}/a.yaml"]
    else:
        assert f"{named}:1:1: {message}; rename it\n" in bad.stdout
        assert f"{root}/a.yaml:3:1: unknown field 'bogus'" in bad.stdout


def test_validate_a_file_the_gateway_never_loads_says_so(
    run: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gateway validate x.yam` (or a hidden file, or one under a hidden directory of
    GATEWAY_MANIFESTS) said ok for a file the gateway never reads: each is a problem
    saying why, exit status 1; a ConfigMap's file, a link into ``..data/``, is checked."""
    root = tmp_path / "m"
    monkeypatch.setenv("GATEWAY_MANIFESTS", str(root))
    (root / ".drafts").mkdir(parents=True)
    (root / "..2026_01").mkdir()
    (root / "..data").symlink_to("..2026_01")
    good = "kind: assistant\nname: a\n"
    for name in ("a.yam", ".hidden.yaml", ".drafts/b.yaml", "..2026_01/c.yaml"):
        (root / name).write_text(good)
    (root / "c.yaml").symlink_to("..data/c.yaml")
    for name, why in [
        ("a.yam", "only *.yaml and *.yml files are read"),
        (".hidden.yaml", "hidden files (.name) are skipped"),
        (".drafts/b.yaml", "it is under .drafts/, and hidden directories are skipped"),
    ]:
        result = run("validate", str(root / name))
        assert result.exit_code == 1, (name, result.output)
        assert result.stdout == (
            f"{root / name}:1:1: not a manifest file the gateway loads: {why}\n"
        )
    checked = run("validate", str(root / "c.yaml"))
    assert checked.exit_code == 0, checked.output
    (root / os.fsdecode(b"d\xff.yaml")).write_text(good)
    undecodable = run("validate", str(root / os.fsdecode(b"d\xff.yaml")))
    assert undecodable.exit_code == 1, undecodable.output
    assert undecodable.stdout == (
        f"{root}/d\\xff.yaml:1:1: not a manifest file the gateway loads: "
        "its name is not valid UTF-8\n"
    )
