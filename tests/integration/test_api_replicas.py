"""Two `gateway serve` processes sharing PostgreSQL: a replica killed mid-run frees its thread."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests._pg import pg_url

pytestmark = pytest.mark.postgres

LEASE = 0.5


def _serve(manifests: Path, database_url: str, cwd: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `gateway serve` in its own session; returns the process and its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_RUN_LEASE": str(LEASE),
        "GATEWAY_WATCH": "false",
        "LOGGING_LEVEL": "WARNING",
    }
    for var in ("GATEWAY_API_KEYS", "GATEWAY_ADMIN_KEYS", "ENVIRONMENT", "GATEWAY_MANIFESTS"):
        env.pop(var, None)
    command = [sys.executable, "-c", "from gateway.cli import main; main()"]
    command += ["serve", "--port", str(port), "--manifests", str(manifests)]
    proc = subprocess.Popen(command, env=env, cwd=cwd, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def _wait_ready(proc: subprocess.Popen[bytes], url: str) -> None:
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


@pytest.fixture
def shared_database() -> Iterator[str]:
    """A libpq URL over a fresh schema of the test database, dropped afterwards."""
    url = pg_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield f"{url}?options=-csearch_path%3D{schema}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_replica_killed_mid_run_frees_its_thread_after_the_lease(
    api_manifests: Path, tmp_path: Path, shared_database: str
) -> None:
    """SIGKILL replica A mid-run: B refuses the thread until A's lease lapses, then runs on it,
    and A's run reads as failed (interrupted)."""
    a, a_url = _serve(api_manifests, shared_database, tmp_path)
    b, b_url = _serve(api_manifests, shared_database, tmp_path)
    try:
        _wait_ready(a, a_url)
        _wait_ready(b, b_url)
        ids: dict[str, str] = {}
        body = {"assistant": "helper", "message": "please wait 20 seconds (slow)", "stream": True}
        with httpx.stream("POST", f"{a_url}/chat", json=body, timeout=30) as stream:
            event = ""
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line.removeprefix("event: ")
                elif line.startswith("data: ") and event == "thread.run.created":
                    ids = json.loads(line.removeprefix("data: "))
                elif event == "thread.run.step.created":
                    break
        assert ids and event == "thread.run.step.created"
        os.killpg(a.pid, signal.SIGKILL)
        a.wait(10)
        killed = time.monotonic()

        again = {"thread_id": ids["thread_id"], "message": "hello again"}
        assert httpx.post(f"{b_url}/chat", json=again, timeout=30).status_code == 409
        while True:
            answer = httpx.post(f"{b_url}/chat", json=again, timeout=30)
            if answer.status_code != 409:
                break
            assert time.monotonic() - killed < LEASE + 5, "the thread stayed busy"
            time.sleep(0.1)
        assert answer.status_code == 200, answer.text
        assert answer.json()["thread_id"] == ids["thread_id"]

        events = httpx.get(
            f"{b_url}/threads/{ids['thread_id']}/runs/{ids['run_id']}/events", timeout=30
        ).text
        assert "event: thread.run.failed" in events and '"interrupted"' in events
        cancel = httpx.post(
            f"{b_url}/threads/{ids['thread_id']}/runs/{ids['run_id']}/cancel", timeout=30
        )
        assert cancel.status_code == 200 and cancel.json()["status"] == "failed"
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(20)
