"""`gateway serve` and `gateway chat` against real servers."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets
from click.testing import CliRunner
from conftest import GatewayServer, ServerFactory
from websockets.sync.client import connect as ws_connect

from gateway.cli import main
from gateway.testing.fake_openai import FakeOpenAI
from tests._fake import write_remote
from tests._serve import serve, wait_ready


def test_chat_streams_the_answer_and_shows_tool_calls(api_server: GatewayServer) -> None:
    """`gateway chat helper --url` prints the greeting, the tool call and status, the answer."""
    result = CliRunner().invoke(
        main, ["chat", "helper", "--url", api_server.url], input="weather in Paris\n\n"
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Hello! Ask me about the weather." in out
    assert 'get_weather({"city": "Paris"})' in out
    assert "succeeded get_weather in" in out
    assert "Here is what get_weather returned: city: Paris, temperature: 21, unit: c." in out
    assert "tokens" in out


def test_chat_over_websocket(api_server: GatewayServer) -> None:
    """`gateway chat --ws` talks over /ws/chat and keeps the thread across messages."""
    result = CliRunner().invoke(
        main,
        ["chat", "other", "--url", api_server.url, "--ws"],
        input="hello\nwho are you?\n\n",
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("offline model") >= 2


def test_chat_over_websocket_stays_in_step_after_a_failed_run(
    gateway_server: ServerFactory, tmp_path: Path
) -> None:
    """After a run that failed (error, run.failed, metadata, done), `--ws` still shows each
    later answer after its own message, not the failed run's leftover frames."""
    manifests = tmp_path / "manifests"
    with FakeOpenAI() as fake:
        write_remote(manifests, fake)
        server = gateway_server(manifests)
        fake.fail_next(500, times=1)
        fake.add_text("second answer")
        fake.add_text("third answer")
        result = CliRunner().invoke(
            main, ["chat", "--url", server.url, "--ws"], input="one\ntwo\nthree\n\n"
        )
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.count("error (provider_error)") == 2  # the error event and thread.run.failed
    assert out.index("you> two") < out.index("second answer") < out.index("you> three")
    assert out.index("you> three") < out.index("third answer")


def test_chat_reports_an_unreachable_gateway() -> None:
    """A gateway that does not answer is a one-line error and exit status 1, no traceback."""
    result = CliRunner().invoke(main, ["chat", "--url", "http://127.0.0.1:9"], input="\n")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "Error" in result.output


def test_chat_over_websocket_with_a_base64_key(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """`--ws --key` works with a key such as `openssl rand -base64` makes (+, /, =): it was
    sent as a WebSocket subprotocol, where those characters are invalid (a ValueError
    traceback before connecting); a terminal client sends the Authorization header.
    """
    key = "k+ey/with=="
    # A key with `=` needs a name in GATEWAY_API_KEYS (the client sends the key alone).
    server = gateway_server(api_manifests, env={"GATEWAY_API_KEYS": f"cli={key}"})
    result = CliRunner().invoke(
        main, ["chat", "other", "--url", server.url, "--ws", "--key", key], input="hello\n\n"
    )
    assert result.exit_code == 0, result.output
    assert "offline model" in result.output


def test_chat_reports_a_server_that_is_not_a_gateway() -> None:
    """A non-JSON answer (another server, a proxy's error page) is a one-line error with
    its status, not a JSONDecodeError traceback.
    """
    import http.server
    import threading

    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>502 Bad Gateway</body></html>"
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        result = CliRunner().invoke(main, ["chat", "--url", url], input="\n")
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), result.exception
    assert "HTTP 502" in result.output


def test_serve_refuses_a_port_out_of_range(api_manifests: Path) -> None:
    """`--port 70000` is a usage error naming the option, as GATEWAY_PORT=70000 is a
    settings error; it started the whole gateway and died in bind() with a traceback.
    """
    result = CliRunner().invoke(
        main, ["serve", "--port", "70000", "--manifests", str(api_manifests)]
    )
    assert result.exit_code == 2, result.output
    assert "--port" in result.output
    assert "Traceback" not in result.output


def test_serve_runs_uvicorn_on_the_given_port(api_manifests: Path, tmp_path: Path) -> None:
    """`gateway serve --port --manifests` serves the API until SIGINT.

    WebSocket frames are held to GATEWAY_MAX_BODY_BYTES like request bodies (uvicorn's
    own default would buffer 16 MiB per frame): a larger one closes the socket with 1009.
    """
    database = f"sqlite:///{tmp_path}/serve.db"
    proc, url = serve(api_manifests, database, tmp_path, {"GATEWAY_MAX_BODY_BYTES": "65536"})
    port = url.rpartition(":")[2]
    try:
        wait_ready(proc, url)
        assert httpx.get(f"http://127.0.0.1:{port}/").json()["assistants"] == 2
        with ws_connect(f"ws://127.0.0.1:{port}/ws/chat") as ws:
            ws.send(json.dumps({"assistant": "other", "message": "hi"}))
            events = [json.loads(ws.recv(10))["event"]]
            while events[-1] != "done":
                events.append(json.loads(ws.recv(10))["event"])
            assert events[0] == "thread.run.created"
        with ws_connect(f"ws://127.0.0.1:{port}/ws/chat") as ws:
            ws.send(json.dumps({"assistant": "other", "message": "hi " * 23_000}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                ws.recv(10)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009  # message too big
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0


def test_serve_with_postgresql_unreachable_is_one_error_line(
    api_manifests: Path, tmp_path: Path
) -> None:
    """A PostgreSQL thread store unreachable at start logged a 40-line ExceptionGroup
    traceback ("pool initialization incomplete after 30 sec", no cause); now `serve`
    logs one error naming GATEWAY_DATABASE_URL's host and libpq's reason, never the
    password, and still exits 3. connect_timeout=1 in the URL makes it wait 3 s, not 30."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"postgresql://gw:s3cret-pw@127.0.0.1:{port}/gw?connect_timeout=1",
        "GATEWAY_WATCH": "false",
        "GATEWAY_PORT": "0",
    }
    for var in ("GATEWAY_API_KEYS", "GATEWAY_ADMIN_KEYS", "ENVIRONMENT", "PGCONNECT_TIMEOUT"):
        env.pop(var, None)
    command = [sys.executable, "-c", "from gateway.cli import main; main()"]
    command += ["serve", "--manifests", str(api_manifests)]
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    log = done.stdout + done.stderr
    assert done.returncode == 3, log
    assert "Traceback" not in log and "s3cret-pw" not in log, log
    errors = [line for line in log.splitlines() if "level=error" in line]
    assert len(errors) == 2, log  # ours, then uvicorn's "Application startup failed"
    assert "event=gateway.startup_failed" in errors[0]
    assert (
        f'error="GATEWAY_DATABASE_URL: the PostgreSQL server at 127.0.0.1:{port} did not '
        "answer for 3 s: connection failed: "
    ) in errors[0]
    assert "Connection refused" in errors[0]


@contextlib.contextmanager
def _scripted_server(
    start: bytes,
    chat: bytes = b"",
    resume: bytes | None = None,
    seen: list[str] | None = None,
    broken: int = 0,
) -> Iterator[str]:
    """An HTTP server on loopback answering GET /start with ``start`` (JSON), POST /chat
    with ``chat`` (an SSE body), GET /threads/t/runs/r/events with ``resume`` (an SSE body;
    each request's path and Last-Event-ID appended to ``seen``) and any other GET (a
    WebSocket upgrade) with a 404. ``broken``: the /chat answer announces that many bytes
    more than it sends, so the connection breaks mid-body."""

    class Scripted(http.server.BaseHTTPRequestHandler):
        def _answer(self, status: int, media_type: str, body: bytes, missing: int = 0) -> None:
            self.send_response(status)
            self.send_header("Content-Type", media_type)
            self.send_header("Content-Length", str(len(body) + missing))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.startswith("/start"):
                self._answer(200, "application/json", start)
            elif self.path == "/threads/t/runs/r/events" and resume is not None:
                if seen is not None:
                    seen.append(f"{self.path} after {self.headers.get('Last-Event-ID')}")
                self._answer(200, "text/event-stream", resume)
            else:
                self._answer(404, "text/plain", b"no WebSocket here")

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self._answer(200, "text/event-stream", chat, broken)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _sse(*events: tuple[str, object]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events
    )


def test_chat_shows_hostile_text_inert() -> None:
    """What the server sends (a model's answer, a tool's output, ids) is shown as text:
    terminal escape sequences appear as visible \\xNN (an OSC 52 in an answer wrote the
    user's clipboard, a CSI could redraw lines already shown) and rich markup such as
    `[/bold]` in a thread id is printed, not parsed (it was a MarkupError traceback).
    """
    start = json.dumps(
        {
            "thread_id": "t[/bold]1",
            "assistant": "a[/]",
            "initial_message": "hi \x1b]0;retitled\x07 \x9b2J :smile:",
        }
    ).encode()
    chat = _sse(
        ("thread.run.created", {"run_id": "r", "thread_id": "t"}),
        ("thread.message.delta", {"delta": "x\x1b]52;c;cHduZWQ=\x1b\\y\r\x1b[2Kz"}),
        ("thread.message.delta", {"delta": " pay \u202e\u2066gnp.exe\u2069 now"}),
        (
            "thread.run.step.completed",
            {
                "tool_call": {
                    "name": "n[/]\\",
                    "status": "[/]",
                    "output": "\x1b[8m",
                    "duration_ms": 1,
                }
            },
        ),
        ("done", {}),
    )
    with _scripted_server(start, chat) as url:
        result = CliRunner().invoke(main, ["chat", "--url", url], input="hello\n\n")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\x1b" not in out and "\x9b" not in out and "\r" not in out
    # A right-to-left override showed the rest of the line reversed (a file name spoofed).
    assert "\u202e" not in out and "\u2066" not in out
    assert " pay \\u202e\\u2066gnp.exe\\u2069 now" in out
    assert "thread t[/bold]1" in out
    assert "hi \\x1b]0;retitled\\x07 \\x9b2J :smile:" in out
    assert "x\\x1b]52;c;cHduZWQ=\\x1b\\y\\x0d\\x1b[2Kz" in out
    assert "[/] n[/]\\ in 1 ms: \\x1b[8m" in out  # one backslash, as sent


@pytest.mark.parametrize(
    ("start", "chat", "says"),
    [
        (b"<html>a login page</html>", b"", "GET /start answered HTTP 200 without a thread_id"),
        (b'{"ok": true}', b"", "GET /start answered HTTP 200 without a thread_id"),
        (b'[{"thread_id": "t"}]', b"", "GET /start answered HTTP 200 without a thread_id"),
        (
            b'{"thread_id": "t", "assistant": "a"}',
            b"event: thread.message.delta\ndata: {not json\n\n",
            "'thread.message.delta' event whose data is not a JSON object",
        ),
        (
            b'{"thread_id": "t", "assistant": "a"}',
            _sse(("thread.run.step.completed", {"status": "ok"})),
            "malformed 'thread.run.step.completed' event (KeyError: 'tool_call')",
        ),
    ],
)
def test_chat_reports_answers_that_are_not_the_gateway_protocol(
    start: bytes, chat: bytes, says: str
) -> None:
    """A 200 answer that is not the gateway's protocol (an HTML page, JSON without a
    thread id, an event that is not JSON or lacks its fields) is a one-line error naming
    what was wrong and exit 1; each was a JSONDecodeError/KeyError/TypeError traceback.
    """
    with _scripted_server(start, chat) as url:
        result = CliRunner().invoke(main, ["chat", "--url", url], input="hello\n\n")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"Error: {url}: " in result.output
    assert says in result.output


def test_chat_over_websocket_reports_a_refused_upgrade() -> None:
    """`--ws` through a server that does not upgrade /ws/chat (a proxy without WebSocket
    support) is a one-line error naming the WebSocket URL and exit 1, not a traceback."""
    with _scripted_server(b'{"thread_id": "t", "assistant": "a"}') as url:
        result = CliRunner().invoke(main, ["chat", "--url", url, "--ws"], input="hello\n\n")
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert f"Error: {url}: WebSocket /ws/chat: " in result.output


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://example.org", "http://", "http://[::1"])
def test_chat_refuses_a_url_it_cannot_use(url: str) -> None:
    """A --url that is not http(s) with a host is a usage error naming --url (exit 2);
    `http://[::1` was an httpx.InvalidURL traceback."""
    result = CliRunner().invoke(main, ["chat", "--url", url], input="\n")
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Invalid value for '--url'" in result.output


def test_chat_errors_mask_the_password_of_the_url() -> None:
    """A password in --url (a proxy's basic auth) is shown as *** in errors, not echoed."""
    result = CliRunner().invoke(main, ["chat", "--url", "http://me:s3cret@127.0.0.1:9"], input="\n")
    assert result.exit_code == 1, result.output
    assert "s3cret" not in result.output
    assert "Error: http://me:***@127.0.0.1:9: " in result.output


def test_chat_reaches_an_ipv6_gateway_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """With GATEWAY_HOST=::1 and no --url, chat brackets the address (http://[::1]:PORT);
    `http://::1:PORT` was an InvalidURL traceback."""
    monkeypatch.setenv("GATEWAY_HOST", "::1")
    monkeypatch.setenv("GATEWAY_PORT", "9")
    result = CliRunner().invoke(main, ["chat"], input="\n")
    assert result.exit_code == 1, result.output
    assert "Error: http://[::1]:9: " in result.output


def _frames(first_id: int, *events: tuple[str, object]) -> bytes:
    return b"".join(
        f"id: r:{n}\nevent: {name}\ndata: {json.dumps(data)}\n\n".encode()
        for n, (name, data) in enumerate(events, first_id)
    )


_STARTED = b'{"thread_id": "t", "assistant": "a"}'


@pytest.mark.parametrize("broken", [0, 100], ids=["ended", "broken"])
def test_chat_resumes_a_stream_cut_before_its_end(broken: int) -> None:
    """A stream that ends before `done` (a proxy's timeout) is resumed from the run's
    events after the last id seen, so the whole answer shows; it silently stopped
    mid-answer and looked complete (or, broken off, ended the session with an error)."""
    cut = _frames(
        1,
        ("thread.run.created", {"run_id": "r", "thread_id": "t"}),
        ("thread.message.delta", {"delta": "Hello "}),
    )
    rest = _frames(
        3,
        ("thread.message.delta", {"delta": "world."}),
        ("thread.message.completed", {"content": "Hello world."}),
        ("done", {}),
    )
    seen: list[str] = []
    with _scripted_server(_STARTED, cut, rest, seen, broken) as url:
        result = CliRunner().invoke(main, ["chat", "--url", url], input="hi\n\n")
    assert result.exit_code == 0, result.output
    assert "assistant> Hello world." in result.output
    assert "error" not in result.output
    assert seen == ["/threads/t/runs/r/events after r:2"]


def test_chat_says_when_a_cut_stream_cannot_be_resumed() -> None:
    """When the run's events cannot be read either, an error says the answer is cut."""
    cut = _frames(
        1,
        ("thread.run.created", {"run_id": "r", "thread_id": "t"}),
        ("thread.message.delta", {"delta": "Hello "}),
    )
    with _scripted_server(_STARTED, cut) as url:  # no resume route: 404
        result = CliRunner().invoke(main, ["chat", "--url", url], input="hi\n\n")
    assert result.exit_code == 0, result.output
    assert "error (http_error): HTTP 404" in result.output
    assert "the answer was cut before its end and could not be resumed" in result.output


@pytest.mark.parametrize("transport", [[], ["--ws"]], ids=["sse", "ws"])
def test_ctrl_c_cancels_the_answer_and_keeps_the_chat(
    gateway_server: ServerFactory, tmp_path: Path, transport: list[str]
) -> None:
    """Ctrl-C while an answer streams cancels its run and returns to the prompt, where
    the next message is answered; it quit the chat and left the run going on the server
    (a model call and actions still running, the thread busy with 409 for a while)."""
    manifests = tmp_path / "manifests"
    with FakeOpenAI() as fake:
        write_remote(manifests, fake)
        server = gateway_server(manifests)
        fake.delay(0, between_chunks=0.2)
        fake.add_text(" ".join(f"word{n}" for n in range(200)))  # 40 s at this pace
        fake.add_text("second")
        command = [sys.executable, "-c", "from gateway.cli import main; main()"]
        proc = subprocess.Popen(
            [*command, "chat", "--url", server.url, *transport],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        )
        assert proc.stdin is not None and proc.stdout is not None
        output = bytearray()
        stdout = proc.stdout

        def read() -> None:
            while chunk := stdout.read1():
                output.extend(chunk)

        reader = threading.Thread(target=read)
        reader.start()

        def wait_for(text: bytes, start: int = 0) -> int:
            deadline = time.monotonic() + 30
            while (at := output.find(text, start)) < 0:
                assert proc.poll() is None, output.decode()
                assert time.monotonic() < deadline, output.decode()
                time.sleep(0.05)
            return at

        try:
            proc.stdin.write(b"tell me everything\n")
            proc.stdin.flush()
            wait_for(b"word2 ")
            proc.send_signal(signal.SIGINT)
            at = wait_for(b"cancelled")
            proc.stdin.write(b"and now?\n")
            proc.stdin.flush()
            wait_for(b"second", at)
            proc.stdin.write(b"\n")
            proc.stdin.close()
            assert proc.wait(30) == 0, output.decode()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(10)
            stdout.close()
            proc.stdin.close()
    text = output.decode()
    assert "word199" not in text
    # "HTTP 409", as gateway chat prints a refused request (a bare "409" can be in the
    # random thread id it prints: thread_ee743b1a2b334a409a69ed1e failed the suite once).
    assert "Aborted" not in text and "HTTP 409" not in text, text
