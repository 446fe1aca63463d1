"""libpq connection strings of every PostgreSQL connection the gateway opens, with timeouts.

The thread store (``gateway.store.postgres``: pooled, listening, migrating) and
``sql`` actions on a ``kind: database`` PostgreSQL URL (``gateway.executors.sql``:
a connection per sandboxed call, pools for ``isolation: inline``) connect through
``conninfo``: the URL in libpq's ``postgresql://`` form (SQLAlchemy's
``postgres://`` and ``postgresql+psycopg://`` forms accepted), checked, with
``CONNECTION_DEFAULTS`` added for the parameters it does not set. Imports nothing
of the gateway; psycopg lazily (the sandbox's zygote imports the ``sql`` kind,
which has no use for it before a PostgreSQL call).
"""

from __future__ import annotations

import contextlib
import os
import re
import urllib.parse

__all__ = ["CONNECTION_DEFAULTS", "conninfo"]

# SQLAlchemy's forms (``postgres://``, ``postgresql+psycopg://``...), as SQL actions take.
_SCHEME = re.compile(r"^postgres(?:ql)?(?:\+\w+)?://", re.IGNORECASE)

CONNECTION_DEFAULTS: dict[str, str] = {
    # libpq's defaults leave a connection to a host that vanished without a reset (a
    # failover, a partition) to the kernel: a query, a pool check or the listener's
    # heartbeat then hangs until TCP gives up retransmitting, about 15 minutes. With
    # these, a silent peer is noticed in about 30 s (GATEWAY_RUN_LEASE's default).
    "connect_timeout": "10",  # seconds to connect (per host of a multi-host URL)
    "keepalives": "1",
    "keepalives_idle": "15",  # seconds idle before the first probe ...
    "keepalives_interval": "5",  # ... then one every 5 s ...
    "keepalives_count": "3",  # ... and 3 unanswered probes end it: 30 s idle
    "tcp_user_timeout": "30000",  # ms data sent may stay unacknowledged (a query, a check)
}
"""libpq parameters every connection gets unless its URL sets them itself (an operator's
``?keepalives_idle=60`` wins); ``PGCONNECT_TIMEOUT``, when set, is libpq's own default
for ``connect_timeout`` and is left to apply."""


def conninfo(url: str, *, connect_timeout: int | None = None) -> str:
    """``url`` as libpq reads it, checked now, with ``CONNECTION_DEFAULTS`` added for the
    parameters it does not set.

    Checking here matters: a pool would retry a URL libpq cannot parse until its
    timeout, saying only that, and psycopg's message repeats the URL, password included.

    Args:
        url: a PostgreSQL URL (``postgresql://user:pass@host:5432/db``, or SQLAlchemy's forms).
        connect_timeout: seconds to use instead of the default 10 (a call's own timeout,
            when shorter); like the default, it applies only when neither the URL nor
            ``PGCONNECT_TIMEOUT`` sets one.

    Raises:
        ValueError: libpq cannot parse it (the message does not repeat the URL nor its password).
    """
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    normalized = _SCHEME.sub("postgresql://", url, count=1)
    try:
        given = conninfo_to_dict(normalized)
    except psycopg.ProgrammingError as exc:
        reason = str(exc).replace(normalized, "<the URL>").replace(url, "<the URL>")
        with contextlib.suppress(ValueError):
            if password := urllib.parse.urlsplit(normalized).password:
                reason = reason.replace(password, "***")
        raise ValueError(
            f"not a valid PostgreSQL URL ({reason.strip()}); "
            "expected postgresql://user:password@host:port/database"
        ) from None
    missing = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
    if "connect_timeout" in missing:
        if os.environ.get("PGCONNECT_TIMEOUT"):
            del missing["connect_timeout"]
        elif connect_timeout is not None:
            missing["connect_timeout"] = str(max(1, connect_timeout))
    return make_conninfo(normalized, **missing) if missing else normalized
