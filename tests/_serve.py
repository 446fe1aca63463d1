"""Test helper: `gateway serve` as a real process (its own session) on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

__all__ = ["serve", "wait_ready"]


def serve(
    manifests: Path,
    database_url: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    *,
    capture: bool = False,
    port: int | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start `gateway serve` in its own session; returns the process and its base URL.

    No keys, no file watching, warnings only; ``env`` adds or overrides variables.
    ``capture``: its log (stdout and stderr) goes to ``proc.stdout``. ``port``:
    default, a free one.
    """
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_WATCH": "false",
        "LOGGING_LEVEL": "WARNING",
        **(env or {}),
    }
    for var in ("GATEWAY_API_KEYS", "GATEWAY_ADMIN_KEYS", "ENVIRONMENT", "GATEWAY_MANIFESTS"):
        env.pop(var, None)
    command = [sys.executable, "-c", "from gateway.cli import main; main()"]
    command += ["serve", "--port", str(port), "--manifests", str(manifests)]
    output = subprocess.PIPE if capture else None
    proc = subprocess.Popen(
        command,
        env=env,
        cwd=cwd,
        start_new_session=True,
        stdout=output,
        stderr=subprocess.STDOUT if capture else None,
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
    """Wait (up to 30 s) until ``url``/ready answers 200; fail if the process exits first."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, "serve exited"
        assert time.monotonic() < deadline, "serve did not become ready"
        time.sleep(0.05)
