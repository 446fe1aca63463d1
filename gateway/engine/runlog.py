"""A run's event log, followed by any number of readers; the handle and result around it.

The run task appends events; SSE, WebSocket and JSON clients read from a
cursor (``follow(after)``), so a client can disconnect and come back with
``Last-Event-ID``. Sequence numbers start at 1 and are the SSE ``id`` suffix.
Imports only ``gateway.events`` and ``gateway.providers.base``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Literal

import msgspec

from gateway.events import (
    Done,
    ErrorInfo,
    Event,
    IncompleteDetails,
    MessageCompleted,
    MessageDelta,
    Metadata,
    RunCompleted,
    RunFailed,
    StepCompleted,
    StepCreated,
    ToolCallSummary,
    decode_ws,
    encode_ws,
)
from gateway.providers.base import Usage

__all__ = ["RunHandle", "RunLog", "RunResult", "collect_result"]

_EVENT_BYTES = 160
"""Memory one event holds beyond its text, about: its object, its slot in the log, and
a delta's own string header (a one-character delta costs this much)."""


def _weight(event: Event) -> int:
    """About how many bytes ``event`` holds in memory (``RunLog.nbytes``).

    A delta (the bulk of a log: one per streamed chunk) is weighed by its text;
    any other event by its encoded size, which its text (a tool's output) dominates.
    """
    if isinstance(event, MessageDelta):
        return _EVENT_BYTES + len(event.delta)
    return _EVENT_BYTES + len(encode_ws(event))


class RunLog:
    """The ordered events of one run; ``done`` once ``Done`` is appended.

    Appending is synchronous and wakes every waiting reader; readers never
    block the run (a slow reader only falls behind in the backlog).
    """

    def __init__(self, run_id: str, thread_id: str) -> None:
        self.run_id = run_id
        self.thread_id = thread_id
        self._events: list[Event] = []
        self._changed = asyncio.Event()
        self._done = False
        self._nbytes = 0

    @property
    def done(self) -> bool:
        """True once the run's last event (``Done``) is in the log."""
        return self._done

    def __len__(self) -> int:
        return len(self._events)

    @property
    def nbytes(self) -> int:
        """About how many bytes of memory the events hold (what bounds the engine's cache
        of finished logs); an estimate, kept as events are appended."""
        return self._nbytes

    @property
    def events(self) -> list[Event]:
        """A copy of the events so far."""
        return list(self._events)

    def append(self, event: Event) -> int:
        """Append ``event`` and wake the readers; returns its sequence number.

        Raises:
            RuntimeError: the log is already done.
        """
        if self._done:
            raise RuntimeError(f"run {self.run_id} is done; cannot append {event.name}")
        self._events.append(event)
        self._nbytes += _weight(event)
        if isinstance(event, Done):
            self._done = True
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return len(self._events)

    async def follow(self, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
        """Yield ``(seq, event)`` for every event after ``after``, live, until ``Done``."""
        index = max(after, 0)
        while True:
            while index < len(self._events):
                index += 1
                yield index, self._events[index - 1]
            if self._done:
                return
            await self._changed.wait()

    async def wait(self, seen: int) -> None:
        """Return once the log holds more than ``seen`` events, or is done."""
        while len(self._events) <= seen and not self._done:
            await self._changed.wait()

    def encoded(self, start: int = 0) -> list[bytes]:
        """The events from index ``start`` on as WebSocket frames (what the store keeps)."""
        return [encode_ws(event) for event in self._events[start:]]

    @classmethod
    def replay(cls, run_id: str, thread_id: str, frames: Iterable[bytes]) -> RunLog:
        """A finished log rebuilt from stored frames (``Done`` is added if missing)."""
        log = cls(run_id, thread_id)
        for frame in frames:
            log.append(decode_ws(frame))
            if log.done:
                break
        if not log.done:
            log.append(Done())
        return log


RunStatusName = Literal["completed", "incomplete", "failed", "cancelled"]


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a finished run produced, for the JSON ``/chat`` answer.

    Attributes:
        responses: the text of every assistant message, in order.
        tool_calls: every tool call's arguments and outcome, in completion order.
        usage: tokens summed over the run's model calls.
        metadata: the run's ``metadata`` event (timings...), if it got that far.
        error: why the run failed or was cancelled, else None.
        status: ``completed``, ``incomplete`` (its last answer was cut short:
            see ``incomplete_details``), ``failed`` or ``cancelled``.
        incomplete_details: why an ``incomplete`` run's answer was cut, else None.
    """

    thread_id: str
    run_id: str
    responses: list[str] = []
    tool_calls: list[ToolCallSummary] = []
    usage: Usage = Usage()
    metadata: Metadata | None = None
    error: ErrorInfo | None = None
    status: RunStatusName = "completed"
    incomplete_details: IncompleteDetails | None = None


async def collect_result(log: RunLog) -> RunResult:
    """Follow ``log`` to its end and gather the result."""
    responses: list[str] = []
    arguments: dict[str, str] = {}  # by step_id: each step is created before it completes
    tool_calls: list[ToolCallSummary] = []
    usage = Usage()
    metadata: Metadata | None = None
    error: ErrorInfo | None = None
    status: RunStatusName = "failed"
    incomplete: IncompleteDetails | None = None
    async for _, event in log.follow():
        if isinstance(event, MessageCompleted):
            responses.append(event.content)
        elif isinstance(event, StepCreated):
            arguments[event.step_id] = event.tool_call.arguments
        elif isinstance(event, StepCompleted):
            done = event.tool_call
            summary = ToolCallSummary(
                id=done.id,
                name=done.name,
                arguments=arguments.get(event.step_id, ""),
                status=done.status,
                output=done.output,
                duration_ms=done.duration_ms,
            )
            tool_calls.append(summary)
        elif isinstance(event, RunCompleted):
            usage, incomplete = event.usage, event.incomplete_details
            status = "completed" if incomplete is None else "incomplete"
        elif isinstance(event, RunFailed):
            error = event.error
            status = "cancelled" if error.type == "cancelled" else "failed"
        elif isinstance(event, Metadata):
            metadata = event
            usage = event.usage
    return RunResult(
        thread_id=log.thread_id,
        run_id=log.run_id,
        responses=responses,
        tool_calls=tool_calls,
        usage=usage,
        metadata=metadata,
        error=error,
        status=status,
        incomplete_details=incomplete,
    )


class RunHandle:
    """A started run: its ids, the pinned manifest version, and its log."""

    def __init__(
        self, *, log: RunLog, assistant: str, manifest_version: str, task: asyncio.Task[None]
    ) -> None:
        self.run_id = log.run_id
        self.thread_id = log.thread_id
        self.assistant = assistant
        self.manifest_version = manifest_version
        self.log = log
        self.task = task
        self.settling: asyncio.Task[None] | None = None
        # Set by ``Engine.drain`` when a shutdown cancels the run: its waiting client gets
        # 503 (retry), not the 409 of a cancel another request made.
        self.drained = False

    async def result(self) -> RunResult:
        """Wait for the run to end and gather responses, tool calls, usage and errors."""
        return await collect_result(self.log)
