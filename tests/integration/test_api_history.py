"""The history budget, per assistant (``history:``) and server-wide, through the real server.

FakeOpenAI records every request, so each test checks what the model was
actually sent after a few exchanges on one thread.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from conftest import GatewayServer, ServerFactory, write_api_manifests

from gateway.testing.fake_openai import FakeOpenAI


@pytest.fixture
def server(gateway_server: ServerFactory, fake: FakeOpenAI, tmp_path: Path) -> GatewayServer:
    """Assistants with a message budget, a size budget, and the server's (5 messages); the
    API test manifests' actions (get_weather) beside them."""
    manifests = write_api_manifests(tmp_path / "site")
    (manifests / "history.yaml").write_text(
        f"""
kind: provider
name: fake
base_url: {fake.base_url}
api_key: test-key
api: chat
max_retries: 0
---
kind: assistant
name: short
provider: fake
model: fake-model
history: {{max_messages: 3}}
---
kind: assistant
name: small
provider: fake
model: fake-model
history:
  max_kb: 1
---
kind: assistant
name: plain
provider: fake
model: fake-model
---
kind: assistant
name: tooled
provider: fake
model: fake-model
actions: [get_weather]
history: {{max_kb: 1}}
"""
    )
    return gateway_server(manifests, env={"GATEWAY_HISTORY_MAX_MESSAGES": "5"})


def _converse(server: GatewayServer, assistant: str, messages: list[str]) -> None:
    """Send ``messages`` one after the other on one new thread."""
    thread_id = "new"
    with httpx.Client(base_url=server.url, timeout=30) as c:
        for message in messages:
            answer = c.post(
                "/chat", json={"thread_id": thread_id, "assistant": assistant, "message": message}
            )
            assert answer.status_code == 200, answer.text
            thread_id = answer.json()["thread_id"]


def _sent(fake: FakeOpenAI) -> list[tuple[str, str]]:
    """The (role, content) of the messages of the last model request."""
    return [(m["role"], m["content"]) for m in fake.model_requests()[-1].body["messages"]]


def test_an_assistant_message_budget_trims_what_the_model_gets(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """history.max_messages 3: the fourth exchange sends only the newest three messages."""
    _converse(server, "short", ["one", "two", "three", "four"])
    assert _sent(fake) == [("user", "three"), ("assistant", "three"), ("user", "four")]


def test_an_assistant_size_budget_trims_what_the_model_gets(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """history.max_kb 1: about 1000 characters; older turns past it are left out."""
    _converse(server, "small", ["a" * 600, "b" * 300, "c" * 100])
    # 100 + 300 + 300 characters fit (with a little per message); the 600 before do not.
    assert _sent(fake) == [("user", "b" * 300), ("assistant", "b" * 300), ("user", "c" * 100)]


def test_the_server_budget_applies_to_assistants_without_their_own(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """GATEWAY_HISTORY_MAX_MESSAGES 5 trims an assistant that sets no history."""
    _converse(server, "plain", ["one", "two", "three", "four"])
    assert [content for _, content in _sent(fake)] == ["two", "two", "three", "three", "four"]


def test_the_question_is_sent_with_tool_results_over_the_budget(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """A tool result bigger than the whole budget still goes with the question that asked.

    The newest turn (the call and its result) is always sent; the user message
    it answers used to be trimmed as "older", so the model got tool results
    without the question (and strict chat templates refuse a conversation
    that does not start with a user message).
    """
    fake.add_tool_calls([("get_weather", {"city": "P" * 1500})])
    fake.add_text("It is 21 degrees.")
    _converse(server, "tooled", ["What is the weather in Paris?"])
    sent = fake.model_requests()[-1].body["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[0]["content"] == "What is the weather in Paris?"
    assert "P" * 1500 in sent[2]["content"]  # the result itself, whole
