"""How ``gateway serve`` runs uvicorn: draining the gateway's runs before it shuts down.

Imports uvicorn and ``gateway.app`` (for ``drain``); imported by ``serve`` only.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from typing import cast

import uvicorn
from litestar import Litestar

from gateway.app import drain

__all__ = ["run_server"]

STARTUP_FAILURE = 3  # uvicorn's exit status when the server never started


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, draining the gateway's runs (``gateway.app.drain``) on SIGTERM/SIGINT
    before uvicorn closes the port and the connections.

    uvicorn alone closed every WebSocket with 1012 at once and, after its graceful
    timeout, cut the SSE streams of runs still going mid-body (an incomplete chunked
    read, a traceback in the log); the runs were cancelled only after that.
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Drain, then uvicorn's shutdown (a second Ctrl-C skips the drain's wait)."""
        if not self.force_exit:
            await drain(cast("Litestar", self.config.app), forced=lambda: self.force_exit)
        await super().shutdown(sockets)


def run_server(config: uvicorn.Config) -> None:
    """Serve until SIGTERM/SIGINT, as ``uvicorn.run`` does, draining first.

    Exits 3 when the server never started (its port taken, the lifespan failed).
    """
    server = _DrainingServer(config)
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT, re-raised by uvicorn at the end
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
