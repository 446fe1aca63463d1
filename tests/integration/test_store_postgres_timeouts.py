"""The PostgreSQL store against a server that goes silent or a session that holds locks:
TCP keepalives and timeouts on every connection, and a bounded wait for migration locks."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from structlog.testing import capture_logs

from gateway.errors import NotReady
from gateway.store._sql import POSTGRES
from gateway.store.postgres import CONNECTION_DEFAULTS, PostgresStore
from tests._pg import pg_url

_TCP_OPTIONS = {
    "keepalives_idle": socket.TCP_KEEPIDLE,
    "keepalives_interval": socket.TCP_KEEPINTVL,
    "keepalives_count": socket.TCP_KEEPCNT,
    "tcp_user_timeout": socket.TCP_USER_TIMEOUT,
}


@pytest.fixture(autouse=True)
def _no_libpq_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """PGCONNECT_TIMEOUT would take the place of the store's own connect timeout."""
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)


async def _socket_options(store: PostgresStore) -> dict[str, int]:
    """What libpq set on the socket of one of the store's pooled connections (TCP to the
    real server), and the connect timeout it was given, as libpq parameters."""
    async with store.pool.connection() as conn:
        with socket.fromfd(conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM) as sock:
            options = {
                "keepalives": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                **{
                    name: sock.getsockopt(socket.IPPROTO_TCP, option)
                    for name, option in _TCP_OPTIONS.items()
                },
            }
        options["connect_timeout"] = int(conn.info.get_parameters().get("connect_timeout", "0"))
    return options


async def test_every_store_connection_notices_a_silent_server_within_seconds() -> None:
    """Without a URL saying otherwise, the store's connections carry keepalives (15 s idle,
    every 5 s, 3 probes), tcp_user_timeout 30 s and connect_timeout 10 s, set on the real
    socket: a server gone without a reset no longer hangs a query for 15 minutes."""
    store = PostgresStore(pg_url(), max_size=1)
    await store.open()
    try:
        expected = {name: int(value) for name, value in CONNECTION_DEFAULTS.items()}
        assert expected == {
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 15,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30000,
        }
        assert await _socket_options(store) == expected
        # The listening connection and the schema's creation connect with the same URL.
        listener = store.run_event_notices("run_x")
        async with listener:
            assert store._listener is not None
            assert (
                conninfo_to_dict(store._listener._url).items()
                >= {k: str(v) for k, v in expected.items()}.items()
            )
    finally:
        await store.close()


async def test_the_urls_own_connection_parameters_win() -> None:
    """A parameter the operator's URL sets (keepalives_idle, tcp_user_timeout, connect_timeout)
    is kept as given; only the ones it leaves out get the store's defaults."""
    url = f"{pg_url()}?keepalives_idle=7&tcp_user_timeout=1234&connect_timeout=3"
    store = PostgresStore(url, max_size=1)
    await store.open()
    try:
        assert await _socket_options(store) == {
            "connect_timeout": 3,
            "keepalives": 1,
            "keepalives_idle": 7,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 1234,
        }
    finally:
        await store.close()
    off = PostgresStore(f"{pg_url()}?keepalives=0", max_size=1)
    await off.open()
    try:
        assert (await _socket_options(off))["keepalives"] == 0
    finally:
        await off.close()


def test_pgconnect_timeout_is_left_to_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    """PGCONNECT_TIMEOUT (libpq's own default) is not overridden by the store's 10 s."""
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "4")
    params = conninfo_to_dict(PostgresStore("postgresql://u:pw@h/db")._url)
    assert "connect_timeout" not in params
    assert params["tcp_user_timeout"] == "30000"
    assert params["password"] == "pw"


@pytest.fixture
def version_1_schema() -> Iterator[str]:
    """A schema at version 1 (before leases), which the store migrates with
    ``ALTER TABLE runs``; dropped afterwards."""
    url, schema = pg_url(), f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        for statement in POSTGRES.migrations[0]:
            conn.execute(statement)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (1)")
    yield schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def _connect(schema: str, *options: str) -> psycopg.AsyncConnection[Any]:
    flags = " ".join((f"-c search_path={schema}", *options))
    return await psycopg.AsyncConnection.connect(pg_url(), options=flags)


async def _until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 20
    while not await condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_migration_blocked_by_a_long_transaction_fails_start_up_and_blocks_no_one(
    version_1_schema: str,
) -> None:
    """A session in a long transaction on ``runs`` blocks the migration's ``ALTER TABLE runs``:
    each try gives up after ``migration_lock_timeout`` (so the other sessions' queries on
    ``runs``, queued behind the waiting ALTER, go on), and the last one fails ``open`` with
    NotReady naming the version, the statement and the session holding the lock."""
    schema = version_1_schema
    store = PostgresStore(
        pg_url(), schema=schema, max_size=2, migration_lock_timeout=1.0, migration_attempts=2
    )
    holder = await _connect(schema)
    watcher = await psycopg.AsyncConnection.connect(pg_url(), autocommit=True)
    async with holder, watcher:
        await holder.execute("SELECT count(*) FROM runs")  # AccessShareLock, until rollback
        with capture_logs() as logs:
            opening = asyncio.create_task(store.open())

            async def altering() -> bool:
                cur = await watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'ALTER TABLE runs%'"
                )
                row = await cur.fetchone()
                assert not opening.done(), "the migration ended before it was seen waiting"
                return row is not None and row[0] > 0

            await _until(altering, "the migration to wait for its lock")
            # A gateway query on runs now queues behind the ALTER: it goes on once that gives
            # up, well before its own lock_timeout (without one, it waited for the holder).
            reader = await _connect(schema, "-c lock_timeout=20s")
            async with reader:
                assert await (await reader.execute("SELECT count(*) FROM runs")).fetchone() == (0,)
            with pytest.raises(NotReady) as caught:
                await asyncio.wait_for(opening, 30)
        holder_pid = holder.info.backend_pid
        await holder.rollback()
    message = str(caught.value)
    assert "cannot be migrated to version 2" in message
    assert (
        "'ALTER TABLE runs ADD COLUMN owner TEXT' waited 1 s for a table lock, 2 times" in message
    )
    assert f"tables: pid {holder_pid} on runs (in a transaction for " in message
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("store.migration_blocked", "warning"),
        ("store.migration_failed", "error"),
    ]
    assert logs[0]["attempt"] == 1 and logs[0]["version"] == 2
    with pytest.raises(NotReady):
        await store.get_thread("t")  # the store did not open
    # Nothing was half-migrated, and the next start (the holder gone) migrates.
    await store.open()
    try:
        assert await store.create_thread("a")
    finally:
        await store.close()


async def test_a_blocked_migration_is_tried_again_and_goes_through_once_the_lock_is_free(
    version_1_schema: str,
) -> None:
    """The store tries a blocked migration again after a pause: once the long transaction
    ends, ``open`` completes and the schema is at the newest version."""
    schema = version_1_schema
    store = PostgresStore(
        pg_url(), schema=schema, max_size=2, migration_lock_timeout=0.2, migration_attempts=100
    )
    holder = await _connect(schema)
    holder_pid = holder.info.backend_pid
    async with holder:
        await holder.execute("SELECT count(*) FROM runs")
        with capture_logs() as logs:
            opening = asyncio.create_task(store.open())

            async def warned() -> bool:
                return any(e["event"] == "store.migration_blocked" for e in logs)

            await _until(warned, "a blocked try")
            await holder.rollback()
            await asyncio.wait_for(opening, 30)
    try:
        blocked = next(e for e in logs if e["event"] == "store.migration_blocked")
        assert blocked["statement"] == "ALTER TABLE runs ADD COLUMN owner TEXT"
        assert blocked["holders"].startswith(f"pid {holder_pid} on runs (in a transaction for ")
        async with store.pool.connection() as conn:
            cur = await conn.execute("SELECT version FROM schema_version")
            assert await cur.fetchone() == (len(POSTGRES.migrations),)
            # lock_timeout was the migration's alone (SET LOCAL): pooled sessions have none.
            cur = await conn.execute("SHOW lock_timeout")
            assert await cur.fetchone() == ("0",)
    finally:
        await store.close()


async def test_a_lock_on_schema_version_is_a_blocked_migration_too(version_1_schema: str) -> None:
    """A session holding schema_version (an operator's LOCK in psql) fails ``open`` with the
    same NotReady naming the table and the holder, not a raw LockNotAvailable."""
    store = PostgresStore(
        pg_url(),
        schema=version_1_schema,
        max_size=1,
        migration_lock_timeout=0.3,
        migration_attempts=1,
    )
    holder = await _connect(version_1_schema)
    async with holder:
        await holder.execute("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(NotReady) as caught:
            await asyncio.wait_for(store.open(), 30)
        holder_pid = holder.info.backend_pid
        await holder.rollback()
    message = str(caught.value)
    assert "'SELECT version FROM schema_version' waited 0.3 s for a table lock" in message
    assert f"pid {holder_pid} on schema_version" in message
