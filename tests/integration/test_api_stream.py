"""Streams on a real server: SSE framing, heartbeats, resume, cancel, 409, WebSocket, 502, load."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import structlog
import websockets
from conftest import GatewayServer, ServerFactory
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse
from structlog.testing import LogCapture, capture_logs

from gateway.testing.fake_openai import FakeOpenAI, FakeReply, FakeToolCall, RecordedRequest
from tests._fake import write_remote

RUN_EVENTS = [
    "thread.run.created",
    "thread.run.step.created",
    "thread.run.step.completed",
    "thread.message.delta",
    "thread.message.completed",
    "thread.run.completed",
    "metadata",
    "done",
]


def raw_frames(text: str) -> list[str]:
    """The blank-line separated frames of an SSE body."""
    return [f for f in text.split("\n\n") if f]


def test_sse_framing(api_server: GatewayServer) -> None:
    """The stream opens with retry, then a keep-alive; ids are <run_id>:<seq>; done ends it."""
    with httpx.Client(base_url=api_server.url, timeout=30) as c:
        response = c.post(
            "/chat",
            json={"assistant": "helper", "message": "weather in Paris"},
            headers={"Accept": "text/event-stream"},
        )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert "gzip" not in response.headers.get("content-encoding", "")
    text = response.text
    assert text.startswith("retry: 5000\nevent: thread.run.created\n")
    frames = raw_frames(text)
    # A keep-alive comment line right after the first event (no blank line: nothing dispatched).
    assert frames[1].startswith(": keep-alive\nevent: ")
    frames[1] = frames[1].removeprefix(": keep-alive\n")
    events = []
    for seq, frame in enumerate(frames, start=1):
        lines = dict(line.split(": ", 1) for line in frame.split("\n"))
        lines.pop("retry", None)
        run_id, _, got_seq = lines["id"].rpartition(":")
        assert int(got_seq) == seq
        events.append(lines["event"])
        json.loads(lines["data"])
    assert run_id.startswith("run")
    assert [e for i, e in enumerate(events) if e not in events[:i]] == RUN_EVENTS
    assert events[-2:] == ["metadata", "done"]


def test_sse_with_stream_true_and_httpx_sse(api_server: GatewayServer) -> None:
    """ "stream": true alone selects SSE; httpx-sse reads every event in order."""
    with (
        httpx.Client(base_url=api_server.url, timeout=30) as c,
        connect_sse(
            c, "POST", "/chat", json={"assistant": "other", "message": "hi", "stream": True}
        ) as source,
    ):
        events = [(e.event, e.json()) for e in source.iter_sse()]
    names = [name for name, _ in events]
    assert names[0] == "thread.run.created"
    assert names[-1] == "done"
    text = "".join(data["delta"] for name, data in events if name == "thread.message.delta")
    completed = next(data for name, data in events if name == "thread.message.completed")
    assert text == completed["content"]
    assert "offline model" in text


def test_sse_heartbeat_while_a_tool_runs(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """A keep-alive comment goes out every GATEWAY_SSE_HEARTBEAT seconds while nothing happens."""
    server = gateway_server(api_manifests, env={"GATEWAY_SSE_HEARTBEAT": "0.2"})
    with httpx.Client(base_url=server.url, timeout=30) as c:
        body = {"assistant": "helper", "message": "wait 1.2 seconds", "stream": True}
        text = c.post("/chat", json=body).text
    assert text.count(": keep-alive\n") >= 4  # the first one plus one every 0.2 s of the wait
    assert raw_frames(text)[-1].startswith("event: done")


def _until_first_step(c: httpx.Client, body: dict[str, Any]) -> list[ServerSentEvent]:
    """Stream ``POST /chat`` and drop the connection at the run's first tool step (mid-run);
    the events read until then."""
    first = []
    with connect_sse(c, "POST", "/chat", json=body) as source:
        for event in source.iter_sse():
            first.append(event)
            if event.event == "thread.run.step.created":
                break
    return first


def test_resume_after_a_dropped_stream(api_server: GatewayServer) -> None:
    """A client that drops the stream resumes with Last-Event-ID; the run went on meanwhile."""
    with httpx.Client(base_url=api_server.url, timeout=30) as c:
        body = {"assistant": "helper", "message": "wait 0.5 seconds", "stream": True}
        first = _until_first_step(c, body)
        created = first[0].json()
        last_id = first[-1].id
        assert last_id == f"{created['run_id']}:2"
        url = f"/threads/{created['thread_id']}/runs/{created['run_id']}/events"
        with connect_sse(c, "GET", url, headers={"Last-Event-ID": last_id}) as source:
            rest = list(source.iter_sse())
        assert rest[0].id == f"{created['run_id']}:3"
        assert rest[0].event == "thread.run.step.completed"
        assert rest[-1].event == "done"
        assert "thread.run.completed" in [e.event for e in rest]
        # ?after= replays the same, and a finished run replays from the start.
        with connect_sse(c, "GET", url, params={"after": 0}) as source:
            replay = list(source.iter_sse())
        assert [e.id for e in replay] == [e.id for e in first] + [e.id for e in rest]
        bad = c.get(url, headers={"Last-Event-ID": "other-run:3"})
        assert bad.status_code == 400
        # Resuming from done itself (EventSource reconnects so) still ends with done.
        with connect_sse(c, "GET", url, headers={"Last-Event-ID": rest[-1].id}) as source:
            assert [(e.event, e.id) for e in source.iter_sse()] == [("done", rest[-1].id)]


def test_a_post_chat_retried_with_last_event_id_resumes_its_run(api_server: GatewayServer) -> None:
    """POST /chat sent again with Last-Event-ID (fetch-event-source retries so) resumes that run.

    Before, the retry was a 409 while the run went on, and a second run with the
    same message once it had ended.
    """
    with httpx.Client(base_url=api_server.url, timeout=30) as c:
        body = {"assistant": "helper", "message": "wait 1 seconds", "stream": True}
        first = _until_first_step(c, body)
        created = first[0].json()
        with connect_sse(
            c, "POST", "/chat", json=body, headers={"Last-Event-ID": first[-1].id}
        ) as source:
            assert source.response.status_code == 200
            rest = list(source.iter_sse())
        ids = [e.id for e in first + rest]
        assert ids == [f"{created['run_id']}:{seq}" for seq in range(1, len(ids) + 1)]
        assert rest[-1].event == "done"
        # Retried again after the end (with the thread now named): done, no second run.
        again = {**body, "thread_id": created["thread_id"]}
        with connect_sse(
            c, "POST", "/chat", json=again, headers={"Last-Event-ID": rest[-1].id}
        ) as source:
            assert [(e.event, e.id) for e in source.iter_sse()] == [("done", rest[-1].id)]
        messages = c.get(f"/threads/{created['thread_id']}/messages").json()
        assert [m["role"] for m in messages].count("user") == 1
        # An id that names no run of the thread is refused, naming the header.
        for sent, bad, status in (
            (again, "12", 400),
            (again, "run_nope:3", 404),
            (body, "x:3", 404),
        ):
            refused = c.post("/chat", json=sent, headers={"Last-Event-ID": bad})
            assert refused.status_code == status, refused.text
        assert "Last-Event-ID" in c.post("/chat", json=again, headers={"Last-Event-ID": "12"}).text


def test_an_eventsource_reconnecting_to_an_after_url_gets_no_event_twice(
    api_server: GatewayServer,
) -> None:
    """EventSource reconnects to the same ``?after=N`` URL with Last-Event-ID: the later wins."""
    with httpx.Client(base_url=api_server.url, timeout=30) as c:
        created = c.post("/chat", json={"assistant": "helper", "message": "weather in Oslo"}).json()
        run_id = created["run_id"]
        url = f"/threads/{created['thread_id']}/runs/{run_id}/events"
        headers = {"Last-Event-ID": f"{run_id}:5"}
        with connect_sse(c, "GET", url, params={"after": 2}, headers=headers) as source:
            assert next(source.iter_sse()).id == f"{run_id}:6"
        # A Last-Event-ID behind ?after= (sent by hand) does not rewind it either.
        headers = {"Last-Event-ID": f"{run_id}:1"}
        with connect_sse(c, "GET", url, params={"after": 2}, headers=headers) as source:
            assert next(source.iter_sse()).id == f"{run_id}:3"


def test_a_malformed_last_event_id_is_400(api_server: GatewayServer) -> None:
    """Last-Event-ID with non-ASCII digits (latin-1 "²") is a 400 naming the header, not a 500."""
    with httpx.Client(base_url=api_server.url, timeout=30) as c:
        created = c.post("/chat", json={"assistant": "other", "message": "hi"}).json()
        url = f"/threads/{created['thread_id']}/runs/{created['run_id']}/events"
        for value in (b"\xb2", created["run_id"].encode() + b":1\xb3", b":\xb9"):
            response = c.get(url, headers={"Last-Event-ID": value})
            assert response.status_code == 400, value
            error = response.json()["error"]
            assert error["type"] == "invalid_request"
            assert "Last-Event-ID" in error["message"]


def test_second_run_on_a_busy_thread_is_409_and_cancel_stops_it(api_server: GatewayServer) -> None:
    """While a run is active on a thread another is 409; cancel kills it and frees the thread."""
    with httpx.Client(base_url=api_server.url, timeout=30) as c:
        body = {"assistant": "helper", "message": "wait 20 seconds", "stream": True}
        with connect_sse(c, "POST", "/chat", json=body) as source:
            events = source.iter_sse()
            created = next(events).json()
            assert next(events).event == "thread.run.step.created"
        thread, run_id = created["thread_id"], created["run_id"]
        conflict = c.post("/chat", json={"thread_id": thread, "message": "hello again"})
        assert conflict.status_code == 409
        assert conflict.json()["error"]["type"] == "conflict"
        started = time.monotonic()
        cancelled = c.post(f"/threads/{thread}/runs/{run_id}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert time.monotonic() - started < 5  # the 20 s action was killed, not awaited
        url = f"/threads/{thread}/runs/{run_id}/events"
        with connect_sse(c, "GET", url) as source:
            names = [e.event for e in source.iter_sse()]
        assert names[-1] == "done"
        assert "thread.run.failed" in names
        assert c.post("/chat", json={"thread_id": thread, "message": "hello"}).status_code == 200


async def test_forty_concurrent_chats_on_forty_threads(api_server: GatewayServer) -> None:
    """40 SSE chats at once on 40 new threads all complete, each with its thread and tool call."""

    async def one(c: httpx.AsyncClient, i: int) -> tuple[str, list[str]]:
        body = {"assistant": "helper", "message": f"weather in City{i}", "stream": True}
        async with aconnect_sse(c, "POST", "/chat", json=body) as source:
            events = [(e.event, e.data) async for e in source.aiter_sse()]
        thread = json.loads(events[0][1])["thread_id"]
        return thread, [name for name, _ in events]

    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=api_server.url, timeout=60, limits=limits) as c:
        results = await asyncio.gather(*(one(c, i) for i in range(40)))
    assert len({thread for thread, _ in results}) == 40
    for _, names in results:
        assert names[-1] == "done"
        assert "thread.run.completed" in names
        assert "thread.run.step.completed" in names


async def test_websocket_many_exchanges_and_a_bad_frame(api_server: GatewayServer) -> None:
    """One WebSocket carries several runs; a bad frame gets an error event, the socket lives on."""
    async with websockets.connect(f"{api_server.ws_url}/ws/chat") as ws:
        await ws.send("{not json")
        bad = json.loads(await ws.recv())
        assert bad["event"] == "error"
        assert bad["data"]["type"] == "invalid_request"
        await ws.send(json.dumps({"thread_id": "new"}))
        assert json.loads(await ws.recv())["event"] == "error"
        # Hostile frames: nested past the decoder's depth, binary that is not UTF-8 JSON.
        for hostile in ("[" * 100_000, b"\xff\xfe binary"):
            await ws.send(hostile)
            reply = json.loads(await ws.recv())
            assert (reply["event"], reply["data"]["type"]) == ("error", "invalid_request")
        await ws.send(json.dumps({"message": "hi", "assistant": "bad name"}))
        assert json.loads(await ws.recv())["data"]["message"] == (
            "bad frame: Expected a name (1 to 64 letters, digits, '_' or '-') - at `$.assistant`"
        )
        await ws.send(json.dumps({"message": "hi", "assistant": "helper", "thread": "t"}))
        assert json.loads(await ws.recv())["data"]["message"] == (
            "bad frame: Object contains unknown field `thread`"
        )
        await ws.send(json.dumps({"message": "hi", "assistant": "ghost"}))
        ghost = json.loads(await ws.recv())
        assert ghost["data"]["type"] == "not_found"
        await ws.send(json.dumps({"message": "weather in Paris", "assistant": "helper"}))
        events = await _until_done(ws)
        assert events[0]["event"] == "thread.run.created"
        thread = events[0]["data"]["thread_id"]
        assert any(e["event"] == "thread.run.step.completed" for e in events)
        await ws.send(json.dumps({"thread_id": thread, "message": "and in Rome?"}))
        again = await _until_done(ws)
        assert again[0]["data"]["thread_id"] == thread
        # JSON in a binary frame (what many clients send by default) is a message too.
        await ws.send(json.dumps({"thread_id": thread, "message": "and in Oslo?"}).encode())
        created = json.loads(await ws.recv())
        assert created["event"] == "thread.run.created", created
        assert created["data"]["thread_id"] == thread
        assert (await _until_done(ws))[-1]["event"] == "done"


async def test_a_websocket_frame_after_a_byte_order_mark_gets_an_error_saying_so(
    api_server: GatewayServer,
) -> None:
    """A frame whose JSON follows a byte-order mark (text or binary) gets an error event
    saying a BOM was found, as an HTTP body does; it said "invalid character (byte 0)"."""
    frame = json.dumps({"assistant": "helper", "message": "hi"})
    async with websockets.connect(f"{api_server.ws_url}/ws/chat", max_queue=None) as ws:
        for sent in ("\ufeff" + frame, b"\xef\xbb\xbf" + frame.encode()):
            await ws.send(sent)
            reply = json.loads(await ws.recv())
            assert (reply["event"], reply["data"]["type"]) == ("error", "invalid_request")
            assert "byte-order mark" in reply["data"]["message"], reply
        await ws.send(frame)
        assert (await _until_done(ws))[0]["event"] == "thread.run.created"


async def test_a_utf16_websocket_frame_gets_an_error_asking_for_utf8(
    api_server: GatewayServer,
) -> None:
    """A binary frame in UTF-16 (either byte order) with its byte-order mark gets an
    error event naming the encoding and asking for UTF-8, as an HTTP body does; it said
    "invalid character (byte 0)"."""
    frame = json.dumps({"assistant": "helper", "message": "hi"})
    async with websockets.connect(f"{api_server.ws_url}/ws/chat", max_queue=None) as ws:
        for sent in (frame.encode("utf-16"), b"\xfe\xff" + frame.encode("utf-16-be")):
            await ws.send(sent)
            reply = json.loads(await ws.recv())
            assert (reply["event"], reply["data"]["type"]) == ("error", "invalid_request")
            assert "is UTF-16" in reply["data"]["message"], reply
            assert "must be UTF-8" in reply["data"]["message"], reply


async def test_websocket_disconnect_does_not_stop_the_run(api_server: GatewayServer) -> None:
    """A WebSocket client leaving mid-run leaves the run going; its answer is stored."""
    async with websockets.connect(f"{api_server.ws_url}/ws/chat", max_queue=None) as ws:
        await ws.send(json.dumps({"assistant": "helper", "message": "wait 0.5 seconds"}))
        created = json.loads(await ws.recv())["data"]
    async with httpx.AsyncClient(base_url=api_server.url) as c:
        for _ in range(100):
            roles = [
                m["role"] for m in (await c.get(f"/threads/{created['thread_id']}/messages")).json()
            ]
            if roles[-1:] == ["assistant"] and "tool" in roles:
                break
            await asyncio.sleep(0.05)
        assert roles == ["user", "assistant", "tool", "assistant"]


async def test_a_websocket_cut_mid_run_resumes_from_the_run_events(
    api_server: GatewayServer,
) -> None:
    """A run's nth WebSocket frame is its event n, so ?after=N resumes with no gap or repeat."""
    async with websockets.connect(f"{api_server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps({"assistant": "helper", "message": "wait 0.5 seconds"}))
        seen = [json.loads(await ws.recv()) for _ in range(2)]  # then the socket drops
    created = seen[0]["data"]
    url = f"/threads/{created['thread_id']}/runs/{created['run_id']}/events"
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as c:
        async with aconnect_sse(c, "GET", url, params={"after": len(seen)}) as source:
            rest = [e async for e in source.aiter_sse()]
        async with aconnect_sse(c, "GET", url) as source:
            whole = [e async for e in source.aiter_sse()]
    assert rest[0].id == f"{created['run_id']}:{len(seen) + 1}"
    assert [f["event"] for f in seen] + [e.event for e in rest] == [e.event for e in whole]
    assert [f["data"] for f in seen] == [e.json() for e in whole[: len(seen)]]


async def test_websocket_messages_sent_during_a_run_keep_the_socket_alive(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """Messages sent while a run streams wait their turn; the socket keeps answering pings.

    The server reads the socket all along: a frame left unread makes uvicorn stop
    reading, pongs included, and its keepalive closed the socket (1011) mid-run.
    """
    # Unread frames would end the socket after the 0.25 s ping's 1.5 s pong timeout: mid-run.
    server = gateway_server(api_manifests, ws_ping=(0.25, 1.5))
    async with websockets.connect(f"{server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps({"assistant": "helper", "message": "wait 3 seconds"}))
        assert json.loads(await ws.recv())["event"] == "thread.run.created"
        for message in ("first", "second"):
            await ws.send(json.dumps({"assistant": "other", "message": message}))
        runs = [await _until_done(ws) for _ in range(3)]
    assert [run[0]["event"] for run in runs[1:]] == ["thread.run.created"] * 2
    assert "thread.run.completed" in [e["event"] for e in runs[0]]
    assert all(run[-1]["event"] == "done" for run in runs)


async def test_websocket_refuses_messages_past_eight_waiting(api_server: GatewayServer) -> None:
    """Past 8 messages waiting behind a run, one more gets a rate_limited error event at once."""
    async with websockets.connect(f"{api_server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps({"assistant": "helper", "message": "wait 2 seconds"}))
        assert json.loads(await ws.recv())["event"] == "thread.run.created"
        for i in range(10):
            await ws.send(json.dumps({"assistant": "other", "message": f"hi {i}"}))
        frames = []
        while sum(f["event"] == "done" for f in frames) < 9:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    refused = [f["data"] for f in frames if f["event"] == "error"]
    assert [e["type"] for e in refused] == ["rate_limited"] * 2
    assert "8 messages are already queued" in refused[0]["message"]
    assert sum(f["event"] == "thread.run.created" for f in frames) == 8


async def test_websocket_waiting_frames_are_bounded_in_size(api_server: GatewayServer) -> None:
    """Behind a run, a frame that would take the waiting ones past 1 MiB is refused at once."""
    async with websockets.connect(f"{api_server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps({"assistant": "helper", "message": "wait 2 seconds"}))
        assert json.loads(await ws.recv())["event"] == "thread.run.created"
        big = "[" + " " * 700_000 + "]"  # not a message: answered invalid_request in its turn
        await ws.send(big)
        await ws.send(big)
        frames = []
        while sum(f["event"] == "error" for f in frames) < 2:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
    names = [f["event"] for f in frames]
    errors = [f["data"]["type"] for f in frames if f["event"] == "error"]
    assert errors == ["rate_limited", "invalid_request"]
    refused = next(f["data"]["message"] for f in frames if f["event"] == "error")
    assert "over 1048576 characters" in refused
    assert names.index("error") < names.index("done")  # refused at once, not after the run


async def test_websocket_logs_do_not_name_the_previous_run(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """A log line about a socket's second message never carries its first run's ids."""
    server = gateway_server(api_manifests)
    store = server.services.store
    assert store is not None

    async def broken(thread_id: str) -> None:
        raise RuntimeError("the store broke")

    capture = LogCapture()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    async with websockets.connect(f"{server.ws_url}/ws/chat") as ws:
        await ws.send(json.dumps({"assistant": "other", "message": "hi"}))
        first_run = (await _until_done(ws))[0]["data"]
        store.get_thread = broken  # type: ignore[method-assign]
        await ws.send(json.dumps({"thread_id": first_run["thread_id"], "message": "again"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["event"] == "error"
    logged = [e for e in capture.entries if e["event"] == "unhandled_error"]
    assert len(logged) == 1
    assert first_run["run_id"] not in json.dumps(logged[0], default=str)


async def _until_done(ws: websockets.ClientConnection) -> list[dict[str, object]]:
    events = []
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
        events.append(frame)
        if frame["event"] == "done":
            return events


@pytest.fixture
def fake_llm() -> FakeOpenAI:
    """A fake OpenAI-compatible server."""
    with FakeOpenAI() as fake:
        yield fake


def test_provider_failure_is_502_and_a_stream_error(
    gateway_server: ServerFactory, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    """A failing model is 502 for JSON, and error + thread.run.failed + done on a started stream."""
    write_remote(manifests := tmp_path / "manifests", fake_llm, api_key="test-key")
    server = gateway_server(manifests)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        fake_llm.add_text("Hello from the fake model")
        ok = c.post("/chat", json={"message": "hi"})
        assert ok.status_code == 200
        assert ok.json()["responses"] == ["Hello from the fake model"]
        fake_llm.fail_next(500, times=5)
        failed = c.post("/chat", json={"message": "hi"})
        assert failed.status_code == 502, failed.text
        error = failed.json()["error"]
        assert error["type"] == "provider_error"
        assert "test-key" not in failed.text
        fake_llm.fail_next(500, times=5)
        with connect_sse(c, "POST", "/chat", json={"message": "hi", "stream": True}) as source:
            assert source.response.status_code == 200
            names = [e.event for e in source.iter_sse()]
        assert names[0] == "thread.run.created"
        tail = [n for n in names if n in ("error", "thread.run.failed", "done")]
        assert tail == ["error", "thread.run.failed", "done"]
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    messages: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
    fake_llm.fail_next(500, times=5)
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(model="remote", messages=messages)  # type: ignore[arg-type]
    assert raised.value.status_code == 502


def test_a_v1_stream_failing_before_its_first_word_is_an_http_error(
    gateway_server: ServerFactory, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    """A streamed /v1 completion whose model fails before any text is the HTTP error a JSON
    request gets (502: the SDK's InternalServerError, which it retries), as OpenAI answers:
    it was a 200 stream holding only an error, a bare APIError the SDK never retries. Once
    text has streamed, a failure can only come inside the stream.
    """
    write_remote(manifests := tmp_path / "manifests", fake_llm, api_key="test-key")
    server = gateway_server(manifests)
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    messages: list[dict[str, str]] = [{"role": "user", "content": "hi"}]
    fake_llm.fail_next(500, times=5)
    with pytest.raises(openai.InternalServerError) as before:
        sdk.chat.completions.create(model="remote", messages=messages, stream=True)  # type: ignore[arg-type]
    assert before.value.status_code == 502
    assert isinstance(before.value.body, dict)
    assert before.value.body["type"] == "provider_error"
    fake_llm.reset()
    fake_llm.add_text("one two three four five six seven eight")
    fake_llm.fail_stream_after(4, message="the model broke")
    stream = sdk.chat.completions.create(model="remote", messages=messages, stream=True)  # type: ignore[arg-type]
    seen: list[str] = []
    with pytest.raises(openai.APIError, match="the model broke") as during:
        seen.extend(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert not isinstance(during.value, openai.APIStatusError)
    assert "".join(seen).startswith("one")


def test_a_v1_run_whose_tools_ran_is_not_retried_by_the_sdk(
    gateway_server: ServerFactory, fake_llm: FakeOpenAI, api_manifests: Path
) -> None:
    """A /v1 completion that failed after a tool ran says ``x-should-retry: false``: the
    SDKs retry a 5xx twice by default, so a run that, say, created a ticket and then lost
    its model created it again on each retry (here the retry even came back a success,
    hiding the failure). A run that failed before any tool is still retried.
    """

    def call_then_fail(_: RecordedRequest) -> FakeReply:
        fake_llm.fail_next(500, times=10)  # the next model call fails
        call = FakeToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
        return FakeReply(tool_calls=[call])

    write_remote(api_manifests, fake_llm, "actions: [get_weather]\n")
    server = gateway_server(api_manifests)
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x")  # the default retries
    messages: list[Any] = [{"role": "user", "content": "weather in Paris"}]
    fake_llm.add_reply(call_then_fail)
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.chat.completions.create(model="remote", messages=messages)
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert len(fake_llm.model_requests()) == 2  # one run: the tool call, the failed answer
    fake_llm.reset()
    fake_llm.fail_next(500, times=1)  # fails before any tool: retrying is safe
    answer = sdk.chat.completions.create(model="remote", messages=messages)
    assert answer.choices[0].message.content == "weather in Paris"  # the fake's echo
    assert len(fake_llm.model_requests()) == 2


def _deep(depth: int) -> str:
    """A JSON object nested ``depth`` levels deep in all: ``{"a": {"a": ... 1}}``."""
    return '{"a":' * depth + "1" + "}" * depth


def test_a_stream_resumed_right_after_its_error_event_gets_no_second_one(
    gateway_server: ServerFactory, fake_llm: FakeOpenAI, tmp_path: Path
) -> None:
    """Resumed from the id of a failed run's error event: run.failed and done, no error again."""
    write_remote(manifests := tmp_path / "manifests", fake_llm, api_key="test-key")
    server = gateway_server(manifests)
    fake_llm.fail_next(500, times=5)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        with connect_sse(c, "POST", "/chat", json={"message": "hi", "stream": True}) as source:
            seen = []
            for event in source.iter_sse():
                seen.append(event)
                if event.event == "error":
                    break  # the connection drops right after the error
        created = seen[0].json()
        url = f"/threads/{created['thread_id']}/runs/{created['run_id']}/events"
        with connect_sse(c, "GET", url, headers={"Last-Event-ID": seen[-1].id}) as source:
            rest = [e.event for e in source.iter_sse()]
    assert seen[-1].id == f"{created['run_id']}:2"  # the engine's own error event
    assert rest == ["thread.run.failed", "metadata", "done"]


async def test_json_nested_past_the_limit_is_a_400_on_every_route(
    api_server: GatewayServer,
) -> None:
    """A body nested about 500 deep made the invoke route's ``deepcopy`` overflow
    (``internal_error``); nested past 100 levels, every client JSON (invoke, /chat, /v1,
    a WebSocket frame) is now a clear 400 naming the limit, and 100 levels still pass."""
    limit = "nested too deeply (more than 100 levels of arrays and objects)"
    bodies = {
        "/actions/get_weather/invoke": '{"arguments": {"city": "Paris", "x": %s}}',
        "/chat": '{"message": "hi", "assistant": "helper", "x": %s}',
        "/v1/chat/completions": '{"model": "helper", "messages": [{"role": "user", '
        '"content": "hi"}], "x": %s}',
    }
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30) as client:
        for path, body in bodies.items():
            for depth in (101, 500, 5000):
                response = await client.post(path, content=body % _deep(depth), headers=headers)
                assert response.status_code == 400, (path, depth, response.text)
                error = response.json()["error"]
                assert error["type"] == "invalid_request"
                assert error["message"] == f"the request body is {limit}", (path, error)
        # Brackets inside strings are text, not nesting.
        fine = await client.post(
            "/actions/get_weather/invoke", json={"arguments": {"city": "[" * 500 + "{" * 500}}
        )
        assert fine.status_code == 200 and fine.json()["status"] == "succeeded", fine.text
        within = await client.post(
            "/actions/get_weather/invoke",
            content='{"arguments": {"city": "Paris", "unit": ' + _deep(98) + "}}",
            headers=headers,
        )
        assert within.status_code == 200, within.text
        assert within.json()["error_type"] == "invalid_arguments"  # read, judged: not a depth
    async with websockets.connect(f"{api_server.ws_url}/ws/chat") as ws:
        for depth in (101, 500, 5000):
            await ws.send('{"message": "hi", "assistant": "helper", "x": ' + _deep(depth) + "}")
            reply = json.loads(await ws.recv())
            assert reply["event"] == "error", reply
            assert reply["data"]["type"] == "invalid_request"
            assert reply["data"]["message"] == f"bad frame: {limit}"
        await ws.send(json.dumps({"message": "hi", "assistant": "helper"}))
        assert (await _until_done(ws))[-1]["event"] == "done"  # the socket lives on


async def test_websocket_unexpected_error_is_logged_and_the_socket_stays_open(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """An unexpected exception starting a run is logged with its traceback and answered with
    an internal_error event (no details); the socket stays open for the next message."""
    server = gateway_server(api_manifests)
    store = server.services.store
    assert store is not None
    real_get_thread = store.get_thread

    async def broken(thread_id: str) -> None:
        raise RuntimeError("password=hunter2 leaked from a driver")

    store.get_thread = broken  # type: ignore[method-assign]
    with capture_logs() as logs:
        async with websockets.connect(f"{server.ws_url}/ws/chat") as ws:
            await ws.send(json.dumps({"thread_id": "t1", "message": "hi"}))
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            store.get_thread = real_get_thread  # type: ignore[method-assign]
            await ws.send(json.dumps({"assistant": "other", "message": "hi"}))
            assert (await _until_done(ws))[-1]["event"] == "done"
    assert frame["event"] == "error"
    assert (frame["data"]["type"], frame["data"]["message"]) == ("internal_error", "internal error")
    assert "hunter2" not in json.dumps(frame)
    logged = [e for e in logs if e["event"] == "unhandled_error"]
    assert len(logged) == 1
    assert logged[0]["path"] == "/ws/chat"
    assert isinstance(logged[0]["exc_info"], RuntimeError)
