"""How a knowledge file's content failed to parse, and when to parse it again.

A failure is stored with the content (``contents.error, over, tried, retry_at,
attempts``) and read back as a ``Failure``: a broken file is never parsed again
(until its content changes, which is new content); a PDF over pages, text or
memory is parsed again only within higher limits in that respect; a PDF stopped
by time or killed (a busy machine, the OOM killer) after a back-off doubling
from ``RETRY_AFTER`` to ``RETRY_MAX``, or at once within a longer timeout or
more memory. Limits recorded only grow, so callers with different limits (two
assistants) never take turns re-parsing one content.

Imports ``gateway.knowledge._pdf``, ``_split`` and the standard library only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import NamedTuple

from gateway.knowledge._pdf import ParseLimitError, PdfLimits
from gateway.knowledge._split import Chunk

__all__ = ["BROKEN", "RETRY_AFTER", "Failure", "Parsed", "columns", "failure_after", "failure_of"]

RETRY_AFTER = 600.0  # seconds before a PDF stopped by time or killed is parsed again
RETRY_MAX = 86400.0  # the back-off doubles per failure in a row, up to this


class Failure(NamedTuple):
    """How a content failed to parse, which decides when it is parsed again.

    Attributes:
        over: ``PdfLimits`` fields the content is known to exceed, with the largest
            value each failed within: it fails again within those or smaller.
        tried: for a parse stopped by time or killed (transient), the largest
            ``timeout`` and ``memory_mb`` it was tried with.
        retry_at: when a transient failure may be parsed again (epoch seconds);
            None: no transient failure (a broken file, or a limit only).
        attempts: transient failures in a row (the back-off doubles with each).
    """

    over: dict[str, float]
    tried: dict[str, float]
    retry_at: float | None
    attempts: int

    def due(self, limits: PdfLimits, now: float) -> bool:
        """Whether the content should be parsed again within ``limits`` at ``now``.

        Never while ``limits`` is within a limit it is known to exceed; else a
        transient failure after its back-off, or at once with a longer timeout or
        more memory than it was tried with; a failure over limits only (none of
        them reached by ``limits``) at once; a broken file never.
        """
        current = limits._asdict()
        if any(current[field] <= value for field, value in self.over.items()):
            return False
        if self.retry_at is None:
            return bool(self.over)
        return now >= self.retry_at or any(current[f] > v for f, v in self.tried.items())

    def after(self, exc: ParseLimitError, now: float, retry_after: float) -> Failure:
        """This record with the limit failure ``exc`` (at ``now``) added.

        Limits only grow (the largest value known to fail, the largest tried),
        so callers with different limits never take turns parsing one content.
        """
        if not exc.transient:
            return self._replace(over=_larger(self.over, exc.over))
        attempts = self.attempts + 1
        wait = min(retry_after * 2 ** min(attempts - 1, 32), RETRY_MAX)
        return self._replace(
            tried=_larger(self.tried, exc.over), retry_at=now + wait, attempts=attempts
        )


BROKEN = Failure({}, {}, None, 0)


def _larger(old: dict[str, float], new: dict[str, float]) -> dict[str, float]:
    return {k: max(old.get(k, v), new.get(k, v)) for k, v in (old | new).items()}


def failure_of(row: Sequence[object]) -> Failure | None:
    """The ``Failure`` of a ``(error, over, tried, retry_at, attempts)`` row (None: parsed)."""
    error, over, tried, retry_at, attempts = row
    if error is None:
        return None
    return Failure(
        over=json.loads(over) if isinstance(over, str) else {},
        tried=json.loads(tried) if isinstance(tried, str) else {},
        retry_at=float(retry_at) if isinstance(retry_at, (int, float)) else None,
        attempts=attempts if isinstance(attempts, int) else 0,
    )


class Parsed(NamedTuple):
    """One parse: its passages, its error (None: parsed), the limit it hit (if one)."""

    chunks: list[Chunk]
    error: str | None
    limit: ParseLimitError | None


def failure_after(
    parsed: Parsed, before: Failure | None, now: float, retry_after: float
) -> Failure | None:
    """How content stands after ``parsed``, given how it failed ``before`` (if it did)."""
    if parsed.error is None:
        return None
    if parsed.limit is None:
        return BROKEN  # a broken file stays broken: parsed again only when it changes
    return (before or BROKEN).after(parsed.limit, now, retry_after)


def columns(failure: Failure | None) -> tuple[str | None, str | None, float | None, int]:
    """The ``over, tried, retry_at, attempts`` columns of ``failure``."""
    if failure is None:
        return None, None, None, 0
    return (
        json.dumps(failure.over) if failure.over else None,
        json.dumps(failure.tried) if failure.tried else None,
        failure.retry_at,
        failure.attempts,
    )
