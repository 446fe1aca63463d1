"""The run log: cursors, live following, encoding for replay, results."""

from __future__ import annotations

import asyncio

import pytest

from gateway.engine.runlog import RunLog, collect_result
from gateway.events import (
    Done,
    ErrorInfo,
    MessageCompleted,
    MessageDelta,
    RunCreated,
    RunFailed,
    StepCompleted,
    StepCreated,
    ToolCallInfo,
    ToolCallOutcome,
    ToolCallSummary,
)


def created() -> RunCreated:
    return RunCreated(thread_id="t", run_id="r", assistant="a", manifest_version="v")


async def test_live_readers_wake_on_append_and_stop_at_done() -> None:
    """A reader waiting on an empty log gets each event as it is appended and stops at done."""
    log = RunLog("r", "t")
    got: list[tuple[int, str]] = []

    async def reader() -> None:
        async for seq, event in log.follow():
            got.append((seq, event.name))

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    assert log.append(created()) == 1
    await asyncio.sleep(0)
    assert got == [(1, "thread.run.created")]
    log.append(MessageDelta(run_id="r", message_id="m", delta="hi"))
    log.append(Done())
    await asyncio.wait_for(task, 1)
    assert got == [(1, "thread.run.created"), (2, "thread.message.delta"), (3, "done")]
    with pytest.raises(RuntimeError):
        log.append(Done())


async def test_replay_round_trips_the_encoded_log() -> None:
    """Encoded events decode back to equal events; a log cut before done gets one."""
    log = RunLog("r", "t")
    outcome = ToolCallOutcome(id="c", name="x", status="failed", output="{}", duration_ms=1.5)
    for event in (created(), StepCompleted(run_id="r", step_id="s", tool_call=outcome), Done()):
        log.append(event)
    replayed = RunLog.replay("r", "t", log.encoded())
    assert replayed.events == log.events and replayed.done
    cut = RunLog.replay("r", "t", log.encoded()[:2])
    assert cut.done and isinstance(cut.events[-1], Done) and len(cut) == 3


async def test_collect_result_gathers_answers_tools_and_errors() -> None:
    """The result lists every answer and tool call (the arguments its step was created with,
    its outcome), and a cancellation as status cancelled."""
    log = RunLog("r", "t")
    info = ToolCallInfo(id="c", name="x", arguments='{"n":  1}')
    outcome = ToolCallOutcome(id="c", name="x", status="succeeded", output="1", duration_ms=1.0)
    log.append(created())
    log.append(StepCreated(run_id="r", step_id="s", tool_call=info))
    log.append(StepCompleted(run_id="r", step_id="s", tool_call=outcome))
    log.append(MessageCompleted(run_id="r", message_id="m", content="one"))
    log.append(RunFailed(run_id="r", error=ErrorInfo(type="cancelled", message="stop")))
    log.append(Done())
    result = await collect_result(log)
    assert result.responses == ["one"]
    assert result.tool_calls == [
        ToolCallSummary(
            id="c", name="x", arguments='{"n":  1}', status="succeeded", output="1", duration_ms=1.0
        )
    ]
    assert result.status == "cancelled" and result.error == ErrorInfo(
        type="cancelled", message="stop"
    )
    assert (result.thread_id, result.run_id) == ("t", "r")
