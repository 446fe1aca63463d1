"""In-test doubles for the engine: a scripted model, a scripted runner, a catalog."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from gateway.errors import ProviderError
from gateway.executors.base import ToolResult
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Assistant
from gateway.providers.base import (
    ModelDone,
    ModelEvent,
    ModelRequest,
    Provider,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)
from gateway.store.base import RunRecord

Turn = list[ModelEvent] | ProviderError | Callable[[ModelRequest], list[ModelEvent]]


def tool_schema(name: str) -> dict[str, Any]:
    """A Chat Completions tool schema for ``name``."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"the {name} tool",
            "parameters": {"type": "object", "properties": {}},
        },
    }


def make_catalog(
    version: str = "v1",
    *,
    tools: tuple[str, ...] = ("lookup", "slow", "boom"),
    max_tool_rounds: int = 3,
    instructions: str = "Be brief.",
    extra: tuple[str, ...] = (),
) -> Catalog:
    """A catalog with assistant ``support`` (given tools) and optional extra assistants."""
    assistants = {
        "support": Assistant(
            name="support",
            model="test-model",
            instructions=instructions,
            actions=list(tools),
            max_tool_rounds=max_tool_rounds,
        )
    }
    schemas = {"support": [tool_schema(t) for t in tools]}
    for name in extra:
        assistants[name] = Assistant(name=name, model="test-model")
        schemas[name] = []
    return Catalog(
        version=version,
        root=Path("/nonexistent"),
        gateway_root=Path("/nonexistent"),
        loaded_at=time.time(),
        assistants=assistants,
        tools=schemas,
    )


def active_run(thread_id: str, run_id: str = "run_elsewhere") -> RunRecord:
    """The record of a run in progress on ``thread_id`` (insert it as another replica's)."""
    return RunRecord(
        id=run_id,
        thread_id=thread_id,
        assistant="support",
        status="in_progress",
        manifest_version="v1",
        created_at=1.0,
    )


def text(*parts: str, tokens: int = 5) -> list[ModelEvent]:
    """A turn answering with ``parts`` as deltas."""
    done = ModelDone(
        usage=Usage(prompt_tokens=tokens, completion_tokens=1, total_tokens=tokens + 1)
    )
    return [*(TextDelta(p) for p in parts), done]


def calls(*pairs: tuple[str, dict[str, Any]], prefix: str = "call") -> list[ModelEvent]:
    """A turn asking for the given ``(name, arguments)`` tool calls."""
    events: list[ModelEvent] = [
        ToolCallRequest(ToolCall(id=f"{prefix}_{i}", name=name, arguments=json.dumps(args)))
        for i, (name, args) in enumerate(pairs)
    ]
    events.append(
        ModelDone(
            usage=Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5),
            finish_reason="tool_calls",
        )
    )
    return events


class ScriptedProvider:
    """Plays one scripted turn per model call and records every request."""

    name = "scripted"

    def __init__(self, turns: list[Turn], *, delay: float = 0.0) -> None:
        self.turns = list(turns)
        self.requests: list[ModelRequest] = []
        self.delay = delay
        self.closed_streams = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        self.requests.append(request)
        if not self.turns:
            raise AssertionError("the model was called more often than scripted")
        turn = self.turns.pop(0)
        if isinstance(turn, ProviderError):
            raise turn
        events = turn(request) if callable(turn) else turn
        try:
            for event in events:
                if self.delay:
                    await asyncio.sleep(self.delay)
                yield event
        finally:
            self.closed_streams += 1

    async def aclose(self) -> None:
        return None


class Providers:
    """A ProviderLookup that always answers with one provider; ``held`` counts its runs."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.held = 0

    def acquire(self, catalog: Catalog, assistant: Assistant) -> Provider:
        self.held += 1
        return self.provider

    def release(self, provider: Provider) -> None:
        self.held -= 1


class ScriptedRunner:
    """Runs ``lookup`` (echo), ``slow`` (sleeps ``seconds``) and ``boom`` (a failed result)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []  # name, arguments, start time
        self.finished: list[str] = []
        self.cancelled: list[str] = []
        self.running = 0
        self.max_running = 0

    async def run(
        self,
        catalog: Catalog,
        name: str,
        arguments: str | dict[str, Any],
        *,
        correlation_id: str = "",
        assistant: str | None = None,
    ) -> ToolResult:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
        self.calls.append((name, json.dumps(args), time.perf_counter()))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        started = time.perf_counter()
        try:
            if name == "slow":
                await asyncio.sleep(float(args.get("seconds", 0.2)))
            elif name == "boom":
                return ToolResult(
                    status="failed",
                    output=json.dumps({"error": {"type": "exception", "message": "kaboom"}}),
                    duration_ms=1.0,
                    error_type="exception",
                )
            self.finished.append(name)
            out = json.dumps({"tool": name, "args": args, "correlation_id": correlation_id})
            return ToolResult(
                status="succeeded", output=out, duration_ms=(time.perf_counter() - started) * 1000
            )
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        finally:
            self.running -= 1
