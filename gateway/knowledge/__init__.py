"""Knowledge files behind the built-in ``file_search`` tool.

``KnowledgeIndex`` (``index.py``) keeps an SQLite FTS5 (BM25) index of the
files an assistant names under ``file_search.files``; ``_split.py`` cuts
markdown, text and PDF files into passages (PDFs through ``_pdf.py``, in a
child process with time and memory limits), ``_query.py`` turns free text into
an FTS5 query and names sources, ``_io.py`` holds the SQLite and safe-read
helpers, ``_failures.py`` decides when content that failed to parse is parsed
again, ``_versions.py`` gives each schema version its own cache file, locked
while in use, and removes the ones no process uses. Used by the sandbox
runner (``gateway.executors``) and the ``gateway index`` command.

Imports: msgspec, structlog, the standard library and ``gateway._files``; pypdf
only in the child process ``_pdf_child.py`` starts.
"""

from gateway.knowledge.index import (
    DEFAULT_CACHE_DIR,
    DEFAULT_MAX_FILE_MB,
    DEFAULT_MAX_TOTAL_MB,
    IndexStats,
    KnowledgeIndex,
    Passage,
    PdfLimits,
    cache_dir_for,
)

__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_MAX_FILE_MB",
    "DEFAULT_MAX_TOTAL_MB",
    "IndexStats",
    "KnowledgeIndex",
    "Passage",
    "PdfLimits",
    "cache_dir_for",
]
