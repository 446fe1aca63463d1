"""Engine overhead per turn, next to the model's own HTTP round trip, in one run.

One turn = user message -> model asks for a tool -> the tool runs -> model
answers. Measured side by side:

1. engine, stateless: instant in-process model and tool, no store: the run
   loop, events and log alone;
2. engine + SQLite: the same turn on a thread, with every message and the run
   record committed durably (WAL, synchronous=FULL) in a temp dir (a turn is
   four commits: new thread + run + user message, the assistant's tool call,
   the tool result, last answer + record + event log; it was six before the
   first and last were grouped), next to the cost of one such commit;
3. fake model round trip: one streamed Chat Completions call to FakeOpenAI
   through the openai SDK over loopback HTTP (what a turn's *model* part costs
   at the very least; a turn with a tool makes two such calls), and the same
   call through the gateway's ``ChatCompletionsProvider`` (the SDK's client
   without ``create``'s parameter transform and per-chunk pydantic models);
4. full turn over HTTP: the engine driving FakeOpenAI (two model calls) with
   the instant tool and the SQLite store.

Run: ``uv run --frozen python bench/engine.py [--turns N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import structlog

from gateway.engine import Engine
from gateway.executors.base import ToolResult
from gateway.manifests.catalog import Catalog, CatalogRef
from gateway.manifests.model import Assistant
from gateway.manifests.model import Provider as ProviderManifest
from gateway.providers._openai_base import ProviderConfig
from gateway.providers.base import (
    ChatMessage,
    ModelDone,
    ModelEvent,
    ModelRequest,
    Provider,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)
from gateway.providers.openai_chat import ChatCompletionsProvider
from gateway.providers.registry import ProviderRegistry
from gateway.settings import Settings
from gateway.store.sqlite import SQLiteStore
from gateway.testing.fake_openai import FakeOpenAI

TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look an order up.",
        "parameters": {"type": "object", "properties": {"order": {"type": "integer"}}},
    },
}


class InstantModel:
    """Asks for ``lookup`` when the last message is from the user, else answers."""

    name = "instant"

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        if request.messages[-1].role == "user":
            yield ToolCallRequest(ToolCall(id="call_1", name="lookup", arguments='{"order": 1042}'))
        else:
            for word in ("Order ", "1042 ", "has ", "shipped."):
                yield TextDelta(word)
        yield ModelDone(usage=Usage(prompt_tokens=10, completion_tokens=4, total_tokens=14))

    async def aclose(self) -> None:
        return None


class Fixed:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    def acquire(self, catalog: Catalog, assistant: Assistant) -> Provider:
        return self.provider

    def release(self, provider: Provider) -> None:
        return None


class InstantRunner:
    async def run(
        self,
        catalog: Catalog,
        name: str,
        arguments: str | dict[str, Any],
        *,
        correlation_id: str = "",
        assistant: str | None = None,
    ) -> ToolResult:
        return ToolResult(status="succeeded", output='{"status": "shipped"}', duration_ms=0.0)


def catalog(root: Path, provider: str | None, fake_url: str = "") -> Catalog:
    providers = {}
    if fake_url:
        providers["fake"] = ProviderManifest(
            name="fake", base_url=fake_url, api_key="x", api="chat"
        )
    assistant = Assistant(name="support", provider=provider, model="fake-model", actions=["lookup"])
    return Catalog(
        version="bench",
        root=root,
        gateway_root=root,
        loaded_at=time.time(),
        assistants={"support": assistant},
        providers=providers,
        tools={"support": [TOOL]},
    )


async def measure(turn: Callable[[], Awaitable[None]], turns: int) -> list[float]:
    for _ in range(max(5, turns // 10)):  # warm up
        await turn()
    samples = []
    for _ in range(turns):
        started = time.perf_counter()
        await turn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


async def main(turns: int) -> None:
    # Per-run info lines would swamp the figures (and cost time): warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI() as fake:
        root = Path(tmp)
        store = SQLiteStore(root / "var" / "gateway.db")
        settings = Settings()
        engine = Engine(
            catalog=CatalogRef(catalog(root, None)),
            store=store,
            runner=InstantRunner(),
            providers=Fixed(InstantModel()),
            settings=settings,
        )
        await engine.start()
        message = [ChatMessage(role="user", content="status of order 1042?")]

        async def stateless() -> None:
            handle = await engine.start_stateless_run(assistant="support", messages=message)
            result = await handle.result()
            assert result.responses == ["Order 1042 has shipped."], result

        async def stored() -> None:
            handle = await engine.start_run(thread_id=None, message="status of order 1042?")
            result = await handle.result()
            assert result.responses == ["Order 1042 has shipped."], result

        commit_thread = await store.create_thread("support")
        note = ChatMessage(role="user", content="x")

        async def one_commit() -> None:
            await store.append_message(commit_thread.id, note)

        results["engine, stateless (no store)"] = await measure(stateless, turns)
        results["engine + SQLite (durable)"] = await measure(stored, turns)
        results["  one SQLite commit (fsync)"] = await measure(one_commit, turns)
        await engine.aclose()

        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="x", max_retries=0)

        async def round_trip() -> None:
            fake.add_text("Order 1042 has shipped.")
            stream = await client.chat.completions.create(
                model="fake-model",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                tools=[TOOL],  # type: ignore[list-item]
            )
            assert isinstance(stream, openai.AsyncStream)
            async for _ in stream:
                pass

        provider = ChatCompletionsProvider(
            ProviderConfig(name="fake", base_url=fake.base_url, api_key="x", max_retries=0)
        )
        request = ModelRequest(
            model="fake-model",
            instructions="",
            messages=[ChatMessage(role="user", content="hi")],
            tools=[TOOL],
        )

        async def provider_trip() -> None:
            fake.add_text("Order 1042 has shipped.")
            async for _ in provider.stream(request):
                pass

        results["fake model round trip (SDK, 1 call)"] = await measure(round_trip, turns)
        results["  same via the gateway's provider"] = await measure(provider_trip, turns)
        await client.close()
        await provider.aclose()

        registry = ProviderRegistry(settings)
        http_engine = Engine(
            catalog=CatalogRef(catalog(root, "fake", fake.base_url)),
            store=store,
            runner=InstantRunner(),
            providers=registry,
            settings=settings,
        )
        await http_engine.start()

        async def full_turn() -> None:
            fake.add_tool_calls([("lookup", {"order": 1042})])
            fake.add_text("Order 1042 has shipped.")
            handle = await http_engine.start_run(thread_id=None, message="status of order 1042?")
            result = await handle.result()
            assert result.responses == ["Order 1042 has shipped."], result

        results["full turn over HTTP (2 model calls)"] = await measure(full_turn, turns)
        await http_engine.aclose()
        await registry.aclose()
        await store.close()

    width = max(len(k) for k in results)
    print(f"one turn with a tool call, {turns} turns each (ms)")
    print(f"{'':{width}}  {'p50':>8}  {'p95':>8}")
    for name, samples in results.items():
        print(f"{name:{width}}  {pct(samples, 50):8.3f}  {pct(samples, 95):8.3f}")
    rt = pct(results["fake model round trip (SDK, 1 call)"], 50)
    bare = pct(results["engine, stateless (no store)"], 50)
    durable = pct(results["engine + SQLite (durable)"], 50)
    full = pct(results["full turn over HTTP (2 model calls)"], 50)
    print()
    print(f"engine overhead (stateless) / one model round trip:   {bare / rt:6.2f}x")
    print(f"engine + durable store / one model round trip:        {durable / rt:6.2f}x")
    print(f"engine + store share of a full HTTP turn (p50):       {durable / full:6.1%}")
    print(json.dumps({k: {"p50": pct(v, 50), "p95": pct(v, 95)} for k, v in results.items()}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--turns", type=int, default=300)
    asyncio.run(main(parser.parse_args().turns))
