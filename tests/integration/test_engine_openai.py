"""The engine over real HTTP: ProviderRegistry -> openai SDK -> FakeOpenAI, both APIs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.engine import Engine
from gateway.errors import Conflict
from gateway.events import MessageDelta, StepCreated
from gateway.manifests.catalog import Catalog, CatalogRef
from gateway.manifests.model import Assistant
from gateway.manifests.model import Provider as ProviderManifest
from gateway.providers.registry import ProviderRegistry
from gateway.settings import Settings
from gateway.store.sqlite import SQLiteStore
from gateway.testing.fake_openai import FakeOpenAI
from tests.unit.engine._fakes import ScriptedRunner, tool_schema


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A fake OpenAI server on a free loopback port."""
    with FakeOpenAI() as server:
        yield server


class Rig:
    def __init__(self, engine: Engine, runner: ScriptedRunner, store: SQLiteStore) -> None:
        self.engine, self.runner, self.store = engine, runner, store


@pytest.fixture(params=["chat", "responses"])
async def rig(
    request: pytest.FixtureRequest, fake: FakeOpenAI, tmp_path: Path
) -> AsyncIterator[Rig]:
    """An engine whose assistant talks to the fake server through the given API."""
    provider = ProviderManifest(
        name="fake", base_url=fake.base_url, api_key="test", api=request.param, max_retries=2
    )
    assistant = Assistant(
        name="support",
        provider="fake",
        model="fake-model",
        instructions="Be brief.",
        actions=["lookup", "slow", "boom"],
        max_tool_rounds=2,
    )
    catalog = Catalog(
        version="v1",
        root=tmp_path,
        gateway_root=tmp_path,
        loaded_at=time.time(),
        assistants={"support": assistant},
        providers={"fake": provider},
        tools={"support": [tool_schema(n) for n in ("lookup", "slow", "boom")]},
    )
    store = SQLiteStore(tmp_path / "gateway.db")
    runner = ScriptedRunner()
    registry = ProviderRegistry(Settings())
    engine = Engine(
        catalog=CatalogRef(catalog),
        store=store,
        runner=runner,
        providers=registry,
        settings=Settings(),
    )
    await engine.start()
    yield Rig(engine, runner, store)
    await engine.aclose()
    await registry.aclose()
    await store.close()


def tool_outputs(fake: FakeOpenAI) -> list[str]:
    """The tool results the gateway sent in its last model request (either API)."""
    body = fake.model_requests()[-1].body
    if "messages" in body:
        return [m["content"] for m in body["messages"] if m["role"] == "tool"]
    return [i["output"] for i in body["input"] if i.get("type") == "function_call_output"]


async def test_plain_answer(rig: Rig, fake: FakeOpenAI) -> None:
    """A text answer streams through the SDK into the run log and the store."""
    fake.add_text("Hello from the fake model.", usage=(11, 6))
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    result = await handle.result()
    assert result.responses == ["Hello from the fake model."]
    assert result.usage.total_tokens == 17
    sent = fake.model_requests()[0]
    assert sent.stream and sent.last_user_text() == "hi"
    stored = await rig.store.list_messages(handle.thread_id)
    assert [m.message.content for m in stored] == ["hi", "Hello from the fake model."]


async def test_one_tool_call(rig: Rig, fake: FakeOpenAI) -> None:
    """A tool call from the model runs and its result goes back in the next request."""
    fake.add_tool_calls([("lookup", {"order": 1042})])
    fake.add_text("Order 1042 has shipped.")
    result = await (await rig.engine.start_run(thread_id=None, message="1042?")).result()
    assert result.responses == ["Order 1042 has shipped."]
    assert rig.runner.calls[0][:2] == ("lookup", '{"order": 1042}')
    assert json.loads(tool_outputs(fake)[0])["args"] == {"order": 1042}


async def test_parallel_tool_calls(rig: Rig, fake: FakeOpenAI) -> None:
    """Parallel tool calls in one answer run concurrently and all results go back."""
    fake.add_tool_calls([("slow", {"seconds": 0.3}), ("slow", {"seconds": 0.3})])
    fake.add_text("both done")
    result = await (await rig.engine.start_run(thread_id=None, message="two")).result()
    assert rig.runner.max_running == 2 and len(result.tool_calls) == 2  # they overlapped
    assert len(tool_outputs(fake)) == 2


async def test_tool_error_recovered(rig: Rig, fake: FakeOpenAI) -> None:
    """A failing tool's error reaches the model, which answers anyway."""
    fake.add_tool_calls([("boom", {})])
    fake.add_text("That did not work, sorry.")
    result = await (await rig.engine.start_run(thread_id=None, message="x")).result()
    assert result.status == "completed" and result.tool_calls[0].status == "failed"
    assert "kaboom" in tool_outputs(fake)[0]


async def test_tool_round_limit(rig: Rig, fake: FakeOpenAI) -> None:
    """A model that never stops calling tools is cut off after max_tool_rounds."""
    for _ in range(3):
        fake.add_tool_calls([("lookup", {})])
    result = await (await rig.engine.start_run(thread_id=None, message="loop")).result()
    assert result.error is None and result.incomplete_details is not None
    assert result.incomplete_details.reason == "max_tool_rounds"
    assert len(fake.model_requests()) == 3 and len(rig.runner.calls) == 2


async def test_retries_then_failure(rig: Rig, fake: FakeOpenAI) -> None:
    """Server errors are retried, then the run fails as a provider error."""
    fake.fail_next(503, times=10)
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    result = await handle.result()
    assert result.error is not None and result.error.type == "provider_error"
    assert len(fake.model_requests()) == 3  # the first try and max_retries=2
    record = await rig.store.get_run(handle.run_id)
    assert record is not None and record.status == "failed"


async def test_retry_recovers(rig: Rig, fake: FakeOpenAI) -> None:
    """A transient 429 is retried and the run completes."""
    fake.fail_next(429, times=1)
    fake.add_text("after a retry")
    result = await (await rig.engine.start_run(thread_id=None, message="hi")).result()
    assert result.responses == ["after a retry"]


async def test_stream_cut_mid_answer(rig: Rig, fake: FakeOpenAI) -> None:
    """A stream cut after text was sent fails the run cleanly (no duplicated text)."""
    fake.add_text("one two three four five six seven eight nine ten " * 3)
    fake.delay(0, between_chunks=0.005)
    fake.cut_stream_after(10)  # past the first text delta in either API
    handle = await rig.engine.start_run(thread_id=None, message="talk")
    result = await handle.result()
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "provider_error"
    assert any(isinstance(e, MessageDelta) for e in handle.log.events)
    assert len(fake.model_requests()) == 1  # not retried once text reached the client
    assert rig.engine.active_runs == 0


async def test_cancel_during_the_model_stream(rig: Rig, fake: FakeOpenAI) -> None:
    """Cancelling while the model streams stops the run promptly."""
    fake.add_text("word " * 2000)  # 40 s of streaming
    fake.delay(0, between_chunks=0.02)
    handle = await rig.engine.start_run(thread_id=None, message="long")
    async for _, event in handle.log.follow():
        if isinstance(event, MessageDelta):
            break
    started = time.perf_counter()
    record = await rig.engine.cancel(handle.thread_id, handle.run_id)
    assert time.perf_counter() - started < 10  # not the 40 s the stream would take
    assert record.status == "cancelled"
    result = await handle.result()
    assert result.status == "cancelled"


async def test_conflict_on_a_busy_thread(rig: Rig, fake: FakeOpenAI) -> None:
    """A second message while a run is active on the thread is a conflict."""
    fake.add_tool_calls([("slow", {"seconds": 0.3})])
    fake.add_text("done")
    first = await rig.engine.start_run(thread_id=None, message="one")
    async for _, event in first.log.follow():
        if isinstance(event, StepCreated):
            break
    with pytest.raises(Conflict):
        await rig.engine.start_run(thread_id=first.thread_id, message="two")
    await first.result()
    fake.add_text("second answer")
    second = await rig.engine.start_run(thread_id=first.thread_id, message="three")
    assert (await second.result()).responses == ["second answer"]
    # The whole history went back to the model on the second run.
    assert "one" in json.dumps(fake.model_requests()[-1].body)


async def test_stateless_run(rig: Rig, fake: FakeOpenAI) -> None:
    """A stateless run sends the client's history and stores nothing."""
    from gateway.providers.base import ChatMessage

    fake.add_text("stateless")
    handle = await rig.engine.start_stateless_run(
        assistant="support", messages=[ChatMessage(role="user", content="ping")]
    )
    assert (await handle.result()).responses == ["stateless"]
    assert fake.model_requests()[0].last_user_text() == "ping"
    assert await rig.store.get_run(handle.run_id) is None


async def test_many_runs_at_once(rig: Rig, fake: FakeOpenAI) -> None:
    """Twenty threads run concurrently against the fake server without interfering."""
    handles = [await rig.engine.start_run(thread_id=None, message=f"m{i}") for i in range(20)]
    results = await asyncio.gather(*(h.result() for h in handles))
    errors = [r.error for r in results if r.error is not None]
    assert [r.responses for r in results] == [[f"m{i}"] for i in range(20)], errors  # echoes


async def test_parallel_calls_sharing_an_id_each_get_their_result(
    rig: Rig, fake: FakeOpenAI
) -> None:
    """Parallel calls the server gave one id all run, each with its own result and id."""
    fake.add_tool_calls([("lookup", {"n": 1}, "call_same"), ("lookup", {"n": 2}, "call_same")])
    fake.add_text("both looked up")
    result = await (await rig.engine.start_run(thread_id=None, message="two")).result()
    assert result.status == "completed", result.error
    assert result.responses == ["both looked up"]
    assert sorted(args for _, args, _ in rig.runner.calls) == ['{"n": 1}', '{"n": 2}']
    ids = [call.id for call in result.tool_calls]
    assert len(set(ids)) == 2
    # The next request pairs every call with exactly one result, by distinct ids.
    assert sorted(json.loads(o)["args"]["n"] for o in tool_outputs(fake)) == [1, 2]
    body = fake.model_requests()[-1].body
    if "messages" in body:
        sent = [c["id"] for m in body["messages"] for c in m.get("tool_calls") or ()]
        answered = [m["tool_call_id"] for m in body["messages"] if m["role"] == "tool"]
    else:
        sent = [i["call_id"] for i in body["input"] if i.get("type") == "function_call"]
        answered = [i["call_id"] for i in body["input"] if i.get("type") == "function_call_output"]
    assert sorted(sent) == sorted(answered) == sorted(ids)


async def test_a_lone_surrogate_in_the_answer_is_replaced(rig: Rig, fake: FakeOpenAI) -> None:
    """A lone UTF-16 surrogate escape in the stream becomes U+FFFD; the run ends and is stored."""
    fake.add_text("bad \ud800 text")
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    result = await asyncio.wait_for(handle.result(), 20)
    assert result.status == "completed", result.error
    assert result.responses == ["bad \ufffd text"]
    record = await rig.store.get_run(handle.run_id)
    assert record is not None and record.status == "completed"
    fake.add_text("next")
    again = await rig.engine.start_run(thread_id=handle.thread_id, message="and now?")
    assert (await asyncio.wait_for(again.result(), 20)).responses == ["next"]


async def test_parallel_results_go_back_in_the_order_of_the_calls(
    rig: Rig, fake: FakeOpenAI
) -> None:
    """A fast call's result does not overtake a slow one's: results follow the calls' order.

    Chat templates of local models (Llama 3 on Ollama or vLLM) render tool
    results without their call id, so the model pairs them with its calls by
    position; results in completion order would answer the wrong call.
    """
    ids = fake.add_tool_calls([("slow", {"seconds": 0.4}), ("lookup", {"n": 2})])
    fake.add_text("both done")
    handle = await rig.engine.start_run(thread_id=None, message="two")
    result = await handle.result()
    assert result.status == "completed", result.error
    assert rig.runner.finished == ["lookup", "slow"]  # the second call finished first
    assert [json.loads(o)["tool"] for o in tool_outputs(fake)] == ["slow", "lookup"]
    # The stored thread, read back for the next run, is sent in the same order.
    fake.add_text("again")
    again = await rig.engine.start_run(thread_id=handle.thread_id, message="and?")
    assert (await again.result()).status == "completed"
    assert [json.loads(o)["tool"] for o in tool_outputs(fake)] == ["slow", "lookup"]
    body = fake.model_requests()[-1].body
    if "messages" in body:
        answered = [m["tool_call_id"] for m in body["messages"] if m["role"] == "tool"]
    else:
        answered = [i["call_id"] for i in body["input"] if i.get("type") == "function_call_output"]
    assert answered == ids


async def test_an_answer_with_too_many_calls_runs_only_the_first_128(
    rig: Rig, fake: FakeOpenAI
) -> None:
    """Past 128 calls in one answer, the rest run nowhere and are not kept either.

    Each result (up to an action's max_output_kb) goes back to the model in
    the next request, whole: a model told to (a prompt injection in a
    document) could ask for thousands of calls and fill the server's memory
    and the model's context with their results. Only the first 128 run; the
    129th stands for all the others, answered with one too_many_tool_calls
    error, and the rest are dropped from the stored and sent answer (no step
    event, no store write, no result for each).
    """
    asked = 600
    ids = fake.add_tool_calls([("lookup", {"n": n}) for n in range(asked)])
    fake.add_text("done")
    handle = await rig.engine.start_run(thread_id=None, message="many")
    result = await asyncio.wait_for(handle.result(), 120)
    assert result.status == "completed", result.error
    assert sorted(json.loads(args)["n"] for _, args, _ in rig.runner.calls) == list(range(128))
    steps = [e for e in handle.log.events if isinstance(e, StepCreated)]
    assert [e.tool_call.id for e in steps] == ids[:129]
    stored = [m.message for m in await rig.store.list_messages(handle.thread_id, limit=10_000)]
    assert [len(m.tool_calls or ()) for m in stored if m.role == "assistant"] == [129, 0]
    assert sorted(m.tool_call_id or "" for m in stored if m.role == "tool") == sorted(ids[:129])
    outputs = tool_outputs(fake)
    assert len(outputs) == 129  # every call sent back still has its result, in order
    assert [json.loads(o)["args"]["n"] for o in outputs[:128]] == list(range(128))
    error = json.loads(outputs[128])["error"]
    assert error["type"] == "too_many_tool_calls"
    assert f"{asked} tool calls" in error["message"] and "128" in error["message"]
    body = fake.model_requests()[-1].body
    if "messages" in body:
        sent_calls = [c["id"] for m in body["messages"] for c in m.get("tool_calls") or ()]
    else:
        sent_calls = [i["call_id"] for i in body["input"] if i.get("type") == "function_call"]
    assert sent_calls == ids[:129]
    assert [c.id for c in result.tool_calls if c.status == "failed"] == ids[128:129]
