"""Logs of a real server: one access line per request, ids on every line, no bodies or keys."""

from __future__ import annotations

import json
import textwrap
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import ServerFactory
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from gateway.providers.offline import OfflineProvider
from gateway.testing.fake_openai import FakeOpenAI
from tests._http import serving


def test_json_logs_carry_ids_and_never_bodies_or_keys(
    capsys: pytest.CaptureFixture[str], gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """LOG_FORMAT=json: a request's lines share its correlation id; run and thread ids are bound."""
    server = gateway_server(
        api_manifests,
        env={"LOG_FORMAT": "json", "LOGGING_LEVEL": "INFO", "GATEWAY_API_KEYS": "sekrit-key-1"},
    )
    secret_text = "weather in Zanzibar-PRIVATE-7731"
    with httpx.Client(base_url=server.url, timeout=30) as c:
        response = c.post(
            "/chat",
            json={"assistant": "helper", "message": secret_text},
            headers={"Authorization": "Bearer sekrit-key-1", "X-Correlation-ID": "log-test-1"},
        )
        assert response.status_code == 200
        c.get("/health", headers={"X-Correlation-ID": "log-test-2"})
    server.stop()  # before capsys closes the stream the server logs to
    body = response.json()
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    mine = [line for line in lines if line.get("correlation_id") == "log-test-1"]
    access = [line for line in mine if line["event"] == "request"]
    assert len(access) == 1
    [line] = access
    assert line["method"] == "POST"
    assert line["path"] == "/chat"
    assert line["status"] == 200
    assert line["run_id"] == body["run_id"]
    assert line["thread_id"] == body["thread_id"]
    assert line["client"] == "key-1"
    assert line["duration_ms"] > 0
    events = {line["event"] for line in mine}
    assert {"run.started", "run.finished", "request"} <= events
    for run_line in (x for x in mine if x["event"].startswith("run.")):
        assert run_line["run_id"] == body["run_id"]
    health = [x for x in lines if x.get("correlation_id") == "log-test-2"]
    assert [x["event"] for x in health] == ["request"]
    everything = json.dumps(lines)
    assert "PRIVATE-7731" not in everything
    assert "sekrit-key-1" not in everything


def test_keyvalue_logs(
    capsys: pytest.CaptureFixture[str], gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """LOG_FORMAT=keyvalue (the default) writes logfmt lines with the same fields."""
    server = gateway_server(api_manifests, env={"LOGGING_LEVEL": "INFO"})
    httpx.get(f"{server.url}/health", headers={"X-Correlation-ID": "kv-1"})
    server.stop()  # before capsys closes the stream the server logs to
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if "correlation_id=kv-1" in x]
    assert "event=request" in line
    assert "path=/health" in line
    assert "status=200" in line


class _Echo(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_request_urls_with_secrets_are_not_logged(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    gateway_server: ServerFactory,
    tmp_path: Path,
) -> None:
    """At INFO, neither an inline action's secret query nor a provider URL's password is logged."""
    monkeypatch.setenv("LOGTEST_TOKEN", "tok-in-query-5521")
    with serving(_Echo) as echo_url, FakeOpenAI() as fake:
        fake.add_text("hello")
        model_url = fake.base_url.replace("http://", "http://user:pw-in-url-8812@")
        manifests = tmp_path / "manifests"
        manifests.mkdir()
        (manifests / "site.yaml").write_text(
            textwrap.dedent(f"""\
                kind: action
                name: echo
                description: Echo.
                isolation: inline
                secrets: [LOGTEST_TOKEN]
                http:
                  url: {echo_url}/echo
                  query: {{key: "{{{{ secrets.LOGTEST_TOKEN }}}}"}}
                ---
                kind: provider
                name: fake
                base_url: {model_url}
                api: chat
                ---
                kind: assistant
                name: helper
                provider: fake
                model: fake-model
                actions: [echo]
                """)
        )
        server = gateway_server(manifests, env={"LOGGING_LEVEL": "INFO"})
        with httpx.Client(base_url=server.url, timeout=30) as c:
            invoked = c.post("/actions/echo/invoke", json={"arguments": {}})
            chat = c.post("/chat", json={"message": "hi"})
        server.stop()  # before capsys closes the stream the server logs to
    assert invoked.status_code == 200 and invoked.json()["status"] == "succeeded", invoked.text
    assert chat.status_code == 200 and chat.json()["responses"] == ["hello"], chat.text
    assert fake.model_requests()  # the model was reached through that URL
    err = capsys.readouterr().err
    assert "tok-in-query-5521" not in err
    assert "pw-in-url-8812" not in err


def test_a_client_sending_invalid_utf8_is_a_warning_not_a_server_error(
    capsys: pytest.CaptureFixture[str], gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """A WebSocket text frame that is not UTF-8 made uvicorn log an ERROR with a traceback:
    any client could fill the server's error log (and page its operator) at will. It is one
    WARNING line without a traceback, and the client still gets 1007."""
    server = gateway_server(api_manifests, env={"LOGGING_LEVEL": "INFO"})
    with ws_connect(f"{server.ws_url}/ws/chat") as ws:
        ws.send(b'{"message": "\xff\xfe"}', text=True)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    server.stop()  # before capsys closes the stream the server logs to
    err = capsys.readouterr().err
    [line] = [x for x in err.splitlines() if "Invalid UTF-8" in x]
    assert "level=warning" in line
    assert "level=error" not in err
    assert "Traceback" not in err


def test_debug_logs_hold_no_websocket_keys(
    capsys: pytest.CaptureFixture[str], gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """At DEBUG the websockets library (as uvicorn.error) logged every handshake header,
    so the API key a client sends as ``Authorization`` or as the ``["bearer", KEY]``
    subprotocol (how a browser authenticates) was in the log; those values are
    redacted, the lines stay."""
    server = gateway_server(
        api_manifests,
        env={"LOGGING_LEVEL": "DEBUG", "GATEWAY_API_KEYS": "ws-key-4417,ws-web-key-9921"},
    )
    with ws_connect(
        f"{server.ws_url}/ws/chat",
        additional_headers={"Authorization": "Bearer ws-key-4417"},
    ) as ws:
        ws.send(json.dumps({"assistant": "other", "message": "hi"}))
        while json.loads(ws.recv(timeout=60))["event"] != "done":
            pass
    with ws_connect(
        f"{server.ws_url}/ws/chat",
        subprotocols=["bearer", "ws-web-key-9921"],  # type: ignore[list-item]
    ) as ws:
        ws.send(json.dumps({"assistant": "other", "message": "hi"}))
        while json.loads(ws.recv(timeout=60))["event"] != "done":
            pass
    server.stop()  # before capsys closes the stream the server logs to
    err = capsys.readouterr().err
    assert "< authorization: [redacted]" in err  # the handshake's lines stay
    assert "< sec-websocket-protocol: [redacted]" in err
    assert "ws-key-4417" not in err
    assert "ws-web-key-9921" not in err


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_websocket_query_keys_are_not_logged(
    capsys: pytest.CaptureFixture[str],
    gateway_server: ServerFactory,
    api_manifests: Path,
    level: str,
) -> None:
    """uvicorn logs every WebSocket handshake at INFO with its query string, so the key a
    browser sends as ``/ws/chat?api_key=KEY`` (the README's way) was in the default log;
    it is redacted there (and in the DEBUG request line), the line stays."""
    server = gateway_server(
        api_manifests, env={"LOGGING_LEVEL": level, "GATEWAY_API_KEYS": "ws-query-key-3381"}
    )
    with ws_connect(f"{server.ws_url}/ws/chat?api_key=ws-query-key-3381") as ws:
        ws.send(json.dumps({"assistant": "other", "message": "hi"}))
        while json.loads(ws.recv(timeout=60))["event"] != "done":
            pass
    server.stop()  # before capsys closes the stream the server logs to
    err = capsys.readouterr().err
    assert "/ws/chat?api_key=[redacted]" in err  # uvicorn's [accepted] line
    assert "ws-query-key-3381" not in err


@pytest.mark.parametrize("route", ["/chat", "/v1/chat/completions"])
def test_a_crashed_run_is_logged_once(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    gateway_server: ServerFactory,
    api_manifests: Path,
    route: str,
) -> None:
    """A run that crashed (an unexpected exception in the engine) was logged twice, once as
    ``run.crashed`` and once more as the request's ``unhandled_error`` with a second
    traceback (of the answer's raise, not of the crash); it is one ERROR line with the
    run and thread ids and the crash's traceback, and the client's 500 says nothing more."""

    async def broken(self: OfflineProvider, request: Any) -> AsyncIterator[Any]:
        raise RuntimeError("engine bug 5531")
        yield  # an async generator, as the provider's stream is

    monkeypatch.setattr(OfflineProvider, "stream", broken)
    server = gateway_server(api_manifests, env={"LOG_FORMAT": "json", "LOGGING_LEVEL": "INFO"})
    body: dict[str, Any] = (
        {"assistant": "helper", "message": "weather in Paris"}
        if route == "/chat"
        else {"model": "helper", "messages": [{"role": "user", "content": "weather in Paris"}]}
    )
    with httpx.Client(base_url=server.url, timeout=30) as c:
        response = c.post(route, json=body, headers={"X-Correlation-ID": "crash-1"})
    server.stop()  # before capsys closes the stream the server logs to
    assert response.status_code == 500, response.text
    assert response.json()["error"]["message"] == "internal error"
    lines = [
        json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")
    ]
    errors = [line for line in lines if line["level"] in ("error", "critical")]
    assert [line["event"] for line in errors] == ["run.crashed"], errors
    [crash] = errors
    assert crash["run_id"].startswith("run_")
    assert crash["correlation_id"] == "crash-1"
    if route == "/chat":  # a /v1 run is stateless: no thread
        assert crash["thread_id"].startswith("thread_")
    assert "engine bug 5531" in json.dumps(crash["exception"])
    assert [line["event"] for line in lines if "exception" in line] == ["run.crashed"]


HOSTILE = "\x1b[31mred\r\nforged level=error event=pwned\x7f\x85\u2028\u2029"
"""A path segment a client sends: ESC, CR LF, DEL, C1 NEL, the Unicode line separators."""
CONTROLS = "\x1b\r\x7f\x85\u2028\u2029"  # and "\n": it may only end a line


@pytest.mark.parametrize("log_format", ["keyvalue", "json"])
def test_control_characters_of_a_path_or_a_file_name_are_escaped_in_the_log(
    capsys: pytest.CaptureFixture[str],
    gateway_server: ServerFactory,
    api_manifests: Path,
    log_format: str,
) -> None:
    """A request path holding ESC[31m and CR LF (percent-encoded, decoded by the server) was
    written raw into the keyvalue access line, and so was a manifest file's name (a newline
    and ``::error``) in a rejected reload's ``reload_problem`` line: they recoloured the
    terminal of an operator tailing the log, and a newline started a forged line of its own
    (a CI workflow command). Every control character is escaped (``\\x1b``, ``\\r``,
    ``\\n``, ``\\u2028``), each record is one line; JSON lines escape them by construction
    and give the values back exactly."""
    server = gateway_server(api_manifests, env={"LOG_FORMAT": log_format, "LOGGING_LEVEL": "INFO"})
    response = httpx.get(
        f"{server.url}/{quote(HOSTILE)}", headers={"X-Correlation-ID": "hostile-1"}
    )
    assert response.status_code == 404
    evil = "evil\x1b[31m\n::error::pwned.yaml"
    (api_manifests / evil).write_text("kind: nope\nname: x\n")
    reload = httpx.post(f"{server.url}/manifests/reload", timeout=30)
    assert reload.json()["result"] == "rejected", reload.text
    server.stop()  # before capsys closes the stream the server logs to
    err = capsys.readouterr().err
    assert not [c for c in CONTROLS if c in err]
    # splitlines() breaks at every line boundary a reader may know (NEL, U+2028 too).
    lines = err.splitlines()
    [line] = [x for x in lines if "hostile-1" in x]
    assert not [x for x in lines if "forged" in x and x != line]
    assert not [x for x in lines if x.startswith("::")]
    [problem] = [x for x in lines if "reload_problem" in x and "pwned" in x]
    if log_format == "json":
        record = json.loads(line)
        assert record["event"] == "request"
        assert record["path"] == f"/{HOSTILE}"
        assert json.loads(problem)["problem"].startswith(f"{api_manifests / evil}:1:7: ")
    else:
        assert "event=request" in line
        escaped = r"/\x1b[31mred\r\nforged level=error event=pwned\x7f\x85\u2028\u2029"
        assert f'path="{escaped}"' in line
        assert r"/manifests/evil\x1b[31m\n::error::pwned.yaml:1:7: unknown kind" in problem


def test_a_traceback_stays_one_readable_escaped_value(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    gateway_server: ServerFactory,
    api_manifests: Path,
) -> None:
    """LOG_FORMAT=keyvalue: a crash's traceback is the ``exception`` value of its one line,
    its line breaks shown as ``\\n``; an exception message holding ESC and a newline (text a
    model or a client chose) is escaped within it instead of driving the terminal."""

    async def broken(self: OfflineProvider, request: Any) -> AsyncIterator[Any]:
        raise RuntimeError("engine bug\x1b[31m\nforged")
        yield  # an async generator, as the provider's stream is

    monkeypatch.setattr(OfflineProvider, "stream", broken)
    server = gateway_server(api_manifests, env={"LOGGING_LEVEL": "INFO"})
    response = httpx.post(
        f"{server.url}/chat",
        json={"assistant": "helper", "message": "weather in Paris"},
        headers={"X-Correlation-ID": "crash-kv-1"},
        timeout=30,
    )
    server.stop()  # before capsys closes the stream the server logs to
    assert response.status_code == 500, response.text
    err = capsys.readouterr().err
    assert "\x1b" not in err
    [line] = [x for x in err.splitlines() if "event=run.crashed" in x]
    assert 'exception="Traceback (most recent call last):\\n  File ' in line
    assert line.endswith('RuntimeError: engine bug\\x1b[31m\\nforged"'), line
    assert not [x for x in err.splitlines() if x.startswith("forged")]
