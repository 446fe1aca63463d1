"""KnowledgeIndex: when a PDF that failed to parse is parsed again (by how it failed)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from gateway.knowledge import KnowledgeIndex, PdfLimits
from gateway.knowledge._failures import BROKEN
from gateway.knowledge._pdf import ParseLimitError
from tests.unit.knowledge.test_knowledge_index import make_pdf
from tests.unit.knowledge.test_knowledge_limits import pdf_bomb

# No interpreter starts in a millisecond: a real, ordinary PDF hits this time limit
# the way it would on a machine too busy to parse it within the real one.
BUSY = PdfLimits(timeout=0.001)


def _manual(tmp_path: Path) -> Path:
    make_pdf(manual := tmp_path / "manual.pdf", ["Tyre pressure: inflate to 4 bar"])
    return manual


def test_a_pdf_that_timed_out_once_is_parsed_after_the_back_off(tmp_path: Path) -> None:
    """A legitimate PDF stopped by the time limit (a busy machine) is parsed again once its
    back-off has passed, although its content never changed, and is then found."""
    manual = _manual(tmp_path)
    index = KnowledgeIndex(retry_after=0.0)
    assert index.index([manual], pdf_limits=BUSY).failed == 1
    stats = index.index([manual])
    assert (stats.parsed, stats.unchanged) == (1, 0)
    assert index.search([manual], "tyre pressure", 3)[0].location == "page 1"


def test_a_pdf_that_timed_out_is_not_parsed_again_before_its_back_off(tmp_path: Path) -> None:
    """Within its back-off a timed-out PDF is not parsed again, by searches or by
    ``index``: a real bomb costs one timeout per back-off, not one per search."""
    manual = _manual(tmp_path)
    index = KnowledgeIndex(pdf_limits=BUSY)
    assert index.index([manual]).failed == 1
    assert index.search([manual], "tyre pressure", 3) == []
    stats = index.index([manual])
    assert (stats.parsed, stats.failed, stats.failed_earlier, stats.unchanged) == (0, 0, 1, 0)


def test_the_back_off_survives_a_restart_and_doubles(tmp_path: Path) -> None:
    """The back-off is stored with the content: a new process sharing the cache does not
    parse the PDF again before it, and each failure in a row doubles it."""
    manual = _manual(tmp_path)
    cache = tmp_path / "cache"
    first = KnowledgeIndex(cache, pdf_limits=BUSY, retry_after=0.0)
    first.index([manual])
    first.index([manual])  # due at once (no back-off): the second failure in a row
    first.close()
    again = KnowledgeIndex(cache, pdf_limits=BUSY, retry_after=3600.0)
    assert again.index([manual]).failed == 1  # 0 s * 2 passed: the third attempt
    (row,) = again._db.execute("SELECT retry_at, attempts FROM contents").fetchall()
    assert row[1] == 3
    assert row[0] > time.time() + 4 * 3600 - 60  # 3600 s doubled twice
    assert again.index([manual]).failed == 0
    again.close()


def test_a_pdf_that_timed_out_is_parsed_at_once_with_a_longer_timeout(tmp_path: Path) -> None:
    """An operator raising the PDF timeout gets the file parsed at the next search, not
    after the back-off; the shorter timeout then reuses the passages."""
    manual = _manual(tmp_path)
    index = KnowledgeIndex()
    assert index.index([manual], pdf_limits=BUSY).failed == 1
    assert index.search([manual], "tyre", 3)[0].source == "manual.pdf"
    assert index.index([manual], pdf_limits=BUSY).unchanged == 1


def test_a_pdf_over_the_page_limit_is_not_parsed_again_within_it(tmp_path: Path) -> None:
    """A page-count failure is deterministic: not parsed again at any time within the same
    or a smaller page limit, even with no back-off; a higher page limit parses it."""
    pdf_bomb(bomb := tmp_path / "bomb.pdf", pages=200, inflated_mb=0)
    index = KnowledgeIndex(retry_after=0.0)
    assert index.index([bomb], pdf_limits=PdfLimits(max_pages=100)).failed == 1
    assert index.index([bomb], pdf_limits=PdfLimits(max_pages=100)).failed_earlier == 1
    assert index.index([bomb], pdf_limits=PdfLimits(max_pages=50)).failed_earlier == 1
    assert index.index([bomb], pdf_limits=PdfLimits(max_pages=300)).parsed == 1


def test_a_broken_pdf_is_not_parsed_again(tmp_path: Path) -> None:
    """A file that is no PDF fails for good (until its content changes), whatever the
    limits or the back-off."""
    (broken := tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    index = KnowledgeIndex(retry_after=0.0)
    assert index.index([broken]).failed == 1
    again = index.index([broken], pdf_limits=PdfLimits(timeout=600, max_pages=10**6))
    assert (again.failed, again.failed_earlier, again.unchanged) == (0, 1, 0)


def test_a_failure_kept_from_before_is_counted_and_explained(tmp_path: Path) -> None:
    """A file whose content failed earlier (the same file in a new process, or the same
    content under a new path: a git-sync revision) was counted "unchanged" or "reused",
    as if searchable; it counts in failed_earlier, and ``failures`` gives the reason."""
    (broken := tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    cache = tmp_path / "cache"
    first = KnowledgeIndex(cache)
    assert first.index([broken]).failed == 1
    first.close()
    (moved := tmp_path / "rev2" / "broken.pdf").parent.mkdir()
    moved.write_bytes(broken.read_bytes())
    index = KnowledgeIndex(cache)
    stats = index.index([broken, moved])
    assert (stats.failed_earlier, stats.unchanged, stats.reused, stats.failed) == (2, 0, 0, 0)
    reasons = index.failures([broken, moved, tmp_path / "unknown.md"])
    assert list(reasons) == [broken, moved]
    assert all("PdfStreamError: " in reason for reason in reasons.values()), reasons
    index.close()


def test_callers_with_crossed_limits_do_not_take_turns_parsing() -> None:
    """Two assistants whose limits cross (more pages but less text, and the other way)
    parse a failing PDF once each, then both reuse the failure: limits only grow."""
    a = PdfLimits(max_pages=500, max_chars=1000)
    b = PdfLimits(max_pages=100, max_chars=10**6)
    record = BROKEN.after(ParseLimitError("pages", over={"max_pages": 100}), 0.0, 600.0)
    assert not record.due(b, 0.0)
    assert record.due(a, 0.0)  # a allows more pages: tries, and fails on text
    record = record.after(ParseLimitError("text", over={"max_chars": 1000}), 0.0, 600.0)
    assert not record.due(a, 0.0)
    assert not record.due(b, 0.0)


_NO_DESCRIPTORS = """
import os, resource, sys
from pathlib import Path
from gateway.knowledge import KnowledgeIndex

manual = Path(sys.argv[1])
index = KnowledgeIndex(retry_after=0.0)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
# Room to open the PDF itself, none for the parser's three pipes.
top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (top + 3, hard))
first = index.index([manual])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
error = index._db.execute("SELECT error FROM contents").fetchone()[0]
second = index.index([manual])
print(first.failed, error, second.parsed, sep="|")
"""


def test_a_parser_that_could_not_start_is_tried_again(tmp_path: Path) -> None:
    """A PDF whose parser process could not be started (the server out of descriptors)
    fails for that moment only: it is not recorded as a broken PDF, and is parsed later."""
    manual = _manual(tmp_path)
    run = subprocess.run(
        [sys.executable, "-c", _NO_DESCRIPTORS, str(manual)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[3],
    )
    failed, error, parsed = run.stdout.strip().splitlines()[-1].split("|")
    assert (failed, parsed) == ("1", "1"), run.stderr
    assert error == "ParseLimitError: the PDF parser could not be started: Too many open files"
