"""The run engine with a scripted model, a scripted runner and a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.engine import Engine, HistoryBudget, RunHandle, collect_result
from gateway.engine.runlog import RunLog
from gateway.errors import Conflict, InvalidInput, NotFound, NotReady, ProviderError
from gateway.events import (
    Done,
    ErrorEvent,
    Event,
    IncompleteDetails,
    MessageCompleted,
    MessageDelta,
    Metadata,
    RunCompleted,
    RunCreated,
    RunFailed,
    StepCompleted,
    StepCreated,
)
from gateway.executors.base import ToolResult
from gateway.manifests.catalog import CatalogRef
from gateway.providers.base import (
    ChatMessage,
    ModelDone,
    ModelEvent,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)
from gateway.settings import Settings
from gateway.store.base import RunRecord
from gateway.store.sqlite import SQLiteStore
from tests._loop import loop_gaps
from tests.unit.engine._fakes import (
    Providers,
    ScriptedProvider,
    ScriptedRunner,
    Turn,
    active_run,
    calls,
    make_catalog,
    text,
)


class Rig:
    """An engine wired to fakes, with handles on each part."""

    def __init__(
        self,
        engine: Engine,
        provider: ScriptedProvider,
        runner: ScriptedRunner,
        store: SQLiteStore,
        ref: CatalogRef,
    ) -> None:
        self.engine, self.provider, self.runner, self.store, self.ref = (
            engine,
            provider,
            runner,
            store,
            ref,
        )
        self.providers: Providers | None = None


MakeRig = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[MakeRig]:
    """Builds started engines over one SQLite file; closes them all afterwards."""
    rigs: list[Rig] = []

    async def factory(
        turns: list[Turn],
        *,
        delay: float = 0.0,
        engine_kw: dict[str, Any] | None = None,
        **catalog_kw: object,
    ) -> Rig:
        store = SQLiteStore(tmp_path / "gateway.db")
        provider = ScriptedProvider(turns, delay=delay)
        runner = ScriptedRunner()
        ref = CatalogRef(make_catalog(**catalog_kw))  # type: ignore[arg-type]
        providers = Providers(provider)
        engine = Engine(
            catalog=ref,
            store=store,
            runner=runner,
            providers=providers,
            settings=Settings(),
            **(engine_kw or {}),
        )
        await engine.start()
        rig = Rig(engine, provider, runner, store, ref)
        rig.providers = providers
        rigs.append(rig)
        return rig

    yield factory
    for rig in rigs:
        await rig.engine.aclose()
        await rig.store.close()


def names(events: list[Event]) -> list[str]:
    return [e.name for e in events]


async def wait_for(handle: RunHandle, kind: type) -> None:
    async for _, event in handle.log.follow():
        if isinstance(event, kind):
            return
    raise AssertionError(f"{kind.__name__} never came")


async def test_plain_answer_streams_persists_and_records(make_rig: MakeRig) -> None:
    """A plain answer streams deltas, completes, stores both messages and a completed run."""
    rig = await make_rig([text("Hello", " there", tokens=7)])
    handle = await rig.engine.start_run(thread_id=None, message="hi", correlation_id="cid-1")
    result = await handle.result()
    assert result.responses == ["Hello there"]
    assert result.status == "completed" and result.error is None
    assert result.usage.total_tokens == 8
    events = handle.log.events
    assert names(events) == [
        "thread.run.created",
        "thread.message.delta",
        "thread.message.delta",
        "thread.message.completed",
        "thread.run.completed",
        "metadata",
        "done",
    ]
    created = events[0]
    assert isinstance(created, RunCreated) and created.manifest_version == "v1"
    deltas = [e for e in events if isinstance(e, MessageDelta)]
    completed = next(e for e in events if isinstance(e, MessageCompleted))
    assert {d.message_id for d in deltas} == {completed.message_id}
    meta = events[-2]
    assert isinstance(meta, Metadata) and meta.correlation_id == "cid-1"
    assert meta.timings.total_ms >= meta.timings.model_ms > 0
    assert meta.timings.first_token_ms is not None
    stored = await rig.store.list_messages(handle.thread_id)
    assert [(m.message.role, m.message.content) for m in stored] == [
        ("user", "hi"),
        ("assistant", "Hello there"),
    ]
    assert stored[1].id == completed.message_id  # the event's message id is the stored one
    record = await rig.store.get_run(handle.run_id)
    assert record is not None and record.status == "completed"
    assert record.usage.total_tokens == 8 and record.timings["total_ms"] > 0
    request = rig.provider.requests[0]
    assert request.instructions == "Be brief." and request.model == "test-model"
    assert [t["function"]["name"] for t in request.tools] == ["lookup", "slow", "boom"]


async def test_one_tool_call_feeds_the_result_back(make_rig: MakeRig) -> None:
    """A tool call runs through the runner and its result goes back to the model."""
    rig = await make_rig([calls(("lookup", {"order": 1042})), text("Order 1042 shipped.")])
    handle = await rig.engine.start_run(
        thread_id="new", message="status of 1042?", correlation_id="cid-7"
    )
    result = await handle.result()
    assert result.responses == ["Order 1042 shipped."]
    assert [(t.name, t.status) for t in result.tool_calls] == [("lookup", "succeeded")]
    assert json.loads(result.tool_calls[0].output)["correlation_id"] == "cid-7"
    second = rig.provider.requests[1].messages
    assert [m.role for m in second] == ["user", "assistant", "tool"]
    assert second[1].tool_calls[0].id == second[2].tool_call_id == "call_0"
    step_created = next(e for e in handle.log.events if isinstance(e, StepCreated))
    step_done = next(e for e in handle.log.events if isinstance(e, StepCompleted))
    assert step_created.step_id == step_done.step_id
    assert step_created.tool_call.arguments == '{"order": 1042}'
    stored = await rig.store.list_messages(handle.thread_id)
    assert [m.message.role for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert all(m.run_id == handle.run_id for m in stored)


async def test_parallel_tool_calls_run_concurrently(make_rig: MakeRig) -> None:
    """Several tool calls in one round run at the same time, not one after another."""
    rig = await make_rig(
        [
            calls(("slow", {"seconds": 0.3}), ("slow", {"seconds": 0.3}), ("lookup", {})),
            text("done"),
        ]
    )
    result = await (await rig.engine.start_run(thread_id=None, message="go")).result()
    assert rig.runner.max_running == 3  # all three were running at the same moment
    assert sorted(t.name for t in result.tool_calls) == ["lookup", "slow", "slow"]
    tool_ids = {m.tool_call_id for m in rig.provider.requests[1].messages if m.role == "tool"}
    assert tool_ids == {"call_0", "call_1", "call_2"}


async def test_tool_error_is_reported_and_the_model_recovers(make_rig: MakeRig) -> None:
    """A failed tool comes back to the model as a readable error and the run still completes."""
    rig = await make_rig([calls(("boom", {})), text("Sorry, that failed.")])
    result = await (await rig.engine.start_run(thread_id=None, message="try")).result()
    assert result.status == "completed"
    assert result.tool_calls[0].status == "failed"
    tool_msg = rig.provider.requests[1].messages[-1]
    assert tool_msg.role == "tool" and "kaboom" in (tool_msg.content or "")
    assert result.responses == ["Sorry, that failed."]


async def test_tool_round_limit_ends_the_run_incomplete(make_rig: MakeRig) -> None:
    """A model that keeps calling tools is stopped after max_tool_rounds: incomplete, logged."""
    rig = await make_rig(
        [calls(("lookup", {}), prefix=f"c{i}") for i in range(5)], max_tool_rounds=2
    )
    handle = await rig.engine.start_run(thread_id=None, message="loop")
    with capture_logs() as logs:
        result = await handle.result()
    assert result.status == "incomplete" and result.error is None
    assert result.incomplete_details == IncompleteDetails(reason="max_tool_rounds")
    assert len(rig.provider.requests) == 3 and len(rig.runner.calls) == 2
    record = await rig.store.get_run(handle.run_id)
    assert record is not None and record.status == "incomplete" and record.error is None
    assert record.incomplete_details == {"reason": "max_tool_rounds"}
    [warning] = [entry for entry in logs if entry["event"] == "run.max_tool_rounds"]
    assert warning["rounds"] == 2 and warning["dropped_tool_calls"] == 1
    stored = await rig.store.list_messages(handle.thread_id)
    assert stored[-1].message.role == "tool"  # the refused third round left nothing dangling


async def test_provider_error_fails_the_run_with_an_error_event(make_rig: MakeRig) -> None:
    """A provider error ends the run as failed (provider_error) and shows as an error event."""
    rig = await make_rig([ProviderError("upstream returned 503", status=503)])
    handle = await rig.engine.start_run(thread_id=None, message="hi", correlation_id="c9")
    result = await handle.result()
    assert result.error is not None and result.error.type == "provider_error"
    errors = [e for e in handle.log.events if isinstance(e, ErrorEvent)]
    assert errors and errors[0].type == "provider_error" and errors[0].correlation_id == "c9"
    assert names(handle.log.events)[-3:] == ["thread.run.failed", "metadata", "done"]
    record = await rig.store.get_run(handle.run_id)
    assert record is not None and record.status == "failed"
    stored = await rig.store.list_messages(handle.thread_id)
    assert [m.message.role for m in stored] == ["user"]  # the user message was kept


async def test_cancel_while_a_tool_sleeps_kills_it_and_keeps_history_valid(
    make_rig: MakeRig,
) -> None:
    """Cancelling a run cancels its tool, records 'cancelled', and the thread stays usable."""
    rig = await make_rig([calls(("slow", {"seconds": 30})), text("next answer")])
    handle = await rig.engine.start_run(thread_id=None, message="wait")
    await wait_for(handle, StepCreated)
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    record = await rig.engine.cancel(handle.thread_id, handle.run_id)
    assert time.perf_counter() - started < 10  # not the 30 s the tool would sleep
    assert record.status == "cancelled" and record.error is not None
    assert rig.runner.cancelled == ["slow"]
    result = await handle.result()
    assert result.status == "cancelled" and result.tool_calls[0].status == "failed"
    assert isinstance(handle.log.events[-1], Done)
    # The next run works and the model sees a complete call/result pair.
    second = await rig.engine.start_run(thread_id=handle.thread_id, message="again")
    assert (await second.result()).responses == ["next answer"]
    history = rig.provider.requests[-1].messages
    assert [m.role for m in history] == ["user", "assistant", "tool", "user"]
    assert "cancelled" in (history[2].content or "")


async def test_cancel_stops_the_model_stream(make_rig: MakeRig) -> None:
    """Cancelling during the model's stream closes the stream and ends the run."""
    rig = await make_rig([text(*["x"] * 200)], delay=0.01)
    handle = await rig.engine.start_run(thread_id=None, message="talk")
    await wait_for(handle, MessageDelta)
    await rig.engine.cancel(handle.thread_id, handle.run_id)
    assert rig.provider.closed_streams == 1
    deltas = [e for e in handle.log.events if isinstance(e, MessageDelta)]
    assert 0 < len(deltas) < 200


async def test_second_run_on_a_busy_thread_is_a_conflict(make_rig: MakeRig) -> None:
    """While a run is active on a thread, another run there is refused with Conflict."""
    rig = await make_rig([calls(("slow", {"seconds": 0.3})), text("a"), text("b")])
    first = await rig.engine.start_run(thread_id=None, message="one")
    with pytest.raises(Conflict):
        await rig.engine.start_run(thread_id=first.thread_id, message="two")
    await first.result()
    second = await rig.engine.start_run(thread_id=first.thread_id, message="three")
    assert (await second.result()).responses == ["b"]
    stored = await rig.store.list_messages(first.thread_id)
    assert "two" not in [m.message.content for m in stored]  # the refused message was not stored


async def test_conflict_holds_across_engines_sharing_a_store(make_rig: MakeRig) -> None:
    """Two engines on one database (two replicas) cannot run on the same thread at once."""
    a = await make_rig([calls(("slow", {"seconds": 0.3})), text("a")])
    b = await make_rig([text("b")])
    first = await a.engine.start_run(thread_id=None, message="one")
    with pytest.raises(Conflict):
        await b.engine.start_run(thread_id=first.thread_id, message="two")
    await first.result()


async def test_readers_follow_from_any_cursor(make_rig: MakeRig) -> None:
    """Readers get the backlog after their cursor then live events; late readers miss nothing."""
    rig = await make_rig([text("a", "b", "c")], delay=0.02)
    handle = await rig.engine.start_run(thread_id=None, message="hi")

    async def read(after: int) -> list[int]:
        return [seq async for seq, _ in handle.log.follow(after)]

    early, mid = await asyncio.gather(read(0), read(2))
    late = await read(0)
    assert early == late == list(range(1, len(handle.log) + 1))
    assert mid == list(range(3, len(handle.log) + 1))
    assert await read(len(handle.log)) == []
    assert handle.log.done


async def test_catalog_is_pinned_for_the_whole_run(make_rig: MakeRig) -> None:
    """A catalog swap mid-run does not change what that run uses; the next run sees the new one."""
    rig = await make_rig([calls(("slow", {"seconds": 0.2})), text("old"), text("new")])
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    await wait_for(handle, StepCreated)
    rig.ref.current = make_catalog("v2", tools=("lookup",), instructions="New rules.")
    result = await handle.result()
    assert result.metadata is not None and result.metadata.manifest_version == "v1"
    assert rig.provider.requests[1].instructions == "Be brief."
    assert len(rig.provider.requests[1].tools) == 3
    nxt = await rig.engine.start_run(thread_id=handle.thread_id, message="again")
    assert nxt.manifest_version == "v2"
    await nxt.result()
    assert rig.provider.requests[2].instructions == "New rules."
    record = await rig.store.get_run(handle.run_id)
    assert record is not None and record.manifest_version == "v1"


async def test_finished_runs_replay_after_a_restart(make_rig: MakeRig) -> None:
    """A finished run's log is stored and replays identically from a fresh engine."""
    rig = await make_rig([calls(("lookup", {"q": 1})), text("ok")])
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    await handle.result()
    await rig.engine.aclose()
    await rig.store.close()
    fresh = await make_rig([])
    log = await fresh.engine.get_run_log(handle.thread_id, handle.run_id)
    assert log.done and log.events == handle.log.events
    assert [s async for s, _ in log.follow(3)] == list(range(4, len(log) + 1))
    with pytest.raises(NotFound):
        await fresh.engine.get_run_log("thread_other", handle.run_id)
    with pytest.raises(NotFound):
        await fresh.engine.get_run_log(handle.thread_id, "run_missing")


async def test_unknown_tool_is_refused_without_running(make_rig: MakeRig) -> None:
    """A tool the assistant was not given is refused with an error the model reads; nothing runs."""
    rig = await make_rig([calls(("drop_tables", {})), text("I cannot do that.")])
    result = await (await rig.engine.start_run(thread_id=None, message="hack")).result()
    assert result.tool_calls[0].status == "failed"
    assert "unknown_tool" in result.tool_calls[0].output
    assert rig.runner.calls == []
    # The model reads which tools it has, so it can correct itself.
    sent = json.loads(rig.provider.requests[1].messages[-1].content or "")
    assert sent["error"]["type"] == "unknown_tool"
    assert "'drop_tables'" in sent["error"]["message"]
    assert "boom, lookup, slow" in sent["error"]["message"]


async def test_unknown_tool_error_lists_a_bounded_number_of_tools(make_rig: MakeRig) -> None:
    """An assistant with very many tools: the error names the first ones and how many more."""
    many = tuple(f"tool_{i:03}" for i in range(100))
    rig = await make_rig([calls(("nope", {})), text("ok")], tools=many)
    result = await (await rig.engine.start_run(thread_id=None, message="x")).result()
    message = json.loads(result.tool_calls[0].output)["error"]["message"]
    assert "tool_000" in message and "tool_099" not in message
    assert "and 50 more" in message


async def test_stateless_run_persists_nothing(make_rig: MakeRig) -> None:
    """A stateless run answers from the client's history and stores no thread or run."""
    rig = await make_rig([calls(("lookup", {})), text("stateless answer")])
    history = [
        ChatMessage(role="user", content="earlier"),
        ChatMessage(role="assistant", content="yes"),
        ChatMessage(role="user", content="now"),
    ]
    handle = await rig.engine.start_stateless_run(assistant="support", messages=history)
    result = await handle.result()
    assert handle.thread_id == "" and result.responses == ["stateless answer"]
    assert [m.content for m in rig.provider.requests[0].messages] == ["earlier", "yes", "now"]
    assert await rig.store.get_run(handle.run_id) is None
    assert await rig.store.list_active_runs() == []
    with pytest.raises(InvalidInput):
        await rig.engine.start_stateless_run(assistant="support", messages=[])
    with pytest.raises(NotFound):
        await rig.engine.start_stateless_run(assistant="nobody", messages=history)


async def test_assistant_choice_for_new_threads(make_rig: MakeRig) -> None:
    """The only assistant is the default; with several, one must be named or configured."""
    single = await make_rig([])
    thread, assistant = await single.engine.create_thread(None)
    assert assistant.name == "support" and thread.assistant == "support"
    several = await make_rig([], extra=("sales",))
    with pytest.raises(InvalidInput):
        await several.engine.create_thread(None)
    with pytest.raises(NotFound):
        await several.engine.create_thread("nobody")
    _, named = await several.engine.create_thread("sales")
    assert named.name == "sales"
    with pytest.raises(NotFound):
        await several.engine.start_run(thread_id="thread_missing", message="hi")
    with pytest.raises(InvalidInput):
        await several.engine.start_run(thread_id=None, message="  ", assistant="sales")


async def test_start_fails_runs_left_in_progress_by_a_crash(
    make_rig: MakeRig, tmp_path: Path
) -> None:
    """With the embedded store, runs a crash left in progress are marked failed on start."""
    store = SQLiteStore(tmp_path / "gateway.db")
    await store.open()
    thread = await store.create_thread("support")
    await store.create_run(
        RunRecord(
            id="run_orphan",
            thread_id=thread.id,
            assistant="support",
            status="in_progress",
            manifest_version="v0",
            created_at=1.0,
        )
    )
    await store.close()
    rig = await make_rig([text("fresh")])
    record = await rig.store.get_run("run_orphan")
    assert record is not None and record.status == "failed"
    assert record.error is not None and record.error["type"] == "interrupted"
    handle = await rig.engine.start_run(thread_id=thread.id, message="hi")  # the thread is free
    assert (await handle.result()).responses == ["fresh"]


async def test_cancelling_a_run_owned_elsewhere_frees_the_thread(make_rig: MakeRig) -> None:
    """A run active in the store but not in this process is marked cancelled, freeing the thread."""
    rig = await make_rig([text("after")])
    thread, _ = await rig.engine.create_thread(None)
    await rig.store.create_run(
        RunRecord(
            id="run_elsewhere",
            thread_id=thread.id,
            assistant="support",
            status="in_progress",
            manifest_version="v1",
            created_at=1.0,
        )
    )
    record = await rig.engine.cancel(thread.id, "run_elsewhere")
    assert record.status == "cancelled"
    log = await rig.engine.get_run_log(thread.id, "run_elsewhere")
    assert isinstance(log.events[-2], RunFailed) and log.done
    assert (
        await (await rig.engine.start_run(thread_id=thread.id, message="x")).result()
    ).responses == ["after"]
    again = await rig.engine.cancel(thread.id, "run_elsewhere")  # finished: unchanged
    assert again.status == "cancelled"


async def test_a_follower_that_fails_outright_is_logged_and_its_log_ends(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ends a follower of a run owned elsewhere (here: no notices to be had) is logged with
    the run, never lost with its task; its readers still see the log end."""
    rig = await make_rig([])
    thread, _ = await rig.engine.create_thread(None)
    await rig.store.create_run(active_run(thread.id))

    def no_notices(run_id: str) -> object:
        raise RuntimeError("no notices today")

    monkeypatch.setattr(rig.store, "run_event_notices", no_notices)
    with capture_logs() as logs:
        log = await rig.engine.get_run_log(thread.id, "run_elsewhere")
        await asyncio.gather(*rig.engine._background)  # the follower, ended
    assert log.done
    failures = [entry for entry in logs if entry["log_level"] == "error"]
    assert [(e["event"], e["run_id"], e["thread_id"]) for e in failures] == [
        ("run.follow_failed", "run_elsewhere", thread.id)
    ]


async def test_cancel_right_after_start_still_ends_the_log(make_rig: MakeRig) -> None:
    """A run cancelled right after it started, before its model answered, ends with done."""
    # A new thread's run reads no history, so only a model that takes time can be interrupted.
    rig = await make_rig([text("never")], delay=0.05)
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    record = await rig.engine.cancel(handle.thread_id, handle.run_id)
    assert handle.log.done and isinstance(handle.log.events[-1], Done)
    result = await handle.result()
    assert result.status == "cancelled"
    assert record.status == "cancelled"
    stored = await rig.store.get_run(handle.run_id)
    assert stored is not None and stored.status == "cancelled"


async def test_aclose_cancels_running_runs_and_records_them(make_rig: MakeRig) -> None:
    """Closing the engine cancels runs in flight and stores them as cancelled."""
    rig = await make_rig([calls(("slow", {"seconds": 30}))])
    handle = await rig.engine.start_run(thread_id=None, message="long")
    await wait_for(handle, StepCreated)
    await rig.engine.aclose()
    record = await rig.store.get_run(handle.run_id)
    assert record is not None and record.status == "cancelled"
    assert isinstance(handle.log.events[-3], RunFailed)
    assert not isinstance(handle.log.events[-3], RunCompleted)


async def test_runners_that_take_the_assistant_get_it(make_rig: MakeRig) -> None:
    """The runner is told which assistant is calling, so built-ins can scope to it."""
    seen: list[str | None] = []

    class Scoped(ScriptedRunner):
        async def run(  # type: ignore[override]
            self,
            catalog: object,
            name: str,
            arguments: str | dict[str, object],
            *,
            correlation_id: str = "",
            assistant: str | None = None,
        ) -> ToolResult:
            seen.append(assistant)
            return ToolResult(status="succeeded", output="ok", duration_ms=0.1)

    rig = await make_rig([calls(("lookup", {})), text("fine")])
    rig.engine._runner = Scoped()
    await (await rig.engine.start_run(thread_id=None, message="hi")).result()
    assert seen == ["support"]


async def test_delete_thread_cancels_its_run_first(make_rig: MakeRig) -> None:
    """Deleting a thread with a run going cancels the run, then removes everything."""
    rig = await make_rig([calls(("slow", {"seconds": 30}))])
    handle = await rig.engine.start_run(thread_id=None, message="long")
    await wait_for(handle, StepCreated)
    assert await rig.engine.delete_thread(handle.thread_id) is True
    assert rig.runner.cancelled == ["slow"]
    assert handle.log.done
    assert await rig.store.get_thread(handle.thread_id) is None
    assert await rig.store.get_run(handle.run_id) is None
    assert await rig.engine.delete_thread(handle.thread_id) is False
    with pytest.raises(NotFound):
        await rig.engine.get_run_log(handle.thread_id, handle.run_id)


async def test_history_sent_to_the_model_is_trimmed_to_the_budget(make_rig: MakeRig) -> None:
    """A long thread is trimmed to the engine's budget without splitting a call from its result."""
    turns: list[Turn] = []
    for i in range(4):
        turns += [calls(("lookup", {"i": i}), prefix=f"r{i}"), text(f"answer {i}")]
    rig = await make_rig(turns)
    rig.engine._budget = HistoryBudget(max_messages=6, max_chars=10**6)
    thread_id: str | None = None
    for i in range(4):
        handle = await rig.engine.start_run(thread_id=thread_id, message=f"question {i}")
        thread_id = handle.thread_id
        await handle.result()
    assert thread_id is not None
    assert len(await rig.store.list_messages(thread_id)) == 16  # everything is stored
    last = rig.provider.requests[-1].messages  # the final model call of the last run
    assert len(last) <= 6
    assert last[0].role != "tool"
    assert [m.content for m in last if m.role == "user"][-1] == "question 3"
    for index, message in enumerate(last):
        if message.tool_calls:
            assert last[index + 1].tool_call_id == message.tool_calls[0].id


async def test_an_unexpected_provider_exception_is_an_internal_error(make_rig: MakeRig) -> None:
    """A bug in a provider fails the run as internal_error without leaking details."""

    def broken(request: object) -> list[ModelEvent]:
        raise KeyError("secret-detail")

    rig = await make_rig([broken])
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    result = await handle.result()
    assert result.error is not None and result.error.type == "internal_error"
    assert "secret-detail" not in result.error.message
    assert any(isinstance(e, ErrorEvent) for e in handle.log.events)


async def test_a_caller_cancelled_while_starting_does_not_orphan_the_run(
    make_rig: MakeRig,
) -> None:
    """If the request starting a run goes away mid-write, the stored run still runs to its end."""
    rig = await make_rig([text("still answered")])
    slow_begin = rig.store.begin_run

    async def begin_run(run: RunRecord, message: ChatMessage, **kwargs: Any) -> object:
        await asyncio.sleep(0.1)
        return await slow_begin(run, message, **kwargs)

    rig.store.begin_run = begin_run  # type: ignore[method-assign,assignment]
    thread, _ = await rig.engine.create_thread(None)
    caller = asyncio.create_task(rig.engine.start_run(thread_id=thread.id, message="hi"))
    await asyncio.sleep(0.02)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    for _ in range(100):
        runs = [m.run_id for m in await rig.store.list_messages(thread.id) if m.run_id]
        record = await rig.store.get_run(runs[0]) if runs else None
        if record is not None and record.status == "completed":
            break
        await asyncio.sleep(0.02)
    assert record is not None and record.status == "completed"
    messages = [m.message.content for m in await rig.store.list_messages(thread.id)]
    assert messages == ["hi", "still answered"]


async def test_an_answer_the_store_could_not_keep_is_not_acknowledged(make_rig: MakeRig) -> None:
    """When the final commit fails, the run ends not_ready and no message.completed is sent."""
    rig = await make_rig([text("lost")])

    async def finish_run(*args: Any, **kwargs: Any) -> None:
        raise NotReady("the thread store does not answer")

    rig.store.finish_run = finish_run  # type: ignore[method-assign]
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    result = await handle.result()
    assert result.error is not None and result.error.type == "not_ready"
    assert result.responses == []
    assert not any(isinstance(e, MessageCompleted) for e in handle.log.events)


async def test_a_new_thread_run_does_not_read_its_history_back(make_rig: MakeRig) -> None:
    """A first turn sends the model exactly the user message without reading the store."""
    rig = await make_rig([text("hello"), text("again")])
    reads: list[str] = []
    list_messages = rig.store.list_messages

    async def counting(thread_id: str, limit: int | None = None) -> Any:
        reads.append(thread_id)
        return await list_messages(thread_id, limit)

    rig.store.list_messages = counting  # type: ignore[method-assign]
    first = await rig.engine.start_run(thread_id=None, message="hi")
    assert (await first.result()).responses == ["hello"]
    assert reads == []
    second = await rig.engine.start_run(thread_id=first.thread_id, message="more")
    assert (await second.result()).responses == ["again"]
    assert reads == [first.thread_id]
    stored = [(m.message.role, m.message.content) for m in await list_messages(first.thread_id)]
    assert stored == [
        ("user", "hi"),
        ("assistant", "hello"),
        ("user", "more"),
        ("assistant", "again"),
    ]


async def test_a_run_whose_start_is_not_stored_leaves_no_trace(make_rig: MakeRig) -> None:
    """If storing the run fails, start_run raises; the model call made meanwhile stores nothing."""
    rig = await make_rig([text("never shown")])
    finished: list[str] = []

    async def begin_run(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.05)  # the model answers before this fails
        raise NotReady("the thread store does not answer")

    async def finish_run(run: RunRecord, *args: Any, **kwargs: Any) -> None:
        finished.append(run.id)

    rig.store.begin_run = begin_run  # type: ignore[method-assign]
    rig.store.finish_run = finish_run  # type: ignore[method-assign]
    with pytest.raises(NotReady):
        await rig.engine.start_run(thread_id=None, message="hi")
    for _ in range(50):
        if rig.engine.active_runs == 0:
            break
        await asyncio.sleep(0.01)
    assert rig.engine.active_runs == 0
    assert finished == []
    assert len(rig.provider.requests) <= 1
    assert await rig.store.list_active_runs() == []


async def test_surrogates_from_the_model_are_repaired_and_the_run_ends(make_rig: MakeRig) -> None:
    """Lone or split UTF-16 surrogates (valid JSON escapes) never keep a run from ending."""
    split_pair = [TextDelta("smile \ud83d"), TextDelta("\ude00 and \udc00"), ModelDone(Usage())]
    rig = await make_rig(
        [
            calls(("lookup", {"q": "\ud800"})),
            split_pair,
            ProviderError("model provider 'x' reported an error: bad \ud800"),
            text("fine"),
        ]
    )
    first = await rig.engine.start_run(thread_id=None, message="hi")
    result = await asyncio.wait_for(first.result(), 10)
    assert result.status == "completed", result.error
    assert result.responses == ["smile \U0001f600 and \ufffd"]
    stored = await rig.store.list_messages(first.thread_id)
    assert stored[-1].message.content == "smile \U0001f600 and \ufffd"
    second = await rig.engine.start_run(thread_id=first.thread_id, message="again")
    failed = await asyncio.wait_for(second.result(), 10)
    assert failed.error is not None and failed.error.message.endswith("bad \ufffd")
    third = await rig.engine.start_run(thread_id=first.thread_id, message="and again")
    assert (await asyncio.wait_for(third.result(), 10)).responses == ["fine"]


async def test_every_run_gives_its_provider_back_however_it_ends(make_rig: MakeRig) -> None:
    """Completed, failed, cancelled (even before its first step), stateless and unstored runs
    all release the provider they acquired, so a client a reload replaced can be closed."""
    rig = await make_rig(
        [text("done"), ProviderError("down"), text("never"), text("stateless"), text("x")],
        delay=0.05,
    )
    assert rig.providers is not None
    await (await rig.engine.start_run(thread_id=None, message="one")).result()
    await (await rig.engine.start_run(thread_id=None, message="two")).result()
    handle = await rig.engine.start_run(thread_id=None, message="three")
    await rig.engine.cancel(handle.thread_id, handle.run_id)
    history = [ChatMessage(role="user", content="four")]
    await (await rig.engine.start_stateless_run(assistant="support", messages=history)).result()
    long = await rig.engine.start_run(thread_id=None, message="five")
    await rig.engine.aclose()
    assert long.log.done
    for _ in range(50):
        if rig.providers.held == 0:
            break
        await asyncio.sleep(0.01)
    assert rig.providers.held == 0


async def test_a_long_client_conversation_keeps_its_system_prompt(make_rig: MakeRig) -> None:
    """Trimming a long OpenAI-compatible conversation keeps the client's system message.

    It was trimmed like any old turn: a chat UI's system prompt ("answer in
    French") silently stopped applying once its conversation passed the budget.
    """
    rig = await make_rig([text("d'accord")])
    history = [ChatMessage(role="system", content="Answer in French.")]
    for i in range(150):
        history += [
            ChatMessage(role="user", content=f"question {i}"),
            ChatMessage(role="assistant", content=f"answer {i}"),
        ]
    history.append(ChatMessage(role="user", content="last question"))
    handle = await rig.engine.start_stateless_run(assistant="support", messages=history)
    assert (await handle.result()).responses == ["d'accord"]
    sent = rig.provider.requests[0].messages
    assert len(sent) <= 200  # still trimmed to the budget
    assert sent[0] == ChatMessage(role="system", content="Answer in French.")
    assert sent[-1].content == "last question"


async def test_an_answer_with_very_many_calls_does_not_stall_the_server(
    make_rig: MakeRig,
) -> None:
    """20,000 calls in one answer are read in linear time, never blocking the event loop.

    Each call's id was compared with every earlier call's (quadratic): 20,000
    calls (a 2 MB answer from a hostile or broken server) froze every request
    of the server for about 8 s.
    """
    many = [("lookup", {"n": i}) for i in range(20_000)]
    rig = await make_rig([calls(("lookup", {})), calls(*many)], max_tool_rounds=1)
    async with loop_gaps() as gaps:
        result = await (await rig.engine.start_run(thread_id=None, message="many")).result()
    assert result.incomplete_details == IncompleteDetails(reason="max_tool_rounds")
    assert max(gaps) < 2.0, f"the event loop was blocked for {max(gaps):.1f}s"


def cut(*parts: str, reason: str = "length", calls_: tuple[tuple[str, str], ...] = ()) -> Turn:
    """A turn cut short (``reason``): text deltas, then tool calls with raw arguments."""
    events: list[ModelEvent] = [TextDelta(p) for p in parts]
    events += [
        ToolCallRequest(ToolCall(id=f"cut_{i}", name=name, arguments=arguments))
        for i, (name, arguments) in enumerate(calls_)
    ]
    events.append(ModelDone(Usage(prompt_tokens=4, completion_tokens=9, total_tokens=13), reason))
    return events


async def test_an_answer_cut_by_the_token_limit_ends_the_run_incomplete(
    make_rig: MakeRig,
) -> None:
    """finish_reason length: the run completes as incomplete (max_completion_tokens), stored so."""
    rig = await make_rig([calls(("lookup", {})), cut("The answer is", " forty")])
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    result = await handle.result()
    assert result.status == "incomplete" and result.error is None
    assert result.incomplete_details == IncompleteDetails(reason="max_completion_tokens")
    assert result.responses == ["The answer is forty"]
    assert result.metadata is not None and result.metadata.finish_reason == "length"
    [completed] = [e for e in handle.log.events if isinstance(e, RunCompleted)]
    assert completed.incomplete_details == IncompleteDetails(reason="max_completion_tokens")
    record = await rig.store.get_run(handle.run_id)
    assert record is not None and record.status == "incomplete" and record.error is None
    assert record.incomplete_details == {"reason": "max_completion_tokens"}
    assert await rig.engine.get_run(handle.thread_id, handle.run_id) == record
    stored = await rig.store.list_messages(handle.thread_id)
    assert stored[-1].message.content == "The answer is forty"  # the cut answer is kept


async def test_tool_calls_of_a_cut_answer_never_run(make_rig: MakeRig) -> None:
    """A length turn's tool calls (the last one truncated JSON) run nowhere and are not stored;
    the cut wins over max_tool_rounds too."""
    truncated = (("lookup", '{"q": 1}'), ("lookup", '{"q": "tw'))
    rig = await make_rig(
        [calls(("lookup", {})), cut("Checking", calls_=truncated)], max_tool_rounds=1
    )
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    with capture_logs() as logs:
        result = await handle.result()
    assert result.status == "incomplete" and result.responses == ["Checking"]
    assert len(rig.runner.calls) == 1  # the first round's call only
    steps = [e for e in handle.log.events if isinstance(e, StepCreated)]
    assert [s.tool_call.id for s in steps] == ["call_0"]
    stored = [m.message for m in await rig.store.list_messages(handle.thread_id)]
    assert all(call.id.startswith("call_") for m in stored for call in m.tool_calls)
    assert stored[-1] == ChatMessage(role="assistant", content="Checking")
    [warning] = [entry for entry in logs if entry["event"] == "run.incomplete"]
    assert warning["dropped_tool_calls"] == 2 and warning["finish_reason"] == "length"


async def test_a_content_filter_stop_is_incomplete_too(make_rig: MakeRig) -> None:
    """finish_reason content_filter ends the run incomplete with that reason, even with no text."""
    rig = await make_rig([cut(reason="content_filter")])
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    result = await handle.result()
    assert result.status == "incomplete" and result.responses == []
    assert result.incomplete_details == IncompleteDetails(reason="content_filter")


async def test_an_incomplete_run_replays_incomplete_after_a_restart(make_rig: MakeRig) -> None:
    """The stored log and record of an incomplete run read back the same from a fresh engine."""
    rig = await make_rig([cut("cut sho")])
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    await handle.result()
    await rig.engine.aclose()
    await rig.store.close()
    fresh = await make_rig([])
    log = await fresh.engine.get_run_log(handle.thread_id, handle.run_id)
    assert log.events == handle.log.events
    replayed = await collect_result(log)
    assert replayed.status == "incomplete"
    record = await fresh.engine.get_run(handle.thread_id, handle.run_id)
    assert record.status == "incomplete"
    assert record.incomplete_details == {"reason": "max_completion_tokens"}


async def test_a_finished_answer_reports_stop(make_rig: MakeRig) -> None:
    """A run whose last answer finished is completed, with finish_reason stop and no details."""
    rig = await make_rig([text("done")])
    result = await (await rig.engine.start_run(thread_id=None, message="hi")).result()
    assert result.status == "completed" and result.incomplete_details is None
    assert result.metadata is not None and result.metadata.finish_reason == "stop"


async def test_finished_logs_in_memory_are_bounded_by_bytes(make_rig: MakeRig) -> None:
    """The finished logs kept for replay hold at most ``keep_finished_bytes`` (the oldest
    go first, one larger than that alone is not kept), and a log no longer kept replays
    from the store with the same events and positions: before, 1000 logs were kept
    whatever their size (a 500,000-delta runaway answer held 70 MB)."""
    big = text(*["x" * 100] * 2_000)  # about 700 KB in memory
    small = [text(*["y" * 100] * 100) for _ in range(3)]  # about 37 KB each
    rig = await make_rig([big, *small], engine_kw={"keep_finished_bytes": 100_000})
    handles = []
    for _ in range(4):
        handle = await rig.engine.start_run(thread_id=None, message="hi")
        await handle.result()
        handles.append(handle)
    # Newest first: a log read back from the store is kept again, pushing out the oldest.
    logs = [await rig.engine.get_run_log(h.thread_id, h.run_id) for h in reversed(handles)]
    kept = [log is h.log for log, h in zip(logs, reversed(handles), strict=True)]
    assert kept == [True, True, False, False]
    for log, handle in zip(logs, reversed(handles), strict=True):
        assert log.done and log.events == handle.log.events
    after = len(handles[0].log) - 3
    assert [seq async for seq, _ in logs[-1].follow(after)] == [after + 1, after + 2, after + 3]


async def test_a_long_log_is_encoded_off_the_event_loop(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished log of many events is encoded for the store in a worker thread, not on
    the event loop (a 500,000-delta log took seconds there, every request waiting), and
    stored whole."""
    threads: list[int] = []
    encoded = RunLog.encoded

    def spy(self: RunLog, start: int = 0) -> list[bytes]:
        threads.append(threading.get_ident())
        return encoded(self, start)

    monkeypatch.setattr(RunLog, "encoded", spy)
    rig = await make_rig([text(*["z"] * 5_000)])
    handle = await rig.engine.start_run(thread_id=None, message="hi")
    assert (await handle.result()).responses == ["z" * 5_000]
    assert threads and threading.get_ident() not in threads
    page = await rig.store.load_run_events_after(handle.run_id, 0)
    assert page.finished and len(page.events) == len(handle.log)
