"""Child process of ``_pdf``: the text of every page of one PDF, within limits.

Started as a file (``python -I _pdf_child.py MEMORY_BYTES CPU_SECONDS MAX_PAGES
MAX_CHARS``) with the PDF's bytes on stdin; writes one JSON object on stdout,
``{"pages": [text, ...]}`` or ``{"error": message, "limit": bool, "over": field}``
(``over``: the ``PdfLimits`` field the PDF is over, or null). It caps its
own address space and CPU time before reading anything, so a PDF bomb (a small
file whose streams inflate to gigabytes, or whose page tree names one heavy
page a million times) ends here, never in the server process.

Imports pypdf and the standard library only: it runs outside the gateway package.
"""

from __future__ import annotations

import io
import json
import logging
import resource
import sys


class _Limit(Exception):
    """The PDF is over one of the limits given on the command line (``over`` names it)."""

    def __init__(self, message: str, over: str | None) -> None:
        super().__init__(message)
        self.over = over


def _pages(data: bytes, max_pages: int, max_chars: int) -> list[str]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    count = len(reader.pages)
    if count > max_pages:
        raise _Limit(f"the PDF has {count} pages, more than the limit of {max_pages}", "max_pages")
    texts: list[str] = []
    total = 0
    for page in reader.pages:
        # A lone surrogate (a broken ToUnicode map) could not be stored: '?' instead.
        text = (page.extract_text() or "").encode("utf-8", "replace").decode("utf-8")
        total += len(text)
        if total > max_chars:
            raise _Limit(f"the PDF holds more than {max_chars} characters of text", "max_chars")
        texts.append(text)
    return texts


def _pypdf_limit() -> type[Exception]:
    try:
        from pypdf.errors import LimitReachedError
    except ImportError:  # an older pypdf: its limits are reported as parse errors
        return _Limit
    return LimitReachedError


def main() -> int:
    """Parse the PDF on stdin within the limits in ``sys.argv``; always exit 0 with JSON."""
    memory, cpu, max_pages, max_chars = (int(arg) for arg in sys.argv[1:5])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # Soft limit: SIGXCPU (the process ends); the hard one a second later: SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    logging.disable(logging.CRITICAL)  # pypdf warns on every odd object; nobody reads them
    result: dict[str, object]
    try:
        result = {"pages": _pages(sys.stdin.buffer.read(), max_pages, max_chars)}
    except _Limit as exc:
        result = {"error": str(exc), "limit": True, "over": exc.over}
    except _pypdf_limit() as exc:  # pypdf's own guards (tokens or bytes per stream)
        result = {"error": f"the PDF is over a pypdf limit: {exc}", "limit": True}
    except MemoryError:
        message = f"parsing needs more than {memory >> 20} MB of memory"
        result = {"error": message, "limit": True, "over": "memory_mb"}
    except Exception as exc:  # a broken PDF: its error goes back to the index, recorded there
        result = {"error": f"{type(exc).__name__}: {exc}", "limit": False}
    # "replace": a lone surrogate in an error's text must not lose the answer (no answer
    # reads as a killed child: a broken PDF would be retried as a transient failure).
    sys.stdout.buffer.write(json.dumps(result, ensure_ascii=False).encode("utf-8", "replace"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
