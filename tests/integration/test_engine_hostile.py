"""Hostile or sloppy model output, through the real server, the real sandbox and FakeOpenAI.

What a model asks for is checked before anything runs, and whatever it sent,
the history the gateway sends back stays one every server accepts, so the
thread stays usable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import GatewayServer, ServerFactory, write_api_manifests
from httpx_sse import connect_sse

from gateway.testing.fake_openai import FakeOpenAI
from tests._fake import write_remote


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
