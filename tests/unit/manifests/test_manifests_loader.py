"""The loader: YAML in, typed Structs or located problems out, and the catalog it assembles."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ManifestError, Problem
from gateway.manifests.catalog import Catalog
from gateway.manifests.loader import discover, load_catalog
from gateway.manifests.model import ACTION_KINDS, Action, Assistant, Database, Provider


def write(root: Path, files: Mapping[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_dedent(text), encoding="utf-8")
    return root


def _dedent(text: str) -> str:
    """Dedent each document on its own (rows glue unindented and indented parts)."""
    return "---\n".join(textwrap.dedent(part) for part in text.split("---\n"))


def load(
    tmp_path: Path, files: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> Catalog:
    root = write(tmp_path / "manifests", files)
    return load_catalog(root, environ=environ or {}, gateway_root=tmp_path)


def problems(
    tmp_path: Path, files: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        load(tmp_path, files, environ)
    return info.value.problems


DB = "kind: database\nname: db\nurl: sqlite:///db.sqlite\n"


# --- valid documents, one table row per kind -------------------------------------

VALID: list[tuple[str, str, str, str, dict[str, Any]]] = [
    (
        "assistant-minimal",
        "kind: assistant\nname: a\n",
        "assistants",
        "a",
        {"model": "gpt-4.1-mini", "actions": [], "code_interpreter": False, "max_tool_rounds": 8},
    ),
    (
        "assistant-full",
        """\
        kind: assistant
        name: full
        display_name: Full
        provider: offline
        model: m
        instructions: |
          Be brief.
        initial_message: Hi
        code_interpreter: true
        temperature: 0.5
        max_tool_rounds: 3
        """,
        "assistants",
        "full",
        {"provider": "offline", "instructions": "Be brief.\n", "temperature": 0.5},
    ),
    (
        "database-sqlite",
        DB,
        "databases",
        "db",
        {"url": "sqlite:///db.sqlite"},
    ),
    (
        "database-postgres",
        "kind: database\nname: pg\nurl: postgresql://u:p@127.0.0.1:5432/x\n",
        "databases",
        "pg",
        {"url": "postgresql://u:p@127.0.0.1:5432/x"},
    ),
    (
        "provider",
        "kind: provider\nname: local\nbase_url: http://127.0.0.1:11434/v1\napi: responses\n",
        "providers",
        "local",
        {"api": "responses", "timeout": 60.0, "api_key": None},
    ),
    (
        "action-sql",
        DB
        + """---
        kind: action
        name: q
        description: Query.
        parameters: {type: object, properties: {x: {type: integer}}}
        timeout: 3
        sql: {database: db, query: "SELECT {{ x }}", max_rows: 5}
        """,
        "actions",
        "q",
        {"kind_key": "sql", "timeout": 3.0, "network": True},
    ),
    (
        "action-http",
        """\
        kind: action
        name: h
        description: Fetch.
        secrets: []
        sandbox: {memory_mb: 128, network: false}
        http: {method: POST, url: "https://api.example.com/v1/x", json: {a: "{{ a }}"}}
        """,
        "actions",
        "h",
        {"kind_key": "http", "network": False},
    ),
    (
        "action-python",
        """\
        kind: action
        name: p
        description: Dump JSON.
        parameters: {type: object, properties: {}}
        examples:
          - args: {}
            expect: {contains: "{"}
        python: {function: "json:dumps"}
        """,
        "actions",
        "p",
        {"kind_key": "python", "network": False},
    ),
]


@pytest.mark.parametrize(
    ("text", "group", "name", "fields"),
    [pytest.param(*row[1:], id=row[0]) for row in VALID],
)
def test_valid_documents_decode_to_their_structs(
    tmp_path: Path, text: str, group: str, name: str, fields: dict[str, Any]
) -> None:
    """Each kind's YAML becomes its Struct with the given fields and documented defaults."""
    catalog = load(tmp_path, {"m.yaml": text})
    value = getattr(catalog, group)[name]
    assert isinstance(value, Action | Assistant | Database | Provider)
    for field, expected in fields.items():
        assert getattr(value, field) == expected, field


def test_an_action_holds_its_kind_config_struct(tmp_path: Path) -> None:
    """The one kind key is decoded with the registered config Struct and named in kind_key."""
    catalog = load(tmp_path, {"m.yaml": VALID[5][1]})
    action = catalog.actions["q"]
    assert isinstance(action.config, ACTION_KINDS["sql"])
    assert action.config.max_rows == 5  # type: ignore[attr-defined]


# --- invalid documents: (files, file, line, col, message) ------------------------

INVALID: list[tuple[str, str, int, int, str]] = [
    (
        "kind: assistant\nname: bad name\n",
        "m.yaml",
        2,
        7,
        "name: 'bad name' is not a valid name: use 1 to 64 letters, digits, '_' or '-'",
    ),
    ("kind: assistant\nname: a\ntemperature: 3\n", "m.yaml", 3, 14, "maximum of 2"),
    ("kind: assistant\nname: a\nactions: ghost\n", "m.yaml", 3, 10, "not of type 'array'"),
    ("kind: assistant\nname: a\nfile_search: {files: []}\n", "m.yaml", 3, 22, "non-empty"),
    (
        "kind: assistant\nname: a\nfile_search:\n  files: [k.pdf]\n  pdf: {timeout: 0}\n",
        "m.yaml",
        5,
        18,
        "file_search.pdf.timeout",
    ),
    (
        "kind: assistant\nname: a\nfile_search:\n  files: [k.pdf]\n  pdf: {max_pages: 2000000}\n",
        "m.yaml",
        5,
        20,
        "maximum of 1000000",
    ),
    (
        "kind: assistant\nname: a\nfile_search:\n  files: [k.pdf]\n  pdf: {pages: 5}\n",
        "m.yaml",
        5,
        8,
        "'pages' was unexpected",
    ),
    ("kind: assistant\nname: a\nmodle: x\n", "m.yaml", 3, 1, "did you mean 'model'"),
    ("kind: database\nname: d\nurl: mysql://x\n", "m.yaml", 3, 6, "does not match"),
    ("kind: database\nurl: sqlite:///x\n", "m.yaml", 1, 1, "missing required field 'name'"),
    ("kind: provider\nname: p\napi: grpc\n", "m.yaml", 3, 6, "is not one of ['chat', 'responses']"),
    ("kind: provider\nname: p\ntimeout: -1\n", "m.yaml", 3, 10, "timeout"),
    (
        "kind: action\nname: a\ndescription: d\nsandbox:\n  memory: 1\n"
        "sql: {database: db, query: x}\n",
        "m.yaml",
        5,
        3,
        "unknown field 'memory'",
    ),
    (
        "kind: action\nname: a\ndescription: ''\nsql: {database: db, query: x}\n",
        "m.yaml",
        3,
        14,
        "description",
    ),
    (
        "kind: action\nname: a\ndescription: d\nhttp: {url: 'https://x.org', method: BREW}\n",
        "m.yaml",
        4,
        38,
        "http.method",
    ),
    (
        "kind: action\nname: a\ndescription: d\npython: {function: not-a-ref}\n",
        "m.yaml",
        4,
        20,
        "python.function",
    ),
    (
        "kind: action\nname: a\ndescription: d\nsql: {database: db, query: x, extra: 1}\n",
        "m.yaml",
        4,
        31,
        "unknown field 'extra'",
    ),
    (
        "kind: action\nname: a\ndescription: d\n",
        "m.yaml",
        1,
        1,
        "exactly one of: http, python, sql",
    ),
    (
        "kind: action\nname: a\ndescription: d\nsql: {database: db, query: x}\nhttp: {url: x}\n",
        "m.yaml",
        5,
        1,
        "this one has sql and http",
    ),
    (
        "kind: action\nname: a\ndescription: d\nconfig: {}\nsql: {database: db, query: x}\n",
        "m.yaml",
        4,
        1,
        "`config` is set by the loader",
    ),
    (
        "kind: widget\nname: w\n",
        "m.yaml",
        1,
        7,
        "known kinds: action, assistant, database, provider",
    ),
    ("kind: [action]\n", "m.yaml", 1, 7, "unknown kind"),
    ("name: nokind\n", "m.yaml", 1, 1, "missing `kind`"),
    ("just a string\n", "m.yaml", 1, 1, "must be a mapping"),
]


@pytest.mark.parametrize(("text", "file", "line", "col", "message"), INVALID)
def test_invalid_documents_give_located_problems(
    tmp_path: Path, text: str, file: str, line: int, col: int, message: str
) -> None:
    """A wrong document yields one problem at the offending node, naming what is wrong."""
    found = problems(tmp_path, {"m.yaml": DB + "---\n" + text})
    offset = DB.count("\n") + 1
    ours = [p for p in found if p.line > offset]
    assert len(ours) == 1, found
    problem = ours[0]
    assert Path(problem.file).name == file
    assert (problem.line - offset, problem.col) == (line, col), problem
    assert message in problem.message, problem


def test_all_problems_of_all_files_are_reported_at_once(tmp_path: Path) -> None:
    """Problems in several files and documents come back together, sorted by file and line."""
    found = problems(
        tmp_path,
        {
            "b.yaml": "kind: assistant\nname: b\nactions: [nope]\n",
            "a.yaml": "kind: provider\nname: x\napi: no\n---\nkind: database\nname: 1 2\nurl: x\n",
        },
    )
    where = [(Path(p.file).name, p.line) for p in found]
    assert where == [("a.yaml", 3), ("a.yaml", 6), ("a.yaml", 7), ("b.yaml", 3)]
    assert all(str(p).startswith(p.file + ":") for p in found)


def test_problem_paths_name_the_node(tmp_path: Path) -> None:
    """Problem.path is the JSON path of the node inside its document."""
    [problem] = problems(tmp_path, {"m.yaml": "kind: assistant\nname: a\nactions: [x, y]\n"})[:1]
    assert problem.path == "actions[0]"


# --- interpolation ---------------------------------------------------------------


def test_environment_variables_are_interpolated(tmp_path: Path) -> None:
    """${VAR} in a string takes the variable's value from the given environment."""
    catalog = load(
        tmp_path,
        {"p.yaml": "kind: provider\nname: p\nbase_url: http://${HOST}/v1\napi_key: ${KEY}\n"},
        environ={"HOST": "127.0.0.1:9", "KEY": "sk-123"},
    )
    provider = catalog.providers["p"]
    assert (provider.base_url, provider.api_key) == ("http://127.0.0.1:9/v1", "sk-123")


def test_a_missing_variable_is_a_problem_at_its_node(tmp_path: Path) -> None:
    """An unset variable is reported with the file, line and column of the value using it."""
    [problem] = problems(
        tmp_path, {"p.yaml": "kind: provider\nname: p\napi_key: 'x-${NOT_SET_ANYWHERE}'\n"}
    )
    assert (Path(problem.file).name, problem.line, problem.col) == ("p.yaml", 3, 10)
    assert "NOT_SET_ANYWHERE is not set" in problem.message


MALFORMED = """\
kind: database
name: db
url: "postgresql://app:${PGPASS:-changeme}@db/shop"
---
kind: provider
name: p1
base_url: http://127.0.0.1:1/v1
api_key: ${LLM-KEY}
---
kind: provider
name: p2
base_url: http://127.0.0.1:1/v1
api_key: ${ LLM_KEY }
---
kind: assistant
name: a
instructions: |
  Say hello.
  Quote ${1ST} and ${OPEN
"""


def test_a_malformed_variable_is_a_problem_at_its_line_not_a_literal(tmp_path: Path) -> None:
    """`${PGPASS:-changeme}`, `${LLM-KEY}` and `${ LLM_KEY }` were kept as written and
    loaded as the password and the API keys: each `${` that is neither `${NAME}` nor
    `$${` is a problem at its line (inside a `|` block too), quoting no default value and
    pointing at `$${` for a literal."""
    found = problems(tmp_path, {"m.yaml": MALFORMED}, environ={"PGPASS": "pw", "LLM_KEY": "k"})
    assert [(Path(p.file).name, p.line, p.col, p.path) for p in found] == [
        ("m.yaml", 3, 6, "url"),
        ("m.yaml", 8, 10, "api_key"),
        ("m.yaml", 13, 10, "api_key"),
        ("m.yaml", 19, 3, "instructions"),
        ("m.yaml", 19, 3, "instructions"),
    ]
    messages = [p.message.split(": a variable is written")[0] for p in found]
    assert messages == [
        "`${PGPASS` is followed by ':', not `}`",
        "`${LLM` is followed by '-', not `}`",
        "`${` is followed by ' ', not `}`",
        "`${1ST}` is not a variable name (letters, digits and _, not a digit first)",
        "`${OPEN` has no closing `}`",
    ]
    assert all(p.message.endswith("write $${ for a literal ${") for p in found)
    assert not any("changeme" in p.message for p in found)


def test_values_from_variables_are_never_printed(tmp_path: Path) -> None:
    """A variable's value that fails the schema is reported without echoing the value."""
    found = problems(
        tmp_path,
        {
            "p.yaml": "kind: provider\nname: p\napi: ${MODE}\n---\n"
            "kind: database\nname: d\nurl: ${DB}\n"
        },
        environ={"MODE": "hunter2-secret", "DB": "mysql://root:hunter3@db"},
    )
    assert len(found) == 2
    text = " ".join(str(p) for p in found)
    assert "hunter2" not in text and "hunter3" not in text
    assert "environment variable" in text


@pytest.mark.parametrize(
    "text",
    [
        "kind: ${S}\nname: a\n",
        "kind: assistant\nname: a\nactions: ['${S}']\n",
        "kind: assistant\nname: a\nprovider: ${S}\n",
        "kind: assistant\nname: a\nfile_search: {files: ['${S}.md']}\n",
        "kind: action\nname: a\ndescription: d\n"
        "parameters: {type: object, properties: {n: {type: integer}}}\n"
        "examples: [{args: {n: '${S}'}}]\nhttp: {method: GET, url: 'https://a.example/'}\n",
        "kind: action\nname: a\ndescription: d\nsql: {database: '${S}', query: SELECT 1}\n",
    ],
)
def test_no_message_echoes_a_value_from_a_variable(tmp_path: Path, text: str) -> None:
    """Whatever check fails on an interpolated value, its message never carries the value."""
    found = problems(tmp_path, {"a.yaml": text}, environ={"S": "hunter2-secret"})
    assert found
    for problem in found:
        assert "hunter2" not in str(problem), str(problem)


def test_an_undeclared_secret_is_a_problem(tmp_path: Path) -> None:
    """A secret the environment lacks is reported at its entry in `secrets`."""
    files = {
        "db.yaml": DB,
        "a.yaml": "kind: action\nname: a\ndescription: d\nsecrets: [A_KEY, B_KEY]\n"
        "sql: {database: db, query: x}\n",
    }
    [problem] = problems(tmp_path, files, environ={"A_KEY": "1"})
    assert (Path(problem.file).name, problem.line, problem.col) == ("a.yaml", 4, 18)
    assert "B_KEY" in problem.message


# --- cross-document checks ---------------------------------------------------------


def test_duplicate_names_point_at_the_second_and_the_first(tmp_path: Path) -> None:
    """A name declared twice for one kind is reported at the second with the first's location."""
    found = problems(tmp_path, {"a.yaml": DB, "b.yaml": "# c\n" + DB})
    [problem] = found
    assert (Path(problem.file).name, problem.line) == ("b.yaml", 3)
    assert "first declared at" in problem.message and "a.yaml:1" in problem.message


def test_a_duplicate_is_reported_even_when_the_first_document_is_invalid(
    tmp_path: Path,
) -> None:
    """Both mistakes are reported: the first document's own error and the reused name."""
    broken = "kind: database\nname: db\nurl: ftp://nowhere\n"
    found = problems(tmp_path, {"a.yaml": broken, "b.yaml": DB})
    assert [(Path(p.file).name, p.line) for p in found] == [("a.yaml", 3), ("b.yaml", 2)]
    assert "duplicate database name 'db'" in found[1].message


def test_the_same_name_in_two_kinds_is_fine(tmp_path: Path) -> None:
    """Names are unique per kind, not across kinds."""
    catalog = load(tmp_path, {"m.yaml": DB + "---\nkind: provider\nname: db\n"})
    assert "db" in catalog.databases and "db" in catalog.providers


def test_a_broken_action_does_not_also_break_its_assistant(tmp_path: Path) -> None:
    """An assistant listing an action that failed to decode gets no extra "unknown action"."""
    files = {
        "a.yaml": "kind: action\nname: act\ndescription: d\ntimeout: 900\n"
        "sql: {database: db, query: x}\n",
        "b.yaml": DB + "---\nkind: assistant\nname: s\nactions: [act]\n",
    }
    [problem] = problems(tmp_path, files)
    assert "timeout" in problem.message


def test_builtin_tools_cannot_be_listed_as_actions(tmp_path: Path) -> None:
    """Listing file_search under actions says to use the built-in switch instead."""
    [problem] = problems(tmp_path, {"a.yaml": "kind: assistant\nname: a\nactions: [file_search]\n"})
    assert "built-in tool" in problem.message


# --- files, paths, catalog ---------------------------------------------------------


def test_discover_finds_yaml_recursively_sorted_and_skips_hidden(tmp_path: Path) -> None:
    """*.yaml and *.yml anywhere are found, sorted; hidden files and directories are skipped."""
    for rel in ["b.yaml", "a/z.yml", "a/b/c.yaml", ".git/x.yaml", "a/.hidden.yaml", "n.txt"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("", encoding="utf-8")
    assert discover(tmp_path) == ["a/b/c.yaml", "a/z.yml", "b.yaml"]


def test_discover_follows_symlinked_directories_once(tmp_path: Path) -> None:
    """A symlinked directory (git-sync, ConfigMaps) is followed; a link loop is not."""
    real = tmp_path / "real"
    real.mkdir()
    (real / "m.yaml").write_text("", encoding="utf-8")
    root = tmp_path / "root"
    root.mkdir()
    (root / "current").symlink_to(real)
    (root / "current" / "loop").symlink_to(root)
    assert discover(root) == ["current/m.yaml"]


def test_relative_paths_resolve_against_the_manifests_root(tmp_path: Path) -> None:
    """Knowledge files and sqlite URLs are relative to the manifests root."""
    files = {
        "sub/a.yaml": DB + "---\nkind: assistant\nname: a\nfile_search: {files: [docs/k.md]}\n",
        "docs/k.md": "# K\n",
    }
    catalog = load(tmp_path, files)
    root = tmp_path / "manifests"
    assert catalog.knowledge_files == (root / "docs" / "k.md",)
    assert catalog.database_urls() == {"db": f"sqlite:///{root}/db.sqlite"}
    assert catalog.root == root and catalog.gateway_root == tmp_path


def test_catalog_records_files_and_sources(tmp_path: Path) -> None:
    """The catalog lists its files and where each document was declared."""
    catalog = load(tmp_path, {"x/m.yaml": "# c\n" + DB + "---\nkind: assistant\nname: a\n"})
    assert catalog.files == ("x/m.yaml",)
    assert catalog.sources["database/db"].file == "x/m.yaml"
    assert catalog.sources["database/db"].line == 2
    assert catalog.sources["assistant/a"].line == 6
    assert catalog.tools == {"a": []}


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    """Same content in another directory gives the same version; any change gives another."""
    files = {
        "m.yaml": DB + "---\nkind: assistant\nname: a\nfile_search: {files: [k.md]}\n",
        "k.md": "x",
    }
    one = load(tmp_path / "one", files)
    two = load(tmp_path / "two", files)
    assert one.version == two.version and len(one.version) == 12
    assert load(tmp_path / "one", files).version == one.version
    (tmp_path / "two" / "manifests" / "k.md").write_text("y", encoding="utf-8")
    changed = load_catalog(tmp_path / "two" / "manifests", environ={}, gateway_root=tmp_path)
    assert changed.version != one.version


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "no manifest files"),
        ({"a.yaml": "# nothing\n---\n"}, "hold no documents"),
    ],
)
def test_an_empty_root_is_a_problem(tmp_path: Path, files: dict[str, str], message: str) -> None:
    """A root with no manifest documents is refused (a reload must never serve nothing)."""
    (tmp_path / "manifests").mkdir()
    [problem] = problems(tmp_path, files)
    assert message in problem.message


def test_a_missing_root_is_a_problem(tmp_path: Path) -> None:
    """A root that does not exist is a ManifestError naming it, not an OSError."""
    with pytest.raises(ManifestError) as info:
        load_catalog(tmp_path / "absent")
    assert info.value.problems[0].message == "the manifests root does not exist"


def test_unreadable_bytes_are_a_problem(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported, not raised."""
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "bad.yaml").write_bytes(b"kind: \xff\xfe\n")
    with pytest.raises(ManifestError) as info:
        load_catalog(root, environ={})
    assert "cannot read" in info.value.problems[0].message


def test_bytes_that_are_not_utf8_are_located_at_their_line(tmp_path: Path) -> None:
    """A Latin-1 byte deep in a file is reported at its own line and column, not at 1:1."""
    root = tmp_path / "manifests"
    root.mkdir()
    text = "kind: assistant\nname: a\n\n\ninstructions: caf\xe9 au lait\n"
    (root / "latin1.yaml").write_bytes(text.encode("latin-1"))
    with pytest.raises(ManifestError) as info:
        load_catalog(root, environ={})
    [problem] = info.value.problems
    assert (problem.line, problem.col) == (5, 18)
    assert "UTF-8" in problem.message and "0xe9" in problem.message


def test_example_args_must_match_the_parameters(tmp_path: Path) -> None:
    """An example whose args break the action's schema is reported at the offending arg."""
    action = (
        "kind: action\nname: a\ndescription: d\n"
        "parameters: {type: object, properties: {n: {type: integer}}, required: [n]}\n"
        "examples:\n  - args: {n: 1}\n  - args: {n: two}\n"
        "sql: {database: db, query: x}\n"
    )
    [problem] = problems(tmp_path, {"db.yaml": DB, "a.yaml": action})
    assert (Path(problem.file).name, problem.line, problem.col) == ("a.yaml", 7, 15)
    assert "'two' is not of type 'integer'" in problem.message


def test_a_syntax_error_does_not_hide_earlier_documents(tmp_path: Path) -> None:
    """Actions declared before a broken document still count: only the syntax error is reported."""
    files = {
        "a.yaml": DB + "---\nkind: assistant\nname: s\nactions: [q]\n",
        "b.yaml": "kind: action\nname: q\ndescription: d\nsql: {database: db, query: x}\n"
        "---\nkind: action\nname: [broken\n",
    }
    [problem] = problems(tmp_path, files)
    assert (Path(problem.file).name, problem.line) == ("b.yaml", 8)
    assert "invalid YAML" in problem.message


def test_the_documents_after_a_syntax_error_are_read_and_checked(tmp_path: Path) -> None:
    """Reading resumes at the next `---` after a syntax error: a later document's name counts
    (no "unknown action" in its assistant) and its own problems are reported in the same run,
    as is a second syntax error further down."""
    files = {
        "a.yaml": DB + "---\nkind: assistant\nname: s\nactions: [q, r]\n",
        "b.yaml": "kind: action\nname: p\ndescription: [unclosed\n"
        "---\nkind: action\nname: q\ndescription: d\nsql: {database: nodb, query: 'SELECT {{ x'}\n"
        "---\nkind: action\nname: {broken\n"
        "---\nkind: action\nname: r\ndescription: d\nsql: {database: db, query: SELECT 1}\n",
    }
    found = problems(tmp_path, files)
    assert [(Path(p.file).name, p.line, p.col) for p in found] == [
        ("b.yaml", 4, 1),
        ("b.yaml", 8, 17),
        ("b.yaml", 8, 30),
        ("b.yaml", 12, 1),
    ]
    assert "invalid YAML" in found[0].message and "invalid YAML" in found[3].message
    assert "unknown database 'nodb'" in found[1].message
    assert "SQL template does not parse" in found[2].message


# --- reloads reuse what an unchanged file yields ------------------------------------


def test_a_reload_sees_a_changed_environment_in_an_unchanged_file(tmp_path: Path) -> None:
    """The remembered documents of a file are keyed by the environment too."""
    files = {"p.yaml": "kind: provider\nname: p\nbase_url: http://${HOST}/v1\n"}
    first = load(tmp_path, files, environ={"HOST": "one:1"})
    second = load(tmp_path, files, environ={"HOST": "two:2"})
    assert first.providers["p"].base_url == "http://one:1/v1"
    assert second.providers["p"].base_url == "http://two:2/v1"


def test_a_reload_reports_the_problems_of_unchanged_files_again(tmp_path: Path) -> None:
    """A broken file stays broken on every load, even when nothing else changed."""
    files = {
        "db.yaml": DB,
        "q.yaml": """\
            kind: action
            name: q
            description: query
            sql: {database: nope, query: "SELECT 1"}
            """,
    }
    first = problems(tmp_path, files)
    second = problems(tmp_path, files)
    assert first == second
    assert any("unknown database 'nope'" in p.message for p in second)
    # Declaring the database in another file fixes the unchanged one: the kind check
    # depends on the set it belongs to, not only on the document.
    files["db2.yaml"] = "kind: database\nname: nope\nurl: sqlite:///n.sqlite\n"
    assert load(tmp_path, files).actions["q"].config is not None


def test_a_reload_infers_parameters_again_when_only_the_code_changed(tmp_path: Path) -> None:
    """An unchanged YAML file whose Python function changed gets the new parameters."""
    module = tmp_path / "reload_actions.py"
    module.write_text("def f(city: str) -> str:\n    '''Weather.'''\n    return city\n")
    files = {
        "f.yaml": "kind: action\nname: f\ndescription: d\npython: {function: reload_actions:f}\n"
    }
    first = load(tmp_path, files)
    module.write_text(
        "def f(town: str, days: int = 1) -> str:\n    '''Weather.'''\n    return town\n"
    )
    second = load(tmp_path, files)
    assert set(first.actions["f"].parameters["properties"]) == {"city"}
    assert set(second.actions["f"].parameters["properties"]) == {"town", "days"}


def _after_introspection(monkeypatch: pytest.MonkeyPatch, edit: Callable[[], object]) -> None:
    """Run ``edit`` once, right after the next load's introspection imported the code:
    what a push landing mid-load does (the module's own top-level code may write
    nothing, see ``gateway.manifests._confine``)."""
    from gateway.manifests import loader

    real = loader.inspect_functions
    pending = [edit]

    def inspect(*args: Any, **kwargs: Any) -> Any:
        found = real(*args, **kwargs)
        while pending:
            pending.pop()()
        return found

    monkeypatch.setattr(loader, "inspect_functions", inspect)


def _load_in_thread(root: Path, fifo: Path | None = None) -> list[Problem]:
    """load_catalog in a thread, so a loader stuck on a file fails the test instead of hanging."""
    import threading

    found: list[Problem] = []

    def run() -> None:
        try:
            load_catalog(root, environ={})
        except ManifestError as exc:
            found.extend(exc.problems)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive() and fifo is not None:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the stuck reader go
        thread.join(5)
        pytest.fail("the loader blocked on a FIFO")
    return found


def test_a_fifo_named_like_a_manifest_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    """A FIFO (or device, socket) under the root is reported; opening it never blocks a reload."""
    root = write(tmp_path / "manifests", {"a.yaml": "kind: assistant\nname: a\n"})
    os.mkfifo(root / "pipe.yaml")
    [problem] = _load_in_thread(root, root / "pipe.yaml")
    assert problem.file == str(root / "pipe.yaml")
    assert "not a regular file" in problem.message


def test_a_symlink_to_a_device_is_a_problem(tmp_path: Path) -> None:
    """A pushed symlink to /dev/zero is refused at once instead of read until memory runs out."""
    root = write(tmp_path / "manifests", {"a.yaml": "kind: assistant\nname: a\n"})
    (root / "zero.yaml").symlink_to("/dev/null")  # /dev/zero would eat the machine unfixed
    [problem] = _load_in_thread(root)
    assert problem.file == str(root / "zero.yaml")
    assert "not a regular file" in problem.message


def test_a_knowledge_file_swapped_for_a_fifo_after_validation_does_not_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A knowledge file replaced by a FIFO between its check and the version hash (here
    once the action module was imported) is hashed as unreadable: the load ends, never
    blocks."""
    knowledge = tmp_path / "manifests" / "k.md"
    (tmp_path / "swap_actions.py").write_text(
        "def f(city: str) -> str:\n    '''Weather.'''\n    return city\n"
    )

    def swap() -> None:
        knowledge.unlink()
        os.mkfifo(knowledge)

    _after_introspection(monkeypatch, swap)
    root = write(
        tmp_path / "manifests",
        {
            "a.yaml": "kind: assistant\nname: a\nfile_search: {files: [k.md]}\n---\n"
            "kind: action\nname: f\ndescription: d\npython: {function: swap_actions:f}\n",
            "k.md": "# K\n\nknowledge\n",
        },
    )
    assert _load_in_thread(root, knowledge) == []
    assert knowledge.is_fifo()


def test_a_code_file_turned_into_a_fifo_does_not_hang_the_load_or_the_zygotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An action module that is a FIFO once imported is hashed as unreadable by the
    catalog version and by the zygote fingerprint, which both end instead of blocking."""
    import threading

    from gateway.sandbox._zygote_keys import fingerprint, zygote_keys

    module = tmp_path / "fifo_actions.py"
    code = "def f(city: str) -> str:\n    '''Weather.'''\n    return city\n"
    module.write_text(code)

    def swap() -> None:
        module.unlink()
        os.mkfifo(module)

    _after_introspection(monkeypatch, swap)
    text = "kind: action\nname: f\ndescription: d\npython: {function: fifo_actions:f}\n"
    root = write(tmp_path / "manifests", {"f.yaml": text})
    assert _load_in_thread(root, module) == []
    module.unlink()
    module.write_text(code)
    catalog = load_catalog(root, environ={})
    assert module in catalog.code_files
    module.unlink()
    os.mkfifo(module)
    keys = zygote_keys(catalog)
    prints: list[str] = []
    worker = threading.Thread(
        target=lambda: prints.extend(fingerprint(k, catalog) for k in keys), daemon=True
    )
    worker.start()
    worker.join(20)
    if worker.is_alive():
        os.close(os.open(module, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail("the zygote fingerprint blocked on a FIFO")
    assert len(prints) == len(keys)


def test_a_huge_file_is_a_problem(tmp_path: Path) -> None:
    """A file over the size limit is reported with its size instead of being parsed."""
    from gateway.manifests.loader import MAX_FILE_BYTES

    root = write(tmp_path / "manifests", {"a.yaml": "kind: assistant\nname: a\n"})
    line = "# " + "x" * 1022 + "\n"
    (root / "big.yaml").write_text(line * (MAX_FILE_BYTES // len(line) + 1))
    [problem] = _load_in_thread(root)
    assert problem.file == str(root / "big.yaml")
    assert "larger than" in problem.message


@pytest.mark.parametrize(
    "text",
    [
        'kind: assistant\nname: "support\\n"\n',
        "kind: assistant\nname: |\n  support\n",
        'kind: action\nname: "get\\n"\ndescription: d\nhttp: {method: GET, url: "https://a.example/"}\n',
    ],
)
def test_a_name_with_a_trailing_newline_is_refused(tmp_path: Path, text: str) -> None:
    """Names match the whole pattern: a trailing newline (a quoted "\\n", a `|` block) is invalid.

    Python's `$` also matches before a final newline, so "get\\n" passed and
    became a tool name the model provider refuses on every chat.
    """
    [problem] = problems(tmp_path, {"a.yaml": text})
    assert problem.path == "name" and "is not a valid name: use 1 to 64" in problem.message


def test_a_python_function_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    """`python.function` matches its whole pattern: "mod:f\\n" is a format error at that
    field, not an import of a callable named "f\\n" that can never be found."""
    text = 'kind: action\nname: a\ndescription: d\npython: {function: "actions.x:f\\n"}\n'
    [problem] = problems(tmp_path, {"a.yaml": text})
    assert problem.path == "python.function" and "does not match" in problem.message
    # The pattern's `(?!\n)` (Python's `$` matches before a final newline) is not shown.
    assert "(?!" not in problem.message and problem.message.endswith("$`")


HTTP_ACTION = "http: {method: GET, url: 'https://a.example/'}\n"


@pytest.mark.parametrize(
    ("parameters", "path", "message"),
    [
        (
            "{type: object, properties: {a: {$ref: '#/$defs/nope'}}}",
            "parameters.properties.a['$ref']",
            "does not resolve",
        ),
        (
            "{type: object, properties: {a: {$ref: 'https://schemas.example/a.json'}}}",
            "parameters.properties.a['$ref']",
            "only local",
        ),
        (
            "{type: object, properties: {a: {$ref: '#nope'}}}",
            "parameters.properties.a['$ref']",
            "no $anchor 'nope'",
        ),
        (
            "{type: object, properties: {a: {type: string, pattern: '(('}}}",
            "parameters.properties.a.pattern",
            "not a valid regular expression",
        ),
        (
            "{type: object, patternProperties: {'[': {type: string}}}",
            "parameters.patternProperties",
            "not a valid regular expression",
        ),
    ],
)
@pytest.mark.parametrize("examples", ["", "examples: [{args: {a: x}}]\n"])
def test_parameters_that_cannot_be_used_to_validate_are_problems(
    tmp_path: Path, parameters: str, path: str, message: str, examples: str
) -> None:
    """A $ref that resolves nowhere or a bad regex is located at load, not a crash.

    Such a schema passes the meta-schema; it used to crash the load when an
    example was checked against it (a traceback from `gateway validate`, an
    unlocated "failed" reload) and, without examples, every call of the action.
    """
    text = f"kind: action\nname: act\ndescription: d\nparameters: {parameters}\n{examples}"
    [problem] = problems(tmp_path, {"a.yaml": text + HTTP_ACTION})
    assert problem.path.startswith(path), problem
    assert message in problem.message


def test_local_refs_and_valid_patterns_are_fine(tmp_path: Path) -> None:
    """`#/$defs/...` refs that resolve and valid patterns load, and examples are checked."""
    text = (
        "kind: action\nname: act\ndescription: d\nparameters:\n"
        "  type: object\n  $defs: {code: {type: string, pattern: '^[A-Z]{3}$'},"
        " cc: {$anchor: cc, type: string}}\n"
        "  properties: {a: {$ref: '#/$defs/code'}, b: {$ref: '#'}, c: {$ref: '#cc'}}\n"
        "examples: [{args: {a: EUR}}]\n"
    )
    catalog = load(tmp_path, {"a.yaml": text + HTTP_ACTION})
    assert "act" in catalog.actions
    bad = text.replace("a: EUR", "a: euro")
    [problem] = problems(tmp_path / "2", {"a.yaml": bad + HTTP_ACTION})
    assert "does not match" in problem.message


def test_a_multi_line_import_error_stays_one_problem_a_line(tmp_path: Path) -> None:
    """An action module raising a multi-line message at import still prints as one line."""
    (tmp_path / "multiline_mod.py").write_text(
        "raise RuntimeError('bad settings:\\n  FOO is missing\\n  BAR is missing')\n"
    )
    text = "kind: action\nname: act\ndescription: d\npython: {function: 'multiline_mod:f'}\n"
    [problem] = problems(tmp_path, {"a.yaml": text})
    assert "\n" not in problem.message
    assert "FOO is missing" in problem.message and "BAR is missing" in problem.message


def test_a_knowledge_file_that_is_a_symlink_loop_is_a_problem(tmp_path: Path) -> None:
    """`docs/loop.md -> loop.md` is reported at its entry, not a RuntimeError from pathlib."""
    root = write(
        tmp_path / "manifests",
        {"a.yaml": "kind: assistant\nname: a\nfile_search: {files: [docs/loop.md]}\n"},
    )
    (root / "docs").mkdir()
    (root / "docs" / "loop.md").symlink_to("loop.md")
    with pytest.raises(ManifestError) as info:
        load_catalog(root, environ={})
    [problem] = info.value.problems
    assert problem.path == "file_search.files[0]"
    assert "docs/loop.md" in problem.message


def test_a_root_that_is_a_symlink_loop_is_a_problem(tmp_path: Path) -> None:
    """GATEWAY_MANIFESTS pointing at a symlink loop is "not a directory", not a RuntimeError."""
    root = tmp_path / "manifests"
    root.symlink_to("manifests")
    with pytest.raises(ManifestError) as info:
        load_catalog(root, environ={})
    assert "not a directory" in info.value.problems[0].message


def test_a_value_from_a_variable_is_masked_in_other_documents_messages(tmp_path: Path) -> None:
    """A name built from a variable in one document is masked where another quotes it."""
    text = (
        "kind: action\nname: 'get${SUFFIX}'\ndescription: d\n"
        "http: {method: GET, url: 'https://a.example/'}\n---\n"
        "kind: assistant\nname: a\nactions: [get_it]\n"
    )
    [problem] = problems(tmp_path, {"a.yaml": text}, environ={"SUFFIX": "_hunter2"})
    assert problem.message.startswith("unknown action 'get_it'")
    assert "hunter2" not in problem.message


def test_loading_does_not_hold_a_knowledge_file_in_memory(tmp_path: Path) -> None:
    """The set's version hashes knowledge files in blocks: loading a set with a 24 MiB
    file (under its cap) allocates no more than with a tiny one, and an edit still
    changes the version."""
    import tracemalloc

    (tmp_path / "docs").mkdir()
    big = tmp_path / "docs" / "big.txt"
    (tmp_path / "a.yaml").write_text(
        "kind: assistant\nname: a\nfile_search:\n  files: [docs/big.txt]\n"
    )

    def peak_of_a_load() -> tuple[int, str]:
        tracemalloc.start()
        try:
            version = load_catalog(tmp_path, environ={}, gateway_root=tmp_path).version
            return tracemalloc.get_traced_memory()[1], version
        finally:
            tracemalloc.stop()

    big.write_bytes(b"zebra ")
    load_catalog(tmp_path, environ={}, gateway_root=tmp_path)  # warm the caches
    small_peak, _ = peak_of_a_load()
    big.write_bytes(b"zebra " * (4 << 20))
    big_peak, before = peak_of_a_load()
    assert big_peak - small_peak < 4 << 20, (small_peak, big_peak)
    with big.open("r+b") as fh:
        fh.write(b"Zebra")
    assert load_catalog(tmp_path, environ={}, gateway_root=tmp_path).version != before


@pytest.mark.parametrize(
    ("url", "environ", "masked"),
    [
        # A URL's scheme and host are public by contract: a link on them is no secret.
        ("${API_BASE}/items", {"API_BASE": "https://api.example.com"}, ()),
        # Credentials are, whether a variable holds the whole base or only them.
        (
            "${API_BASE}/items",
            {"API_BASE": "https://svc:s3cretPass99@api.example.com"},
            ("https://svc:s3cretPass99@api.example.com",),
        ),
        (
            "https://${API_USER}:${API_PASS}@api.example.com/items",
            {"API_USER": "svc-user", "API_PASS": "s3cretPass99"},
            ("s3cretPass99", "svc-user"),
        ),
    ],
)
def test_a_url_origin_is_not_masked_but_its_credentials_are(
    tmp_path: Path, url: str, environ: dict[str, str], masked: tuple[str, ...]
) -> None:
    """A ``${VAR}`` only in an http URL's scheme and host is not masked in what the action
    answers; one holding ``user:pass@`` credentials is (an error echoing the URL must not
    hand the password to the model)."""
    (tmp_path / "a.yaml").write_text(
        f"kind: action\nname: get\ndescription: Get.\nhttp:\n  url: {url}\n"
    )
    catalog = load_catalog(tmp_path, environ=environ)
    assert catalog.substituted.get("action/get", ()) == masked


LATER = 'def f(city: str) -> str:\n    """Weather."""\n    return "later"\n'


def test_the_catalog_keeps_and_is_versioned_by_the_code_it_validated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code that changes on disk after the load imported it (here: right after) is
    neither what the catalog keeps nor what its version hashes; the next load sees it."""
    module = tmp_path / "edit_actions.py"
    first_source = LATER.replace('"later"', '"first"')
    module.write_text(first_source)
    _after_introspection(monkeypatch, lambda: module.write_text(LATER))
    action = "kind: action\nname: f\ndescription: d\npython: {function: edit_actions:f}\n"
    first = load(tmp_path, {"f.yaml": action})
    assert module.read_text() == LATER
    second = load(tmp_path, {"f.yaml": action})
    [kept] = [m for m in first.code if m.name == "edit_actions"]
    assert kept.source == first_source.encode()
    assert kept.file == str(module.resolve()) and kept.locations is None
    assert first.code_sources() == {str(module.resolve()): first_source.encode()}
    assert first.version != second.version
    assert second.code_sources() == {str(module.resolve()): LATER.encode()}


def test_code_over_the_size_limit_is_a_located_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A set importing more source than the gateway keeps is refused, at the first Python
    action, naming the size and the largest files."""
    from gateway.manifests import _pyfunc

    monkeypatch.setattr(_pyfunc, "MAX_SOURCE_BYTES", 1024 * 1024)
    big = tmp_path / "big_actions"
    big.mkdir()
    (big / "__init__.py").write_text("")
    (big / "data.py").write_text("BLOB = '" + "x" * (1024 * 1024) + "'\n")
    (big / "tools.py").write_text(
        "from big_actions.data import BLOB\n\n\ndef f() -> int:\n    return len(BLOB)\n"
    )
    action = "kind: action\nname: f\ndescription: d\npython:\n  function: big_actions.tools:f\n"
    [problem] = problems(tmp_path, {"a.yaml": "kind: assistant\nname: a\n", "f.yaml": action})
    assert (Path(problem.file).name, problem.line) == ("f.yaml", 5)
    assert "import 1.0 MiB of source" in problem.message
    assert "over the 1 MiB" in problem.message
    assert "largest: big_actions/data.py (1.0 MiB)" in problem.message


def test_an_integral_float_loads_where_the_schema_says_integer(tmp_path: Path) -> None:
    """`max_tool_rounds: 8.0` passed the committed schema (JSON Schema's integer is any
    number without a fraction: what an editor checks against) but the loader refused it
    ("Expected `int`, got `float`"): it loads as 8; 8.5 is still refused."""
    schema = json.loads(
        (Path(__file__).parents[3] / "schemas" / "manifest.schema.json").read_text()
    )
    rounds = schema["$defs"]["Assistant"]["properties"]["max_tool_rounds"]
    assert rounds["type"] == "integer"
    catalog = load(tmp_path, {"a.yaml": "kind: assistant\nname: a\nmax_tool_rounds: 8.0\n"})
    value = catalog.assistants["a"].max_tool_rounds
    assert (value, type(value)) == (8, int)
    [problem] = problems(
        tmp_path / "b", {"a.yaml": "kind: assistant\nname: a\nmax_tool_rounds: 8.5\n"}
    )
    assert problem.message == "max_tool_rounds: 8.5 is not of type 'integer'"


def test_a_bare_word_yaml_reads_as_a_boolean_is_quoted_as_written(tmp_path: Path) -> None:
    """`name: NO` said "name: False is not of type 'string'": YAML 1.1 reads NO, yes, on,
    null as booleans or null; the problem quotes what was written and says to quote it."""
    found = problems(
        tmp_path, {"a.yaml": "kind: assistant\nname: NO\ninitial_message: yes\nmodel: ~\n"}
    )
    assert [(p.line, p.col, p.message) for p in found] == [
        (
            2,
            7,
            "name: NO is read by YAML as a boolean (false), not text; "
            'write it in quotes for the text: "NO"',
        ),
        (
            3,
            18,
            "initial_message: yes is read by YAML as a boolean (true), not text; "
            'write it in quotes for the text: "yes"',
        ),
        (
            4,
            8,
            "model: ~ is read by YAML as null (null), not text; "
            'write it in quotes for the text: "~"',
        ),
    ]
