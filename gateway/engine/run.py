"""One run: history -> model -> tool calls (concurrently) -> model ... -> final events.

``RunTask`` is the body of the asyncio task the engine owns for a run. It
streams the model's answer into the run log, persists every assistant and tool
message as it completes, runs a round's tool calls concurrently through the
``ActionRunner`` (in their order, at most ``max_parallel_calls`` at once; past
``MAX_CALLS_PER_ANSWER`` calls in one answer the next one gets a tool error and
the rest are dropped unstored: ``_bounded``), and
always ends the log with a terminal event, ``metadata`` and ``done``, having
stored the run record first (so a client that sees ``done`` can start the next
run at once). An answer cut short (the model's token limit, a content filter:
``CUT_REASONS``) ends the run ``incomplete``, its tool calls unrun (``_cut_short``).
Cancelling the task stops the model
stream and cancels the runner calls (which kills their sandboxed processes).
A run the store no longer lets write (its lease lapsed and another replica
took the thread over, or another replica cancelled it) is ``superseded``: the
store refuses its writes (``append_run_message``, ``finish_run``), so it stops
at the first refused write, at its next step, or when the engine's renewal
notices, whichever comes first, writes nothing more, and ends its log as the
store's record says (``failed``/``interrupted``, or ``cancelled``), as every
other replica shows it; a run whose record is gone (its thread was deleted,
maybe on another replica) ends cancelled, saying so (``THREAD_DELETED``).
With ``flush_interval`` (a shared store), an ``EventWriter`` stores the run's
events in batches while it goes, so other replicas can follow it live; it is
closed before the final commit.
A store that fails during the run (``NotReady``: a damaged or full disk, the
database down) ends it ``failed`` with ``not_ready`` and the store's message,
a warning here (the store logged its one ERROR line), not a crash; its
outcome is stored if the store takes that last commit, else tried no more:
the run stays ``in_progress`` until its lease lapses, then reads as
``interrupted``.
Imports ``gateway.events``, ``gateway.errors``, the provider, executor and
store interfaces, and ``gateway.manifests`` types.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import msgspec
import structlog

from gateway._unicode import valid_text
from gateway.engine._text import DeltaText, clean_call
from gateway.engine._tools import (
    MAX_CALLS_PER_ANSWER,
    allowed_tools,
    cancelled_result,
    run_tool,
    too_many_calls_result,
)
from gateway.engine._writer import EventWriter
from gateway.engine.history import trim_history
from gateway.engine.replay import ACTIVE, THREAD_DELETED
from gateway.engine.runlog import RunLog
from gateway.engine.spec import HistoryBudget, RunSpec, new_id
from gateway.errors import NotReady, ProviderError
from gateway.events import (
    Done,
    ErrorEvent,
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
    Timings,
    ToolCallInfo,
    ToolCallOutcome,
    encode_ws,
)
from gateway.executors.base import ActionRunner, ToolResult
from gateway.providers.base import (
    CUT_REASONS,
    ChatMessage,
    ModelDone,
    ModelRequest,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)
from gateway.store.base import INTERRUPTED, RunRecord, RunStatus, ThreadStore

__all__ = ["RunTask"]

_logger = structlog.get_logger("gateway.engine")


class _RemoteCancel(Exception):
    """The store's record of the run ended elsewhere (cancelled, taken over): stop writing."""


class _NotBegun(Exception):
    """The run's record and user message could not be stored: the run never existed."""


# A cut answer's finish reason -> the run's ``incomplete_details.reason`` (the
# Assistants API's word for an answer that hit its token limit).
_INCOMPLETE_REASONS = {"length": "max_completion_tokens"}

_NOT_STARTED = ErrorInfo(type="not_started", message="the run could not be stored")
_INTERRUPTED = ErrorInfo(type=INTERRUPTED["type"], message=INTERRUPTED["message"])
_CANCELLED = ErrorInfo(type="cancelled", message="the run was cancelled")
_DELETED = ErrorInfo(type=THREAD_DELETED["type"], message=THREAD_DELETED["message"])


def _store_failure(exc: BaseException) -> NotReady | None:
    """The store's ``NotReady`` that ``exc`` is, or that alone ended a round's tool calls
    (a ``TaskGroup`` wraps it in an ``ExceptionGroup``); None for anything else."""
    if isinstance(exc, NotReady):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        failed, rest = exc.split(NotReady)
        if failed is not None and rest is None:
            return _store_failure(failed.exceptions[0])
    return None


_ENCODE_ON_LOOP_EVENTS = 2048
"""A finished log of more events than this is encoded in a worker thread (``_encoded``)."""


async def _unstoppable(step: Coroutine[Any, Any, None]) -> None:
    """Run ``step`` to its end even if the caller is cancelled (again) meanwhile.

    ``asyncio.shield`` alone protects the step, not the awaiting: a second cancel (a
    second DELETE of the thread while the run settled the first) raised out of it, and
    whatever came after it (storing the run's end, ``Done``) never ran. Here every
    cancel that arrives is held until the step is done, then raised once.

    Raises:
        asyncio.CancelledError: a cancel arrived while the step ran (after it ended).
    """
    task = asyncio.ensure_future(step)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


async def _encoded(log: RunLog, final: list[Event]) -> list[bytes]:
    """``log``'s events and then ``final`` as stored frames.

    A long log (hundreds of thousands of one-character deltas from a trickling
    model) took seconds to encode, every other request of the server waiting:
    past ``_ENCODE_ON_LOOP_EVENTS`` it is encoded in a worker thread. Safe: only
    the run's own task appends to its log, and it waits here; readers only read.
    """

    def encode() -> list[bytes]:
        return log.encoded() + [encode_ws(event) for event in final]

    if len(log) > _ENCODE_ON_LOOP_EVENTS:
        return await asyncio.to_thread(encode)
    return encode()


def _ending(record: RunRecord | None, *, vanished: bool) -> tuple[RunStatus, ErrorInfo]:
    """How a superseded run ends: as ``record`` (read from the store) says it ended;
    cancelled (``_DELETED``) when it ``vanished`` (the store read it as gone)."""
    if vanished:
        return "cancelled", _DELETED  # its thread was deleted under it
    if record is None or record.status not in ("failed", "cancelled"):
        return "failed", _INTERRUPTED  # unreadable
    default = _CANCELLED if record.status == "cancelled" else _INTERRUPTED
    error = record.error or {}
    info = ErrorInfo(
        type=error.get("type", default.type), message=error.get("message", default.message)
    )
    return record.status, info


class RunTask:
    """The run loop; ``await task()`` runs it to its ``done`` event."""

    def __init__(
        self,
        spec: RunSpec,
        log: RunLog,
        *,
        store: ThreadStore | None,
        runner: ActionRunner,
        budget: HistoryBudget,
        on_settled: Callable[[], None],
        begun: asyncio.Future[Any] | None = None,
        flush_interval: float = 0.0,
        max_parallel_calls: int = 8,
    ) -> None:
        self.spec, self.log, self.store, self.runner = spec, log, store, runner
        # At most this many of a turn's calls are handed to the runner at once (see
        # ``_run_tools``): the sandbox's slots, so one answer never floods its queue.
        self.max_parallel_calls = max(1, max_parallel_calls)
        self.budget, self.on_settled = budget, on_settled
        self.begun = begun  # the commit of the run and its user message, while in flight
        # Seconds new events wait to be stored as one batch (0: only the final log is stored).
        self.flush_interval = flush_interval
        self.writer: EventWriter | None = None
        self.usage = Usage()
        # The last model call's finish reason (``metadata``), and why the run is
        # ``incomplete`` if that call was cut short (``_cut_short``).
        self.finish_reason: str | None = None
        self.incomplete: IncompleteDetails | None = None
        self.empty_answer = False  # the last answer had no text and no call (``_empty``)
        self.model_ms = self.tools_ms = 0.0
        self.first_token_ms: float | None = None
        self.started = time.perf_counter()
        self.pending: dict[str, tuple[str, ToolCall]] = {}  # call id -> (step id, call)
        # call id -> when it was handed to the runner: a call cancelled while running
        # reports how long it ran (one still queued, 0).
        self.calls_started: dict[str, float] = {}
        self.entered = False  # False only if the task was cancelled before its first step
        # The last answer (no tool calls) and its message id, stored by ``_finish``.
        self.final: tuple[ChatMessage, str] | None = None
        # The store no longer lets this run write: set by the engine (lease lost), by
        # ``_check_remote_cancel`` or by a refused write, before stopping the run.
        self.superseded = False
        self.ended_as: RunRecord | None = None  # the record that superseded it, once read
        self.vanished = False  # the store read the run as gone: its thread was deleted
        # How a cancel of the task reads (``Engine.delete_thread`` says the thread went).
        self.cancelled_as = _CANCELLED
        self._task: asyncio.Task[Any] | None = None  # the task running ``__call__``
        # True from the start of ``_finish``: the renewal loop leaves it alone (its final
        # write is guarded by the store, and a refusal supersedes it there).
        self.finishing = False
        self.logger = _logger.bind(
            run_id=spec.run_id, thread_id=spec.thread_id, correlation_id=spec.correlation_id
        )

    async def __call__(self) -> None:
        self.entered = True
        self._task = asyncio.current_task()
        status: RunStatus = "completed"
        error: ErrorInfo | None = None
        settle = False
        if self.flush_interval > 0 and self.store is not None and self.spec.record is not None:
            self.writer = EventWriter(
                self.log,
                self.store,
                interval=self.flush_interval,
                begun=self.begun,
                logger=self.logger,
            )
        try:
            await self._loop()
        except _NotBegun:
            await asyncio.shield(self._close_writer())
            self.on_settled()  # nothing was stored; nobody holds this run's handle
            self.log.append(RunFailed(run_id=self.spec.run_id, error=_NOT_STARTED))
            self.log.append(Done())
            return
        except (asyncio.CancelledError, _RemoteCancel):
            if not self.superseded:  # else ``_finish`` ends it as the store says
                status, error = "cancelled", self.cancelled_as
                settle = True
        except ProviderError as exc:
            status = "failed"
            error = ErrorInfo(type="provider_error", message=valid_text(exc.message))
            self._emit_error(error)
        except Exception as exc:
            status = "failed"
            if (failed := _store_failure(exc)) is not None:
                # The store said what failed (its one ERROR line); no crash, no traceback.
                self.logger.warning("run.store_failed", message=failed.message)
                error = ErrorInfo(type="not_ready", message=failed.message)
            else:
                self.logger.exception("run.crashed")
                error = ErrorInfo(type="internal_error", message="the run failed unexpectedly")
            self._emit_error(error)
        await _unstoppable(self._settle_and_finish(status, error, settle=settle))

    async def _settle_and_finish(
        self, status: RunStatus, error: ErrorInfo | None, *, settle: bool
    ) -> None:
        """Give interrupted calls their results (if ``settle``), then store the run's end."""
        if settle:
            await self._settle_pending()
        await self._finish(status, error)

    @property
    def stored(self) -> bool:
        """True once the run's record is committed (so it holds a lease to renew)."""
        if self.spec.record is None:
            return False
        begun = self.begun
        if begun is None:
            return True
        return begun.done() and not begun.cancelled() and begun.exception() is None

    async def _wait_begun(self) -> None:
        """Wait until the run is stored (its first event or write may not come sooner).

        Raises:
            _NotBegun: storing it failed (``start_run`` raised that to its caller).
        """
        begun = self.begun
        if begun is None:
            return
        await asyncio.wait({begun})  # unlike ``await begun``, cancelling the run spares it
        if begun.cancelled() or begun.exception() is not None:
            raise _NotBegun
        self.begun = None

    def _emit_error(self, error: ErrorInfo) -> None:
        self.log.append(
            ErrorEvent(
                type=error.type, message=error.message, correlation_id=self.spec.correlation_id
            )
        )

    async def _persist(self, message: ChatMessage, message_id: str | None = None) -> None:
        """Add ``message`` to the history and store it on the thread as this run's.

        Raises:
            _RemoteCancel: the store refused it (the run is no longer active and
                ours); the run is superseded and must stop.
        """
        self.spec.history.append(message)
        if self.store is None or self.spec.record is None:
            return
        stored = await self.store.append_run_message(
            self.spec.run_id, message, message_id=message_id
        )
        if stored is None:
            await self._refused("message")
            raise _RemoteCancel

    async def _refused(self, write: str) -> None:
        """The store refused this run's ``write``: it is superseded; say why."""
        self.superseded = True
        await self._read_ending()
        reason = "deleted" if self.vanished else "unknown"
        if self.ended_as is not None:
            reason = self.ended_as.status
        self.logger.warning("run.write_refused", write=write, reason=reason)

    async def _read_ending(self) -> None:
        """Read the record that superseded this run (once) into ``ended_as``."""
        if self.ended_as is not None or self.vanished or self.store is None:
            return
        try:
            self.ended_as = await self.store.get_run(self.spec.run_id)
        except Exception:  # the store is down: the run still ends, as interrupted
            self.logger.warning("run.record_unreadable", exc_info=True)
        else:
            self.vanished = self.ended_as is None

    async def _loop(self) -> None:
        spec = self.spec
        if self.store is not None and spec.record is not None and not spec.history_loaded:
            await self._wait_begun()
            stored = await self.store.list_messages(
                spec.thread_id, limit=self.budget.max_messages + 64
            )
            spec.history = [m.message for m in stored]
        rounds = 0
        while True:
            if rounds:
                await self._check_remote_cancel()
            message_id = new_id("msg")
            text, calls = await self._call_model(message_id)
            if self.finish_reason in CUT_REASONS:
                self._cut_short(text, calls, message_id)
                return
            if calls and rounds >= spec.assistant.max_tool_rounds:
                self._looped(text, calls, message_id, rounds)
                return
            if not calls:
                if text:  # stored with the run's outcome, in the same commit (``_finish``)
                    self.final = (ChatMessage(role="assistant", content=text), message_id)
                if not text.strip():  # nothing, or only blank lines: nothing to show
                    self._empty()
                return
            asked = len(calls)
            calls = self._bounded(calls)
            answer = ChatMessage(role="assistant", content=text or None, tool_calls=calls)
            await self._persist(answer, message_id)
            if text:
                self.log.append(
                    MessageCompleted(run_id=spec.run_id, message_id=message_id, content=text)
                )
            rounds += 1
            await self._run_tools(calls, asked)

    def _cut_short(self, text: str, calls: list[ToolCall], message_id: str) -> None:
        """End the run ``incomplete``: the model's answer was cut (token limit, filter).

        Its text, however short, is the run's last answer. Its tool calls do not
        run, not even those whose arguments look whole: the last one's may be
        truncated JSON, and a cut turn is not the model's full decision (more
        calls may have been coming). They are not stored either (a call without
        its result would need a made-up one).
        """
        reason = self.finish_reason or "length"
        self.incomplete = IncompleteDetails(reason=_INCOMPLETE_REASONS.get(reason, reason))
        if text:
            self.final = (ChatMessage(role="assistant", content=text), message_id)
        self.logger.warning(
            "run.incomplete",
            finish_reason=reason,
            dropped_tool_calls=len(calls),
            tools=[call.name for call in calls[:16]],
        )

    def _empty(self) -> None:
        """The model's last answer held no text (or only blanks) and no tool call: say so.

        The run still completes (the model did answer), but a client would show
        an empty bubble with no clue why: ``metadata.empty_answer`` tells it, and
        the warning tells the operator (a model refusing silently, a server that
        streams its text somewhere this API does not read, a reasoning model that
        spent its budget thinking).
        """
        self.empty_answer = True
        self.logger.warning(
            "run.empty_answer",
            finish_reason=self.finish_reason,
            model=self.spec.assistant.model,
            completion_tokens=self.usage.completion_tokens,
        )

    def _looped(self, text: str, calls: list[ToolCall], message_id: str, rounds: int) -> None:
        """End the run ``incomplete`` (``max_tool_rounds``): the model kept calling tools.

        Like a cut answer (``_cut_short``): the answer's text is the run's last
        answer, its tool calls neither run nor are stored. Not a failure: the
        model and its provider work (a 502 said the provider was down, and made
        clients retry the run, tools and all); the run stopped at a limit of the
        assistant's, as one cut by the token limit does.
        """
        self.incomplete = IncompleteDetails(reason="max_tool_rounds")
        if text:
            self.final = (ChatMessage(role="assistant", content=text), message_id)
        self.logger.warning(
            "run.max_tool_rounds",
            rounds=rounds,
            max_tool_rounds=self.spec.assistant.max_tool_rounds,
            dropped_tool_calls=len(calls),
            tools=[call.name for call in calls[:16]],
        )

    async def _check_remote_cancel(self) -> None:
        if self.store is None or not self.store.shared:
            return
        record = await self.store.get_run(self.spec.run_id)
        if record is None:  # its thread was deleted (on another replica): no more model calls
            self.superseded = self.vanished = True
            raise _RemoteCancel
        if record.status not in ACTIVE:  # cancelled elsewhere, or our lease lapsed: taken over
            self.superseded, self.ended_as = True, record
            raise _RemoteCancel

    async def _call_model(self, message_id: str) -> tuple[str, list[ToolCall]]:
        spec = self.spec
        request = ModelRequest(
            model=spec.assistant.model,
            instructions=spec.assistant.instructions,
            messages=trim_history(
                spec.history, max_messages=self.budget.max_messages, max_chars=self.budget.max_chars
            ),
            tools=spec.catalog.tools.get(spec.assistant.name, []) if spec.offer_tools else [],
            temperature=spec.assistant.temperature,
        )
        self.finish_reason = None
        parts: list[str] = []
        calls: list[ToolCall] = []
        seen: set[str] = set()  # the ids of ``calls`` (a scan per call was quadratic)
        pieces = DeltaText()
        started = time.perf_counter()
        stream = spec.provider.stream(request)
        try:
            async for event in stream:
                if self.begun is not None:
                    await self._wait_begun()
                if isinstance(event, TextDelta):
                    self._first_token()
                    self._delta(message_id, parts, pieces.feed(event.text))
                elif isinstance(event, ToolCallRequest):
                    self._first_token()
                    call = clean_call(event.call)
                    # Every call of a turn needs its own id: results are matched to calls
                    # by id (here, in the stored history and by every provider), so a
                    # missing or repeated one (hostile or sloppy servers) gets a fresh one.
                    if not call.id or call.id in seen:
                        call = ToolCall(id=new_id("call"), name=call.name, arguments=call.arguments)
                    seen.add(call.id)
                    calls.append(call)
                elif isinstance(event, ModelDone):
                    self.usage = self.usage + event.usage
                    # Any text from a server: kept short and encodable for events and logs.
                    self.finish_reason = valid_text(event.finish_reason)[:64]
            self._delta(message_id, parts, pieces.flush())
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            self.model_ms += (time.perf_counter() - started) * 1000
        return "".join(parts), calls

    def _delta(self, message_id: str, parts: list[str], text: str) -> None:
        if text:
            parts.append(text)
            self.log.append(
                MessageDelta(run_id=self.spec.run_id, message_id=message_id, delta=text)
            )

    def _first_token(self) -> None:
        if self.first_token_ms is None:
            self.first_token_ms = (time.perf_counter() - self.started) * 1000

    def _bounded(self, calls: list[ToolCall]) -> list[ToolCall]:
        """The calls of one answer that are kept: at most ``MAX_CALLS_PER_ANSWER`` + 1.

        The first ``MAX_CALLS_PER_ANSWER`` run; the next one stands for all the
        others and gets the one ``too_many_tool_calls`` result that tells the
        model how many it asked for (``_run_tools``). The rest are dropped
        before anything is stored or announced: no step event, store write,
        log line or result for each (an answer of up to ``max_answer_chars``
        can hold tens of thousands of calls, each a sequential store write and
        a result in the next request). Dropped from the stored and sent answer
        too, so every call the model is shown has exactly one result: OpenAI
        refuses a call without one, and vLLM's and Ollama's chat templates pair
        calls with results by position, so a result per kept call (not one
        per dropped call) is what keeps the thread valid on all of them.
        """
        if len(calls) <= MAX_CALLS_PER_ANSWER + 1:
            return calls
        self.logger.warning(
            "run.too_many_tool_calls",
            asked=len(calls),
            kept=MAX_CALLS_PER_ANSWER + 1,
            max_calls_per_answer=MAX_CALLS_PER_ANSWER,
        )
        return calls[: MAX_CALLS_PER_ANSWER + 1]

    async def _run_tools(self, calls: list[ToolCall], asked: int) -> None:
        """Run ``calls`` (``_bounded``); ``asked``: how many the answer held."""
        spec = self.spec
        allowed = allowed_tools(spec)
        for call in calls:
            step_id = new_id("step")
            self.pending[call.id] = (step_id, call)
            info = ToolCallInfo(id=call.id, name=call.name, arguments=call.arguments)
            self.log.append(StepCreated(run_id=spec.run_id, step_id=step_id, tool_call=info))
        # The calls start in their order, at most ``max_parallel_calls`` at once; the rest
        # wait here, not in the runner's queue. There, each one's wait counts against its
        # action's timeout, so an answer with many more calls than sandbox slots failed
        # its own last calls ("no sandbox slot was free") and every other run's calls
        # queued behind them timed out too.
        queue = iter(calls[:MAX_CALLS_PER_ANSWER])  # shared by the workers: the next call

        async def work() -> None:
            for call in queue:
                await self._run_tool(call, allowed)

        started = time.perf_counter()
        try:
            # The call past the bound runs nowhere: it gets the error result (``_bounded``).
            for call in calls[MAX_CALLS_PER_ANSWER:]:
                await self._complete_tool(call, too_many_calls_result(asked))
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.max_parallel_calls, len(calls))):
                    group.create_task(work())
        finally:
            self.tools_ms += (time.perf_counter() - started) * 1000

    async def _run_tool(self, call: ToolCall, allowed: set[str]) -> None:
        self.calls_started[call.id] = time.perf_counter()
        result = await run_tool(self.runner, self.spec, call, allowed=allowed, logger=self.logger)
        result = msgspec.structs.replace(result, output=valid_text(result.output))
        try:
            await self._complete_tool(call, result)
        except _RemoteCancel:
            # Raised here it would reach the run wrapped in an ExceptionGroup: stop the
            # run (and its other calls) the way the engine stops one that lost its lease.
            if self._task is not None:
                self._task.cancel()

    async def _complete_tool(self, call: ToolCall, result: ToolResult) -> None:
        self.logger.info(
            "tool.completed",
            tool=call.name,
            status=result.status,
            duration_ms=round(result.duration_ms, 1),
            error_type=result.error_type,
        )
        await self._persist(
            ChatMessage(role="tool", content=result.output, tool_call_id=call.id, name=call.name)
        )
        # Popped only once stored: a cancellation during the write settles the call again
        # (a duplicate result is dropped by history.repair).
        step_id, _ = self.pending.pop(call.id)
        outcome = ToolCallOutcome(
            id=call.id,
            name=call.name,
            status=result.status,
            output=result.output,
            duration_ms=result.duration_ms,
        )
        self.log.append(StepCompleted(run_id=self.spec.run_id, step_id=step_id, tool_call=outcome))

    async def _settle_pending(self) -> None:
        """Give each interrupted call a result, so the history stays valid."""
        cancelled = cancelled_result()
        for _, call in list(self.pending.values()):
            started = self.calls_started.get(call.id)
            result = cancelled
            if started is not None:
                ran_ms = (time.perf_counter() - started) * 1000
                result = msgspec.structs.replace(cancelled, duration_ms=ran_ms)
            try:
                await self._complete_tool(call, result)
            except _RemoteCancel:  # superseded meanwhile: the thread is not ours to write
                return
            except NotReady as exc:  # the store failed (and said so): history.repair covers it
                self.logger.warning("run.persist_failed", tool=call.name, message=exc.message)
            except Exception:
                self.logger.exception("run.persist_failed", tool=call.name)

    async def _close_writer(self) -> None:
        if self.writer is not None:
            await self.writer.close()

    async def _finish(self, status: RunStatus, error: ErrorInfo | None) -> None:
        spec = self.spec
        self.finishing = True
        # No batch may land after the final commit (which drops them); wait out one in flight.
        await self._close_writer()
        if self.begun is not None:  # ended before its first event (a provider error...)
            try:
                await self._wait_begun()
            except _NotBegun:
                self.on_settled()
                self.log.append(RunFailed(run_id=spec.run_id, error=error or _NOT_STARTED))
                self.log.append(Done())
                return
        timings = Timings(
            total_ms=(time.perf_counter() - self.started) * 1000,
            model_ms=self.model_ms,
            first_token_ms=self.first_token_ms,
            tools_ms=self.tools_ms,
        )
        if error is None and self.incomplete is not None:
            status = "incomplete"
        terminal: RunCompleted | RunFailed = (
            RunCompleted(run_id=spec.run_id, usage=self.usage, incomplete_details=self.incomplete)
            if error is None
            else RunFailed(run_id=spec.run_id, error=error)
        )
        metadata = Metadata(
            run_id=spec.run_id,
            timings=timings,
            usage=self.usage,
            manifest_version=spec.catalog.version,
            correlation_id=spec.correlation_id,
            finish_reason=self.finish_reason,
            empty_answer=self.empty_answer,
        )
        final: list[Event] = [terminal, metadata, Done()]
        answer = self.final
        if answer is not None:
            spec.history.append(answer[0])
            message = MessageCompleted(
                run_id=spec.run_id, message_id=answer[1], content=answer[0].content or ""
            )
            final.insert(0, message)
        if not self.superseded and self.store is not None and spec.record is not None:
            record = msgspec.structs.replace(
                spec.record,
                status=status,
                completed_at=time.time(),
                usage=self.usage,
                timings=msgspec.to_builtins(timings),
                error=msgspec.to_builtins(error) if error else None,
                incomplete_details=(
                    msgspec.to_builtins(self.incomplete) if status == "incomplete" else None
                ),
            )
            # The last answer, the record and the full log in one commit, before
            # ``message.completed`` or ``done`` reach any client: a client that saw
            # ``done`` may start the next run on the thread at once.
            try:
                # Encoded in here: whatever fails, the log still ends (below).
                events = await _encoded(self.log, final)
                if answer is None:
                    kept = await self.store.finish_run(record, events)
                else:
                    kept = await self.store.finish_run(record, events, [answer])
            except Exception as exc:
                if (failed := _store_failure(exc)) is not None:  # the store logged it
                    self.logger.warning("run.persist_failed", message=failed.message)
                else:
                    self.logger.exception("run.persist_failed")
                if answer is not None and error is None:
                    # Never acknowledge an answer the store did not keep.
                    status, error = (
                        "failed",
                        ErrorInfo(
                            type="not_ready", message="the answer could not be stored; try again"
                        ),
                    )
                    self._emit_error(error)
                    final = [RunFailed(run_id=spec.run_id, error=error), metadata, Done()]
            else:
                if not kept:  # cancelled or taken over meanwhile: nothing was stored
                    await self._refused("finish")
        if self.superseded:
            # The store's record is final and not ours: end as it says, as every other
            # replica shows the run, and never with an answer the store did not keep.
            await self._read_ending()
            status, error = _ending(self.ended_as, vanished=self.vanished)
            self.logger.warning("run.superseded", status=status, error_type=error.type)
            final = [RunFailed(run_id=spec.run_id, error=error), metadata, Done()]
        self.on_settled()
        for event in final:
            self.log.append(event)
        self.logger.info(
            "run.finished",
            status=status,
            error_type=error.type if error else None,
            total_ms=round(timings.total_ms, 1),
            model_ms=round(timings.model_ms, 1),
            tools_ms=round(timings.tools_ms, 1),
            total_tokens=self.usage.total_tokens,
        )
