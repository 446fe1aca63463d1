"""KnowledgeIndex limits: size caps at every read, PDFs parsed in a bounded child process."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import pytest

from gateway.knowledge import KnowledgeIndex, PdfLimits
from gateway.knowledge._pdf import ParseLimitError, pdf_pages
from tests.unit.knowledge.test_knowledge_index import FAQ, make_pdf

MB = 1 << 20


def pdf_bomb(path: Path, *, pages: int, inflated_mb: int) -> None:
    """Write a small PDF whose page tree names one page ``pages`` times, that page's
    content stream inflating to ``inflated_mb`` MB of text-showing operators."""
    line = b"BT /F1 12 Tf 72 720 Td (" + b"bomb " * 20 + b") Tj ET\n"
    packed = zlib.compress(line * (inflated_mb * MB // len(line)), 9)
    kids = b" ".join([b"3 0 R"] * pages)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed) + packed + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    path.write_bytes(bytes(out))


def _errors(index: KnowledgeIndex) -> list[str]:
    return [e for (e,) in index._db.execute("SELECT error FROM contents WHERE error IS NOT NULL")]


def _index_within(index: KnowledgeIndex, files: list[Path], bound: float = 60.0) -> None:
    """Index ``files`` in a thread; fail (rather than hang for hours) if it never ends."""
    worker = threading.Thread(target=index.index, args=(files,), daemon=True)
    worker.start()
    worker.join(bound)
    assert not worker.is_alive(), "parsing the PDF was not bounded"


def test_a_pdf_bomb_is_stopped_at_the_time_limit(tmp_path: Path) -> None:
    """A 27 KB PDF naming one heavy page a thousand times (hours of pypdf work, gigabytes
    of text) is stopped at the parse timeout and recorded as failed with that reason."""
    pdf_bomb(bomb := tmp_path / "bomb.pdf", pages=1000, inflated_mb=5)
    (faq := tmp_path / "faq.md").write_text(FAQ)
    index = KnowledgeIndex(pdf_limits=PdfLimits(timeout=1))
    _index_within(index, [bomb])
    assert _errors(index) == ["ParseLimitError: parsing the PDF took longer than the limit of 1 s"]
    assert index.search([bomb, faq], "refund", 3)[0].source == "faq.md"
    assert index.index([bomb]).parsed == 0  # the failure is kept: not parsed again soon


def test_a_pdf_stopped_before_all_its_bytes_reached_the_parser_leaves_no_pipe_open() -> None:
    """A parse that times out while its PDF is still being written to the child (a
    big file, or a busy machine where 1 ms passes between two 512-byte writes) closes
    the child's stdin: it was left open, a ResourceWarning (an error in the suite, so
    test_a_pdf_that_timed_out_is_parsed_at_once_with_a_longer_timeout failed under
    load) and a descriptor held until the garbage collector came by."""
    data = b"%PDF-1.4\n" + b"0" * MB  # 2,048 writes of 512 bytes: never done in 1 ms
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ParseLimitError, match=r"took longer than the limit of 0\.001 s"):
            pdf_pages(data, PdfLimits(timeout=0.001))
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_a_pdf_with_too_many_pages_is_refused_by_count(tmp_path: Path) -> None:
    """A PDF over max_pages fails with an error saying how many pages it has."""
    pdf_bomb(bomb := tmp_path / "bomb.pdf", pages=1000, inflated_mb=5)
    index = KnowledgeIndex(pdf_limits=PdfLimits(max_pages=100))
    _index_within(index, [bomb])
    assert _errors(index) == ["ParseLimitError: the PDF has 1000 pages, more than the limit of 100"]


def test_a_pdf_needing_more_memory_than_allowed_fails_in_its_child(tmp_path: Path) -> None:
    """A 30 MB-inflating content stream goes over the child's address-space cap (the
    server process never holds it); an ordinary PDF parses within the same cap."""
    pdf_bomb(bomb := tmp_path / "bomb.pdf", pages=1, inflated_mb=30)
    make_pdf(small := tmp_path / "small.pdf", ["Tyre pressure: inflate to 4 bar"])
    limits = PdfLimits(memory_mb=64)
    assert pdf_pages(small.read_bytes(), limits) == ["Tyre pressure: inflate to 4 bar"]
    with pytest.raises(ParseLimitError, match="more than 64 MB of memory"):
        pdf_pages(bomb.read_bytes(), limits)


def test_a_pdf_with_too_much_text_is_refused(tmp_path: Path) -> None:
    """Text extracted past max_chars stops the parse (the server never receives it)."""
    pdf_bomb(bomb := tmp_path / "bomb.pdf", pages=3, inflated_mb=1)
    with pytest.raises(ParseLimitError, match="more than 100000 characters"):
        pdf_pages(bomb.read_bytes(), PdfLimits(max_chars=100_000))


def test_a_broken_pdf_is_a_parse_error_not_a_limit(tmp_path: Path) -> None:
    """A file that is no PDF fails with pypdf's reason, distinct from a limit."""
    with pytest.raises(ValueError, match=r"^Pdf\w*Error: ") as info:
        pdf_pages(b"%PDF-1.4 not really", PdfLimits())
    assert not isinstance(info.value, ParseLimitError)


def test_a_file_over_the_size_cap_is_not_read(tmp_path: Path) -> None:
    """A 2 GB knowledge file (sparse) is refused by its size before any read: counted
    too large, searched as missing, the other files still answer."""
    (faq := tmp_path / "faq.md").write_text(FAQ)
    with (huge := tmp_path / "huge.md").open("wb") as fh:
        fh.truncate(2 << 30)
    index = KnowledgeIndex()
    stats = index.index([huge, faq])
    assert (stats.too_large, stats.parsed, stats.size) == (1, 1, faq.stat().st_size)
    assert index.search([huge, faq], "refund", 3)[0].source == "faq.md"


def test_caps_given_to_search_apply_per_file_and_in_total(tmp_path: Path) -> None:
    """search() reads no file over max_file_bytes, and none past max_total_bytes with the
    files before it; a file shrunk back under the cap is searched again."""
    (a := tmp_path / "a.md").write_text("# A\n\nalpha " * 100)
    (b := tmp_path / "b.md").write_text("# B\n\nbravo " * 100)
    index = KnowledgeIndex()
    size = a.stat().st_size
    assert index.search([a, b], "alpha", 3, max_file_bytes=size - 1) == []
    hits = index.search([a, b], "alpha bravo", 3, max_file_bytes=size, max_total_bytes=size)
    assert {h.source for h in hits} == {"a.md"}
    assert {h.source for h in index.search([a, b], "alpha bravo", 3)} == {"a.md", "b.md"}


def test_a_file_grown_past_the_cap_after_indexing_is_not_read_again(tmp_path: Path) -> None:
    """A file indexed while small and then grown past the cap is refused (not re-read),
    and its old passages are not served as if it were still the small file."""
    (doc := tmp_path / "doc.md").write_text("# Doc\n\nsmall answer here\n")
    index = KnowledgeIndex()
    assert index.search([doc], "answer", 3, max_file_bytes=1000)
    doc.write_text("# Doc\n\nbig answer here\n" + "padding " * 200)
    assert index.search([doc], "answer", 3, max_file_bytes=1000) == []


def test_a_pdf_error_with_a_lone_surrogate_still_answers() -> None:
    """The child's answer is JSON on stdout: an error text holding a lone surrogate made
    its encoding fail, so the child answered nothing, which the index reads as a killed
    parser (a transient failure, retried) instead of a broken PDF (never retried)."""
    script = (
        "import sys\n"
        "from gateway.knowledge import _pdf_child as child\n"
        "def broken(*args):\n"
        "    raise ValueError('bad name \\udcff')\n"
        "child._pages = broken\n"
        "sys.argv = ['x', str(1 << 30), '10', '10', '1000']\n"
        "sys.exit(child.main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], input=b"%PDF-", capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["limit"] is False
    assert answer["error"].startswith("ValueError: bad name")


_NO_DESCRIPTOR_FOR_THE_FILE = """
import os, resource, sys
from pathlib import Path
from gateway.knowledge import KnowledgeIndex

faq = Path(sys.argv[1])
index = KnowledgeIndex()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
lowest = os.dup(0)  # the descriptor the file would get
os.close(lowest)
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest, hard))  # none left for the file
stats = index.index([faq])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
print(stats.missing, stats.unsearchable[str(faq.resolve())], sep="|")
"""


def test_a_knowledge_file_that_cannot_be_read_is_logged_and_said_why(tmp_path: Path) -> None:
    """A knowledge file that exists but cannot be opened (permission denied, the server
    out of descriptors) was searched as empty with no log line and counted "missing"
    by gateway index without a name; it is logged ``knowledge_file_unreadable`` with
    the reason, which ``IndexStats.unsearchable`` holds for the command to print."""
    (faq := tmp_path / "faq.md").write_text(FAQ)
    run = subprocess.run(
        [sys.executable, "-c", _NO_DESCRIPTOR_FOR_THE_FILE, str(faq)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[3],
    )
    *logs, last = run.stdout.strip().splitlines()
    assert last == "1|cannot be read: Too many open files", run.stdout + run.stderr
    (line,) = [line for line in logs if "knowledge_file_unreadable" in line]
    assert str(faq) in line and "Too many open files" in line, line
