"""The offline model drives each demo assistant through the engine and the real sandbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.engine import Engine
from gateway.executors.runner import SandboxRunner
from gateway.manifests.catalog import CatalogRef
from gateway.manifests.loader import load_catalog
from gateway.providers.registry import ProviderRegistry
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings
from gateway.store.sqlite import SQLiteStore

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine over the demo manifests, the offline model (no key) and the sandbox."""
    catalog = await asyncio.to_thread(load_catalog, MANIFESTS, environ={})
    settings = Settings(manifests=MANIFESTS)
    supervisor = Supervisor(settings)
    await supervisor.start(catalog)
    store = SQLiteStore(tmp_path / "gateway.db")
    registry = ProviderRegistry(settings)
    engine = Engine(
        catalog=CatalogRef(catalog),
        store=store,
        runner=SandboxRunner(supervisor),
        providers=registry,
        settings=settings,
    )
    await engine.start()
    yield engine
    await engine.aclose()
    await registry.aclose()
    await supervisor.aclose()
    await store.close()


@pytest.mark.parametrize(
    ("assistant", "message", "tool", "expected"),
    [
        ("support", "what's the status of order 1042?", "get_order_status", "1042"),
        ("concierge", "calculate (12 + 30) * 2", "calculate", "84"),
    ],
)
async def test_offline_model_reaches_the_demo_actions(
    engine: Engine, assistant: str, message: str, tool: str, expected: str
) -> None:
    """With no key, each demo assistant calls the right action and answers from its result."""
    handle = await engine.start_run(thread_id=None, message=message, assistant=assistant)
    result = await handle.result()
    assert result.status == "completed", result.error
    assert [t.name for t in result.tool_calls] == [tool]
    assert result.tool_calls[0].status == "succeeded", result.tool_calls[0].output
    assert expected in result.tool_calls[0].output
    assert result.responses and expected in result.responses[-1]
