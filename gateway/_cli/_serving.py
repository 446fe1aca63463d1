"""How ``gateway serve`` runs uvicorn: draining the gateway's runs before it shuts down.

Imports uvicorn and ``gateway.app`` (for ``drain``); imported by ``serve`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, cast

import structlog
import uvicorn
from litestar import Litestar
from uvicorn.server import HANDLED_SIGNALS

from gateway.app import drain

if TYPE_CHECKING:
    from gateway.api.services import Services

__all__ = ["run_server"]

STARTUP_FAILURE = 3  # uvicorn's exit status when the server never started

log = structlog.get_logger("gateway.serve")


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, draining the gateway's runs (``gateway.app.drain``) on SIGTERM/SIGINT
    before uvicorn closes the port and the connections.

    uvicorn alone closed every WebSocket with 1012 at once and, after its graceful
    timeout, cut the SSE streams of runs still going mid-body (an incomplete chunked
    read, a traceback in the log); the runs were cancelled only after that.
    """

    signalled = False  # a SIGTERM/SIGINT asked the server to stop
    _loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's ``serve``, remembering its loop for ``handle_exit``."""
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """uvicorn's handler, also telling the gateway (``Services.stopping``): a start-up
        still in progress (waiting for PostgreSQL) gives up at once."""
        self.signalled = True
        super().handle_exit(sig, frame)
        services: Services = cast("Litestar", self.config.app).state["services"]
        if self._loop is not None:
            self._loop.call_soon_threadsafe(services.stopping.set)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's handlers for SIGINT/SIGTERM while serving, without raising the signal
        again once the server stopped: a drained shutdown exits 0 (uvicorn's re-raised
        SIGTERM killed the process, exit status 143 after a clean stop)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain, then uvicorn's shutdown (a second Ctrl-C skips the drain's wait)."""
        if not self.force_exit:
            await drain(cast("Litestar", self.config.app), forced=lambda: self.force_exit)
        await super().shutdown(sockets)


def run_server(config: uvicorn.Config) -> None:
    """Serve until SIGTERM/SIGINT, as ``uvicorn.run`` does, draining first; exit 0 after.

    The port is bound before anything starts: a second gateway on a taken port
    stops at once (one ``gateway.startup_failed`` line, exit 3) instead of first
    opening the thread store, which with SQLite marked the running gateway's runs
    in progress as failed (``interrupted``).
    Exits 3 when the server never started (its port taken, the lifespan failed), 0
    when it stopped by a signal, also during its start-up.
    """
    try:
        sockets = _bind(config.host, config.port)
    except OSError as exc:
        host = f"[{config.host}]" if ":" in config.host else config.host
        where = f"{host}:{config.port}"
        reason = exc.strerror or str(exc)
        log.error("gateway.startup_failed", error=f"--port / GATEWAY_PORT: {where}: {reason}")
        sys.exit(STARTUP_FAILURE)
    server = _DrainingServer(config)
    try:
        server.run(sockets=sockets)
    except SystemExit:  # uvicorn's exit 3 when the lifespan start-up failed
        if not server.signalled:
            raise
    if not server.started and not server.signalled:
        sys.exit(STARTUP_FAILURE)


def _bind(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address ``host`` resolves to, as
    asyncio's ``create_server`` would make them; connections are refused until uvicorn
    listens on them, after the lifespan started.

    Raises:
        OSError: the name does not resolve, or an address is in use or not ours.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets
