"""A model answer cut short (finish_reason length / content_filter), through the real server.

The gateway talks to FakeOpenAI over both APIs (Chat Completions and Responses,
which says ``response.incomplete``); clients see the run ``incomplete`` with
``incomplete_details`` in /chat, the events, the run record, the metrics and
the OpenAI-compatible endpoint (``finish_reason: "length"``) and ``gateway chat``.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner
from conftest import GatewayServer, ServerFactory, write_api_manifests

from gateway.cli import main
from gateway.testing.fake_openai import FakeOpenAI

CUT = {"reason": "max_completion_tokens"}


@pytest.fixture(params=["chat", "responses"])
def server(
    request: pytest.FixtureRequest,
    gateway_server: ServerFactory,
    fake: FakeOpenAI,
    tmp_path: Path,
) -> GatewayServer:
    """A gateway whose assistant ``remote`` (with get_weather) talks to the fake."""
    manifests = write_api_manifests(tmp_path / "site")
    (manifests / "remote.yaml").write_text(
        f"""
kind: provider
name: fake
base_url: {fake.base_url}
api_key: test-key
api: {request.param}
max_retries: 0
---
kind: assistant
name: remote
provider: fake
model: fake-model
actions: [get_weather]
---
kind: assistant
name: looper
provider: fake
model: fake-model
actions: [get_weather]
max_tool_rounds: 1
"""
    )
    return gateway_server(manifests)


def _events(response: httpx.Response) -> list[tuple[str, dict[str, object]]]:
    """The (event, data) pairs of an SSE body."""
    pairs = []
    for frame in response.text.split("\n\n"):
        lines = dict(
            line.split(": ", 1) for line in frame.split("\n") if line.startswith(("event", "data"))
        )
        if "event" in lines:
            pairs.append((lines["event"], json.loads(lines["data"])))
    return pairs


def test_a_cut_answer_is_an_incomplete_run_everywhere(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """/chat, the stored record, the replayed events and the metrics all say incomplete."""
    fake.add_text("The weather in Paris is", finish_reason="length", usage=(10, 5))
    with httpx.Client(base_url=server.url, timeout=30) as c:
        answer = c.post("/chat", json={"assistant": "remote", "message": "weather?"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["responses"] == ["The weather in Paris is"]
        assert body["status"] == "incomplete" and body["incomplete_details"] == CUT
        assert body["metadata"]["finish_reason"] == "length"
        run = c.get(f"/threads/{body['thread_id']}/runs/{body['run_id']}")
        assert run.status_code == 200, run.text
        assert run.json()["status"] == "incomplete"
        assert run.json()["incomplete_details"] == CUT and run.json()["error"] is None
        assert run.json()["usage"]["total_tokens"] == 15
        missing = c.get(f"/threads/{body['thread_id']}/runs/run_missing")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
        replay = c.get(f"/threads/{body['thread_id']}/runs/{body['run_id']}/events")
        completed = [data for name, data in _events(replay) if name == "thread.run.completed"]
        assert completed == [
            {
                "run_id": body["run_id"],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                "incomplete_details": CUT,
            }
        ]
        metrics = c.get("/metrics").text
        assert 'gateway_runs_total{status="incomplete"} 1.0' in metrics
        # The next answer finishes: a plain completed run again.
        fake.add_text("Sunny.")
        again = c.post("/chat", json={"thread_id": body["thread_id"], "message": "and?"})
        assert again.json()["status"] == "completed"
        assert again.json()["incomplete_details"] is None
        assert again.json()["metadata"]["finish_reason"] == "stop"
    # The cut answer stays in the thread: the model sees what it said.
    assert fake.model_requests()[-1].last_user_text() == "and?"
    assert "The weather in Paris is" in json.dumps(fake.model_requests()[-1].body)


def test_tool_calls_cut_by_the_token_limit_never_run(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """A length answer's calls (the last one truncated JSON) run nowhere and are not stored."""
    fake.add_tool_calls(
        [("get_weather", {"city": "Paris"}), ("get_weather", '{"city": "Ro')],
        text="Let me check.",
        finish_reason="length",
    )
    with httpx.Client(base_url=server.url, timeout=30) as c:
        streamed = c.post(
            "/chat", json={"assistant": "remote", "message": "weather?", "stream": True}
        )
        events = _events(streamed)
        names = [name for name, _ in events]
        assert "thread.run.step.created" not in names
        assert names[-4:] == [
            "thread.message.completed",
            "thread.run.completed",
            "metadata",
            "done",
        ]
        assert events[-3][1]["incomplete_details"] == CUT
        thread_id = events[0][1]["thread_id"]
        messages = c.get(f"/threads/{thread_id}/messages").json()
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "weather?"),
        ("assistant", "Let me check."),
    ]
    assert all("tool_calls" not in m for m in messages)
    assert len(fake.model_requests()) == 1  # no tool result went back to the model


@pytest.mark.parametrize(
    ("reason", "expected"), [("length", "length"), ("content_filter", "content_filter")]
)
def test_the_openai_endpoint_reports_the_finish_reason(
    server: GatewayServer, fake: FakeOpenAI, reason: str, expected: str
) -> None:
    """/v1/chat/completions says finish_reason length (content_filter), streamed and not."""
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "weather?"}
    ]
    fake.add_text("It is sun", finish_reason=reason)
    completion = sdk.chat.completions.create(model="remote", messages=messages)
    assert completion.choices[0].message.content == "It is sun"
    assert completion.choices[0].finish_reason == expected
    fake.add_text("It is sun", finish_reason=reason)
    chunks = list(sdk.chat.completions.create(model="remote", messages=messages, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "It is sun"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == expected
    # A stop sequence found before the cut ends a finished answer: stop.
    fake.add_text("It is sun", finish_reason=reason)
    stopped = sdk.chat.completions.create(model="remote", messages=messages, stop=["sun"])
    assert stopped.choices[0].message.content == "It is "
    assert stopped.choices[0].finish_reason == "stop"
    fake.add_text("It is sunny.")
    plain = sdk.chat.completions.create(model="remote", messages=messages)
    assert plain.choices[0].finish_reason == "stop"


def test_gateway_chat_says_the_answer_was_cut(server: GatewayServer, fake: FakeOpenAI) -> None:
    """The terminal client prints the cut answer, then that it was cut short and why."""
    fake.add_text("It is sun", finish_reason="length")
    result = CliRunner().invoke(main, ["chat", "remote", "--url", server.url], input="weather?\n\n")
    assert result.exit_code == 0, result.output
    # stdout only: the server runs in this process, and its log lines (stderr, which
    # result.output mixes in) may land between two words of the streamed answer.
    assert "It is sun" in result.stdout
    assert "answer cut short (max_completion_tokens)" in result.stdout


def test_a_model_looping_on_tools_is_an_incomplete_run_not_a_provider_error(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """Past max_tool_rounds the run ends incomplete (reason max_tool_rounds), never a 502.

    It answered /chat with 502, the status reserved for the model provider being
    down: a client (and the openai SDK, which retries 5xx and ran the tools again)
    could not tell a model looping from an outage.
    """
    loops = {"reason": "max_tool_rounds"}
    fake.add_tool_calls([("get_weather", {"city": "Paris"})], text="Checking.")
    fake.add_tool_calls([("get_weather", {"city": "Paris"})], text="Checking again.")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        answer = c.post("/chat", json={"assistant": "looper", "message": "weather?"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "incomplete" and body["incomplete_details"] == loops
        assert body["responses"] == ["Checking.", "Checking again."]
        assert [call["status"] for call in body["tool_calls"]] == ["succeeded"]
        run = c.get(f"/threads/{body['thread_id']}/runs/{body['run_id']}").json()
        assert run["status"] == "incomplete" and run["error"] is None
        assert run["incomplete_details"] == loops
        # The refused round's call is neither run nor stored: the thread stays valid.
        messages = c.get(f"/threads/{body['thread_id']}/messages").json()
        assert messages[-1] == {**messages[-1], "role": "assistant", "content": "Checking again."}
        assert "tool_calls" not in messages[-1]
        fake.add_tool_calls([("get_weather", {"city": "Paris"})])
        fake.add_tool_calls([("get_weather", {"city": "Paris"})])
        streamed = c.post(
            "/chat", json={"assistant": "looper", "message": "weather?", "stream": True}
        )
        events = _events(streamed)
        assert "thread.run.failed" not in [name for name, _ in events]
        assert events[-3][1]["incomplete_details"] == loops
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    fake.add_tool_calls([("get_weather", {"city": "Paris"})])
    fake.add_tool_calls([("get_weather", {"city": "Paris"})], text="Still checking.")
    completion = sdk.chat.completions.create(
        model="looper", messages=[{"role": "user", "content": "weather?"}]
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Still checking."


def test_an_empty_answer_is_flagged_in_metadata_and_logged(
    server: GatewayServer, fake: FakeOpenAI, capfd: pytest.CaptureFixture[str]
) -> None:
    """A model answering no text and no tool call: metadata says empty_answer, a warning says why.

    The run ended completed with nothing in it and nothing logged: a client showed
    an empty bubble, and the operator had no trace of the model's empty answer.
    """
    fake.add_text("", finish_reason="stop")
    with httpx.Client(base_url=server.url, timeout=30) as c:
        answer = c.post("/chat", json={"assistant": "remote", "message": "weather?"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "completed" and body["responses"] == []
        assert body["metadata"]["empty_answer"] is True
        fake.add_text("Sunny.")
        again = c.post("/chat", json={"thread_id": body["thread_id"], "message": "and?"})
        assert again.json()["metadata"]["empty_answer"] is False
        # Only blank text (some local models answer a newline) shows as empty as well.
        fake.add_text("\n \n", finish_reason="stop")
        blank = c.post("/chat", json={"thread_id": body["thread_id"], "message": "so?"})
        assert blank.json()["responses"] == ["\n \n"]  # kept as the model wrote it
        assert blank.json()["metadata"]["empty_answer"] is True
    logged = capfd.readouterr().err
    assert "event=run.empty_answer" in logged and body["run_id"] in logged


def test_gateway_chat_says_the_answer_was_empty(server: GatewayServer, fake: FakeOpenAI) -> None:
    """The terminal client says the model answered nothing, instead of printing nothing."""
    fake.add_text("", finish_reason="stop")
    result = CliRunner().invoke(main, ["chat", "remote", "--url", server.url], input="weather?\n\n")
    assert result.exit_code == 0, result.output
    assert "the model answered nothing" in result.stdout
