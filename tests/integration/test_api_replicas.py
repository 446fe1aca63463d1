"""Two `gateway serve` processes sharing PostgreSQL: a replica killed mid-run frees its thread,
and a run executing on one replica is followed live from the other."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from httpx_sse import connect_sse

from gateway.testing.fake_openai import FakeOpenAI
from tests._pg import pg_url
from tests._serve import serve, wait_ready

pytestmark = pytest.mark.postgres

LEASE = 0.5
_LEASE_ENV = {"GATEWAY_RUN_LEASE": str(LEASE)}


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
    a, a_url = serve(api_manifests, shared_database, tmp_path, _LEASE_ENV)
    b, b_url = serve(api_manifests, shared_database, tmp_path, _LEASE_ENV)
    try:
        wait_ready(a, a_url)
        wait_ready(b, b_url)
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


Frame = tuple[str, str, dict[str, Any]]  # (SSE id, event, data)


def _frames(
    url: str, *, method: str = "GET", params: dict[str, Any] | None = None, **kwargs: Any
) -> Iterator[Frame]:
    """The SSE frames of ``url`` as they arrive (the connection closes when the caller stops)."""
    with (
        httpx.Client(timeout=30) as client,
        connect_sse(client, method, url, params=params, **kwargs) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        for sse in source.iter_sse():
            yield sse.id, sse.event, sse.json()


def _status(database_url: str, run_id: str) -> tuple[str, bool]:
    """The run's stored status, and whether its final event log is stored yet."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()
        final = conn.execute("SELECT 1 FROM run_events WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None
    return row[0], final is not None


def _fake_manifests(root: Path, base_url: str) -> Path:
    manifests = root / "fake-manifests"
    manifests.mkdir(parents=True)
    (manifests / "fake.yaml").write_text(
        f"""
kind: provider
name: fake
base_url: {base_url}
api_key: test-key
api: chat
max_retries: 0
---
kind: assistant
name: streamer
provider: fake
model: fake-model
"""
    )
    return manifests


def test_a_run_on_one_replica_is_followed_live_from_the_other(
    tmp_path: Path, shared_database: str
) -> None:
    """A slow stream on replica A, followed over SSE on replica B: B shows text deltas while the
    run is still in progress, with A's sequence numbers, and resumes with ?after= on B."""
    with FakeOpenAI() as fake:
        fake.delay(0, between_chunks=0.1)  # 40 deltas: about 4 s of streaming
        fake.add_text(" ".join(f"word{n}" for n in range(40)))
        manifests = _fake_manifests(tmp_path, fake.base_url)
        env = {"GATEWAY_EVENT_FLUSH_MS": "50", **_LEASE_ENV}
        a, a_url = serve(manifests, shared_database, tmp_path, env)
        b, b_url = serve(manifests, shared_database, tmp_path, env)
        try:
            wait_ready(a, a_url)
            wait_ready(b, b_url)
            on_a: list[Frame] = []
            created = threading.Event()

            def chat_on_a() -> None:
                body = {"assistant": "streamer", "message": "stream slowly", "stream": True}
                for frame in _frames(f"{a_url}/chat", method="POST", json=body):
                    on_a.append(frame)
                    if frame[1] == "thread.run.created":
                        created.set()

            owner = threading.Thread(target=chat_on_a, daemon=True)
            owner.start()
            assert created.wait(30), "replica A did not start the run"
            thread_id, run_id = on_a[0][2]["thread_id"], on_a[0][2]["run_id"]
            events = f"{b_url}/threads/{thread_id}/runs/{run_id}/events"

            # Follow on B until the first text delta: the run must still be going.
            first_part: list[Frame] = []
            for frame in _frames(events):
                first_part.append(frame)
                if frame[1] == "thread.message.delta" and len(first_part) >= 3:
                    assert _status(shared_database, run_id) == ("in_progress", False)
                    break
            assert first_part[-1][1] == "thread.message.delta", first_part
            after = int(first_part[-1][0].rpartition(":")[2])

            # Resume on B after what it showed (the client went away and came back).
            resumed: list[Frame] = []
            for frame in _frames(events, params={"after": after}):
                if not resumed:  # the resumed stream too starts while the run goes on
                    assert _status(shared_database, run_id) == ("in_progress", False)
                resumed.append(frame)
            owner.join(30)
            assert not owner.is_alive()
            assert resumed[0][0] == f"{run_id}:{after + 1}"
            assert first_part + resumed == on_a
            assert [frame[0] for frame in on_a] == [
                f"{run_id}:{n}" for n in range(1, len(on_a) + 1)
            ]
            deltas = [frame for frame in on_a if frame[1] == "thread.message.delta"]
            assert len(deltas) == 40 and on_a[-1][1] == "done"

            # Following on A and replaying on B afterwards show the very same frames.
            assert list(_frames(f"{a_url}/threads/{thread_id}/runs/{run_id}/events")) == on_a
            assert list(_frames(events)) == on_a
            assert list(_frames(events, headers={"Last-Event-ID": f"{run_id}:{after}"})) == resumed
        finally:
            for proc in (a, b):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
                    proc.wait(20)
