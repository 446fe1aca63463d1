"""Benchmark: PDF text extraction in the bounded child process vs in the calling process.

The knowledge index reads PDFs through ``gateway.knowledge._pdf.pdf_pages``: a
fresh interpreter with memory, CPU, page and text limits (a PDF bomb cannot
hold the server). This measures what that costs against calling pypdf in the
same process, for generated PDFs of a few sizes, in the same run: the child
adds an interpreter start and a pypdf import per file, paid once per content
(the index keeps passages by content hash).

Run: ``uv run --frozen python bench/knowledge_pdf.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

from pypdf import PdfReader, PdfWriter
from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

from gateway.knowledge._pdf import PdfLimits, pdf_pages

LINE = "Inflate the tyres to the pressure printed on the sidewall before each ride."


def make_pdf(pages: int) -> bytes:
    """A PDF of ``pages`` pages, each 40 lines of Helvetica text."""
    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for number in range(pages):
        page = writer.add_blank_page(width=612, height=792)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
        ops = "".join(
            f"BT /F1 10 Tf 40 {760 - 18 * i} Td ({LINE} {number}) Tj ET\n" for i in range(40)
        )
        stream = DecodedStreamObject()
        stream.set_data(ops.encode())
        page[NameObject("/Contents")] = writer._add_object(stream)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def in_process(data: bytes) -> list[str]:
    """What the index did before: pypdf in the calling process."""
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages]


def timed(fn: Callable[[bytes], list[str]], data: bytes, repeats: int) -> float:
    """Median seconds of ``repeats`` calls."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(data)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    """Print in-process and child times per PDF size, and their ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    limits = PdfLimits()
    print(f"{'pages':>6} {'in-process ms':>14} {'child ms':>10} {'child/in':>9}")
    for pages in (1, 50, 300):
        data = make_pdf(pages)
        assert in_process(data) == pdf_pages(data, limits)
        own = timed(in_process, data, args.repeats)
        child = timed(lambda d: pdf_pages(d, limits), data, args.repeats)
        print(f"{pages:>6} {own * 1000:>14.1f} {child * 1000:>10.1f} {child / own:>9.2f}")


if __name__ == "__main__":
    main()
