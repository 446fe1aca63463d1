"""Logs of a real server: one access line per request, ids on every line, no bodies or keys."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from conftest import ServerFactory


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
