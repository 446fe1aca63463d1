"""KnowledgeIndex: passages from md/txt/pdf, BM25 ranking, safe queries, lazy re-indexing."""

from __future__ import annotations

import itertools
import os
import sqlite3
import sys
import threading
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pypdf import PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from gateway.knowledge import KnowledgeIndex
from gateway.knowledge._split import LIMIT, MAX_TITLE, split_data, split_text
from gateway.knowledge.index import build_query

FAQ = """# Shop FAQ

Welcome to the shop. We sell bicycles and spare parts.

## Returns

You can return any item within 30 days for a full refund.
Refunds go back to the original payment method.

## Shipping

Orders ship within two business days from our warehouse in Lyon.

## Warranty

Frames carry a lifetime warranty; other parts two years.
"""


def make_pdf(path: Path, pages: list[str]) -> None:
    """Write a PDF with one line of Helvetica text per page."""
    writer = PdfWriter()
    for text in pages:
        page = writer.add_blank_page(width=612, height=792)
        font = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
        resources = DictionaryObject({NameObject("/F1"): writer._add_object(font)})
        page[NameObject("/Resources")] = DictionaryObject({NameObject("/Font"): resources})
        stream = DecodedStreamObject()
        stream.set_data(f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
    with path.open("wb") as fh:
        writer.write(fh)


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    """A manifests-like root with a markdown FAQ, a text file and a PDF manual."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "faq.md").write_text(FAQ)
    (tmp_path / "docs" / "notes.txt").write_text(
        "Store hours are nine to five.\n\nThe cafe serves espresso and croissants.\n"
    )
    make_pdf(
        tmp_path / "docs" / "manual.pdf", ["Tyre pressure: inflate to 4 bar", "Chain lube weekly"]
    )
    return tmp_path


def _files(root: Path) -> list[Path]:
    return [root / "docs" / n for n in ("faq.md", "notes.txt", "manual.pdf")]


def test_markdown_passage_with_the_words_ranks_first(docs: Path) -> None:
    """The passage that contains the query words comes first, named and located."""
    index = KnowledgeIndex()
    hits = index.search(_files(docs), "how do refunds work for a return?", 3, root=docs)
    assert hits, "expected a hit"
    top = hits[0]
    assert top.source == "docs/faq.md"
    assert top.location == "Shop FAQ > Returns"
    assert "full refund" in top.text
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_text_and_pdf_are_searchable_with_locations(docs: Path) -> None:
    """Plain text is located by lines and PDF passages by page."""
    index = KnowledgeIndex()
    (espresso,) = index.search(_files(docs), "espresso", 5, root=docs)
    assert espresso.source == "docs/notes.txt" and espresso.location == "lines 1-3"
    (tyre,) = index.search(_files(docs), "tyre pressure", 5, root=docs)
    assert tyre.source == "docs/manual.pdf" and tyre.location == "page 1"
    (chain,) = index.search(_files(docs), "chain", 5)
    assert chain.source == "manual.pdf" and chain.location == "page 2"


def test_search_is_limited_to_the_given_files_and_max_results(docs: Path) -> None:
    """Only the files passed are searched, and at most max_results passages return."""
    index = KnowledgeIndex()
    index.index(_files(docs))
    assert index.search([docs / "docs" / "notes.txt"], "refund warranty shipping", 5) == []
    assert len(index.search(_files(docs), "refund warranty shipping shop", 2)) == 2


@pytest.mark.parametrize(
    "query",
    ['"', "AND OR NOT", "NEAR(a b)", "col:value", "*", "a' OR 1=1; --", "^start", "(((", "", "   "],
)
def test_hostile_queries_never_raise(docs: Path, query: str) -> None:
    """FTS5 syntax in a query is neutralised: no error, just (possibly empty) results."""
    assert isinstance(KnowledgeIndex().search(_files(docs), query, 5), list)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80))
def test_any_text_builds_a_valid_match_expression(text: str) -> None:
    """Whatever the model sends, the MATCH expression parses in FTS5."""
    import sqlite3

    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
    match = build_query(text)
    if match:
        db.execute("SELECT * FROM t WHERE t MATCH ?", (match,)).fetchall()


def test_unchanged_files_are_not_reparsed_and_edits_are(docs: Path) -> None:
    """Same mtime+size skips the file; an edit re-indexes it; same content elsewhere is reused."""
    index = KnowledgeIndex()
    first = index.index(_files(docs))
    assert (first.parsed, first.unchanged) == (3, 0)
    again = index.index(_files(docs))
    assert (again.parsed, again.unchanged) == (0, 3)
    faq = docs / "docs" / "faq.md"
    faq.write_text(FAQ.replace("Lyon", "Grenoble"))
    os.utime(faq, ns=(1, 1))
    assert index.search([faq], "Grenoble", 1)[0].location == "Shop FAQ > Shipping"
    assert index.search([faq], "Lyon", 1) == []
    copy = docs / "copy.md"
    copy.write_text(faq.read_text())
    moved = index.index([copy])
    assert (moved.parsed, moved.reused) == (0, 1)


def test_on_disk_cache_survives_a_restart(docs: Path, tmp_path: Path) -> None:
    """With a cache_dir, a new KnowledgeIndex finds files already indexed."""
    cache = tmp_path / "cache"
    KnowledgeIndex(cache).index(_files(docs))
    reopened = KnowledgeIndex(cache)
    stats = reopened.index(_files(docs))
    assert (stats.parsed, stats.unchanged) == (0, 3)
    assert reopened.search(_files(docs), "warranty", 1)[0].location == "Shop FAQ > Warranty"


def test_a_full_cache_disk_is_reported_as_such_and_indexing_resumes(
    docs: Path, tmp_path: Path
) -> None:
    """Indexing into a cache with no room fails naming that cause (not a failed rollback of
    what SQLite already rolled back), and works again once there is room."""
    index = KnowledgeIndex(tmp_path / "cache")
    (big := docs / "docs" / "big.md").write_text(
        "\n\n".join(f"## Part {n}\n\n" + f"word{n} " * 400 for n in range(200))
    )
    (pages,) = index._db.execute("PRAGMA page_count").fetchone()
    index._db.execute(f"PRAGMA max_page_count = {pages + 4}")
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        index.index([big])
    index._db.execute("PRAGMA max_page_count = 1073741823")
    assert index.search([big], "word7", 1)[0].location.startswith("Part 7")


def test_missing_and_corrupt_files_do_not_break_search(docs: Path) -> None:
    """A vanished file or a broken PDF is skipped; the other files still answer."""
    bad = docs / "docs" / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 not really")
    index = KnowledgeIndex()
    files = [*_files(docs), bad, docs / "docs" / "gone.md"]
    stats = index.index(files)
    assert stats.missing == 1 and stats.failed == 1
    assert index.search(files, "espresso", 3)[0].source == "notes.txt"


def test_concurrent_searches_from_threads(docs: Path) -> None:
    """Many threads searching and indexing at once all succeed."""
    index = KnowledgeIndex()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(20):
                assert index.search(_files(docs), "warranty frames", 2)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_long_sections_split_with_overlap_under_the_limit() -> None:
    """Long text becomes several passages, none over the limit, neighbours sharing text."""
    paragraphs = [f"Paragraph {i} " + "word " * 60 for i in range(12)]
    chunks = split_text("# Big\n\n" + "\n\n".join(paragraphs), markdown=True)
    assert len(chunks) > 2
    assert all(len(c.text) <= LIMIT for c in chunks)
    assert all(c.location == "Big" for c in chunks)
    for left, right in itertools.pairwise(chunks):
        assert left.text.split("\n\n")[-1][-40:] in right.text
    giant = split_text("x " * 3000, markdown=False)
    assert len(giant) > 3 and all(len(c.text) <= LIMIT for c in giant)


def test_headings_inside_code_fences_are_not_sections() -> None:
    """A '#' comment in a fenced code block does not start a section."""
    text = "# Setup\n\n```sh\n# install\npip install gateway\n```\n"
    (chunk,) = split_text(text, markdown=True)
    assert chunk.location == "Setup" and "# install" in chunk.text


def test_sources_without_root_are_short_but_unambiguous(tmp_path: Path) -> None:
    """Without a root, sources are file names, lengthened only where two files share one."""
    for folder in ("en", "fr"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "faq.md").write_text(f"# FAQ\n\nShipping policy {folder}.\n")
    (tmp_path / "manual.md").write_text("Shipping manual.\n")
    files = [tmp_path / "en" / "faq.md", tmp_path / "fr" / "faq.md", tmp_path / "manual.md"]
    hits = KnowledgeIndex().search(files, "shipping", 5)
    assert {h.source for h in hits} == {"en/faq.md", "fr/faq.md", "manual.md"}


def test_cache_dir_follows_the_sqlite_thread_store(tmp_path: Path) -> None:
    """The index sits next to an SQLite thread store and in memory for PostgreSQL."""
    from gateway.knowledge import cache_dir_for

    assert cache_dir_for(f"sqlite:///{tmp_path}/data/gw.db") == tmp_path / "data" / "knowledge"
    assert cache_dir_for("sqlite:///var/gateway.db") == Path.cwd() / "var" / "knowledge"
    assert cache_dir_for("postgresql://u@h/db") is None


def test_unwritable_cache_dir_falls_back_to_memory(docs: Path, tmp_path: Path) -> None:
    """A cache dir that cannot be created (read-only image) still gives a working index."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    index = KnowledgeIndex(blocker / "cache")
    assert index.search(_files(docs), "warranty", 1)[0].location == "Shop FAQ > Warranty"


def test_files_outside_within_are_not_read(docs: Path, tmp_path: Path) -> None:
    """With ``within``, a file resolving outside it (a symlink) is searched as missing."""
    outside = tmp_path.parent / f"{tmp_path.name}-outside.md"
    outside.write_text("# Secret\n\npassword hunter2\n")
    try:
        link = docs / "docs" / "link.md"
        link.symlink_to(outside)
        index = KnowledgeIndex()
        assert index.search([link], "hunter2", 5, within=docs) == []
        assert index.index([link], within=docs).missing == 1
        assert index.search([docs / "docs" / "faq.md"], "warranty", 1, within=docs)
    finally:
        outside.unlink()


def test_a_symlink_loop_in_a_symlinked_root_is_missing_for_what_it_is(tmp_path: Path) -> None:
    """In a root reached through a symlink (git-sync's ``current``), a knowledge file
    swapped for a symlink loop is missing with the loop as the reason (it was said to
    be outside the root, sending the operator after the wrong mistake); the others
    are searched."""
    (revision := tmp_path / "rev-1").mkdir()
    (revision / "faq.md").write_text(FAQ)
    (revision / "loop.md").symlink_to("loop.md")
    (current := tmp_path / "current").symlink_to(revision)
    index = KnowledgeIndex()
    stats = index.index([current / "faq.md", current / "loop.md"], within=current)
    assert (stats.parsed, stats.missing) == (1, 1)
    assert stats.unsearchable == {str(revision / "loop.md"): "Too many levels of symbolic links"}


def test_a_fifo_in_place_of_a_file_does_not_hang(docs: Path) -> None:
    """A knowledge file replaced by a named pipe is skipped at once, not read forever."""
    fifo = docs / "docs" / "pipe.md"
    os.mkfifo(fifo)
    result: list[object] = []
    worker = threading.Thread(
        target=lambda: result.append(KnowledgeIndex().index([fifo])), daemon=True
    )
    worker.start()
    worker.join(timeout=5)
    if worker.is_alive():  # unblock the reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
        pytest.fail("indexing a FIFO blocked")
    (stats,) = result
    assert getattr(stats, "missing") == 1  # noqa: B009


@pytest.mark.parametrize(
    "encoding", ["utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom", "cp1252"]
)
def test_text_in_other_encodings_keeps_its_headings_and_words(
    tmp_path: Path, encoding: str
) -> None:
    """A BOM (Notepad's UTF-8, UTF-16) or a legacy 8-bit file is decoded, not read as
    mojibake: the first heading still starts a section and accented words are found."""
    text = "# Remboursements\n\nRemboursé sous 30 jours, garantie incluse.\n"
    if encoding.endswith("-bom"):
        codec = encoding.removesuffix("-bom")
        data = ("\ufeff" + text).encode(codec)
    else:
        data = text.encode(encoding)
    (faq := tmp_path / "faq.md").write_bytes(data)
    (hit,) = KnowledgeIndex().search([faq], "remboursé", 3)
    assert hit.location == "Remboursements"
    assert hit.text == "Remboursé sous 30 jours, garantie incluse."


def test_a_binary_file_fails_to_parse_instead_of_indexing_noise(tmp_path: Path) -> None:
    """A binary file (a .docx, an image) is counted as failed, not indexed as garbage."""
    (blob := tmp_path / "manual.docx").write_bytes(
        b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 8 + b"warranty terms"
    )
    index = KnowledgeIndex()
    stats = index.index([blob])
    assert (stats.failed, stats.passages) == (1, 0)
    assert index.search([blob], "warranty", 3) == []


_TRIALS = 4


def _index_in_a_process(root: str, tag: str, start: object) -> None:
    """One of several processes sharing a cache, for each trial a fresh one (all start it
    together): index new files and find each at once."""
    for trial in range(_TRIALS):
        start.wait()  # type: ignore[attr-defined]
        folder = Path(root) / f"docs{trial}"
        index = KnowledgeIndex(Path(root) / f"cache{trial}")
        assert index.cache_error is None, (trial, index.cache_error)
        for i in range(15):
            (file := folder / f"{tag}{i}.md").write_text(f"# T{i}\n\n" + f"w{tag}{i} " * 900)
            index.index([file])
            assert index.search([file], f"w{tag}{i}", 1), f"trial {trial}: {tag}{i} not found"
        index.close()


def test_processes_sharing_a_new_cache_all_index_and_find_their_files(tmp_path: Path) -> None:
    """Several processes (the server, gateway index) opening one fresh cache and indexing
    at once neither fail on a lock nor drop each other's tables or passages.

    The same three processes run the four trials (spawning them is most of the cost); a
    barrier starts each trial in all three at once, as fresh processes started it.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    for trial in range(_TRIALS):
        (tmp_path / f"docs{trial}").mkdir()
    # A worker that failed a trial leaves the others at the barrier: it breaks in 60 s.
    start = context.Barrier(3, timeout=60)
    workers = [
        context.Process(target=_index_in_a_process, args=(str(tmp_path), t, start)) for t in "abc"
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
    assert [w.exitcode for w in workers] == [0, 0, 0]


def test_a_long_block_without_blank_lines_is_located_by_its_own_lines() -> None:
    """A passage cut from a long run of lines (a CSV, a log) names the lines it holds, not
    the whole block's range, and keeps the lines whole."""
    text = "".join(f"order {i}: shipped to customer{i}\n" for i in range(1, 301))
    chunks = split_text(text, markdown=False)
    assert len(chunks) > 5 and all(len(c.text) <= LIMIT for c in chunks)
    hits = [c for c in chunks if "customer250\n" in c.text + "\n"]
    assert hits
    for hit in hits:
        first, last = (int(n) for n in hit.location.removeprefix("lines ").split("-"))
        assert first <= 250 <= last and last - first < 40, hit.location
        lines = hit.text.split("\n")
        assert lines[-1] == f"order {last}: shipped to customer{last}"
        assert all(line.startswith("order ") for line in lines if line)


def test_a_heading_line_padded_with_spaces_splits_in_linear_time() -> None:
    """A markdown line of '#', a word and thousands of spaces (the heading pattern
    backtracked cubically: 5,000 spaces took 200 s, holding the GIL, so the whole
    server froze) is read at once; closing '#'s go, a '#' inside a word stays."""
    import time

    started = time.perf_counter()
    chunks = split_text("# Setup" + " " * 2000 + "guide ##\n\nInstall it.\n", markdown=True)
    assert time.perf_counter() - started < 0.5
    assert {c.location for c in chunks} == {"Setup…"}  # over MAX_TITLE: cut, kept as text
    assert any(c.text.endswith("guide\n\nInstall it.") for c in chunks), chunks
    assert split_text("# Learn C#\n\nA language.\n", markdown=True)[0].location == "Learn C#"
    assert split_text("## Tips ##\n\nMore.\n", markdown=True)[0].location == "Tips"


def test_a_heading_of_100_000_characters_is_cut_in_the_trail_and_kept_as_text() -> None:
    """A heading line of 100,000 characters (or an underlined one of 7,000) was the
    heading and location of every passage of its section (stored once per passage, sent
    to the model with each hit): it is cut to MAX_TITLE there, and kept whole once as
    text, so its words are still found."""
    long = "Returns " + "policy " * 15_000
    body = "\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(30))
    # An underlined paragraph over 64 KiB is text, not a title: it is handed on in parts.
    underlined = long[:7000].rstrip()
    for text, title in (
        (f"# {long}\n\n{body}\n", long),
        (f"{underlined}\n===\n\n{body}\n", underlined),
    ):
        chunks = split_text(text, markdown=True)
        assert {c.location for c in chunks} == {title[: MAX_TITLE - 1].rstrip() + "…"}
        assert all(c.heading == c.location for c in chunks)
        assert sum(len(c.text) for c in chunks) < 2 * len(text)
        assert any(c.text.startswith("Returns policy policy") for c in chunks)
        assert any("Paragraph 29 word" in c.text for c in chunks)


@pytest.mark.parametrize(
    "unit",
    ["ab\n", "ab\n\n", "ab\r"],
    ids=["short lines", "short paragraphs", "CR line ends"],
)
def test_a_text_of_tiny_lines_or_paragraphs_splits_in_memory_near_its_size(unit: str) -> None:
    """Text of two-letter lines or paragraphs held every line, or every paragraph, as an
    object at once (a 32 MB file: 1.5 GB and 2.4 GB in the server process, and minutes
    of CPU re-adding each passage's size per paragraph); it is split as a stream, so
    the peak follows the passages (about the text's size)."""
    text = unit * ((1 << 20) // len(unit))
    tracemalloc.start()
    try:
        chunks = split_text(text, markdown=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(chunks) > 1000 and all(len(c.text) <= LIMIT for c in chunks)
    assert peak < 8 * len(text), f"{peak >> 20} MB for {len(text) >> 20} MB of text"


def test_a_pdf_page_of_tiny_paragraphs_splits_in_memory_near_its_size(tmp_path: Path) -> None:
    """A PDF page holding a million characters of two-letter paragraphs (the text limit
    allows 32 million) was cut into a list of every paragraph in the server process;
    its paragraphs are packed as they are found, like a text file's."""
    make_pdf(pdf := tmp_path / "tiny.pdf", ["ab\\n\\n" * (1 << 18)])  # PDF escapes: \n
    tracemalloc.start()
    try:
        chunks = split_data("tiny.pdf", pdf.read_bytes())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(chunks) > 1000 and {c.location for c in chunks} == {"page 1"}
    assert peak < 8 * (1 << 20), f"{peak >> 20} MB for 1 MB of text"


def test_packing_tiny_paragraphs_costs_a_few_steps_each() -> None:
    """Packing summed the whole passage-in-progress again for every paragraph added (up
    to ~175 two-letter paragraphs a passage: 32 MB of them took ~10 minutes of CPU in the
    server); the size is kept as paragraphs come. Counted in len() calls, not timed."""
    text = "ab\n\n" * 20_000
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event == "c_call" and arg is len:
            calls += 1

    sys.setprofile(count)
    try:
        chunks = split_text(text, markdown=False)
    finally:
        sys.setprofile(None)
    assert len(chunks) > 100
    assert calls < 20 * 20_000, calls


def test_git_sync_revisions_do_not_grow_the_cache_forever(tmp_path: Path) -> None:
    """Each git-sync revision checks the files out under a new path and removes the old
    one: the paths that are gone, and (after keep_orphans) content only they held, leave
    the cache."""
    import shutil

    index = KnowledgeIndex(tmp_path / "cache", keep_orphans=0)
    for revision in range(6):
        folder = tmp_path / f"rev{revision}"
        folder.mkdir()
        (folder / "faq.md").write_text(f"# FAQ\n\nRevision {revision} says refunds.\n")
        (folder / "same.md").write_text("# Same\n\nUnchanged text.\n")
        assert index.search([folder / "faq.md"], f"revision {revision}", 1)
        if revision:
            shutil.rmtree(tmp_path / f"rev{revision - 1}")
    files, contents = (
        index._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("files", "contents")
    )
    assert files <= 4 and contents <= 3, (files, contents)
    # The passages of the content dropped go too (written and deleted in batches).
    (passages,) = index._db.execute("SELECT count(*) FROM passages").fetchone()
    assert passages == index._db.execute("SELECT sum(passages) FROM contents").fetchone()[0]
    assert index.search([tmp_path / "rev5" / "same.md"], "unchanged", 1)


def test_concurrent_first_searches_parse_a_file_once(tmp_path: Path) -> None:
    """Several calls reaching a new file at once (users asking right after a start or an
    edit) parse it once; the others wait for that and reuse it, not parse it again each."""
    (big := tmp_path / "manual.md").write_text(
        "\n\n".join(f"## Part {n}\n\n" + f"word{n} text " * 300 for n in range(300))
    )
    index = KnowledgeIndex()
    start = threading.Barrier(6)
    parsed: list[int] = []

    def worker() -> None:
        start.wait()
        parsed.append(index.index([big]).parsed)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(parsed) == 1, parsed
    assert index.search([big], "word7", 1)[0].location == "Part 7"


def test_an_index_built_at_another_path_is_reused_for_every_file(tmp_path: Path) -> None:
    """An index built where the files no longer are (a container build in /build, served
    from /app) still spares parsing each file, not only the first one searched."""
    import shutil

    build, app = tmp_path / "build", tmp_path / "app"
    (build / "docs").mkdir(parents=True)
    for name in ("a.md", "b.md", "c.md"):
        (build / "docs" / name).write_text(f"# {name}\n\nText of {name}.\n")
    KnowledgeIndex(tmp_path / "cache").index((build / "docs").iterdir())
    shutil.copytree(build, app)
    shutil.rmtree(build)
    index = KnowledgeIndex(tmp_path / "cache")
    for name in ("a.md", "b.md", "c.md"):
        stats = index.index([app / "docs" / name])
        assert (stats.parsed, stats.reused) == (0, 1), name


RST = """=========
Shop FAQ
=========

Welcome to the shop.

Returns
=======

Refunds within 30 days.

Gift cards
----------

Gift cards are refunded as store credit.

Shipping
========

Ships from Lyon.
"""


def test_underlined_headings_start_sections_in_rst_and_markdown(tmp_path: Path) -> None:
    """reStructuredText titles (underlined, or over- and underlined) and markdown's setext
    headings (=== / ---) are headings as the README says, located by their trail."""
    from gateway.knowledge._split import split_data

    rst = {c.location: c.text for c in split_data("guide.rst", RST.encode())}
    assert rst == {
        "Shop FAQ": "Welcome to the shop.",
        "Shop FAQ > Returns": "Refunds within 30 days.",
        "Shop FAQ > Returns > Gift cards": "Gift cards are refunded as store credit.",
        "Shop FAQ > Shipping": "Ships from Lyon.",
    }
    setext = "Guide\n=====\n\nIntro.\n\nReturns\n-------\n\nRefunds.\n\n---\n\nAfter a rule.\n"
    md = [(c.location, c.text) for c in split_data("guide.md", setext.encode())]
    assert md == [
        ("Guide", "Intro."),
        ("Guide > Returns", "Refunds.\n\n---\n\nAfter a rule."),
    ]
    front = "---\ntitle: Guide\n---\n\n# Guide\n\nIntro.\n"
    assert [c.location for c in split_data("guide.md", front.encode())] == ["lines 1-3", "Guide"]


def test_a_heading_without_text_is_a_passage_of_its_own(tmp_path: Path) -> None:
    """A markdown section with a heading and no text (``## Gift wrapping is not
    offered``) was never indexed, so its words were never found: its heading is its
    passage; a heading whose subsections hold the text gets none."""
    doc = tmp_path / "shipping.md"
    doc.write_text(
        "# Shipping\n\n## Express delivery costs 15 EUR and arrives next day\n\n"
        "## Standard delivery\n\nStandard delivery is free over 50 EUR.\n\n"
        "## Gift wrapping is not offered\n"
    )
    chunks = split_text(doc.read_text(), markdown=True)
    assert [c.text for c in chunks] == [
        "Express delivery costs 15 EUR and arrives next day",
        "Standard delivery is free over 50 EUR.",
        "Gift wrapping is not offered",
    ]
    assert chunks[0].heading == "Shipping > Express delivery costs 15 EUR and arrives next day"
    index = KnowledgeIndex()
    for query, heading in (
        ("express delivery cost", "Express delivery"),
        ("gift wrapping", "Gift wrapping"),
    ):
        [found, *_] = index.search([doc], query, 5)
        assert heading in found.text, (query, found)
