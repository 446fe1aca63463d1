"""A document with problems still has the checks that do not depend on them run (``_salvage``).

Each row is one manifest file with its every problem, the later stages' (the
import of its Python function, its kind's templates and database, its secrets,
parameters and examples, an assistant's names and files) beside the schema's:
one load lists them all, and nothing twice. A check that depends on a broken
field (no kind config at all: nothing to import) stays skipped, silently.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.errors import ManifestError, Problem
from gateway.manifests.loader import load_catalog

DB = "kind: database\nname: db\nurl: sqlite:///db.sqlite\n---\n"

# (id, the file's text after DB, [(line, words its problem holds), ...] in order)
ROWS: list[tuple[str, str, list[tuple[int, str]]]] = [
    (
        "schema-and-import",
        """\
        kind: action
        name: slow
        description: Its timeout is too long and its module does not exist.
        timeout: 900
        python:
          function: actions.nowhere:run
        """,
        [(8, "maximum of 300"), (10, "cannot import module 'actions.nowhere'")],
    ),
    (
        "missing-description-sql-template-and-database",
        """\
        kind: action
        name: undescribed
        sql:
          database: nodb
          query: |
            SELECT 1
            {% if q %}WHERE x = {{ q }}
        """,
        [
            (5, "missing required field 'description'"),
            (8, "unknown database 'nodb'"),
            (11, "the SQL template does not parse (line 2)"),
        ],
    ),
    (
        "unknown-field-and-http-template",
        """\
        kind: action
        name: typo
        description: A misspelled field and a template that does not parse.
        timout: 5
        http:
          url: "https://example.test/{{ id"
        """,
        [(8, "unknown field 'timout'"), (10, "template does not parse")],
    ),
    (
        "wrong-sandbox-and-missing-secret",
        """\
        kind: action
        name: secretive
        description: A limit of the wrong type and a secret nobody set.
        sandbox: {memory_mb: lots}
        secrets: [GATEWAY_TEST_UNSET_SECRET]
        sql: {database: db, query: SELECT 1}
        """,
        [(8, "'lots' is not of type 'integer'"), (9, "GATEWAY_TEST_UNSET_SECRET is not set")],
    ),
    (
        "schema-and-parameters",
        """\
        kind: action
        name: params
        description: A bad timeout and parameters that are no JSON Schema.
        timeout: 0
        parameters:
          type: object
          properties: {q: {type: strin}}
        sql: {database: db, query: SELECT 1}
        """,
        [(8, "timeout: 0 is less than or equal to the minimum of 0"), (11, "not a valid JSON")],
    ),
    (
        "schema-and-example",
        """\
        kind: action
        name: sampled
        description: A bad timeout and an example its parameters refuse.
        timeout: -1
        parameters:
          type: object
          properties: {q: {type: string}}
          required: [q]
        examples:
          - args: {}
        sql: {database: db, query: "SELECT {{ q }}"}
        """,
        [(8, "timeout: -1"), (14, "example args do not match parameters: 'q' is a required")],
    ),
    (
        "missing-variable-and-sql-template",
        """\
        kind: action
        name: unset
        description: Reads ${GATEWAY_TEST_UNSET_VARIABLE}.
        sql: {database: db, query: "SELECT {{ x"}
        """,
        [(7, "GATEWAY_TEST_UNSET_VARIABLE is not set"), (8, "the SQL template does not parse")],
    ),
    (
        "assistant-schema-and-unknown-action",
        """\
        kind: assistant
        name: helper
        temperature: 9
        actions: [no_such_action]
        file_search: {files: [docs/not-there.md]}
        """,
        [
            (7, "temperature: 9 is greater than the maximum of 2"),
            (8, "unknown action 'no_such_action'"),
            (9, "knowledge file 'docs/not-there.md' does not exist"),
        ],
    ),
    (
        "an-unset-variable-is-not-also-a-value-problem",
        """\
        kind: action
        name: unset_whole
        description: ${GATEWAY_TEST_UNSET_VARIABLE}
        timeout: ${GATEWAY_TEST_UNSET_TIMEOUT}
        sql: {database: db, query: SELECT 1}
        """,
        [
            (7, "GATEWAY_TEST_UNSET_VARIABLE is not set"),
            (8, "GATEWAY_TEST_UNSET_TIMEOUT is not set"),
            (8, "timeout: the value from an environment variable fails `type`"),
        ],
    ),
    # What depends on a broken field stays skipped, and says nothing more.
    (
        "broken-function-is-not-imported",
        """\
        kind: action
        name: unreferenced
        description: The function is no module:callable, so nothing is imported.
        timeout: 900
        python: {function: "not a reference"}
        """,
        [(8, "maximum of 300"), (9, "'not a reference' does not match")],
    ),
    (
        "two-kinds-are-checked-as-neither",
        """\
        kind: action
        name: both
        description: Python and SQL at once, neither checked further.
        timeout: 900
        python: {function: "actions.nowhere:run"}
        sql: {database: nodb, query: "SELECT {{ x"}
        """,
        [(8, "maximum of 300"), (10, "python and sql")],
    ),
    (
        "broken-parameters-leave-examples-unchecked",
        """\
        kind: action
        name: unsampled
        description: Parameters of the wrong type, so the examples have nothing to match.
        parameters: [q]
        examples:
          - args: {}
        sql: {database: db, query: SELECT 1}
        """,
        [(8, "parameters: ['q'] is not of type 'object'")],
    ),
]


def _problems(tmp_path: Path, text: str) -> list[Problem]:
    root = tmp_path / "manifests"
    root.mkdir()
    body = "---\n".join(textwrap.dedent(part) for part in text.split("---\n"))
    (root / "set.yaml").write_text(DB + body, encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_catalog(root, environ={}, gateway_root=tmp_path)
    return info.value.problems


@pytest.mark.parametrize(("text", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_a_document_with_problems_still_has_its_independent_checks_run(
    tmp_path: Path, text: str, expected: list[tuple[int, str]]
) -> None:
    """One load lists a document's every problem, each once, in line order, at its file."""
    found = _problems(tmp_path, text)
    assert [p.line for p in found] == [line for line, _ in expected], found
    for problem, (_, words) in zip(found, expected, strict=True):
        assert words in problem.message
        assert problem.file == str(tmp_path / "manifests" / "set.yaml")


def test_a_sound_sibling_is_checked_beside_a_broken_action(tmp_path: Path) -> None:
    """Three actions, one problem of a different stage each (schema, import, SQL template),
    are reported together; the valid fourth adds nothing."""
    found = _problems(
        tmp_path,
        """\
        kind: action
        name: slow
        description: Too slow.
        timeout: 900
        sql: {database: db, query: SELECT 1}
        ---
        kind: action
        name: gone
        description: Its module does not exist.
        python: {function: "actions.nowhere:run"}
        ---
        kind: action
        name: unparsed
        description: Its template does not parse.
        sql: {database: db, query: "SELECT {{ x"}
        ---
        kind: action
        name: fine
        description: Nothing wrong.
        sql: {database: db, query: SELECT 1}
        """,
    )
    assert [(p.line, p.path) for p in found] == [
        (8, "timeout"),
        (14, "python.function"),
        (19, "sql.query"),
    ]
