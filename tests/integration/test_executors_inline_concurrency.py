"""``GATEWAY_INLINE_CONCURRENCY``: the global cap of inline calls and the FIFO queue behind it.

Real parts only: the real ``SandboxRunner`` and ``InlineExecutor`` calling a
real threaded HTTP server on 127.0.0.1 whose requests block until the test
lets them go, so what is in flight is observed at the server itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from httpx_sse import connect_sse
from structlog.testing import capture_logs

from gateway.executors.base import ToolResult
from gateway.executors.http import HttpConfig
from gateway.executors.inline import InlineExecutor
from gateway.executors.runner import SandboxRunner
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings
from tests._http import serving

if TYPE_CHECKING:
    from tests.integration.conftest import ServerFactory

_WAIT = 20.0  # seconds a condition may take on a loaded machine before the test gives up


class Gate:
    """The server side: which calls arrived, how many are inside now, and the gate they wait at."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = threading.Semaphore(0)
        self.arrived: list[int] = []
        self.inside = 0
        self.most_inside = 0

    def enter(self, call: int) -> None:
        with self._lock:
            self.arrived.append(call)
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)

    def wait(self) -> None:
        self._open.acquire(timeout=_WAIT)  # never hang the server thread past the test

    def leave(self) -> None:
        with self._lock:
            self.inside -= 1

    def let_go(self, n: int = 1) -> None:
        """Let ``n`` blocked (or future) requests answer."""
        self._open.release(n)


def _handler(gate: Gate) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            call = int(query["call"][0])
            gate.enter(call)
            try:
                gate.wait()
            finally:
                gate.leave()
            body = json.dumps({"call": call}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@pytest.fixture
def gate() -> Iterator[tuple[Gate, str]]:
    """A fresh gate and the URL of a server whose every request waits at it."""
    gate = Gate()
    with serving(_handler(gate), quiet=True) as url:
        try:
            yield gate, url
        finally:
            gate.let_go(1000)  # nothing stays blocked after a failed test


def _catalog(url: str, **timeouts: float) -> Catalog:
    """One inline http action per name in ``timeouts``, each GETting ``url/block?call=N``."""
    root = Path(tempfile.gettempdir())
    actions = {
        name: Action(
            name=name,
            description="d",
            kind_key="http",
            config=HttpConfig(url=url + "/block", query={"call": "{{ call }}"}),
            isolation="inline",
            timeout=timeout,
            parameters={
                "type": "object",
                "properties": {"call": {"type": "integer"}},
                "required": ["call"],
            },
        )
        for name, timeout in timeouts.items()
    }
    return Catalog(
        version=uuid.uuid4().hex[:8], root=root, gateway_root=root, loaded_at=0, actions=actions
    )


@contextlib.asynccontextmanager
async def _runner(concurrency: int) -> AsyncIterator[tuple[SandboxRunner, InlineExecutor]]:
    inline = InlineExecutor(concurrency=concurrency)
    runner = SandboxRunner(Supervisor(Settings()), environ={}, inline=inline)
    try:
        yield runner, inline
    finally:
        await runner.aclose()


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait (polling) until ``condition()`` holds; fail naming ``what`` if it never does."""
    deadline = time.monotonic() + _WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        await asyncio.sleep(0.01)


async def _settle() -> None:
    """Give calls that should not start a real chance to (wrongly) reach the server."""
    await asyncio.sleep(0.3)


async def _start(
    runner: SandboxRunner, inline: InlineExecutor, catalog: Catalog, name: str, call: int
) -> asyncio.Task[ToolResult]:
    """Start call ``call`` and wait until it holds a slot or is queued (so order is known)."""
    before = inline.in_flight + inline.queued
    task = asyncio.create_task(runner.run(catalog, name, {"call": call}))
    await _until(lambda: inline.in_flight + inline.queued == before + 1, f"call {call} admitted")
    return task


async def test_at_most_n_inline_calls_reach_the_server_and_the_rest_wait_in_order(
    gate: tuple[Gate, str],
) -> None:
    """With the cap at N, N+k calls: exactly N are at the server at once, the rest start FIFO."""
    server, url = gate
    n, k = 3, 4
    catalog = _catalog(url, block=60)
    async with _runner(n) as (runner, inline):
        tasks = [await _start(runner, inline, catalog, "block", i) for i in range(n + k)]
        await _until(lambda: server.inside == n, f"{n} calls at the server")
        await _settle()
        assert sorted(server.arrived) == list(range(n)), server.arrived
        assert (inline.in_flight, inline.queued) == (n, k)
        for released in range(k):  # each answer lets exactly the oldest waiter in
            server.let_go()
            await _until(lambda r=released: len(server.arrived) == n + r + 1, "the next call")
            assert server.arrived[-1] == n + released, server.arrived
            assert server.inside <= n
        server.let_go(n)
        results = await asyncio.gather(*tasks)
    assert [r.status for r in results] == ["succeeded"] * (n + k), results
    assert [json.loads(r.output)["call"] for r in results] == list(range(n + k))
    assert server.most_inside == n
    assert (inline.in_flight, inline.queued) == (0, 0)


async def test_a_call_queued_past_its_timeout_times_out_and_never_runs(
    gate: tuple[Gate, str],
) -> None:
    """A queued call whose timeout passes fails with ``timeout`` and never reaches the server."""
    server, url = gate
    catalog = _catalog(url, block=60, short=0.5)
    async with _runner(1) as (runner, inline):
        holder = await _start(runner, inline, catalog, "block", 0)
        await _until(lambda: server.arrived == [0], "the first call at the server")
        with capture_logs() as logs:
            late = await runner.run(catalog, "short", {"call": 1})
        assert late.status == "timed_out" and late.error_type == "timeout", late
        assert "did not run" in json.loads(late.output)["error"]["message"]
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
            "executors.inline_queue_timeout"
        ]
        assert (inline.in_flight, inline.queued) == (1, 0)
        server.let_go()
        assert (await holder).status == "succeeded"
        server.let_go()
        assert (await runner.run(catalog, "block", {"call": 2})).status == "succeeded"
    assert server.arrived == [0, 2]  # call 1 never ran
    assert (inline.in_flight, inline.queued) == (0, 0)


async def test_a_cancelled_queued_call_frees_nothing_and_the_cap_still_holds(
    gate: tuple[Gate, str],
) -> None:
    """Cancelling a queued call removes it from the queue; the cap is still N afterwards."""
    server, url = gate
    n = 2
    catalog = _catalog(url, block=60)
    async with _runner(n) as (runner, inline):
        holders = [await _start(runner, inline, catalog, "block", i) for i in range(n)]
        await _until(lambda: server.inside == n, f"{n} calls at the server")
        waiting = await _start(runner, inline, catalog, "block", 99)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert (inline.in_flight, inline.queued) == (n, 0)
        later = [await _start(runner, inline, catalog, "block", n + i) for i in range(n)]
        await _settle()
        assert server.inside == n and sorted(server.arrived) == list(range(n)), server.arrived
        assert (inline.in_flight, inline.queued) == (n, n)
        server.let_go(2 * n)
        results = await asyncio.gather(*holders, *later)
    assert [r.status for r in results] == ["succeeded"] * (2 * n), results
    assert 99 not in server.arrived and server.most_inside == n
    assert (inline.in_flight, inline.queued) == (0, 0)


async def test_a_call_cancelled_while_running_gives_its_slot_to_the_next(
    gate: tuple[Gate, str],
) -> None:
    """Cancelling a running inline call (a cancelled run) hands its slot to the oldest waiter."""
    server, url = gate
    catalog = _catalog(url, block=60)
    async with _runner(1) as (runner, inline):
        running = await _start(runner, inline, catalog, "block", 0)
        await _until(lambda: server.arrived == [0], "the first call at the server")
        queued = await _start(runner, inline, catalog, "block", 1)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await _until(lambda: server.arrived == [0, 1], "the queued call at the server")
        assert (inline.in_flight, inline.queued) == (1, 0)
        server.let_go(2)
        assert (await queued).status == "succeeded"
    assert (inline.in_flight, inline.queued) == (0, 0)


ORDERS_YAML = """\
kind: action
name: fetch_order
description: Fetch one order by its number.
isolation: inline
timeout: 60
parameters:
  type: object
  properties: {{call: {{type: integer}}}}
  required: [call]
http:
  url: {url}/block
  query: {{call: "{{{{ call }}}}"}}
---
kind: assistant
name: orders
description: Fetches orders.
actions: [fetch_order]
"""


def _gauge(metrics: str, name: str) -> float:
    prefix = f'{name}{{isolation="inline"}} '
    [line] = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


def _start_run(client: httpx.Client, message: str) -> tuple[str, str]:
    """Start a run over SSE, leave once its tool call started; its (thread id, run id)."""
    body = {"assistant": "orders", "message": message, "stream": True}
    with connect_sse(client, "POST", "/chat", json=body) as source:
        events = source.iter_sse()
        created = next(events).json()
        assert next(events).event == "thread.run.step.created"
    return created["thread_id"], created["run_id"]


def _poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + _WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.02)


def test_a_cancelled_run_leaves_the_queue_and_metrics_show_it(
    gate: tuple[Gate, str], gateway_server: ServerFactory, tmp_path: Path
) -> None:
    """Through the server: a run queued behind the cap, once cancelled, leaves the queue."""
    server, url = gate
    (tmp_path / "orders.yaml").write_text(ORDERS_YAML.format(url=url))
    gateway = gateway_server(tmp_path, env={"GATEWAY_INLINE_CONCURRENCY": "1"})
    with httpx.Client(base_url=gateway.url, timeout=30) as client:

        def gauges() -> tuple[float, float]:
            text = client.get("/metrics").text
            return (
                _gauge(text, "gateway_tool_calls_in_flight"),
                _gauge(text, "gateway_tool_calls_queued"),
            )

        holder = _start_run(client, "fetch order 7")
        _poll(lambda: server.arrived == [7], "the first call at the server")
        thread, queued = _start_run(client, "fetch order 8")
        _poll(lambda: gauges() == (1, 1), "one inline call in flight and one queued")
        cancelled = client.post(f"/threads/{thread}/runs/{queued}/cancel")
        assert cancelled.json()["status"] == "cancelled", cancelled.text
        _poll(lambda: gauges() == (1, 0), "the cancelled call out of the queue")
        server.let_go()
        with connect_sse(client, "GET", f"/threads/{holder[0]}/runs/{holder[1]}/events") as source:
            done = [e for e in source.iter_sse() if e.event == "thread.run.step.completed"]
        assert done[0].json()["tool_call"]["status"] == "succeeded", done[0].data
        assert gauges() == (0, 0)
    assert server.arrived == [7]  # the cancelled run's call never ran
