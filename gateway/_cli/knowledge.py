"""``gateway index``: build the file_search index ahead of the first question.

Imports click and ``_common`` at the top, ``gateway.knowledge`` inside the command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import msgspec

from gateway._cli._common import (
    load_catalog_or_exit,
    load_settings,
    manifests_option,
    printable,
)

if TYPE_CHECKING:
    from gateway.knowledge import IndexStats, KnowledgeIndex, PdfLimits
    from gateway.manifests.catalog import Catalog

__all__ = ["index_command"]


@click.command("index", short_help="Build the file_search index of the knowledge files.")
@manifests_option
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Index directory (default: the server's, knowledge/ next to its SQLite database).",
)
def index_command(manifests_dir: str | None, cache_dir: str | None) -> None:
    """Build the file_search index of every assistant's knowledge files.

    Prints the files and passages per assistant, then the totals, then each file
    that could not be read (missing, unreadable, over a cap) or failed to parse with
    the reason (also one that failed in an earlier run
    and is not parsed again until it changes); exits 1 when the manifests are
    invalid, the cache cannot be written, or a file is missing, too large or
    cannot be parsed.
    """
    from gateway.knowledge import DEFAULT_CACHE_DIR, KnowledgeIndex, cache_dir_for

    settings = load_settings(logging=True)  # LOG_FORMAT, LOGGING_LEVEL apply to its warnings
    catalog = load_catalog_or_exit(settings, manifests_dir)
    server_dir = cache_dir_for(settings.database_url)
    cache = Path(cache_dir) if cache_dir else server_dir or DEFAULT_CACHE_DIR
    if server_dir is None and not cache_dir:
        click.echo(
            "note: with this thread store the server keeps its index in memory; "
            f"this run only checks the files (index written to {cache})",
            err=True,
        )
    index = KnowledgeIndex(cache)
    if index.cache_error is not None:
        index.close()
        click.echo(f"error: cannot write the index to {cache}: {index.cache_error}", err=True)
        raise SystemExit(1)
    try:
        total = _index_all(index, catalog)
        for name, assistant in sorted(catalog.assistants.items()):
            if assistant.file_search is None:
                continue
            files = [catalog.root / f for f in assistant.file_search.files]
            click.echo(f"{name}: {len(files)} files, {index.passages(files)} passages")
        # A file that failed in an earlier run is not parsed again (until it changes),
        # but it is as unsearchable as one failing now: counted, explained, exit 1.
        failed = total.failed + total.failed_earlier
        click.echo(
            f"indexed {total.files} files ({total.parsed} parsed, {total.reused} reused, "
            f"{total.unchanged} unchanged, {total.missing} missing, {failed} failed, "
            f"{total.too_large} too large), "
            f"{index.passages(catalog.knowledge_files)} passages in {index.file}"
        )
        # Missing, unreadable or over a cap since validation (a race, or a file only
        # the server's user may read): named, not only counted.
        real_root = catalog.root.resolve()
        for path, why in sorted(total.unsearchable.items()):
            click.echo(
                f"error: {_shown(Path(path), real_root)} cannot be searched: {why}", err=True
            )
        for file, reason in index.failures(catalog.knowledge_files).items():
            click.echo(
                f"error: {_shown(file, catalog.root)} cannot be searched: {_printable(reason)}",
                err=True,
            )
    finally:
        index.close()
    if total.missing or failed or total.too_large:
        raise SystemExit(1)


def _shown(file: Path, root: Path) -> str:
    """``file`` as the manifests name it (relative to ``root``), else as it is, printable:
    a name may hold a newline and a CI workflow command, or terminal escapes."""
    name = str(file.relative_to(root)) if file.is_relative_to(root) else str(file)
    return _printable(name, limit=1000)


def _printable(reason: str, limit: int = 300) -> str:
    """A parse error on one line, escaped (it may quote bytes of the file), cut to ``limit``."""
    return printable(reason, limit)


def _index_all(index: KnowledgeIndex, catalog: Catalog) -> IndexStats:
    """Index every knowledge file once, each within the largest ``max_file_size_mb``
    and the largest of each ``pdf`` limit of the assistants that list it (validation
    already checked the totals): what one of them may search is indexed."""
    from gateway.knowledge import IndexStats, PdfLimits

    caps: dict[Path, tuple[int, PdfLimits]] = {}
    for assistant in catalog.assistants.values():
        if assistant.file_search is not None:
            cap = assistant.file_search.max_file_size_mb << 20
            pdf = PdfLimits(**msgspec.structs.asdict(assistant.file_search.pdf))
            for name in assistant.file_search.files:
                path = catalog.root / name
                before = caps.get(path)
                caps[path] = (cap, pdf) if before is None else _larger((cap, pdf), before)
    total = IndexStats()
    for cap, pdf in sorted(set(caps.values())):
        files = [f for f in catalog.knowledge_files if caps.get(f) == (cap, pdf)]
        part = index.index(
            files,
            within=catalog.root,
            max_file_bytes=cap,
            max_total_bytes=sys.maxsize,
            pdf_limits=pdf,
        )
        for field in IndexStats.__struct_fields__:
            if field != "unsearchable":
                setattr(total, field, getattr(total, field) + getattr(part, field))
        total.unsearchable.update(part.unsearchable)
    return total


def _larger(a: tuple[int, PdfLimits], b: tuple[int, PdfLimits]) -> tuple[int, PdfLimits]:
    """The larger size cap and the larger of each PDF limit of ``a`` and ``b``."""
    from gateway.knowledge import PdfLimits

    (cap_a, pdf_a), (cap_b, pdf_b) = a, b
    return max(cap_a, cap_b), PdfLimits(
        timeout=max(pdf_a.timeout, pdf_b.timeout),
        memory_mb=max(pdf_a.memory_mb, pdf_b.memory_mb),
        max_pages=max(pdf_a.max_pages, pdf_b.max_pages),
        max_chars=max(pdf_a.max_chars, pdf_b.max_chars),
    )
