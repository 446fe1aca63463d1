"""Deleting a thread while a run starts or goes on it: the run is refused or cancelled,
never reported as "the gateway stopped during the run" (``interrupted``)."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import GatewayServer, ServerFactory

from gateway.engine.replay import THREAD_DELETED
from gateway.errors import NotFound
from tests._pg import pg_url


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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The server's store: its own SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return {}
    return {"GATEWAY_DATABASE_URL": request.getfixturevalue("shared_database")}


async def _chat_during_delete(server: GatewayServer, thread_id: str) -> dict[str, Any]:
    """Start a run on ``thread_id`` and delete the thread while the run reads the thread.

    The delete is ordered by hand (its store call waits until ``start_run`` returned or
    raised): the run looked the thread up before the delete, and is stored before the
    delete reaches the store. That window was open: the run was stored, then deleted
    under it, and it called the model on a thread being deleted.
    """
    engine, store = server.services.the_engine(), server.services.the_store()
    real_delete = store.delete_thread
    chat = asyncio.ensure_future(
        engine.start_run(thread_id=thread_id, message="please wait 1 seconds (slow)")
    )

    async def delete_after_start(thread: str) -> bool:
        await asyncio.wait({chat})
        return await real_delete(thread)

    store.delete_thread = delete_after_start  # type: ignore[method-assign]
    try:
        deleted = await engine.delete_thread(thread_id)
    finally:
        store.delete_thread = real_delete  # type: ignore[method-assign]
    outcome: dict[str, Any] = {"deleted": deleted}
    try:
        handle = await chat
    except NotFound as exc:
        outcome["refused"] = exc.message
        return outcome
    result = await handle.result()
    outcome["error"] = None if result.error is None else result.error.type
    return outcome


def test_a_run_starting_while_its_thread_is_deleted_is_refused(
    gateway_server: ServerFactory, api_manifests: Path, store_env: dict[str, str]
) -> None:
    """A run that found its thread just before a DELETE of it began is refused (404, the
    thread is going) instead of being stored, deleted under it, and failing as
    ``interrupted`` ("the gateway stopped during the run"), as 0-6 of 60 racing pairs did
    on PostgreSQL."""
    server = gateway_server(api_manifests, env=store_env)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        thread = client.get("/start", params={"assistant": "helper"}).json()["thread_id"]
        outcome = server.call(_chat_during_delete(server, thread))
        assert outcome == {"deleted": True, "refused": f"thread {thread!r} not found"}
        assert client.get(f"/threads/{thread}/messages").status_code == 404


def test_a_run_whose_thread_is_deleted_ends_cancelled_saying_so(
    gateway_server: ServerFactory, api_manifests: Path, store_env: dict[str, str]
) -> None:
    """DELETE of a thread whose run goes on this replica cancels the run first: its
    stream ends ``cancelled`` saying the thread was deleted, and the thread is gone."""
    server = gateway_server(api_manifests, env=store_env)
    body = {"assistant": "helper", "message": "please wait 5 seconds (slow)", "stream": True}
    with httpx.stream("POST", f"{server.url}/chat", json=body, timeout=30) as stream:
        lines = stream.iter_lines()
        ids: dict[str, str] = {}
        for line in lines:
            if line.startswith("data: ") and not ids:
                ids = json.loads(line.removeprefix("data: "))
            if line == "event: thread.run.step.created":
                break
        deleted = httpx.delete(f"{server.url}/threads/{ids['thread_id']}", timeout=30)
        assert deleted.status_code == 204
        assert _failure(lines) == {"type": "cancelled", "message": THREAD_DELETED["message"]}
    assert httpx.get(f"{server.url}/threads/{ids['thread_id']}/messages").status_code == 404


@pytest.mark.postgres
def test_a_run_whose_thread_another_replica_deletes_ends_cancelled(
    gateway_server: ServerFactory, api_manifests: Path, shared_database: str
) -> None:
    """Replica B deletes a thread whose run goes on replica A: A's stream and B's follower
    end the run ``cancelled`` (its thread was deleted); both said ``interrupted``, "the
    gateway stopped during the run", though no gateway stopped."""
    env = {"GATEWAY_DATABASE_URL": shared_database, "GATEWAY_EVENT_FLUSH_MS": "20"}
    a = gateway_server(api_manifests, env=env)
    b = gateway_server(api_manifests, env=env)
    body = {"assistant": "helper", "message": "please wait 1 seconds (slow)", "stream": True}
    ids: dict[str, str] = {}
    ends: dict[str, dict[str, Any]] = {}

    following = threading.Event()

    def follow_on_b() -> None:
        url = f"{b.url}/threads/{ids['thread_id']}/runs/{ids['run_id']}/events"
        with httpx.stream("GET", url, timeout=30) as events:
            assert events.status_code == 200
            lines = events.iter_lines()
            next(lines)  # B follows the run (its stream began) before the delete
            following.set()
            ends["b"] = _failure(lines)

    with httpx.stream("POST", f"{a.url}/chat", json=body, timeout=30) as stream:
        lines = stream.iter_lines()
        for line in lines:
            if line.startswith("data: ") and not ids:
                ids = json.loads(line.removeprefix("data: "))
            if line == "event: thread.run.step.created":
                break
        follower = threading.Thread(target=follow_on_b)
        follower.start()
        assert following.wait(30)
        deleted = httpx.delete(f"{b.url}/threads/{ids['thread_id']}", timeout=30)
        assert deleted.status_code == 204
        ends["a"] = _failure(lines)
    follower.join(30)
    for replica in ("a", "b"):
        assert ends[replica]["type"] == "cancelled", (replica, ends)
        assert "deleted" in ends[replica]["message"], (replica, ends)


def _failure(lines: Iterator[str]) -> dict[str, Any]:
    """The error of the ``thread.run.failed`` event among the SSE ``lines`` (read to the end)."""
    event, failure = "", {}
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "thread.run.failed":
            failure = json.loads(line.removeprefix("data: "))["error"]
    return failure


async def _second_cancel_while_settling(
    server: GatewayServer, thread_id: str, run_id: str, second: str
) -> tuple[bool, ...]:
    """Delete ``thread_id`` and, while its run settles its cancelled tool call, cancel it
    again (a second DELETE, or ``second == "cancel"``: a cancel); the results of both.

    The settle is held until the second request has been made, so the second cancel
    lands in it every time (it did for 2 of 40 racing pairs by chance).
    """
    engine = server.services.the_engine()
    body = engine._bodies[run_id]
    settle = body._settle_pending
    settling, release = asyncio.Event(), asyncio.Event()

    async def held_settle() -> None:
        settling.set()
        await release.wait()
        await settle()

    body._settle_pending = held_settle  # type: ignore[method-assign]
    first = asyncio.ensure_future(engine.delete_thread(thread_id))
    await asyncio.wait_for(settling.wait(), 10)
    again = (
        engine.cancel(thread_id, run_id) if second == "cancel" else engine.delete_thread(thread_id)
    )
    other = asyncio.ensure_future(again)
    for _ in range(5):  # the second request reaches its wait on the run
        await asyncio.sleep(0)
    release.set()
    results = await asyncio.wait_for(asyncio.gather(first, other, return_exceptions=True), 10)
    return tuple(result if isinstance(result, bool) else False for result in results)


@pytest.mark.parametrize("second", ["delete", "cancel"])
def test_a_second_cancel_while_the_run_settles_does_not_hang_the_deletes(
    gateway_server: ServerFactory, api_manifests: Path, second: str
) -> None:
    """A second DELETE (or a cancel) of a thread whose run is settling its cancelled tool
    call after a first DELETE: both return and the run ends cancelled, where the second
    cancel broke the shielded settle, the run never stored its end, and both requests
    waited for it forever (the run stayed ``in_progress`` until a restart)."""
    server = gateway_server(api_manifests)
    body = {"assistant": "helper", "message": "please wait 5 seconds (slow)", "stream": True}
    with httpx.stream("POST", f"{server.url}/chat", json=body, timeout=30) as stream:
        lines = stream.iter_lines()
        ids: dict[str, str] = {}
        for line in lines:
            if line.startswith("data: ") and not ids:
                ids = json.loads(line.removeprefix("data: "))
            if line == "event: thread.run.step.created":
                break
        outcome = server.call(
            _second_cancel_while_settling(server, ids["thread_id"], ids["run_id"], second),
            timeout=20,
        )
        assert outcome[0] is True
        assert _failure(lines)["type"] == "cancelled"
    assert httpx.get(f"{server.url}/threads/{ids['thread_id']}/messages").status_code == 404
    assert server.services.the_engine().active_runs == 0
