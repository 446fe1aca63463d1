"""SSE rendering of a run's log: retry, ids, keep-alives, and failures after the stream started."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from gateway.api.streaming import sse_frames
from gateway.events import Done, ErrorInfo, Event, MessageDelta, RunCreated, RunFailed


class FakeLog:
    """A log yielding ``events`` (with a pause before ``pause_at``), then raising ``error``."""

    def __init__(
        self, events: list[Event], error: Exception | None = None, pause: float = 0
    ) -> None:
        self.events, self.error, self.pause = events, error, pause

    async def follow(self, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
        for seq, event in enumerate(self.events, start=1):
            if seq > after:
                if seq == 2 and self.pause:
                    await asyncio.sleep(self.pause)
                yield seq, event
        if self.error is not None:
            raise self.error


CREATED = RunCreated(thread_id="t", run_id="r", assistant="a", manifest_version="v")


async def collect(log: FakeLog, heartbeat: float = 0.0, after: int = 0) -> bytes:
    """The whole stream as bytes."""
    frames = sse_frames(log, run_id="r", after=after, heartbeat=heartbeat, correlation_id="c")
    return b"".join([frame async for frame in frames])


async def test_retry_rides_on_the_first_frame_and_ids_count_from_after() -> None:
    """retry: 5000 starts the stream, a keep-alive line follows, ids are run:seq."""
    delta = MessageDelta(run_id="r", message_id="m", delta="hi")
    text = (await collect(FakeLog([CREATED, delta, Done()]))).decode()
    assert text.startswith("retry: 5000\nevent: thread.run.created\nid: r:1\n")
    assert "\n\n: keep-alive\nevent: thread.message.delta\nid: r:2\n" in text
    assert text.endswith("event: done\nid: r:3\ndata: {}\n\n")
    resumed = (await collect(FakeLog([CREATED, delta, Done()]), after=2)).decode()
    assert resumed.startswith("retry: 5000\nevent: done\nid: r:3\n")


async def test_resuming_at_or_past_the_end_still_ends_with_done() -> None:
    """A resume from the done frame's id (or a later seq) gets retry and done, not an empty body."""
    delta = MessageDelta(run_id="r", message_id="m", delta="hi")
    for after in (3, 50):
        text = (await collect(FakeLog([CREATED, delta, Done()]), after=after)).decode()
        assert text == f"retry: 5000\nevent: done\nid: r:{after}\ndata: {{}}\n\n"


async def test_a_log_failing_mid_stream_ends_with_error_failed_done() -> None:
    """If reading the log fails after the stream started: error, thread.run.failed, done."""
    text = (await collect(FakeLog([CREATED], RuntimeError("secret detail")))).decode()
    names = [
        line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event:")
    ]
    assert names == ["thread.run.created", "error", "thread.run.failed", "done"]
    assert "secret detail" not in text


async def test_a_failed_run_gets_an_error_event_before_run_failed() -> None:
    """A run.failed without a preceding error event is announced by one (not for cancels)."""
    failed = RunFailed(run_id="r", error=ErrorInfo(type="provider_error", message="down"))
    text = (await collect(FakeLog([CREATED, failed, Done()]))).decode()
    names = [
        line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event:")
    ]
    assert names == ["thread.run.created", "error", "thread.run.failed", "done"]
    cancelled = RunFailed(run_id="r", error=ErrorInfo(type="cancelled", message="stop"))
    text = (await collect(FakeLog([CREATED, cancelled, Done()]))).decode()
    assert "event: error" not in text


async def test_keep_alives_while_the_log_is_silent() -> None:
    """With a heartbeat, silence is filled with keep-alive comment lines."""
    log = FakeLog([CREATED, Done()], pause=0.25)
    text = (await collect(log, heartbeat=0.05)).decode()
    assert text.count(": keep-alive\n") >= 3
    assert text.endswith("event: done\nid: r:2\ndata: {}\n\n")
