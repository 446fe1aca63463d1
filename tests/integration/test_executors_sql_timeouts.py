"""``sql`` actions on PostgreSQL get the thread store's TCP keepalives and timeouts, sandboxed
and inline, read back from the real sockets while a statement runs on the real server."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _pg import pg_url

from gateway._libpq import CONNECTION_DEFAULTS
from gateway.executors.runner import SandboxRunner
from gateway.executors.sql import SqlConfig
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action, Database
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings

pytestmark = pytest.mark.postgres

_TCP_OPTIONS = {
    "keepalives_idle": socket.TCP_KEEPIDLE,
    "keepalives_interval": socket.TCP_KEEPINTVL,
    "keepalives_count": socket.TCP_KEEPCNT,
    "tcp_user_timeout": socket.TCP_USER_TIMEOUT,
}
_SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture
_DEFAULTS = {k: int(v) for k, v in CONNECTION_DEFAULTS.items() if k != "connect_timeout"}


@pytest.fixture(autouse=True)
def _no_libpq_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """PGCONNECT_TIMEOUT would take the place of the default connect timeout."""
    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)


@pytest.fixture
def data_root() -> Iterator[Path]:
    """An empty directory the sandbox uid can use as the manifests root."""
    root = Path(tempfile.mkdtemp(prefix="gw-sql-timeouts-"))
    root.chmod(0o777)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _catalog(root: Path, url: str, isolation: str, marker: str) -> Catalog:
    action = Action(
        name="sleep",
        description="d",
        parameters={"type": "object", "properties": {}},
        kind_key="sql",
        # Writable: a read-only statement runs through a cursor, as FETCH (without the marker).
        config=SqlConfig(database="pg", query=f"SELECT pg_sleep(20) AS {marker}", readonly=False),
        isolation=isolation,  # type: ignore[arg-type]
        timeout=30,
    )
    return Catalog(
        version=uuid.uuid4().hex[:8],
        root=root,
        gateway_root=root,
        loaded_at=0,
        databases={"pg": Database(name="pg", url=url)},
        actions={"sleep": action},
    )


def _socket_inode(port: int) -> str:
    """The inode of the TCP socket whose local port is ``port`` (the client of a backend)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if (
                int(fields[1].rsplit(":", 1)[1], 16) == port
                and fields[2].endswith(":1538")  # remote port 0x1538 = 5432
                and fields[3] == "01"  # ESTABLISHED: not a TIME_WAIT of an earlier one
            ):
                return fields[9]
    raise AssertionError(f"no socket with local port {port}")


def _socket_options(port: int) -> dict[str, int]:
    """What libpq set on the client socket of local ``port``, in whichever process holds it
    (a sandbox child or this one), read through a duplicate taken with ``pidfd_getfd``."""
    target = f"socket:[{_socket_inode(port)}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            # One at a time: a busy process (this one: pools, threads) opens and closes
            # descriptors while we look, and one gone must not hide the others.
            with contextlib.suppress(OSError):
                if str(fd.readlink()) == target:
                    return _options_of(int(proc.name), int(fd.name))
    raise AssertionError(f"no process holds {target}")


def _options_of(pid: int, fd: int) -> dict[str, int]:
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        copy = libc.syscall(_SYS_PIDFD_GETFD, pidfd, fd, 0)
    finally:
        os.close(pidfd)
    if copy < 0:
        code = ctypes.get_errno()
        if code == errno.EPERM:
            pytest.skip("reading another process's socket needs CAP_SYS_PTRACE (run as root)")
        raise OSError(code, os.strerror(code))
    with socket.socket(fileno=copy) as sock:
        return {
            "keepalives": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            **{
                name: sock.getsockopt(socket.IPPROTO_TCP, option)
                for name, option in _TCP_OPTIONS.items()
            },
        }


async def _options_while_running(runner: SandboxRunner, catalog: Catalog, marker: str) -> Any:
    """Start the sleeping call, read its connection's socket options, then cancel it."""
    call = asyncio.create_task(runner.run(catalog, "sleep", {}))
    try:
        with psycopg.connect(pg_url(), autocommit=True) as watcher:
            deadline = time.monotonic() + 20
            while True:
                row = watcher.execute(
                    "SELECT pid, client_port FROM pg_stat_activity"
                    " WHERE state = 'active' AND query LIKE %s AND pid <> pg_backend_pid()",
                    (f"%AS {marker}%",),
                ).fetchone()
                if row is not None:
                    break
                assert not call.done(), await call
                assert time.monotonic() < deadline, "the call's statement never started"
                await asyncio.sleep(0.05)
            options = await asyncio.to_thread(_socket_options, row[1])
            watcher.execute("SELECT pg_cancel_backend(%s)", (row[0],))
        await asyncio.wait_for(call, 20)
    finally:
        call.cancel()
    return options


@pytest.mark.parametrize("isolation", ["sandbox", "inline"])
async def test_sql_connections_notice_a_silent_database_within_seconds(
    data_root: Path, isolation: str
) -> None:
    """A sandboxed call's connection and an inline pool's carry keepalives (15 s idle, every
    5 s, 3 probes) and tcp_user_timeout 30 s on the real socket, as the thread store's do:
    a database host gone without a reset fails the call instead of hanging it 15 minutes."""
    marker = f"m_{uuid.uuid4().hex[:10]}"
    sup = Supervisor(Settings())
    catalog = _catalog(data_root, pg_url(), isolation, marker)
    if isolation == "sandbox":
        await sup.start(catalog)
    runner = SandboxRunner(sup)
    try:
        assert await _options_while_running(runner, catalog, marker) == _DEFAULTS
    finally:
        await runner.aclose()
        await sup.aclose()


@pytest.mark.parametrize("isolation", ["sandbox", "inline"])
async def test_the_database_urls_own_connection_parameters_win(
    data_root: Path, isolation: str
) -> None:
    """A keepalive or TCP timeout the database URL sets is kept as given (SQLAlchemy's
    ``postgres://`` form too); the others get the defaults."""
    marker = f"m_{uuid.uuid4().hex[:10]}"
    url = pg_url().replace("postgresql://", "postgres://", 1)
    url += "?keepalives_idle=7&tcp_user_timeout=1234"
    sup = Supervisor(Settings())
    catalog = _catalog(data_root, url, isolation, marker)
    if isolation == "sandbox":
        await sup.start(catalog)
    runner = SandboxRunner(sup)
    try:
        assert await _options_while_running(runner, catalog, marker) == {
            **_DEFAULTS,
            "keepalives_idle": 7,
            "tcp_user_timeout": 1234,
        }
    finally:
        await runner.aclose()
        await sup.aclose()
