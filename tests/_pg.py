"""Test helper: the URL of the real PostgreSQL server, or a skip (a failure in CI).

Tests that need PostgreSQL call ``pg_url()``; it probes 127.0.0.1:5432 once per
process. When the server is unreachable the test is skipped with the reason,
except when ``CI=true``, where a missing database is a failure, not a skip.
"""

from __future__ import annotations

import functools
import os
import socket

import pytest

__all__ = ["PG_URL", "pg_url"]

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
_HOST, _PORT = "127.0.0.1", 5432


@functools.cache
def _probe() -> str | None:
    """Return None when PostgreSQL answers, else why it does not."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - psycopg is a dependency
        return f"psycopg is not importable: {exc}"
    try:
        with socket.create_connection((_HOST, _PORT), timeout=1.0):
            pass
    except OSError as exc:
        return f"PostgreSQL is not reachable at {_HOST}:{_PORT}: {exc}"
    try:
        with psycopg.connect(PG_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {_HOST}:{_PORT} refused {PG_URL}: {exc}"
    return None


def pg_url() -> str:
    """Return the test database URL, or skip (fail when ``CI=true``) if it is unreachable."""
    reason = _probe()
    if reason is None:
        return PG_URL
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(reason)
