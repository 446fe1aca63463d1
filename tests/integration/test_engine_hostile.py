"""Hostile or sloppy model output, through the real server, the real sandbox and FakeOpenAI.

What a model asks for is checked before anything runs, and whatever it sent,
the history the gateway sends back stays one every server accepts, so the
thread stays usable.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import GatewayServer, ServerFactory, write_api_manifests
from httpx_sse import connect_sse

from gateway.testing.fake_openai import FakeOpenAI
from tests._fake import write_remote
from tests._pg import pg_url


@pytest.fixture(params=["chat", "responses"])
def server(
    request: pytest.FixtureRequest, gateway_server: ServerFactory, fake: FakeOpenAI, tmp_path: Path
) -> GatewayServer:
    """A gateway whose assistant ``remote`` (get_weather, explode) talks to the fake."""
    manifests = write_api_manifests(tmp_path / "site")
    write_remote(manifests, fake, "actions: [get_weather, explode]\n", api=request.param)
    return gateway_server(manifests)


def _sent_calls(body: dict[str, Any]) -> list[dict[str, str]]:
    """The tool calls (name, arguments) in a recorded model request, either API."""
    if "messages" in body:
        return [call["function"] for m in body["messages"] for call in m.get("tool_calls") or ()]
    return [
        {"name": i["name"], "arguments": i["arguments"]}
        for i in body["input"]
        if i.get("type") == "function_call"
    ]


def test_the_json_answer_shows_the_arguments_the_model_sent(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """``POST /chat`` as JSON listed each tool call's outcome without its arguments (only the
    stream's ``thread.run.step.created`` had them), so a JSON client could not see what the
    model asked; each call carries ``arguments``, the text the model sent (spacing and all,
    broken JSON too), the same the run's ``step.created`` events show."""
    sent = {'{"city":  "Zürich",\n "unit": "c"}', '{"city": "Par'}
    ids = fake.add_tool_calls([("get_weather", text) for text in sorted(sent)])
    fake.add_text("Done.")
    with httpx.Client(base_url=server.url, timeout=60) as c:
        answer = c.post("/chat", json={"assistant": "remote", "message": "weather?"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        calls = {call["id"]: call for call in body["tool_calls"]}
        assert sorted(calls) == sorted(ids)
        assert {call["arguments"] for call in calls.values()} == sent
        assert sorted(call["status"] for call in calls.values()) == ["failed", "succeeded"]
        url = f"/threads/{body['thread_id']}/runs/{body['run_id']}/events"
        with connect_sse(c, "GET", url) as source:
            streamed = [json.loads(e.data) for e in source.iter_sse()]
    created = [e["tool_call"] for e in streamed if e.get("type") == "tool_call"]
    assert {call["id"]: call["arguments"] for call in created} == {
        call_id: call["arguments"] for call_id, call in calls.items()
    }


def test_invalid_json_arguments_do_not_poison_the_thread(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """Calls whose arguments are not a JSON object are tool errors, and go back as ``{}``.

    Ollama's OpenAI-compatible API (and vLLM's chat templates) parse every
    call's arguments in the history and refuse the whole request when one is
    not a JSON object ("invalid tool call arguments"): sent back as the model
    wrote them, they failed the run's next request and every later message on
    the thread. The run's events and the stored thread keep what the model
    actually sent.
    """
    bad = ['{"city": "Par', '"Paris"', "[1, 2]", "city=Paris"]
    fake.add_tool_calls([("get_weather", text) for text in bad])
    fake.add_text("Sorry, I sent broken arguments.")
    with httpx.Client(base_url=server.url, timeout=60) as c:
        answer = c.post("/chat", json={"assistant": "remote", "message": "weather?"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "completed" and body["responses"] == [
            "Sorry, I sent broken arguments."
        ]
        assert [call["status"] for call in body["tool_calls"]] == ["failed"] * 4
        outputs = [json.loads(call["output"])["error"] for call in body["tool_calls"]]
        assert {error["type"] for error in outputs} == {"invalid_arguments"}
        messages = c.get(f"/threads/{body['thread_id']}/messages").json()
        stored = [call["arguments"] for m in messages for call in m.get("tool_calls") or ()]
        assert stored == bad  # the record tells what the model sent
        fake.add_text("Next answer.")
        again = c.post("/chat", json={"thread_id": body["thread_id"], "message": "and now?"})
        assert again.status_code == 200, again.text
    for request in fake.model_requests()[1:]:
        sent = _sent_calls(request.body)
        assert [call["name"] for call in sent] == ["get_weather"] * 4
        assert all(isinstance(json.loads(call["arguments"]), dict) for call in sent), sent


def _sent_results(body: dict[str, Any]) -> dict[str, str]:
    """The tool results (call id -> output) in a recorded model request, either API."""
    if "messages" in body:
        return {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}
    return {
        i["call_id"]: i["output"] for i in body["input"] if i.get("type") == "function_call_output"
    }


def _sent_ids(body: dict[str, Any]) -> list[str]:
    """The ids of the tool calls in a recorded model request, either API."""
    if "messages" in body:
        return [call["id"] for m in body["messages"] for call in m.get("tool_calls") or ()]
    return [i["call_id"] for i in body["input"] if i.get("type") == "function_call"]


def test_an_endless_tool_name_and_a_hostile_id_are_clipped_and_replaced(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """A call whose name is longer than any tool's (64 characters) is an unknown tool whose
    name is clipped (never run, even when its start is a real tool's name), and an id too
    long or not printable ASCII is replaced by a generated one, the same in the call and
    its result: before, a 1 MB name went whole into log lines, the store and every later
    request, and an id the store altered lost its result."""
    long_name = "get_weather" + "x" * 5_000
    bad_ids = ["c" * 5_000, "call\u00e9\x01x"]
    fake.add_tool_calls(
        [(long_name, {"city": "Paris"}, bad_ids[0]), ("get_weather", {"city": "Oslo"}, bad_ids[1])]
    )
    fake.add_text("Done.")
    with httpx.Client(base_url=server.url, timeout=60) as c:
        answer = c.post("/chat", json={"assistant": "remote", "message": "weather?"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        messages = c.get(f"/threads/{body['thread_id']}/messages").json()
    calls = body["tool_calls"]
    assert [len(call["name"]) for call in calls] == [65, 11]
    assert calls[0]["name"] == long_name[:64] + "\u2026"
    assert calls[0]["status"] == "failed"
    assert json.loads(calls[0]["output"])["error"]["type"] == "unknown_tool"
    assert calls[1]["status"] == "succeeded"
    ids = [call["id"] for call in calls]
    assert all(i.startswith("call_") and len(i) == 29 for i in ids), ids
    stored = [call["id"] for m in messages for call in m.get("tool_calls") or ()]
    assert stored == ids
    assert sorted(m["tool_call_id"] for m in messages if m["role"] == "tool") == sorted(ids)
    follow_up = fake.model_requests()[1].body
    assert _sent_ids(follow_up) == ids
    results = _sent_results(follow_up)
    assert sorted(results) == sorted(ids)
    assert "Oslo" in results[ids[1]]


@pytest.fixture(params=["sqlite", "postgres"])
def store_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """The gateway's store: its own SQLite file (the default), or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield {}
        return
    url = pg_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield {"GATEWAY_DATABASE_URL": f"{url}?options=-csearch_path%3D{schema}"}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_call_id_holding_nul_keeps_its_result_on_later_runs(
    gateway_server: ServerFactory, fake: FakeOpenAI, tmp_path: Path, store_env: dict[str, str]
) -> None:
    """A tool call id holding NUL (which the stores replace in a result's id but not in the
    call's) is replaced by a generated one: before, every later run of the thread sent the
    model an ``interrupted`` result instead of the tool's output (history.repair found the
    call without its result)."""
    manifests = write_api_manifests(tmp_path / "site")
    write_remote(manifests, fake, "actions: [get_weather]\n")
    server = gateway_server(manifests, env=store_env)
    fake.add_tool_calls([("get_weather", {"city": "Nulburg"}, "call\x00x")])
    fake.add_text("Sunny.")
    fake.add_text("Still sunny.")
    with httpx.Client(base_url=server.url, timeout=60) as c:
        first = c.post("/chat", json={"assistant": "remote", "message": "weather?"})
        assert first.status_code == 200, first.text
        thread_id = first.json()["thread_id"]
        again = c.post("/chat", json={"thread_id": thread_id, "message": "and now?"})
        assert again.status_code == 200, again.text
    later = fake.model_requests()[2].body
    [result] = _sent_results(later).values()
    assert "Nulburg" in result and "interrupted" not in result
    assert _sent_ids(later) == list(_sent_results(later))


def test_a_stream_that_never_finishes_frees_its_thread_after_max_stream_seconds(
    gateway_server: ServerFactory, fake: FakeOpenAI, tmp_path: Path
) -> None:
    """A model server sending an SSE comment every 0.1 s and never the end of its answer
    fails the run with a 502 ``provider_error`` after the provider's
    ``max_stream_seconds``, and the thread takes the next message: before, the run held
    the thread (409) for as long as the server went on."""
    manifests = write_api_manifests(tmp_path / "site")
    write_remote(manifests, fake, provider="max_stream_seconds: 1\n")
    server = gateway_server(manifests)
    fake.add_text("Let me think")
    fake.stall_stream_after(1, every=0.1)
    fake.add_text("Here it is.")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        thread_id = c.get("/start", params={"assistant": "remote"}).json()["thread_id"]
        stuck = c.post("/chat", json={"thread_id": thread_id, "message": "hard question"})
        assert stuck.status_code == 502, stuck.text
        error = stuck.json()["error"]
        assert error["type"] == "provider_error"
        assert error["message"] == "model provider 'fake': no complete answer within 1 s"
        again = c.post("/chat", json={"thread_id": thread_id, "message": "so?"})
        assert again.status_code == 200, again.text
        assert again.json()["responses"] == ["Here it is."]
