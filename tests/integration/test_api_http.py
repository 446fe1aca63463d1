"""The HTTP API on a real server: every JSON route, status codes, error bodies, correlation ids."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import httpx
import pytest
from conftest import GatewayServer, ServerFactory

HEX = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def client(api_server: GatewayServer) -> httpx.Client:
    """A plain httpx client on the module's server."""
    with httpx.Client(base_url=api_server.url, timeout=30) as c:
        yield c


def assert_error(response: httpx.Response, status: int, type_: str) -> dict[str, str]:
    """The response is ``status`` with the documented error body."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == type_
    assert error["correlation_id"] == response.headers["x-correlation-id"]
    assert "Traceback" not in error["message"]
    return error


def test_root_health_ready(client: httpx.Client) -> None:
    """/ names the service and counts assistants; /health and /ready answer 200 when loaded."""
    root = client.get("/").json()
    assert root["service"] == "gateway"
    assert root["assistants"] == 2
    assert root["manifest_version"]
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["manifest_version"] == root["manifest_version"]


@pytest.mark.parametrize("path", ["/", "/health", "/ready", "/ui"])
def test_head_probes_answer_like_get_without_a_body(
    api_server: GatewayServer, client: httpx.Client, path: str
) -> None:
    """HEAD (how load balancers and uptime monitors probe) on /, /health, /ready and /ui
    answers the GET's status and headers with no body on the wire; it was a 405."""
    got = client.get(path)
    head = client.head(path)
    assert head.status_code == got.status_code == 200, head.text
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["x-correlation-id"]
    host, port = api_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(f"HEAD {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    assert answer.endswith(b"\r\n\r\n"), answer[-200:]  # the headers, nothing after them


def test_every_response_has_a_correlation_id_and_reuses_a_sane_one(client: httpx.Client) -> None:
    """X-Correlation-ID is on every response; a sane incoming id (or X-Request-ID) is reused."""
    assert HEX.match(client.get("/health").headers["x-correlation-id"])
    assert HEX.match(client.get("/no/such/route").headers["x-correlation-id"])
    assert client.get("/health", headers={"X-Correlation-ID": "abc-123"}).headers[
        "x-correlation-id"
    ] == ("abc-123")
    assert client.get("/health", headers={"X-Request-ID": "req.42"}).headers[
        "x-correlation-id"
    ] == ("req.42")
    for bad in ("x" * 300, "has space", "semi;colon"):
        got = client.get("/health", headers={"X-Correlation-ID": bad}).headers["x-correlation-id"]
        assert HEX.match(got), bad


def test_start_creates_a_thread_with_the_greeting(client: httpx.Client) -> None:
    """GET /start?assistant= returns a thread id and the assistant's initial message."""
    body = client.get("/start", params={"assistant": "helper"}).json()
    assert body["assistant"] == "helper"
    assert body["initial_message"] == "Hello! Ask me about the weather."
    assert body["thread_id"]
    messages = client.get(f"/threads/{body['thread_id']}/messages")
    assert messages.status_code == 200
    assert messages.json() == []


def test_start_needs_an_assistant_when_several_exist(client: httpx.Client) -> None:
    """Without a default and with two assistants, /start is a 400 naming the problem."""
    error = assert_error(client.get("/start"), 400, "invalid_request")
    assert "assistant" in error["message"]
    assert_error(client.get("/start", params={"assistant": "nope"}), 404, "not_found")


@pytest.mark.parametrize(
    "query",
    ["assistant=helper%0A", "assistant=", "assistant=bad%20name", "assistant=" + "a" * 65],
    ids=["newline", "empty", "space", "too-long"],
)
def test_start_with_a_malformed_assistant_name_is_a_400(client: httpx.Client, query: str) -> None:
    """`?assistant=` takes the names the JSON bodies take (NAME_PATTERN): `helper%0A` was a
    404 (no such assistant); a malformed name is now a 400 naming the parameter."""
    error = assert_error(client.get(f"/start?{query}"), 400, "invalid_request")
    assert error["message"].startswith("invalid request: assistant: "), error["message"]
    assert client.get("/start?assistant=helper").status_code == 200


def test_chat_json_runs_a_tool_and_stores_the_history(client: httpx.Client) -> None:
    """POST /chat answers with responses, tool calls, usage and metadata; the thread keeps them."""
    response = client.post(
        "/chat", json={"assistant": "helper", "message": "what is the weather in Paris?"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["responses"] == [
        "Here is what get_weather returned: city: Paris, temperature: 21, unit: c."
    ]
    [call] = body["tool_calls"]
    assert call["name"] == "get_weather"
    assert call["status"] == "succeeded"
    assert body["usage"]["total_tokens"] > 0
    assert body["metadata"]["correlation_id"] == response.headers["x-correlation-id"]
    assert body["metadata"]["timings"]["total_ms"] >= body["metadata"]["timings"]["tools_ms"]
    history = client.get(f"/threads/{body['thread_id']}/messages").json()
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
    assert history[0]["content"] == "what is the weather in Paris?"
    assert history[1]["tool_calls"][0]["name"] == "get_weather"
    # The same thread continues.
    again = client.post("/chat", json={"thread_id": body["thread_id"], "message": "and in Rome?"})
    assert again.status_code == 200
    assert again.json()["thread_id"] == body["thread_id"]
    assert len(client.get(f"/threads/{body['thread_id']}/messages").json()) > len(history)


def test_a_long_threads_messages_are_read_page_by_page(client: httpx.Client) -> None:
    """``?limit=N&before=<seq>`` pages back through a thread's history, newest page first,
    each page in order, without a gap or an overlap; there was no way to read a long
    thread but whole (unbounded) or its newest ``limit`` messages."""
    thread = None
    for turn in range(3):
        body = {"assistant": "helper", "message": f"hello number {turn}"}
        if thread is not None:
            body = {"thread_id": thread, "message": f"hello number {turn}"}
        answer = client.post("/chat", json=body)
        assert answer.status_code == 200, answer.text
        thread = answer.json()["thread_id"]
    whole = client.get(f"/threads/{thread}/messages").json()
    assert len(whole) >= 6
    pages: list[list[dict[str, object]]] = []
    before: int | None = None
    for _ in range(len(whole)):  # each page moves back by at least one message
        params = {"limit": 4} if before is None else {"limit": 4, "before": before}
        page = client.get(f"/threads/{thread}/messages", params=params).json()
        if not page:
            break
        assert len(page) <= 4
        assert [m["seq"] for m in page] == sorted(m["seq"] for m in page)
        pages.append(page)
        before = page[0]["seq"]
    assert [m for page in reversed(pages) for m in page] == whole
    older = client.get(f"/threads/{thread}/messages", params={"before": whole[2]["seq"]})
    assert older.json() == whole[:2]
    assert client.get(f"/threads/{thread}/messages", params={"before": 0}).status_code == 400


@pytest.mark.parametrize("param", ["before", "after"])
def test_a_sequence_number_past_64_bits_is_a_400_naming_it(
    client: httpx.Client, param: str
) -> None:
    """``?before=`` (messages) and ``?after=`` (events) past 2**63-1 are a 400 naming the
    parameter: ``before=9223372036854775808`` was a 500 on SQLite (OverflowError binding
    it as an INTEGER); the largest 64-bit value is still accepted."""
    answer = client.post("/chat", json={"assistant": "helper", "message": "hi"}).json()
    thread, run = answer["thread_id"], answer["run_id"]
    path = {
        "before": f"/threads/{thread}/messages",
        "after": f"/threads/{thread}/runs/{run}/events",
    }[param]
    error = assert_error(client.get(path, params={param: 2**63}), 400, "invalid_request")
    assert param in error["message"]
    assert client.get(path, params={param: 2**63 - 1}).status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat", {"assistant": "helper", "message": "hi"}),
        (
            "/v1/chat/completions",
            {"model": "helper", "messages": [{"role": "user", "content": "hi"}]},
        ),
        ("/actions/get_weather/invoke", {"arguments": {"city": "Paris"}}),
    ],
    ids=["chat", "v1", "invoke"],
)
def test_a_json_body_after_a_byte_order_mark_is_a_400_saying_so(
    client: httpx.Client, path: str, body: dict[str, object]
) -> None:
    """A UTF-8 byte-order mark before a JSON body (Notepad's files, ``curl --data-binary
    @file``) is a 400 saying a BOM was found, on every JSON route: it said "invalid
    character (byte 0)", which points nowhere; the same body without it is accepted."""
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    error = assert_error(
        client.post(path, content=b"\xef\xbb\xbf" + raw, headers=headers), 400, "invalid_request"
    )
    assert "byte-order mark" in error["message"], error["message"]
    assert client.post(path, content=raw, headers=headers).status_code == 200


@pytest.mark.parametrize(
    "path",
    ["/chat", "/v1/chat/completions", "/actions/get_weather/invoke"],
    ids=["chat", "v1", "invoke"],
)
@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_json_body_is_a_400_saying_to_send_utf8(
    client: httpx.Client, path: str, codec: str
) -> None:
    """A body in UTF-16 (or UTF-32) with its byte-order mark (PowerShell's default
    ``Out-File``) is a 400 naming its encoding and asking for UTF-8, on every JSON route:
    it said "JSON is malformed: invalid character (byte 0)", which points nowhere."""
    body = {"message": "hi", "model": "helper", "arguments": {}}
    raw = json.dumps(body)
    encoded = (b"\xfe\xff" + raw.encode(codec)) if codec == "utf-16-be" else raw.encode(codec)
    headers = {"Content-Type": "application/json"}
    error = assert_error(
        client.post(path, content=encoded, headers=headers), 400, "invalid_request"
    )
    name = codec.upper().removesuffix("-BE")
    assert f"is {name}" in error["message"], error["message"]
    assert "must be UTF-8" in error["message"], error["message"]


def test_chat_failing_tool_is_reported_not_raised(client: httpx.Client) -> None:
    """A tool that raises ends as a failed tool call the model answers about, with HTTP 200."""
    body = client.post(
        "/chat", json={"assistant": "helper", "message": "explode with reason 'kaboom'"}
    ).json()
    [call] = body["tool_calls"]
    assert call["name"] == "explode"
    assert call["status"] == "failed"
    assert "kaboom" in call["output"]
    assert "explode failed" in body["responses"][0]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": 5}, "message"),
        ({"message": "x" * 100_001}, "message"),  # the README's limit: 100,000 characters
        ({"message": "hi", "assistant": "bad name!"}, "assistant"),
        ({"message": "hi", "assistant": "helper\n"}, "assistant"),  # not a 404: a bad name
    ],
)
def test_chat_invalid_body_is_400(
    client: httpx.Client, body: dict[str, object], fragment: str
) -> None:
    """A body that does not match ChatRequest is a 400 naming the field."""
    error = assert_error(client.post("/chat", json=body), 400, "invalid_request")
    assert fragment in error["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"message": "hi", "assistant": "bad name!"},
            "invalid request: assistant: Expected a name (1 to 64 letters, digits, '_' or '-')",
        ),
        ({"assistant": "helper"}, "invalid request: Object missing required field `message`"),
        # A misspelt thread_id is refused: ignored, it started a new thread every time.
        (
            {"message": "hi", "thread": "thread_1"},
            "invalid request: Object contains unknown field `thread`",
        ),
    ],
)
def test_a_400_says_what_is_wrong_in_words(
    client: httpx.Client, body: dict[str, object], message: str
) -> None:
    """A bad name is told the rule, not the regex (whose `(?!\\n)` only puzzles), a missing
    field is not blamed on `data` (Litestar's name for the whole body), an unknown one is named."""
    assert assert_error(client.post("/chat", json=body), 400, "invalid_request")["message"] == (
        message
    )


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"message":"\xff\xfe"}', b"[" * 100_000],
    ids=["not-json", "not-utf8", "nested-too-deep"],
)
@pytest.mark.parametrize("path", ["/chat", "/v1/chat/completions"])
def test_chat_malformed_json_is_400(client: httpx.Client, path: str, body: bytes) -> None:
    """Bytes that are not JSON, not UTF-8, or nested past the decoder's depth are a 400."""
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("path", ["/chat", "/v1/chat/completions", "/actions/explode/invoke"])
def test_an_empty_body_is_a_400_that_says_so(client: httpx.Client, path: str) -> None:
    """A POST with no body (curl -X POST without -d) is told the body is missing."""
    for headers in ({"content-type": "application/json"}, {}):
        error = assert_error(
            client.post(path, content=b"", headers=headers), 400, "invalid_request"
        )
        assert error["message"] == "invalid request: the request body is empty: send a JSON object"


def test_unknown_things_are_404(client: httpx.Client) -> None:
    """Unknown thread, assistant, run, action and route are 404 with the error body."""
    assert_error(
        client.post("/chat", json={"thread_id": "nope", "message": "hi"}), 404, "not_found"
    )
    assert_error(
        client.post("/chat", json={"assistant": "ghost", "message": "hi"}), 404, "not_found"
    )
    assert_error(client.get("/threads/nope/messages"), 404, "not_found")
    assert_error(client.delete("/threads/nope"), 404, "not_found")
    assert_error(client.get("/assistants/ghost"), 404, "not_found")
    assert_error(client.get("/assistants/ghost/tools"), 404, "not_found")
    assert_error(client.post("/actions/ghost/invoke", json={"arguments": {}}), 404, "not_found")
    thread = client.get("/start", params={"assistant": "helper"}).json()["thread_id"]
    assert_error(client.get(f"/threads/{thread}/runs/run_nope/events"), 404, "not_found")
    assert_error(client.post(f"/threads/{thread}/runs/run_nope/cancel"), 404, "not_found")
    assert_error(client.get("/nothing/here"), 404, "not_found")


def test_method_not_allowed_keeps_the_error_shape(client: httpx.Client) -> None:
    """A wrong method is a 405 with the same error body."""
    assert_error(client.put("/chat", json={}), 405, "method_not_allowed")


def test_delete_thread(client: httpx.Client) -> None:
    """DELETE /threads/{id} is 204, then the thread is gone (404)."""
    thread = client.post("/chat", json={"assistant": "other", "message": "hello"}).json()[
        "thread_id"
    ]
    assert client.delete(f"/threads/{thread}").status_code == 204
    assert_error(client.get(f"/threads/{thread}/messages"), 404, "not_found")


def test_assistants_and_their_exact_tools(client: httpx.Client) -> None:
    """/assistants lists both; /assistants/{name}/tools is exactly what the model receives."""
    listed = client.get("/assistants").json()
    assert [a["name"] for a in listed] == ["helper", "other"]
    helper = client.get("/assistants/helper").json()
    assert helper["actions"] == ["get_weather", "slow_wait", "explode"]
    assert helper["source"].startswith("api.yaml:")
    assert "instructions" not in helper
    tools = client.get("/assistants/helper/tools").json()
    assert [t["function"]["name"] for t in tools] == ["get_weather", "slow_wait", "explode"]
    weather = tools[0]["function"]
    assert weather["parameters"]["required"] == ["city"]
    assert weather["description"] == "Get the current weather for a city."
    assert client.get("/assistants/other/tools").json() == []


def test_actions_list_their_schemas(client: httpx.Client) -> None:
    """/actions lists every action with kind, schema and timeout."""
    actions = {a["name"]: a for a in client.get("/actions").json()}
    assert set(actions) == {"get_weather", "slow_wait", "explode"}
    assert actions["get_weather"]["kind"] == "python"
    assert actions["slow_wait"]["timeout"] == 30


def test_invoke_action_runs_it_in_the_sandbox(client: httpx.Client) -> None:
    """POST /actions/{name}/invoke runs the action; bad arguments come back as a failed result."""
    ok = client.post("/actions/get_weather/invoke", json={"arguments": {"city": "Oslo"}}).json()
    assert ok["status"] == "succeeded"
    assert '"Oslo"' in ok["output"]
    assert ok["duration_ms"] > 0
    bad = client.post("/actions/get_weather/invoke", json={"arguments": {"town": "Oslo"}}).json()
    assert bad["status"] == "failed"
    assert bad["error_type"] == "invalid_arguments"
    assert_error(
        client.post("/actions/get_weather/invoke", json={"arguments": 3}), 400, "invalid_request"
    )
    # A misspelt `arguments` is refused, not run with no arguments.
    typo = client.post("/actions/get_weather/invoke", json={"args": {"city": "Oslo"}})
    assert "unknown field `args`" in assert_error(typo, 400, "invalid_request")["message"]


def test_manifests_status_and_reload(client: httpx.Client) -> None:
    """/manifests/status shows the live set; POST /manifests/reload reports 'unchanged'."""
    status = client.get("/manifests/status").json()
    assert status["files"] == ["api.yaml"]
    assert status["last_attempt"]["result"] == "swapped"
    reload = client.post("/manifests/reload").json()
    assert reload["result"] == "unchanged"
    assert reload["version"] == status["version"]


def test_metrics_count_requests_runs_and_tools(client: httpx.Client) -> None:
    """/metrics serves Prometheus text with HTTP, run, tool and reload series."""
    client.post("/chat", json={"assistant": "helper", "message": "weather in Lima"})
    response = client.get("/metrics")
    text = response.text
    # One charset parameter: a duplicate makes Prometheus' strict parser reject the scrape.
    content_type = response.headers["content-type"]
    assert content_type.startswith("text/plain; version=")
    assert content_type.count("charset=") == 1
    assert 'gateway_http_requests_total{method="POST",route="/chat",status="200"}' in text
    assert re.search(r'gateway_runs_total\{status="completed"\} [1-9]', text)
    succeeded = r'gateway_tool_calls_total\{isolation="sandbox",status="succeeded"\} [1-9]'
    assert re.search(succeeded, text)
    assert "gateway_tool_duration_seconds_bucket" in text
    assert "gateway_run_duration_seconds_count" in text
    assert "gateway_runs_active 0.0" in text
    for isolation in ("sandbox", "inline"):  # the module's server is shared: calls may be running
        assert re.search(rf'gateway_tool_calls_in_flight\{{isolation="{isolation}"\}} \d', text)
        assert re.search(rf'gateway_tool_calls_queued\{{isolation="{isolation}"\}} \d', text)
    assert re.search(r'gateway_reloads_total\{result="swapped"\} 1', text)


def test_ui_and_schema_are_served(client: httpx.Client) -> None:
    """/ui is an HTML page; /schema is Litestar's OpenAPI."""
    ui = client.get("/ui")
    assert ui.status_code == 200
    assert ui.headers["content-type"].startswith("text/html")
    assert "<html" in ui.text.lower()
    assert client.get("/schema/openapi.json").json()["openapi"].startswith("3.")


def test_body_over_the_limit_is_413(gateway_server: ServerFactory, api_manifests: Path) -> None:
    """A body over GATEWAY_MAX_BODY_BYTES is a 413, declared or chunked."""
    server = gateway_server(api_manifests, env={"GATEWAY_MAX_BODY_BYTES": "1000"})
    with httpx.Client(base_url=server.url) as c:
        big = {"assistant": "other", "message": "x" * 2000}
        assert_error(c.post("/chat", json=big), 413, "payload_too_large")

        def chunks():  # no Content-Length: the limit applies while reading
            yield b'{"message": "'
            yield b"x" * 4000
            yield b'"}'

        response = c.post("/chat", content=chunks(), headers={"content-type": "application/json"})
        assert_error(response, 413, "payload_too_large")
        assert c.post("/chat", json={"assistant": "other", "message": "hi"}).status_code == 200


def test_not_ready_until_a_valid_manifest_set_loads(
    gateway_server: ServerFactory, tmp_path: Path
) -> None:
    """With invalid manifests the server is up but 503 on /ready and chat; valid ones fix it."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "bad.yaml").write_text("kind: assistant\nname: a\nactions: [missing]\n")
    server = gateway_server(manifests)
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/health").status_code == 200
        error = assert_error(c.get("/ready"), 503, "not_ready")
        assert "manifest" in error["message"]
        assert_error(c.post("/chat", json={"message": "hi"}), 503, "not_ready")
        assert_error(c.get("/assistants"), 503, "not_ready")
        status = c.get("/manifests/status").json()
        assert status["last_attempt"]["result"] == "rejected"
        assert any("missing" in e for e in status["last_attempt"]["errors"])
        (manifests / "bad.yaml").write_text("kind: assistant\nname: a\n")
        assert c.post("/manifests/reload").json()["result"] == "swapped"
        assert c.get("/ready").status_code == 200
        assert c.post("/chat", json={"message": "hi"}).status_code == 200


def test_store_down_is_503_on_ready(gateway_server: ServerFactory, api_manifests: Path) -> None:
    """When the thread store stops answering, /ready is 503."""
    server = gateway_server(api_manifests)
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/ready").status_code == 200
        store = server.services.store
        assert store is not None
        server.call(store.close())
        assert_error(c.get("/ready"), 503, "not_ready")


def test_json_is_compressed_but_streams_never_are(client: httpx.Client) -> None:
    """Large JSON answers are gzipped on request; SSE streams are never compressed."""
    gz = {"Accept-Encoding": "gzip"}
    schema = client.get("/schema/openapi.json", headers=gz)
    assert schema.headers.get("content-encoding") == "gzip"
    assert schema.json()["paths"]  # httpx decodes it
    stream = client.post(
        "/chat", json={"assistant": "other", "message": "hi", "stream": True}, headers=gz
    )
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert stream.headers.get("content-encoding", "identity") == "identity"
    assert "event: done" in stream.text


def test_unexpected_errors_are_500_without_details(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """An unexpected exception is a 500 with a generic message: no traceback, no exception text."""
    server = gateway_server(api_manifests)
    store = server.services.store
    assert store is not None

    async def broken(thread_id: str) -> None:
        raise RuntimeError("password=hunter2 leaked from a driver")

    store.get_thread = broken  # type: ignore[method-assign]
    with httpx.Client(base_url=server.url) as c:
        response = c.get("/threads/t1/messages")
    error = assert_error(response, 500, "internal_error")
    assert error["message"] == "internal error"
    assert "hunter2" not in response.text


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        ({"GATEWAY_DEFAULT_ASSISTANT": "helper"}, False),
        ({"ASSISTANT_ID": "asst_abc123"}, True),  # an old deployment's id names no manifest
    ],
)
def test_the_default_assistant_serves_requests_naming_none(
    gateway_server: ServerFactory, api_manifests: Path, env: dict[str, str], warned: bool
) -> None:
    """GATEWAY_DEFAULT_ASSISTANT (alias ASSISTANT_ID) picks the assistant of a request naming
    none; one the manifest set lacks is a 404 there, and a warning in /manifests/status (it
    was only ever a 404, with no clue at load)."""
    server = gateway_server(api_manifests, env=env)
    with httpx.Client(base_url=server.url, timeout=30) as c:
        start = c.get("/start")
        warnings = c.get("/manifests/status").json()["warnings"]
    if not warned:
        assert start.json()["assistant"] == "helper"
        assert warnings == []
        return
    assert "assistant 'asst_abc123' not found" in assert_error(start, 404, "not_found")["message"]
    assert warnings == [
        "GATEWAY_DEFAULT_ASSISTANT (or ASSISTANT_ID) names assistant 'asst_abc123', not in "
        "the manifest set: a request naming no assistant gets 404"
    ]
