"""`gateway index`: builds the file_search index for every assistant and reports counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.knowledge import KnowledgeIndex
from gateway.knowledge._versions import cache_file
from gateway.knowledge.index import _SCHEMA_VERSION


def _manifests(root: Path) -> None:
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "faq.md").write_text("# FAQ\n\n## Refunds\n\nRefunds within 30 days.\n")
    (root / "docs" / "notes.txt").write_text("Open nine to five.\n")
    (root / "a.yaml").write_text(
        "kind: assistant\nname: helper\nfile_search:\n  files: [docs/faq.md, docs/notes.txt]\n"
        "---\nkind: assistant\nname: plain\n"
    )


def test_index_command_builds_the_cache_the_server_reads(tmp_path: Path) -> None:
    """The command prints per-assistant counts and leaves an index a KnowledgeIndex reuses."""
    root = tmp_path / "manifests"
    _manifests(root)
    cache = tmp_path / "cache"
    result = CliRunner().invoke(main, ["index", "--manifests", str(root), "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    assert "helper: 2 files, 2 passages" in result.output
    assert "plain" not in result.output
    assert "2 parsed" in result.output
    again = KnowledgeIndex(cache).index([root / "docs" / "faq.md", root / "docs" / "notes.txt"])
    assert again.unchanged == 2


def test_index_command_reports_invalid_manifests(tmp_path: Path) -> None:
    """An invalid manifest set exits 1 with its problems, located."""
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "a.yaml").write_text("kind: assistant\nname: x\nfile_search:\n  files: [missing.md]\n")
    result = CliRunner().invoke(main, ["index", "--manifests", str(root), "--cache", str(tmp_path)])
    assert result.exit_code == 1
    assert "a.yaml:" in result.output and "missing.md" in result.output


def test_index_command_fails_when_the_cache_cannot_be_written(tmp_path: Path) -> None:
    """A cache directory that cannot be created is an error (exit 1, naming it), not an
    index built in memory and reported as written there."""
    root = tmp_path / "manifests"
    _manifests(root)
    (blocker := tmp_path / "file").write_text("not a directory")
    cache = blocker / "cache"
    result = CliRunner().invoke(main, ["index", "--manifests", str(root), "--cache", str(cache)])
    assert result.exit_code == 1, result.output
    assert str(cache) in result.output and "indexed" not in result.output


def test_a_corrupt_cache_file_is_rebuilt(tmp_path: Path) -> None:
    """A cache file that is not a database (or is malformed) is replaced by a fresh index
    on disk, not given up for an in-memory one at every start."""
    root = tmp_path / "manifests"
    _manifests(root)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache_file(cache, _SCHEMA_VERSION).write_bytes(b"garbage " * 1000)
    result = CliRunner().invoke(main, ["index", "--manifests", str(root), "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    again = KnowledgeIndex(cache).index([root / "docs" / "faq.md", root / "docs" / "notes.txt"])
    assert again.unchanged == 2
    assert cache_file(cache, _SCHEMA_VERSION).stat().st_mode & 0o777 == 0o600


def test_index_command_logs_as_the_settings_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its warnings follow LOG_FORMAT (here JSON lines for a log shipper), like the server's."""
    monkeypatch.setenv("LOG_FORMAT", "json")
    root = tmp_path / "manifests"
    _manifests(root)
    cache = tmp_path / "cache"
    cache.mkdir()
    cache_file(cache, _SCHEMA_VERSION).write_bytes(b"garbage " * 1000)
    result = CliRunner().invoke(main, ["index", "--manifests", str(root), "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert [entry["event"] for entry in logged] == ["knowledge_cache_rebuilt"], result.stderr


def test_index_command_reads_each_file_within_its_assistants_cap(tmp_path: Path) -> None:
    """A file over the default 32 MiB cap is indexed when its assistant raises
    file_search.max_file_size_mb, the same cap the server applies to it."""
    root = tmp_path / "manifests"
    (root / "docs").mkdir(parents=True)
    paragraph = "z" * 998 + "\n\n"  # one token a passage: cheap to index
    (root / "docs" / "big.txt").write_text(paragraph * ((33 << 20) // len(paragraph)))
    (root / "a.yaml").write_text(
        "kind: assistant\nname: big\nfile_search:\n  files: [docs/big.txt]\n"
        "  max_file_size_mb: 34\n"
    )
    cache = tmp_path / "cache"
    result = CliRunner().invoke(main, ["index", "--manifests", str(root), "--cache", str(cache)])
    assert result.exit_code == 0, result.output
    assert "1 parsed" in result.output and "0 too large" in result.output


def test_index_command_parses_each_pdf_within_its_assistants_largest_limits(
    tmp_path: Path,
) -> None:
    """A PDF listed by two assistants is indexed within the larger of their
    file_search.pdf limits (what one of them may search is indexed); a PDF only a
    stricter assistant lists is over its limit and fails the command."""
    from tests.unit.knowledge.test_knowledge_index import make_pdf

    root = tmp_path / "manifests"
    (root / "docs").mkdir(parents=True)
    make_pdf(root / "docs" / "shared.pdf", ["Tyre pressure", "Oil change"])
    make_pdf(root / "docs" / "strict.pdf", ["Brakes", "Lights"])
    (root / "a.yaml").write_text(
        "kind: assistant\nname: strict\nfile_search:\n"
        "  files: [docs/shared.pdf, docs/strict.pdf]\n  pdf: {max_pages: 1}\n"
        "---\nkind: assistant\nname: lenient\nfile_search:\n  files: [docs/shared.pdf]\n"
    )
    cache = tmp_path / "cache"
    result = CliRunner().invoke(main, ["index", "--manifests", str(root), "--cache", str(cache)])
    assert result.exit_code == 1, result.output
    assert "(1 parsed, 0 reused, 0 unchanged, 0 missing, 1 failed" in result.output
    assert "lenient: 1 files, 2 passages" in result.output


def test_a_file_that_failed_in_an_earlier_run_still_fails_the_command(tmp_path: Path) -> None:
    """A second run after a failed parse said "1 unchanged, 0 failed" and exited 0 while
    the file stayed unsearchable; every run now counts it failed, says why, and exits 1."""
    root = tmp_path / "manifests"
    _manifests(root)
    (root / "docs" / "manual.pdf").write_bytes(b"%PDF-1.4 not really a PDF")
    (root / "a.yaml").write_text(
        "kind: assistant\nname: helper\nfile_search:\n  files: [docs/faq.md, docs/manual.pdf]\n"
    )
    args = ["index", "--manifests", str(root), "--cache", str(tmp_path / "cache")]
    first = CliRunner().invoke(main, args)
    second = CliRunner().invoke(main, args)
    assert "(1 parsed, 0 reused, 0 unchanged, 0 missing, 1 failed" in first.output
    assert "(0 parsed, 0 reused, 1 unchanged, 0 missing, 1 failed" in second.output
    for result in (first, second):
        assert result.exit_code == 1, result.output
        assert (
            "error: docs/manual.pdf cannot be searched: ValueError: PdfStreamError: "
            in result.stderr
        )
        assert "faq.md" not in result.stderr


def test_a_hostile_file_name_cannot_write_its_own_lines_into_the_log(tmp_path: Path) -> None:
    """A knowledge file whose name holds a newline and a GitHub workflow command (a
    legal Linux name, pushed by anyone who may push) was printed as it is in the
    command's error line: the CI log got a line of its own starting with '::' (a fake
    annotation, a mask) and terminal escapes; the name is printed escaped."""
    root = tmp_path / "manifests"
    _manifests(root)
    name = "docs/x\n::error file=app.py::pwned\x1b[2J.txt"
    (root / name).write_bytes(b"\0binary")
    (root / "a.yaml").write_text(
        f"kind: assistant\nname: helper\nfile_search:\n  files: [docs/faq.md, {json.dumps(name)}]\n"
    )
    result = CliRunner().invoke(main, ["index", "--manifests", str(root), "--cache", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "cannot be searched: ValueError: binary content" in result.stderr, result.stderr
    assert not any(line.startswith("::") for line in result.stderr.splitlines()), result.stderr
    # The command's own lines (the log renderer's are gateway.api.logs' business).
    own = [line for line in result.stderr.splitlines() if not line.startswith("timestamp=")]
    assert not any("\x1b" in line for line in own), own
