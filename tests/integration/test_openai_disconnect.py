"""The OpenAI-compatible endpoint when its client leaves: real server, FakeOpenAI over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.integration.test_reload import wait_for

if TYPE_CHECKING:
    from tests.integration.conftest import GatewayServer, ServerFactory

SITE_YAML = """
kind: provider
name: fake
base_url: {base_url}
api: chat
---
kind: assistant
name: bot
provider: fake
model: fake-model
"""


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A fake model that streams a long answer slowly (about 10 s)."""
    with FakeOpenAI() as server:
        server.delay(0, between_chunks=0.2)
        server.add_text(" ".join(f"word{i}" for i in range(50)))
        yield server


@pytest.fixture
def server(tmp_path: Path, gateway_server: ServerFactory, fake: FakeOpenAI) -> GatewayServer:
    """A gateway whose one assistant talks to ``fake``."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "site.yaml").write_text(SITE_YAML.format(base_url=fake.base_url))
    return gateway_server(manifests)


def idle(server: GatewayServer, fake: FakeOpenAI) -> bool:
    """No run left on the gateway and no connection left on the model server."""
    return server.services.the_engine().active_runs == 0 and fake.open_connections == 0


def test_a_streaming_client_that_leaves_stops_its_run(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """A stateless run nobody can read any more (its streaming client left) is cancelled:
    the model call stops instead of generating to its end."""
    body = {"model": "bot", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if "word0" in line:
                break
    wait_for(lambda: idle(server, fake), timeout=3)


def test_a_waiting_client_that_leaves_stops_its_run(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """A non-streaming client that gives up (a read timeout) cancels its stateless run."""
    body = {"model": "bot", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=body, timeout=1)
    wait_for(lambda: idle(server, fake), timeout=3)


def test_a_streaming_client_that_leaves_before_the_first_word_stops_its_run(
    server: GatewayServer, fake: FakeOpenAI
) -> None:
    """A streaming client that gives up while the stream waits for the model's first word
    (before any byte of the answer) cancels its stateless run too."""
    fake.delay(60)
    body = {"model": "bot", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/chat/completions", json=body, timeout=1)
    wait_for(lambda: idle(server, fake), timeout=3)


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_sequence_ends_the_run(
    tmp_path: Path, gateway_server: ServerFactory, fake: FakeOpenAI, *, stream: bool
) -> None:
    """Once the answer reaches a ``stop`` sequence (LangChain's ReAct agents send
    ``"\\nObservation:"``), the run is cancelled and the answer comes back at once: the
    model went on generating (tokens paid for, tools it then called run) and the client
    waited for the whole run, although nothing after the stop could reach it."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "site.yaml").write_text(SITE_YAML.format(base_url=fake.base_url))
    # No keep-alive within the client's read timeout: a stream held open times out.
    server = gateway_server(manifests, env={"GATEWAY_SSE_HEARTBEAT": "60"})
    # The whole answer takes 40 s, past the client's 25 s: a run going on to its end fails.
    fake.reset()
    fake.delay(0, between_chunks=0.2)
    fake.add_text(" ".join(f"word{i}" for i in range(200)))
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=25)
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    if stream:
        chunks = list(
            sdk.chat.completions.create(
                model="bot",
                messages=messages,
                stop=["word3"],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        assert chunks[-1].usage is not None
    else:
        completion = sdk.chat.completions.create(model="bot", messages=messages, stop=["word3"])
        text = completion.choices[0].message.content or ""
        finish = completion.choices[0].finish_reason
    assert text == "word0 word1 word2 "
    assert finish == "stop"
    wait_for(lambda: idle(server, fake), timeout=5)
