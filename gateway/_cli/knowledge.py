"""``gateway index``: build the file_search index ahead of the first question.

Imports click and ``_common`` at the top, ``gateway.knowledge`` inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from gateway._cli._common import load_catalog_or_exit, load_settings, manifests_option

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

    Prints the files and passages per assistant, then the totals; exits 1 when
    the manifests are invalid, the cache cannot be written, or a file is missing
    or cannot be parsed.
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
        total = index.index(catalog.knowledge_files, within=catalog.root)
        for name, assistant in sorted(catalog.assistants.items()):
            if assistant.file_search is None:
                continue
            files = [catalog.root / f for f in assistant.file_search.files]
            click.echo(f"{name}: {len(files)} files, {index.passages(files)} passages")
        click.echo(
            f"indexed {total.files} files ({total.parsed} parsed, {total.reused} reused, "
            f"{total.unchanged} unchanged, {total.missing} missing, {total.failed} failed), "
            f"{index.passages(catalog.knowledge_files)} passages in {cache / 'knowledge.sqlite3'}"
        )
    finally:
        index.close()
    if total.missing or total.failed:
        raise SystemExit(1)
