"""`gateway serve` and `gateway chat` against real servers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets
from click.testing import CliRunner
from conftest import GatewayServer, ServerFactory
from websockets.sync.client import connect as ws_connect

from gateway.cli import main
from gateway.testing.fake_openai import FakeOpenAI


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
    manifests.mkdir()
    with FakeOpenAI() as fake:
        (manifests / "remote.yaml").write_text(
            f"kind: provider\nname: fake\nbase_url: {fake.base_url}\napi_key: k\n"
            "api: chat\nmax_retries: 0\n---\n"
            "kind: assistant\nname: remote\nprovider: fake\nmodel: fake-model\n"
        )
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
    server = gateway_server(api_manifests, env={"GATEWAY_API_KEYS": key})
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path}/serve.db",
        "GATEWAY_WATCH": "false",
        "LOGGING_LEVEL": "WARNING",
        "GATEWAY_MAX_BODY_BYTES": "65536",
    }
    for var in ("GATEWAY_API_KEYS", "GATEWAY_ADMIN_KEYS", "ENVIRONMENT", "GATEWAY_MANIFESTS"):
        env.pop(var, None)
    command = [sys.executable, "-c", "from gateway.cli import main; main()"]
    command += ["serve", "--port", str(port), "--manifests", str(api_manifests)]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready")
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)
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
