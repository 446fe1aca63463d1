"""A threaded HTTP server on a free loopback port, for tests that need a real peer."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out hangs up before a slow answer: expected, not printed."""


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler], *, quiet: bool = False) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 in daemon threads; yield the base URL.

    ``quiet``: do not print the tracebacks of clients that hang up early.
    """
    httpd = (_QuietServer if quiet else ThreadingHTTPServer)(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
