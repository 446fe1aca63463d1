"""Thread stores: threads, messages, runs, and runs' event logs (live batches, final logs).

``open_store(url, root=...)`` picks the implementation by URL scheme
(``sqlite:///`` is the embedded default, ``postgresql://`` is for several
replicas). Implementations register themselves with ``register_store``; adding
a backend is one module and one import line here. This package may import
``gateway.errors``, ``gateway.providers.base`` and the private helpers
``gateway._files`` (the SQLite file's mode) and ``gateway._libpq``
(PostgreSQL connection strings) only.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.errors import InvalidInput
from gateway.store.base import (
    DEFAULT_LEASE_SECONDS,
    RunRecord,
    StoredMessage,
    ThreadRecord,
    ThreadStore,
)

__all__ = [
    "RunRecord",
    "StoredMessage",
    "ThreadRecord",
    "ThreadStore",
    "open_store",
    "register_store",
]

StoreFactory = Callable[[str, Path, float], ThreadStore]
_FACTORIES: dict[str, StoreFactory] = {}


def register_store(*schemes: str) -> Callable[[StoreFactory], StoreFactory]:
    """Register a factory ``(url, root, lease_seconds) -> ThreadStore`` for URL schemes.

    Raises:
        ValueError: a scheme is already registered.
    """

    def decorator(factory: StoreFactory) -> StoreFactory:
        for scheme in schemes:
            if scheme in _FACTORIES:
                raise ValueError(f"store scheme {scheme!r} is already registered")
            _FACTORIES[scheme] = factory
        return factory

    return decorator


def open_store(
    url: str, *, root: Path, lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> ThreadStore:
    """Build the store for ``url``; call ``await store.open()`` before use.

    Args:
        url: ``sqlite:///relative/path.db`` (relative to ``root``),
            ``sqlite:////absolute/path.db`` or ``postgresql://user@host/db``.
        root: directory relative SQLite paths resolve against (usually the
            working directory).
        lease_seconds: how long a run's lease lasts unless renewed (``GATEWAY_RUN_LEASE``).

    Raises:
        InvalidInput: the scheme is not supported (the message lists the known ones).
    """
    scheme = url.partition("://")[0].split("+", 1)[0].lower()
    factory = _FACTORIES.get(scheme)
    if factory is None or "://" not in url:
        known = ", ".join(sorted(_FACTORIES))
        raise InvalidInput(f"unsupported database URL scheme {scheme!r}; use one of: {known}")
    return factory(url, root, lease_seconds)


# Backends register themselves on import (kept last: they import from this package).
from gateway.store import postgres as _postgres  # noqa: E402
from gateway.store import sqlite as _sqlite  # noqa: E402

del _postgres, _sqlite
