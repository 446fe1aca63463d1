"""Reading a run's event log as a stream: heartbeats, SSE frames, failures mid-stream.

A stream is only a *reader* of the run's log (``RunLog.follow``): when the
client goes away, the reader stops and the run goes on. ``follow`` pumps the
log through a queue so keep-alive ticks can be interleaved without cancelling
the log iterator; ``sse_frames`` renders the gateway's SSE protocol:
``retry: 5000`` and a ``: keep-alive`` comment first, one frame per event with
``id: <run_id>:<seq>``, a keep-alive every ``GATEWAY_SSE_HEARTBEAT`` seconds,
and, if the log fails after the stream started, ``error`` +
``thread.run.failed`` + ``done``. A stream resumed at or past the run's end
is just ``retry`` and ``done`` (with the resumed position as its id).
``parse_last_event_id`` reads a ``Last-Event-ID`` header back into its run and
position. Imports ``gateway.events`` and ``gateway.errors`` only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol

import structlog

from gateway.errors import InvalidInput
from gateway.events import Done, ErrorEvent, ErrorInfo, Event, RunFailed, encode_sse

__all__ = ["SSE_HEADERS", "EventLog", "follow", "parse_last_event_id", "sse_frames"]

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    "Content-Encoding": "identity",  # never compressed: a proxy must not hold frames back
}
_RETRY = b"retry: 5000\n"
# A comment *line* with no blank line after it: it keeps proxies and clients
# awake, and since only a blank line dispatches an event, no client (not even
# one that dispatches id-only frames, like httpx-sse) sees an empty event.
_KEEPALIVE = b": keep-alive\n"

log = structlog.get_logger("gateway.api")


def parse_last_event_id(value: str) -> tuple[str, int]:
    """``<run_id>:<seq>`` (or a bare ``<seq>``) as ``(run_id, seq)``; ``run_id`` may be "".

    Raises:
        InvalidInput: anything else, naming the header.
    """
    head, _, seq = value.rpartition(":")
    # ASCII digits only: isdigit() also accepts "²" (a latin-1 header byte), which int() refuses.
    if not (seq.isascii() and seq.isdigit()) or len(value) > 200:
        raise InvalidInput("Last-Event-ID must be '<run_id>:<seq>' for this run", "Last-Event-ID")
    return head, int(seq)


class EventLog(Protocol):
    """What a stream reads: the engine's ``RunLog``."""

    def follow(self, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
        """The events after ``after``, then live ones until ``Done``."""
        ...


class _End:
    pass


_END = _End()
_TICK = None


async def follow(
    run_log: EventLog, *, after: int = 0, heartbeat: float = 0.0
) -> AsyncIterator[tuple[int, Event] | None]:
    """The log's ``(seq, event)`` pairs, with ``None`` every ``heartbeat`` seconds of silence.

    Raises whatever the log raises. With ``heartbeat <= 0`` the log is read directly.
    """
    if heartbeat <= 0:
        async for item in run_log.follow(after):
            yield item
        return
    queue: asyncio.Queue[tuple[int, Event] | BaseException | _End | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in run_log.follow(after):
                queue.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the reader, which reports it
            queue.put_nowait(exc)
        else:
            queue.put_nowait(_END)

    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def tick() -> None:
        nonlocal timer
        queue.put_nowait(_TICK)
        timer = loop.call_later(heartbeat, tick)

    task = asyncio.create_task(pump())
    timer = loop.call_later(heartbeat, tick)
    try:
        while True:
            got = await queue.get()
            if isinstance(got, _End):
                return
            if isinstance(got, BaseException):
                raise got
            yield got
    finally:
        timer.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def sse_frames(
    run_log: EventLog, *, run_id: str, after: int, heartbeat: float, correlation_id: str
) -> AsyncIterator[bytes]:
    """The SSE byte stream of one run (see the module docstring)."""
    # ``retry:`` rides on the first event's frame: a frame holding only ``retry``
    # is dispatched as an empty "message" event by some clients (httpx-sse).
    first = True
    seen_error = False
    # A resumed stream reads the event at ``after`` too, unsent: when it is the run's
    # error event, the client saw it, and the run.failed after it needs no second one.
    peek = after > 0
    try:
        async for item in follow(run_log, after=after - 1 if peek else 0, heartbeat=heartbeat):
            if item is None:
                yield _KEEPALIVE
                continue
            seq, event = item
            if peek:
                peek = False
                if seq == after:
                    seen_error = isinstance(event, ErrorEvent)
                    continue
            frame = b""
            if isinstance(event, ErrorEvent):
                seen_error = True
            elif (
                isinstance(event, RunFailed) and not seen_error and event.error.type != "cancelled"
            ):
                # The contract: a failure on a started stream reads error + run.failed + done.
                seen_error = True
                frame = encode_sse(
                    ErrorEvent(
                        type=event.error.type,
                        message=event.error.message,
                        correlation_id=correlation_id,
                    )
                )
            frame += encode_sse(event, f"{run_id}:{seq}")
            if first:
                first = False
                frame = _RETRY + frame + _KEEPALIVE
            yield frame
        if first:
            # Resumed at or past the end (EventSource reconnects with done's own id): the
            # log had nothing left, but the stream still ends with done, at the client's
            # position, so a client that waits for done stops instead of reconnecting forever.
            yield _RETRY + encode_sse(Done(), f"{run_id}:{after}")
    except Exception as exc:
        log.error("stream_failed", run_id=run_id, exc_info=exc)
        message = "the event stream failed; reconnect with Last-Event-ID to resume"
        frame = encode_sse(
            ErrorEvent(type="internal_error", message=message, correlation_id=correlation_id)
        )
        if not seen_error:
            frame += encode_sse(
                RunFailed(run_id=run_id, error=ErrorInfo(type="internal_error", message=message))
            )
        yield (_RETRY if first else b"") + frame + encode_sse(Done())
