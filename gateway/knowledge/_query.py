"""How queries reach FTS5 and how sources are named: ``build_query`` and ``labels``.

Imports ``gateway._files`` and the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from gateway._files import resolved

__all__ = ["build_query", "labels"]

_MAX_TOKENS = 24
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "the",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)
_TOKEN = re.compile(r"[^\W_]+")


def build_query(text: str) -> str:
    """An FTS5 MATCH expression for free text: quoted word tokens joined by OR.

    Stop words are dropped unless nothing else is left; at most 24 tokens are kept.
    """
    tokens = list(dict.fromkeys(t.lower() for t in _TOKEN.findall(text)))
    useful = [t for t in tokens if t not in _STOPWORDS] or tokens
    return " OR ".join(f'"{t}"' for t in useful[:_MAX_TOKENS])


def labels(files: Sequence[Path], root: Path | None) -> dict[Path, str]:
    """How each file is named in results: relative to ``root``, else a unique short suffix."""
    labels: dict[Path, str] = {}
    rest: list[Path] = []
    for file in files:
        if root is not None:
            for candidate, base in ((file, root), (resolved(file), resolved(root))):
                if candidate.is_relative_to(base):
                    labels[file] = candidate.relative_to(base).as_posix()
                    break
        if file not in labels:
            rest.append(file)
    depth = 1
    while rest:
        suffix = {f: "/".join(f.parts[-depth:]) for f in rest}
        counts: dict[str, int] = {}
        for label in suffix.values():
            counts[label] = counts.get(label, 0) + 1
        unique = [f for f in rest if counts[suffix[f]] == 1 or depth >= len(f.parts)]
        for f in unique:
            labels[f] = suffix[f]
        rest = [f for f in rest if f not in labels]
        depth += 1
    return labels
