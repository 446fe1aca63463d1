"""tests/fixtures/broken: one file per kind of mistake, each reported at its file and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.errors import ManifestError, Problem
from gateway.manifests.loader import load_catalog

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
BROKEN = FIXTURES / "broken"

# (file, line, col, words the message must contain)
EXPECTED: list[tuple[str, int, int, str]] = [
    ("bad_default.yaml", 7, 62, "default of parameter 'limit' does not match its own schema"),
    ("bad_default.yaml", 8, 49, "parameter 'sort' does not match its own schema: 'c' is not one"),
    ("bad_default.yaml", 12, 39, "parameter 'opts.lang' does not match its own schema: 5 is not"),
    ("bad_parameters.yaml", 7, 15, "not a valid JSON Schema"),
    ("bad_parameters.yaml", 14, 9, "type: object"),
    ("builtin_name.yaml", 2, 7, "built-in tool"),
    ("history_range.yaml", 5, 17, "history.max_messages: 0 is less than the minimum of 1"),
    ("http_host.yaml", 7, 8, "scheme and host"),
    ("http_template.yaml", 8, 14, "does not parse"),
    ("inline_limits.yaml", 8, 3, "sandbox.memory_mb has no effect with isolation: inline"),
    ("inline_python.yaml", 5, 12, "isolation: inline is only for http and sql actions"),
    ("internal_key.yaml", 4, 1, "`kind_key` is set by the loader"),
    ("knowledge_missing.yaml", 5, 7, "knowledge file 'docs/not-there.md' does not exist"),
    ("knowledge_outside.yaml", 5, 7, "'/proc/self/environ' is outside the manifests root"),
    ("knowledge_outside.yaml", 6, 7, "'../../../etc/passwd' is outside the manifests root"),
    ("missing_callable.yaml", 5, 13, "has no attribute 'no_such_function'"),
    ("missing_env.yaml", 4, 10, "GATEWAY_TEST_UNSET_VARIABLE is not set"),
    ("missing_kind.yaml", 1, 1, "missing `kind`"),
    ("missing_required.yaml", 1, 1, "missing required field 'description'"),
    ("missing_secret.yaml", 5, 5, "GATEWAY_TEST_UNSET_SECRET is not set"),
    ("no_kind_key.yaml", 1, 1, "exactly one of"),
    ("not_mapping.yaml", 1, 1, "must be a mapping"),
    ("ok.yaml", 2, 7, "duplicate database name 'db'"),
    ("sql_template.yaml", 8, 5, "does not parse (line 2)"),
    ("two_kind_keys.yaml", 5, 1, "python and sql"),
    ("unimportable.yaml", 5, 13, "cannot import module 'actions.does_not_exist'"),
    ("unknown_action.yaml", 5, 5, "unknown action 'no_such_action'"),
    ("unknown_database.yaml", 5, 13, "unknown database 'missing_db'"),
    ("unknown_field.yaml", 4, 1, "unknown field 'timout'"),
    ("unknown_kind.yaml", 1, 7, "unknown kind 'agent'"),
    ("unknown_provider.yaml", 3, 11, "unknown provider 'nowhere'"),
    ("wrong_type.yaml", 4, 10, "maximum of 300"),
    ("yaml_syntax.yaml", 4, 1, "invalid YAML"),
]


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        load_catalog(BROKEN, environ={}, gateway_root=FIXTURES)
    return info.value.problems


def test_every_mistake_is_reported_and_nothing_else(problems: list[Problem]) -> None:
    """The broken set yields exactly the expected problems, one per mistake, in file order."""
    got = [(Path(p.file).name, p.line, p.col) for p in problems]
    assert got == [(f, line, col) for f, line, col, _ in EXPECTED]


@pytest.mark.parametrize(("file", "line", "col", "words"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_each_problem_names_the_mistake(
    problems: list[Problem], file: str, line: int, col: int, words: str
) -> None:
    """Each problem points at the offending node of its file and says what is wrong."""
    [problem] = [p for p in problems if Path(p.file).name == file and p.line == line]
    assert problem.col == col
    assert words in problem.message
    assert problem.file == str(BROKEN / file)


def test_every_fixture_file_is_covered() -> None:
    """Each file in the broken directory is expected to produce a problem (or be ok.yaml's pair)."""
    files = {p.name for p in BROKEN.glob("*.yaml")}
    expected = {e[0] for e in EXPECTED} | {"duplicate_name.yaml"}
    assert files == expected


def test_knowledge_file_names_that_are_no_path_are_problems(tmp_path: Path) -> None:
    """A knowledge file name with a NUL, or too long for the file system, is a located
    problem like a missing file, not a crash of validation (ValueError, OSError)."""
    long_name = "x" * 5000
    (tmp_path / "a.yaml").write_text(
        f'kind: assistant\nname: a\nfile_search:\n  files: ["docs/a\\0.md", "{long_name}"]\n'
    )
    with pytest.raises(ManifestError) as info:
        load_catalog(tmp_path, environ={}, gateway_root=tmp_path)
    messages = [(p.line, p.message) for p in info.value.problems]
    assert len(messages) == 2, messages
    assert all(line == 4 and "is not a usable file name" in m for line, m in messages)
    assert all(len(m) < 400 for _, m in messages)


def test_a_knowledge_file_that_is_a_directory_or_a_fifo_is_said_to_be_one(tmp_path: Path) -> None:
    """A directory (``files: [docs]``, meaning its files) or a FIFO listed as a knowledge
    file was reported as not existing, next to it in the operator's listing; the message
    says what it is and what to list instead."""
    (docs := tmp_path / "docs").mkdir()
    os.mkfifo(docs / "pipe.md")
    (tmp_path / "a.yaml").write_text(
        "kind: assistant\nname: a\nfile_search:\n  files: [docs, docs/pipe.md]\n"
    )
    with pytest.raises(ManifestError) as info:
        load_catalog(tmp_path, environ={}, gateway_root=tmp_path)
    assert [(p.line, p.col, p.message) for p in info.value.problems] == [
        (4, 11, "knowledge file 'docs' is a directory: list the files in it"),
        (4, 17, "knowledge file 'docs/pipe.md' is not a regular file (a FIFO, device or socket)"),
    ]


def test_knowledge_files_over_their_size_limits_are_located_problems(tmp_path: Path) -> None:
    """A 2 GB knowledge file is over the default per-file cap, and files over
    max_total_size_mb together are too: each problem names the file (or the
    total), its size and the manifest field that sets the limit; no byte is read."""
    (docs := tmp_path / "docs").mkdir()
    with (docs / "huge.md").open("wb") as fh:  # sparse: 2 GiB on paper, nothing on disk
        fh.truncate(2 << 30)
    for name in ("a.md", "b.md"):
        with (docs / name).open("wb") as fh:
            fh.truncate(3 << 20)
    (tmp_path / "a.yaml").write_text(
        "kind: assistant\nname: big\nfile_search:\n  files: [docs/huge.md]\n"
        "---\n"
        "kind: assistant\nname: several\nfile_search:\n"
        "  files: [docs/a.md, docs/b.md, docs/a.md]\n  max_total_size_mb: 5\n"
        "---\n"
        "kind: assistant\nname: fits\nfile_search:\n  files: [docs/a.md, docs/b.md]\n"
        "  max_file_size_mb: 3\n  max_total_size_mb: 6\n"
    )
    with pytest.raises(ManifestError) as info:
        load_catalog(tmp_path, environ={}, gateway_root=tmp_path)
    got = [(p.line, p.col, p.message) for p in info.value.problems]
    assert got == [
        (
            4,
            11,
            "knowledge file 'docs/huge.md' is 2048.0 MiB, over the limit of 32 MiB "
            "(file_search.max_file_size_mb)",
        ),
        (
            8,
            1,
            "the knowledge files add up to 6.0 MiB, over the limit of 5 MiB "
            "(file_search.max_total_size_mb)",
        ),
    ]


def test_knowledge_size_defaults_are_the_index_defaults() -> None:
    """The manifest's default caps are the ones the index applies when given none."""
    from gateway.knowledge import DEFAULT_MAX_FILE_MB, DEFAULT_MAX_TOTAL_MB
    from gateway.manifests.model import FileSearch

    defaults = FileSearch(files=["x.md"])
    assert (defaults.max_file_size_mb, defaults.max_total_size_mb) == (
        DEFAULT_MAX_FILE_MB,
        DEFAULT_MAX_TOTAL_MB,
    )


def test_pdf_limit_defaults_are_the_index_defaults() -> None:
    """file_search.pdf has the fields and defaults of the index's PdfLimits (the runner
    builds one from the other by name)."""
    import msgspec

    from gateway.knowledge import PdfLimits
    from gateway.manifests.model import PdfParse

    assert PdfLimits(**msgspec.structs.asdict(PdfParse())) == PdfLimits()
