"""Model-provider clients across hot reloads: real server, real reloads, FakeOpenAI over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from gateway.testing.fake_openai import FakeOpenAI
from tests.integration.test_reload import WATCH, chat, status, wait_for

if TYPE_CHECKING:
    from tests.integration.conftest import GatewayServer, ServerFactory

SITE_YAML = """
kind: provider
name: fake
base_url: {base_url}
api: chat
timeout: {timeout}
---
kind: assistant
name: bot
provider: fake
model: fake-model
instructions: {instructions}
"""


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI server on loopback that, like Ollama, never closes an idle
    connection itself (a client that is not closed keeps its connection open)."""
    with FakeOpenAI(keep_alive=3600) as server:
        yield server


def write(
    manifests: Path, fake: FakeOpenAI, *, timeout: int = 30, instructions: str = "Help."
) -> None:
    """(Re)write the site's one manifest file: a provider on ``fake`` and an assistant using it."""
    manifests.mkdir(parents=True, exist_ok=True)
    text = SITE_YAML.format(base_url=fake.base_url, timeout=timeout, instructions=instructions)
    (manifests / "site.yaml").write_text(text)


def reloaded(server: GatewayServer, previous: str) -> str:
    """Wait until the live manifest version differs from ``previous``; return the new one."""
    version, _ = wait_for(lambda: (v := status(server)["version"]) != previous and v)
    return str(version)


def connections(fake: FakeOpenAI, expected: int) -> bool:
    """Whether ``fake`` has exactly ``expected`` open client connections."""
    return fake.open_connections == expected


def test_a_replaced_provider_client_is_closed_after_the_reload(
    tmp_path: Path, gateway_server: ServerFactory, fake: FakeOpenAI
) -> None:
    """A reload that changes a provider closes the old client's connections; repeated
    changes never pile up open connections."""
    manifests = tmp_path / "manifests"
    write(manifests, fake)
    server = gateway_server(manifests, env=WATCH)
    assert chat(server, "hello")["responses"] == ["hello"]
    assert fake.open_connections == 1
    version = status(server)["version"]
    for timeout in (31, 32, 33):
        write(manifests, fake, timeout=timeout)
        version = reloaded(server, version)
        wait_for(lambda: connections(fake, 0))  # the replaced client is closed, not kept
        assert chat(server, "again")["responses"] == ["again"]
        assert fake.open_connections == 1
    server.stop()
    wait_for(lambda: connections(fake, 0))


def test_an_unchanged_provider_keeps_its_connection_across_reloads(
    tmp_path: Path, gateway_server: ServerFactory, fake: FakeOpenAI
) -> None:
    """A reload that leaves the provider's manifest as it was reuses its client and connection."""
    manifests = tmp_path / "manifests"
    write(manifests, fake)
    server = gateway_server(manifests, env=WATCH)
    chat(server, "hello")
    version = status(server)["version"]
    for n in range(3):
        write(manifests, fake, instructions=f"Help, edition {n}.")
        version = reloaded(server, version)
        assert chat(server, f"edition {n}")["responses"] == [f"edition {n}"]
    assert fake.clients_seen == 1
    assert fake.open_connections == 1


def test_a_run_streaming_through_a_replaced_client_finishes_then_it_is_closed(
    tmp_path: Path, gateway_server: ServerFactory, fake: FakeOpenAI
) -> None:
    """A run in flight when its provider is replaced streams to its end on the old client,
    which is closed once that run is done."""
    manifests = tmp_path / "manifests"
    write(manifests, fake)
    server = gateway_server(manifests, env=WATCH)
    words = [f"word{i}" for i in range(12)]
    fake.delay(0, between_chunks=0.15)
    fake.add_text(" ".join(words))

    async def scenario() -> tuple[list[str], list[str]]:
        events: list[str] = []
        deltas: list[str] = []
        version = status(server)["version"]
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=60) as client,
            client.stream(
                "POST", "/chat", json={"assistant": "bot", "message": "hi", "stream": True}
            ) as response,
        ):
            assert response.status_code == 200
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                    events.append(event)
                elif line.startswith("data:") and event == "thread.message.delta":
                    deltas.append(json.loads(line[5:])["delta"])
                    if len(deltas) == 1:  # mid-stream: replace the provider
                        write(manifests, fake, timeout=45)
                        await asyncio.to_thread(reloaded, server, version)
                        # The old client is still streaming this run: not closed under it.
                        assert fake.open_connections == 1
        return events, deltas

    events, deltas = asyncio.run(scenario())
    assert "thread.run.completed" in events and events[-1] == "done"
    assert "".join(deltas) == " ".join(words)
    wait_for(lambda: connections(fake, 0))
    fake.delay(0)
    assert chat(server, "after")["responses"] == ["after"]
    assert fake.open_connections == 1


def test_every_provider_client_is_closed_at_shutdown(
    tmp_path: Path, gateway_server: ServerFactory, fake: FakeOpenAI
) -> None:
    """Stopping the server closes its provider clients' connections."""
    manifests = tmp_path / "manifests"
    write(manifests, fake)
    server = gateway_server(manifests, env=WATCH)
    chat(server, "hello")
    assert fake.open_connections == 1
    server.stop()
    deadline = time.monotonic() + 5
    while fake.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.open_connections == 0
