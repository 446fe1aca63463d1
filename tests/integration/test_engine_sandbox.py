"""The engine with real sandboxed actions (loader, SandboxRunner, Supervisor), model over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.engine import Engine
from gateway.events import StepCompleted, StepCreated
from gateway.executors.runner import SandboxRunner
from gateway.manifests.catalog import CatalogRef
from gateway.manifests.loader import load_catalog
from gateway.providers.registry import ProviderRegistry
from gateway.sandbox.supervisor import Supervisor
from gateway.sandbox.worker import CALL_NAME, children_of
from gateway.settings import Settings
from gateway.store.sqlite import SQLiteStore
from gateway.testing.fake_openai import FakeOpenAI

MANIFEST = """\
kind: provider
name: fake
base_url: {base_url}
api_key: test
api: chat
---
kind: action
name: sleepy
description: Sleep for a while, then say which process slept.
parameters:
  type: object
  properties:
    seconds: {{type: number}}
  required: [seconds]
timeout: 60
python:
  function: actions.sleepy:sleep
---
kind: assistant
name: sleeper
provider: fake
model: fake-model
actions: [sleepy]
"""

ACTION = """\
import os
import time


def sleep(seconds: float) -> str:
    time.sleep(seconds)
    return f"slept {seconds}s in {os.getpid()}"
"""


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A fake OpenAI server on a free loopback port."""
    with FakeOpenAI() as server:
        yield server


@contextlib.asynccontextmanager
async def _sandboxed_engine(
    fake: FakeOpenAI, tmp_path: Path, *, timeout: int = 60, **settings: Any
) -> AsyncIterator[Engine]:
    """An engine over a real sandbox, a real manifest set (action ``sleepy`` with
    ``timeout``) and the fake model; ``settings`` as ``Settings`` fields."""
    manifest = MANIFEST.format(base_url=fake.base_url).replace("timeout: 60", f"timeout: {timeout}")
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "sleepy.yaml").write_text(manifest)
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "__init__.py").write_text("")
    (tmp_path / "actions" / "sleepy.py").write_text(ACTION)
    catalog = await asyncio.to_thread(load_catalog, tmp_path / "manifests")
    config = Settings(manifests=tmp_path / "manifests", **settings)
    supervisor = Supervisor(config)
    await supervisor.start(catalog)
    store = SQLiteStore(tmp_path / "var" / "gateway.db")
    registry = ProviderRegistry(config)
    engine = Engine(
        catalog=CatalogRef(catalog),
        store=store,
        runner=SandboxRunner(supervisor),
        providers=registry,
        settings=config,
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.aclose()
        await registry.aclose()
        await supervisor.aclose()
        await store.close()


@pytest.fixture
async def engine(fake: FakeOpenAI, tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine over a real sandbox, a real manifest set and the fake model."""
    async with _sandboxed_engine(fake, tmp_path) as made:
        yield made


def _call_pids() -> list[int]:
    """Sandboxed call processes of this test process (children of its zygotes, which may
    be children of the processes the supervisor started: see ``sandbox._private``).

    The action cannot leave its pid in a file: it may write only in its own directory.
    """
    pids = []
    parents = children_of(os.getpid())
    for _ in range(3):
        parents = [child for parent in parents for child in children_of(parent)]
        for child in parents:
            try:
                if Path(f"/proc/{child}/comm").read_text().strip() == CALL_NAME:
                    pids.append(child)
            except OSError:
                continue
    return pids


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie is dead, waiting to be reaped


async def test_sandboxed_action_result_reaches_the_model(engine: Engine, fake: FakeOpenAI) -> None:
    """A tool call runs the real action in the sandbox and the model reads its output."""
    fake.add_tool_calls([("sleepy", {"seconds": 0})])
    fake.add_text("It slept.")
    result = await (await engine.start_run(thread_id=None, message="nap")).result()
    assert result.responses == ["It slept."]
    assert result.tool_calls[0].status == "succeeded", result.tool_calls[0].output
    assert "slept 0" in result.tool_calls[0].output
    pid = int(result.tool_calls[0].output.rsplit(" ", 1)[1].strip('"'))
    assert pid != os.getpid()  # it ran in another process


async def test_cancellation_kills_a_sleeping_action(engine: Engine, fake: FakeOpenAI) -> None:
    """Cancelling a run kills the sandboxed process of the action it is waiting on, and its
    step says how long the call ran."""
    fake.add_tool_calls([("sleepy", {"seconds": 60})])
    handle = await engine.start_run(thread_id=None, message="sleep long")
    async for _, event in handle.log.follow():
        if isinstance(event, StepCreated):
            break
    deadline = time.monotonic() + 15
    while not (pids := _call_pids()):
        assert time.monotonic() < deadline, "the action never started"
        await asyncio.sleep(0.02)
    (pid,) = pids
    assert _alive(pid)
    await asyncio.sleep(0.2)  # the call has run at least this long when it is cancelled
    started = time.perf_counter()
    record = await engine.cancel(handle.thread_id, handle.run_id)
    assert time.perf_counter() - started < 20  # not the 60 s the action sleeps
    assert record.status == "cancelled"
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, f"action process {pid} survived the cancellation"
        await asyncio.sleep(0.02)
    result = await handle.result()
    assert result.status == "cancelled"
    # The killed call's step says how long it ran, not 0 (as a call still queued would).
    [step] = [e for e in handle.log.events if isinstance(e, StepCompleted)]
    assert step.tool_call.status == "failed"
    assert step.tool_call.duration_ms >= 200, step.tool_call


async def test_an_answer_with_more_calls_than_sandbox_slots_runs_them_all(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """Ten parallel calls on two sandbox slots all run, none fails waiting for a slot.

    Handed to the sandbox all at once, the calls queued there, where the wait
    counts against each call's timeout: the last ones failed with 'no sandbox
    slot was free' (and another run's calls queued behind them would too).
    """
    async with _sandboxed_engine(fake, tmp_path, timeout=2, sandbox_concurrency=2) as engine:
        fake.add_tool_calls([("sleepy", {"seconds": 0.5})] * 10)
        fake.add_text("All slept.")
        result = await (await engine.start_run(thread_id=None, message="nap")).result()
    assert result.status == "completed", result.error
    outcomes = [(call.status, call.output) for call in result.tool_calls]
    assert [status for status, _ in outcomes] == ["succeeded"] * 10, outcomes
