"""Turn a knowledge file into passages: markdown by heading and paragraph, PDF by page.

Passages aim at ``TARGET`` characters and never exceed ``LIMIT``; consecutive
passages of one section share a little text (the previous paragraph, or the
tail of a cut paragraph) so an answer spanning a boundary is still found.
Each passage carries where it came from: the heading trail (``Returns >
Refunds``), ``page N`` of a PDF, or ``lines A-B`` of a plain text file.

Imports: ``gateway.knowledge._pdf`` (PDFs are read in a child process) and the
standard library only.
"""

from __future__ import annotations

import codecs
import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from gateway.knowledge._pdf import PdfLimits, pdf_pages

__all__ = [
    "LIMIT",
    "MAX_TITLE",
    "OVERLAP",
    "TARGET",
    "Chunk",
    "decode_text",
    "split_data",
    "split_pdf",
    "split_text",
]

TARGET = 700
LIMIT = 1000
OVERLAP = 150
MAX_TITLE = 200  # a heading longer than this is cut in the trail (kept whole as text)
_MAX_PARA = 1 << 16  # a paragraph is handed on in parts past this many characters
_BLOCK = 1 << 16  # characters of text cut into lines at a time
_GAP = re.compile(r"\n\s*\n")  # a blank line between two paragraphs of a PDF page
_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # str.splitlines' breaks
_PDF_LIMITS = PdfLimits()
MARKDOWN_SUFFIXES = frozenset({".md", ".markdown", ".mdx", ".rst"})
# The title is taken greedily and trimmed in Python: a lazy title followed by
# optional spaces and '#'s backtracked cubically on a line padded with spaces.
_HEADING = re.compile(r"(#{1,6})[ \t]+(.*)")
_FENCE = re.compile(r"^\s*(```|~~~)")
# An underline: one punctuation character repeated (setext ===/---, reST adornments).
_UNDERLINE = re.compile(r"([!-/:-@\[-`{-~])\1*[ \t]*")


class Chunk(NamedTuple):
    """One passage before indexing: its heading trail, location and text."""

    heading: str
    location: str
    text: str


class _Para(NamedTuple):
    text: str
    first: int  # 1-based line numbers
    last: int


def split_data(name: str, data: bytes, *, pdf: PdfLimits = _PDF_LIMITS) -> list[Chunk]:
    """Split the content ``data`` of a file called ``name`` (its suffix picks the format).

    A PDF is read in a child process within ``pdf`` (see ``_pdf``); text is split
    here, as a stream, in time linear in its size and memory near it (the caller
    caps the size).
    """
    suffix = Path(name).suffix.lower()
    if suffix == ".pdf":
        return split_pdf(data, pdf)
    markdown = suffix in MARKDOWN_SUFFIXES
    return split_text(decode_text(data), markdown=markdown, rst=suffix == ".rst")


_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_UTF8_SEQUENCE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")


def decode_text(data: bytes) -> str:
    """The text of a knowledge file: by its BOM, else UTF-8, else Windows-1252.

    A BOM left in the text would hide the first markdown heading, and UTF-16
    read as UTF-8 is NUL-separated noise. Bytes that are not UTF-8 and hold no
    UTF-8 sequence at all are a legacy 8-bit file (Latin-1 / Windows-1252),
    whose accented words would otherwise be cut at a U+FFFD.

    Raises:
        ValueError: a NUL byte in the first 8 KiB without a BOM (git's test for
            binary content): a .docx, an image, an archive is not text.
    """
    for bom, codec in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(codec, errors="replace")
    if b"\0" in data[:8192]:
        raise ValueError("binary content, not text (knowledge files are text, markdown or PDF)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if _UTF8_SEQUENCE.search(data):  # UTF-8 with a few bad bytes
            return data.decode("utf-8", errors="replace")
        return data.decode("cp1252", errors="replace")


def split_pdf(source: Path | bytes, limits: PdfLimits = _PDF_LIMITS) -> list[Chunk]:
    """One or more passages per PDF page, located as ``page N``.

    Raises:
        ParseLimitError: the PDF is over ``limits`` (pages, text, memory, time).
        ValueError: pypdf cannot read it.
    """
    data = source if isinstance(source, bytes) else source.read_bytes()
    chunks: list[Chunk] = []
    for number, text in enumerate(pdf_pages(data, limits), start=1):
        paras = (_Para(p, number, number) for p in _paragraphs_of(text))
        for body in _pack(paras):
            chunks.append(Chunk("", f"page {number}", body[0]))
    return chunks


def split_text(text: str, *, markdown: bool, rst: bool = False) -> list[Chunk]:
    """Split text into passages; with ``markdown`` headings start sections.

    Markdown headings are ``#`` lines (outside code fences) and setext ones
    (a paragraph underlined with ``===`` or ``---``); with ``rst`` they are
    reStructuredText titles, underlined (or over- and underlined) with any
    punctuation, ranked in the order their styles first appear. A title over
    ``MAX_TITLE`` characters is cut in the trail and kept whole as text.

    Streams: lines are cut a block at a time and paragraphs packed as they come,
    so memory follows the passages, not a list of every line or paragraph (a
    32 MB file of two-letter lines held 1.5 GB, and of two-letter paragraphs
    2.4 GB and minutes of CPU).
    """
    chunks: list[Chunk] = []
    paragraphs = _sections(text, markdown=markdown and not rst, rst=rst)
    for (_, trail), group in itertools.groupby(paragraphs, key=lambda p: (p[0], p[1])):
        for body, first, last in _pack(para for _, _, para in group):
            location = trail or f"lines {first}-{last}"
            chunks.append(Chunk(trail, location, body))
    return chunks


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` as ``str.splitlines`` cuts them, ``_BLOCK`` characters at a
    time: a block ends after a line break (any ``splitlines`` knows: a file of
    ``\r``-ended lines is cut too), a ``\r\n`` never in two."""
    start = 0
    while start < len(text):
        found = _BREAK.search(text, start + _BLOCK)
        end = len(text) if found is None else found.end()
        if found is not None and found.group() == "\r" and text.startswith("\n", end):
            end += 1
        yield from text[start:end].splitlines()
        start = end


def _title(title: str) -> str:
    """A heading title as the trail shows it: cut to ``MAX_TITLE`` characters."""
    return title if len(title) <= MAX_TITLE else title[: MAX_TITLE - 1].rstrip() + "…"


def _sections(  # noqa: C901 - one pass over the lines: fences, ATX, setext and reST titles
    text: str, *, markdown: bool, rst: bool = False
) -> Iterator[tuple[int, str, _Para]]:
    """``(section number, heading trail, paragraph)`` of each paragraph, in order.

    A paragraph grown past ``_MAX_PARA`` characters (a log without blank lines) is
    handed on in parts: ``_cut_long`` cuts it at line ends anyway. A heading with no
    text and no subsection is a paragraph of its own, its title: its words are found.
    """
    section, trail = 0, ""
    stack: list[tuple[int, str]] = []
    buf: list[str] = []
    size = start = number = 0
    fenced = False
    styles: list[tuple[bool, str]] = []  # reST title styles (overlined, char), by rank
    # The last heading while its section has no text yet: (level, title, first, last line).
    bare: tuple[int, str, int, int] | None = None

    def flush(end: int) -> _Para | None:
        nonlocal size, bare
        body = "\n".join(buf).strip()
        buf.clear()
        size = 0
        if not body:
            return None
        bare = None
        return _Para(body, start, end)

    for number, line in enumerate(_lines(text), start=1):
        if markdown and _FENCE.match(line):
            fenced = not fenced
        heading = _heading(line) if markdown and not fenced else None
        first = number  # the title's first line
        if heading is None and buf and (markdown or rst) and not fenced:
            heading = _underlined(line, buf, styles if rst else None)
            if heading is not None:
                first = start
                buf.clear()  # the title's lines, not the previous section's text
                size = 0
        if heading:
            if para := flush(number - 1):
                yield section, trail, para
            level, title = heading
            if bare is not None and level <= bare[0]:
                # A heading with no text of its own and no subsection (`## Gift wrapping
                # is not offered`): its words are the passage, or it is never found.
                yield section, trail, _Para(bare[1], bare[2], bare[3])
            bare = (level, title, first, number)
            stack = [(lv, t) for lv, t in stack if lv < level] + [(level, _title(title))]
            section, trail = section + 1, " > ".join(t for _, t in stack)
            if len(title) > MAX_TITLE:  # cut in the trail of every passage: its words stay here
                bare = None
                yield section, trail, _Para(title, first, number)
        elif not line.strip() and not fenced:
            if para := flush(number - 1):
                yield section, trail, para
        else:
            if not buf:
                start = number
            buf.append(line)
            size += len(line) + 1
            if size > _MAX_PARA and (para := flush(number)):
                yield section, trail, para
    if para := flush(number):
        yield section, trail, para
    if bare is not None:
        yield section, trail, _Para(bare[1], bare[2], bare[3])


def _heading(line: str) -> tuple[int, str] | None:
    """``(level, title)`` of an ATX heading line (``## Title ##``), else None.

    A closing run of '#' is dropped only after a space (CommonMark): ``# Learn C#``
    keeps its '#'.
    """
    match = _HEADING.match(line)
    if match is None:
        return None
    title = match.group(2).rstrip()
    bare = title.rstrip("#")
    if bare != title and (not bare or bare[-1] in " \t"):
        title = bare.rstrip()
    return (len(match.group(1)), title) if title else None


def _underlined(
    line: str, buf: list[str], styles: list[tuple[bool, str]] | None
) -> tuple[int, str] | None:
    """``(level, title)`` when ``line`` underlines the paragraph ``buf``, else None.

    Markdown (``styles`` None): ``===`` makes level 1 and ``---`` level 2 of the
    whole paragraph. reStructuredText: a one-line title, or one between an
    overline and an underline of the same characters; each new style is the
    next level down, recorded in ``styles``.
    """
    if _UNDERLINE.fullmatch(line) is None:
        return None
    mark = line.rstrip()
    if styles is None:
        if mark[0] not in "=-" or any(_UNDERLINE.fullmatch(b) for b in buf):
            return None  # YAML front matter (--- ... ---) is no title
        return (1 if mark[0] == "=" else 2), " ".join(b.strip() for b in buf)
    over = len(buf) == 2 and buf[0].rstrip() == mark
    if len(mark) < 3 or not (len(buf) == 1 or over) or not buf[-1].strip():
        return None
    style = (over, mark[0])
    if style not in styles:
        styles.append(style)
    return styles.index(style) + 1, buf[-1].strip()


def _paragraphs_of(text: str) -> Iterator[str]:
    """The paragraphs of a PDF page's text (cut at blank lines), stripped, as found:
    a page of millions of tiny paragraphs is never a list of them all."""
    start = 0
    for gap in _GAP.finditer(text):
        if part := text[start : gap.start()].strip():
            yield part
        start = gap.end()
    if part := text[start:].strip():
        yield part


def _pack(paras: Iterable[_Para]) -> Iterator[tuple[str, int, int]]:
    """Pack paragraphs into passages of about TARGET chars, with overlap, as they come."""
    current: list[_Para] = []
    size = 0  # sum(len(p.text) + 2 for p in current): kept, not summed per piece
    fresh = False  # current holds more than the carried overlap
    for para in paras:
        for piece in [para] if len(para.text) <= LIMIT else _cut_long(para):
            if fresh and size + len(piece.text) > LIMIT:
                yield _join(current)
                current, fresh = [_carry(current[-1])], False
                size = len(current[0].text) + 2
            if size + len(piece.text) > LIMIT:
                current, size = [], 0  # the carry would push this passage over the limit
            current.append(piece)
            size += len(piece.text) + 2
            fresh = True
            if size >= TARGET:
                yield _join(current)
                current, fresh = [_carry(current[-1])], False
                size = len(current[0].text) + 2
    if fresh:
        yield _join(current)


def _carry(tail: _Para) -> _Para:
    """What of a passage's last piece starts the next one: all of it when short, else
    its last whole lines (with their own line numbers) or, failing that, its end."""
    if len(tail.text) <= OVERLAP:
        return tail
    lines = tail.text.split("\n")
    if len(lines) > 1 and tail.last - tail.first + 1 == len(lines):
        keep: list[str] = []
        size = 0
        for line in reversed(lines):
            size += len(line) + 1
            if size > OVERLAP + 1:
                break
            keep.insert(0, line)
        if keep:
            return _Para("\n".join(keep), tail.last - len(keep) + 1, tail.last)
    return _Para("…" + tail.text[-OVERLAP:], tail.first, tail.last)


def _cut_long(para: _Para) -> list[_Para]:
    """Cut a paragraph over LIMIT (a CSV, a log, a wall of text) into pieces of about
    TARGET characters: at line ends, each piece naming its own lines, and a line over
    LIMIT in word windows. PDF pages (one "line number", the page) keep theirs."""
    lines = para.text.split("\n")
    exact = para.last - para.first + 1 == len(lines)
    out: list[_Para] = []
    group: list[str] = []  # lines of the piece being built (no object per line: GC)
    size = first = last = 0

    def close() -> None:
        if group:
            out.append(_Para("\n".join(group), first, last))
            group.clear()

    for number, line in enumerate(lines, start=para.first):
        here, there = (number, number) if exact else (para.first, para.last)
        if len(line) > LIMIT:
            close()
            out.extend(_Para(w, here, there) for w in _windows(line))
            size = 0
        elif line and not line.isspace():
            if group and size + len(line) > TARGET:
                close()
                size = 0
            if not group:
                first = here
            group.append(line)
            size += len(line) + 1
            last = there
    close()
    return out


def _join(paras: list[_Para]) -> tuple[str, int, int]:
    return "\n\n".join(p.text for p in paras), paras[0].first, paras[-1].last


def _windows(text: str) -> list[str]:
    """Cut a long paragraph into overlapping windows at word boundaries."""
    out: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + TARGET)
        if end < len(text):
            space = text.rfind(" ", start + TARGET // 2, end)
            end = space if space > 0 else end
        out.append(text[start:end].strip())
        if end >= len(text):
            break
        nxt = text.find(" ", max(start + 1, end - OVERLAP), end)
        start = nxt + 1 if nxt > 0 else end
    return [w for w in out if w]
