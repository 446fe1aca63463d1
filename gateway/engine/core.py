"""The engine: starts runs as tasks of the server, finds their logs, cancels them.

A run belongs to the ``Engine``, not to the request that started it: the
request gets a ``RunHandle`` and reads the run's log; a disconnect does not
stop the run. One run at a time per thread is enforced by the store (so it
holds across replicas). One background task renews the leases of every run
this process executes, in one statement every third of the store's lease; a
replica that dies stops renewing, and its threads are free once the lease
lapses (see ``gateway.store.base``). Finished logs stay in memory for a while (an
LRU bounded by count and by bytes, ``KEEP_FINISHED_BYTES``) and are stored for replay
after a restart or from another replica (or once the LRU dropped them). With a
shared store, a running run's events are also stored in batches every
``GATEWAY_EVENT_FLUSH_MS``, so another replica follows it live (``replay``);
one follower per remote run serves every client of this replica.
Imports the provider, executor and store interfaces, ``gateway.manifests``
types, ``gateway.events``, ``gateway.errors`` and ``gateway.settings``; never
``gateway.api``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import structlog

from gateway.engine.replay import (
    ACTIVE,
    THREAD_DELETED,
    extend,
    final_record,
    follow_remote,
    mark_finished,
    synthesize,
)
from gateway.engine.run import RunTask
from gateway.engine.runlog import RunHandle, RunLog
from gateway.engine.spec import HistoryBudget, ProviderLookup, RunSpec, new_id
from gateway.errors import Conflict, InvalidInput, NotFound, NotReady
from gateway.events import Done, ErrorInfo, RunCreated, RunFailed
from gateway.executors.base import ActionRunner
from gateway.manifests.catalog import Catalog, CatalogRef
from gateway.manifests.model import Assistant
from gateway.providers.base import ChatMessage
from gateway.settings import Settings
from gateway.store.base import INTERRUPTED, RunRecord, ThreadRecord, ThreadStore

__all__ = ["KEEP_FINISHED_BYTES", "Engine", "ProviderLookup", "RunHandle"]

KEEP_FINISHED_BYTES = 64 << 20
"""How much memory the finished run logs kept for replay may hold in all (64 MiB).

Each streamed delta costs about 150 bytes in memory: 1000 runs of an ordinary
length are a few MB, but one runaway answer of 500,000 one-character chunks
held 70 MB for as long as it stayed among the last 1000 runs."""

_logger = structlog.get_logger("gateway.engine")

# Leases are renewed this many times per lease: a live run survives a missed renewal or two.
_RENEWALS_PER_LEASE = 3


def _cancel_once(task: asyncio.Task[None]) -> None:
    """Cancel a run's task unless a cancel is already under way.

    A second cancel would interrupt the run settling the first (storing its outcome).
    """
    if not task.cancelling():
        task.cancel()


async def _until_done(log: RunLog) -> None:
    """Return once ``log`` is done (its run ended and said so)."""
    while not log.done:
        await log.wait(len(log))


class Engine:
    """Owns every run of this process.

    Args:
        catalog: the live catalog; each run reads ``current`` once and keeps it.
        store: the thread store (opened by ``start`` if it is not yet).
        runner: runs tool calls (the sandbox runner in production).
        providers: maps an assistant to its model provider; each run holds its
            provider (``acquire``) until its task is done (``release``).
        settings: for the default assistant and ``event_flush_ms``.
        history: budget of the history sent to the model (default: the settings'
            ``history_max_messages`` / ``history_max_kb``); an assistant's
            ``history`` overrides it for its runs.
        keep_finished: how many finished run logs stay in memory.
        keep_finished_bytes: how many bytes (``RunLog.nbytes``, an estimate) they
            may hold in all: the oldest go first, and a log larger than this alone
            is not kept. A log that is no longer kept is read from the store
            again (the same events and sequence numbers) when a client asks.
    """

    def __init__(
        self,
        *,
        catalog: CatalogRef,
        store: ThreadStore,
        runner: ActionRunner,
        providers: ProviderLookup,
        settings: Settings,
        history: HistoryBudget | None = None,
        keep_finished: int = 1000,
        keep_finished_bytes: int = KEEP_FINISHED_BYTES,
    ) -> None:
        self._catalog, self._store, self._runner = catalog, store, runner
        self._providers, self._settings = providers, settings
        self._budget = history or HistoryBudget(
            max_messages=settings.history_max_messages, max_chars=settings.history_max_kb * 1000
        )
        self._keep_finished = keep_finished
        self._keep_finished_bytes = keep_finished_bytes
        self._live: dict[str, RunHandle] = {}  # run id -> handle, while running
        self._bodies: dict[str, RunTask] = {}  # run id -> its loop, while running
        self._lease_task: asyncio.Task[None] | None = None
        self._busy: dict[str, str] = {}  # thread id -> run id, while running here
        # thread id -> deletes of it in progress here: no run starts on it meanwhile.
        self._deleting: dict[str, int] = {}
        self._finished: OrderedDict[str, RunLog] = OrderedDict()
        self._following: dict[str, RunLog] = {}  # run id -> log, while followed from here
        self._background: set[asyncio.Task[None]] = set()
        self._draining = False  # set by ``drain``: no new run starts
        # Only another replica reads the batches: an embedded store keeps just the final log.
        flush_ms = settings.event_flush_ms if store.shared else 0
        self._flush_interval = max(flush_ms, 0) / 1000

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and start renewing leases; with an embedded store, fail the
        runs a crash left in progress (a shared store frees them when their lease lapses)."""
        await self._store.open()
        if not self._store.shared:
            for run in await self._store.list_active_runs():
                interrupted = mark_finished(run, status="failed", error=dict(INTERRUPTED))
                await self._store.update_run(interrupted)
                _logger.warning("run.interrupted", run_id=run.id, thread_id=run.thread_id)
        if self._lease_task is None:
            self._lease_task = asyncio.create_task(self._renew_leases(), name="leases")

    @property
    def draining(self) -> bool:
        """True once ``drain`` began: new runs are refused (``NotReady``, 503)."""
        return self._draining

    async def drain(self, timeout: float, *, forced: Callable[[], bool] = lambda: False) -> None:
        """Refuse new runs, let the running ones finish for up to ``timeout`` seconds,
        then cancel the rest and wait until each has stored its outcome.

        The graceful half of a shutdown (``gateway serve`` calls it on SIGTERM/SIGINT,
        before it closes connections): a run that ends here ends its log as usual
        (``thread.run.completed`` or ``thread.run.failed`` ``cancelled``, then
        ``done``), so its SSE and WebSocket clients see a clean end, never a reset.
        ``forced()`` true (a second Ctrl-C) stops the wait at once.
        """
        self._draining = True
        deadline = asyncio.get_running_loop().time() + timeout
        while (runs := [handle.task for handle in self._live.values()]) and not forced():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await asyncio.wait(runs, timeout=min(left, 0.1))
        handles = list(self._live.values())
        runs = [handle.task for handle in handles]
        if runs:
            _logger.warning("run.drain_cancelled", runs=len(runs), drain_seconds=timeout)
        for handle in handles:
            handle.drained = True
            handle.task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel every run still going and wait until each has stored its outcome."""
        runs = [handle.task for handle in self._live.values()]
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        # Renewal stops once every run stored its outcome (cancelled), not before.
        if self._lease_task is not None:
            self._lease_task.cancel()
            await asyncio.gather(self._lease_task, return_exceptions=True)
            self._lease_task = None
        # Followers of remote runs are cancelled; pending writes (``settle:``) finish.
        background = list(self._background)
        for task in background:
            if task.get_name().startswith("follow:"):
                task.cancel()
        await asyncio.gather(*background, return_exceptions=True)

    async def _renew_leases(self) -> None:
        """Forever: renew the leases of this process's stored runs, all in one statement.

        A run the store did not renew has lost its lease to another replica
        (this one was cut off from the database for a whole lease), or was
        cancelled elsewhere: it is stopped without writing anything more (see
        ``RunTask.superseded``; the store would refuse its writes anyway).
        """
        interval = self._store.lease_seconds / _RENEWALS_PER_LEASE
        while True:
            await asyncio.sleep(interval)
            held = [run_id for run_id, body in self._bodies.items() if body.stored]
            if not held:
                continue
            try:
                renewed = await self._store.renew_leases(held)
            except Exception:  # the store is down: the next tick retries, the lease has room
                _logger.warning("run.lease_renewal_failed", runs=len(held), exc_info=True)
                continue
            for run_id in held:
                body = self._bodies.get(run_id)
                # Gone or finishing: it ended meanwhile (its record is final), not lost.
                if run_id in renewed or body is None or body.finishing:
                    continue
                _logger.warning("run.lease_lost", run_id=run_id, thread_id=body.spec.thread_id)
                body.superseded = True
                if (handle := self._live.get(run_id)) is not None:
                    handle.task.cancel()

    # -- threads and runs ---------------------------------------------------------

    def _refuse_when_draining(self) -> None:
        if self._draining:
            raise NotReady("the gateway is shutting down; retry on another replica or later")

    def _current(self) -> Catalog:
        catalog = self._catalog.current
        if catalog is None:
            raise NotReady("no valid manifest set is loaded")
        return catalog

    def _assistant(self, catalog: Catalog, name: str | None) -> Assistant:
        name = name or self._settings.default_assistant
        if name is None:
            if len(catalog.assistants) == 1:
                return next(iter(catalog.assistants.values()))
            raise InvalidInput(
                "name an assistant: several are deployed and no default is set "
                "(GATEWAY_DEFAULT_ASSISTANT)",
                field="assistant",
            )
        assistant = catalog.assistants.get(name)
        if assistant is None:
            raise NotFound("assistant", name)
        return assistant

    async def create_thread(self, assistant: str | None) -> tuple[ThreadRecord, Assistant]:
        """Create a thread for ``assistant`` (None: the default or the only one).

        Raises:
            InvalidInput: no assistant named and no default can be chosen.
            NotFound: the assistant does not exist.
        """
        found = self._assistant(self._current(), assistant)
        return await self._store.create_thread(found.name), found

    async def start_run(
        self,
        *,
        thread_id: str | None,
        message: str,
        assistant: str | None = None,
        correlation_id: str = "",
    ) -> RunHandle:
        """Store ``message`` on the thread and start a run answering it.

        ``thread_id`` None or ``"new"`` creates a thread. ``assistant`` overrides
        the thread's assistant for this run. The user message is durable when
        this returns.

        Raises:
            InvalidInput: empty message, or no assistant can be chosen.
            NotFound: unknown thread or assistant, or a thread being deleted.
            Conflict: a run is already active on the thread.
        """
        if not message.strip():
            raise InvalidInput("message must not be empty", field="message")
        self._refuse_when_draining()
        catalog = self._current()
        new_thread: ThreadRecord | None = None
        if thread_id in (None, "new"):
            found = self._assistant(catalog, assistant)
            # Stored with the run and its message, in one commit (see ``_begin``).
            thread = new_thread = ThreadRecord(
                id=new_id("thread"), assistant=found.name, created_at=time.time()
            )
        else:
            existing = await self._store.get_thread(thread_id)
            if existing is None:
                raise NotFound("thread", thread_id)
            thread = existing
            found = self._assistant(catalog, assistant or thread.assistant)
        if thread.id in self._deleting:  # found just before its delete began: it is going
            raise NotFound("thread", thread.id)
        if thread.id in self._busy:
            raise Conflict(f"thread {thread.id!r} already has an active run")
        # Held by the run until its task is done (released in ``_launch``'s callback).
        provider = self._providers.acquire(catalog, found)
        record = RunRecord(
            id=new_id("run"),
            thread_id=thread.id,
            assistant=found.name,
            status="in_progress",
            manifest_version=catalog.version,
            created_at=time.time(),
        )
        user = ChatMessage(role="user", content=message)
        spec = RunSpec(
            run_id=record.id,
            thread_id=thread.id,
            catalog=catalog,
            assistant=found,
            provider=provider,
            record=record,
            correlation_id=correlation_id,
            # A new thread's history is this message: the run need not read it back.
            history=[user] if new_thread is not None else [],
            history_loaded=new_thread is not None,
        )
        self._busy[thread.id] = record.id  # before any await: closes the local race
        # Shielded: a caller cancelled mid-write must not leave a stored run without its task.
        return await asyncio.shield(self._begin(spec, record, user, new_thread))

    async def _begin(
        self, spec: RunSpec, record: RunRecord, user: ChatMessage, thread: ThreadRecord | None
    ) -> RunHandle:
        # The (new) thread, the run and its user message are stored together, or not at
        # all. The run starts meanwhile, so its model call overlaps the commit; it shows
        # nothing and stores nothing until the commit is done (``RunTask`` waits on it),
        # and this returns, acknowledging the message, only once the commit is durable.
        if thread is None:
            begun = asyncio.ensure_future(self._store.begin_run(record, user))
        else:
            begun = asyncio.ensure_future(self._store.begin_run(record, user, thread=thread))
        handle = self._launch(spec, begun)
        try:
            await begun
        except BaseException:
            if self._busy.get(record.thread_id) == record.id:
                del self._busy[record.thread_id]
            raise  # the run task sees the failure at its gate and ends without a trace
        return handle

    async def start_stateless_run(
        self,
        *,
        assistant: str,
        messages: list[ChatMessage],
        correlation_id: str = "",
        offer_tools: bool = True,
    ) -> RunHandle:
        """Run ``assistant`` over a client-supplied history; nothing is stored.

        For the OpenAI-compatible endpoint. The handle's ``thread_id`` is ``""``.
        With ``offer_tools=False`` (``tool_choice: "none"``) the model is offered
        none of the assistant's tools, and a call it makes anyway does not run.

        Raises:
            InvalidInput: ``messages`` is empty.
            NotFound: unknown assistant.
        """
        if not messages:
            raise InvalidInput("messages must not be empty", field="messages")
        self._refuse_when_draining()
        catalog = self._current()
        found = self._assistant(catalog, assistant)
        spec = RunSpec(
            run_id=new_id("run"),
            thread_id="",
            catalog=catalog,
            assistant=found,
            provider=self._providers.acquire(catalog, found),
            record=None,
            correlation_id=correlation_id,
            history=list(messages),
            offer_tools=offer_tools,
        )
        return self._launch(spec)

    def _launch(self, spec: RunSpec, begun: asyncio.Future[Any] | None = None) -> RunHandle:
        log = RunLog(spec.run_id, spec.thread_id)
        log.append(
            RunCreated(
                thread_id=spec.thread_id,
                run_id=spec.run_id,
                assistant=spec.assistant.name,
                manifest_version=spec.catalog.version,
            )
        )

        def settled() -> None:
            self._live.pop(spec.run_id, None)
            self._bodies.pop(spec.run_id, None)
            if spec.thread_id and self._busy.get(spec.thread_id) == spec.run_id:
                del self._busy[spec.thread_id]
            self._remember(log)

        body = RunTask(
            spec,
            log,
            store=self._store if spec.record else None,
            runner=self._runner,
            budget=self._budget.for_assistant(spec.assistant),
            on_settled=settled,
            begun=begun,
            flush_interval=self._flush_interval,
            max_parallel_calls=self._settings.sandbox_concurrency,
        )
        task = asyncio.create_task(body(), name=f"run:{spec.run_id}")

        def ended(task: asyncio.Task[None]) -> None:
            # The model stream is closed (the body ran to its end or never started):
            # a provider a reload replaced meanwhile may be closed now.
            self._providers.release(spec.provider)
            # Cancelled before its first step, the body never ran: end the log here.
            # (Once entered, the body ends the log itself, in a shielded step.)
            if log.done or body.entered:
                return
            settled()
            error = body.cancelled_as
            log.append(RunFailed(run_id=spec.run_id, error=error))
            log.append(Done())
            if spec.record is not None:
                update = mark_finished(
                    spec.record, status="cancelled", error=msgspec.to_builtins(error)
                )
                handle.settling = self._spawn(
                    self._settle_cancelled(update, log.encoded(), begun), f"settle:{spec.run_id}"
                )

        task.add_done_callback(ended)
        handle = RunHandle(
            log=log, assistant=spec.assistant.name, manifest_version=spec.catalog.version, task=task
        )
        self._live[spec.run_id] = handle
        if spec.record is not None:
            self._bodies[spec.run_id] = body
        _logger.info(
            "run.started",
            run_id=spec.run_id,
            thread_id=spec.thread_id,
            correlation_id=spec.correlation_id,
            assistant=spec.assistant.name,
            manifest_version=spec.catalog.version,
            stateless=spec.record is None,
        )
        return handle

    async def _settle_cancelled(
        self, update: RunRecord, events: list[bytes], begun: asyncio.Future[Any] | None
    ) -> None:
        """Store a run cancelled before its first step as cancelled, with its log, once it
        is stored at all (and only while it is still ours: see ``finish_run``)."""
        if begun is not None:
            await asyncio.wait({begun})
            if begun.cancelled() or begun.exception() is not None:
                return  # never stored: nothing to settle
        if not await self._store.finish_run(update, events):
            _logger.warning(
                "run.write_refused", run_id=update.id, thread_id=update.thread_id, write="finish"
            )

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def _remember(self, log: RunLog) -> None:
        """Keep ``log`` in the cache of finished logs, within its count and its bytes.

        The total is summed afresh (at most ``keep_finished`` logs): a running total
        would drift as logs leave the cache elsewhere (a deleted thread).
        """
        if log.nbytes > self._keep_finished_bytes:  # would push every other log out
            self._finished.pop(log.run_id, None)
            return
        self._finished[log.run_id] = log
        self._finished.move_to_end(log.run_id)
        size = sum(kept.nbytes for kept in self._finished.values())
        while self._finished and (
            len(self._finished) > self._keep_finished or size > self._keep_finished_bytes
        ):
            _, dropped = self._finished.popitem(last=False)
            size -= dropped.nbytes

    # -- reading and cancelling ---------------------------------------------------

    async def _record(self, thread_id: str, run_id: str) -> RunRecord:
        record = await self._store.get_run(run_id)
        if record is None or record.thread_id != thread_id:
            raise NotFound("run", run_id)
        return record

    async def _expire(self, record: RunRecord) -> RunRecord:
        """``record`` as failed (interrupted) if its lease lapsed, else unchanged."""
        for expired in await self._store.expire_leases(record.thread_id):
            _logger.warning("run.interrupted", run_id=expired.id, thread_id=expired.thread_id)
            if expired.id == record.id:
                return expired
        return record

    async def get_run(self, thread_id: str, run_id: str) -> RunRecord:
        """The run's stored record; failed (``interrupted``) if its replica died.

        Raises:
            NotFound: no such run on that thread.
        """
        record = await self._record(thread_id, run_id)
        if record.status in ACTIVE and run_id not in self._live:
            record = await self._expire(record)
        return record

    async def get_run_log(self, thread_id: str, run_id: str) -> RunLog:
        """The run's log: live, remembered, followed, or replayed from the store.

        A run going on another replica is followed live from the batches its
        owner stores (one follower per run in this process, shared by every
        reader); one whose lease lapsed ends as failed (``interrupted``) after
        the events it stored. Sequence numbers are the owner's in every case.

        Raises:
            NotFound: no such run on that thread.
        """
        log = self._known_log(run_id)
        if log is None:
            record = await self._record(thread_id, run_id)
            log = self._known_log(run_id) or await self._stored_log(record)
        if log.thread_id != thread_id:
            raise NotFound("run", run_id)
        return log

    def _known_log(self, run_id: str) -> RunLog | None:
        handle = self._live.get(run_id)
        if handle is not None:
            return handle.log
        return self._finished.get(run_id) or self._following.get(run_id)

    async def _stored_log(self, record: RunRecord) -> RunLog:
        run_id, thread_id = record.id, record.thread_id
        page = await self._store.load_run_events_after(run_id, 0)
        if page.finished:
            log = RunLog(run_id, thread_id)
            extend(log, page.events)
            if not log.done:  # it ended elsewhere (cancelled, lease lapsed): no stored ending
                synthesize(log, await final_record(self._store, record))
            self._remember(log)
            return log
        if record.status in ACTIVE:
            record = await self._expire(record)
        if (following := self._following.get(run_id)) is not None:
            return following  # another reader started following meanwhile
        log = RunLog(run_id, thread_id)
        extend(log, page.events)  # what it stored so far (a crashed run's too)
        if record.status not in ACTIVE:
            synthesize(log, record)
            return log
        self._following[run_id] = log
        self._spawn(self._follow(log, record), f"follow:{run_id}")
        return log

    async def _follow(self, log: RunLog, record: RunRecord) -> None:
        # Failed reads are retried inside; what still escapes (the store closed under it,
        # a bug) ends this replica's copy of the log, not the run: later readers follow anew.
        final = False
        try:
            final = await follow_remote(self._store, log, record)
        except Exception:
            _logger.exception("run.follow_failed", run_id=record.id, thread_id=record.thread_id)
        finally:
            self._following.pop(record.id, None)
        if final:
            self._remember(log)

    async def cancel(self, thread_id: str, run_id: str) -> RunRecord:
        """Cancel a run: stop its model call and kill its running actions.

        A run going on another replica is marked cancelled in the store; its
        owner notices at its next step. A run whose replica died (lease lapsed)
        is failed (``interrupted``) instead, and returned as such. Cancelling
        a finished run changes nothing. Returns the run's record afterwards.

        Raises:
            NotFound: no such run on that thread.
        """
        handle = self._live.get(run_id)
        if handle is not None and handle.thread_id == thread_id:
            _cancel_once(handle.task)
            await asyncio.wait({handle.task})
            if handle.settling is not None:  # cancelled before it started: stored separately
                await asyncio.wait({handle.settling})
            return await self._record(thread_id, run_id)
        record = await self._record(thread_id, run_id)
        if record.status in ACTIVE:
            record = await self._expire(record)  # a dead replica's run has already ended
        if record.status not in ACTIVE:
            return record
        error = {"type": "cancelled", "message": "the run was cancelled"}
        cancelled = mark_finished(record, status="cancelled", error=error)
        if not await self._store.update_run(cancelled):
            return await self._record(thread_id, run_id)  # it ended meanwhile: as it ended
        _logger.info("run.cancelled_remote", run_id=run_id, thread_id=thread_id)
        return cancelled

    async def delete_thread(self, thread_id: str) -> bool:
        """Cancel the thread's run here if any, then delete the thread; False if unknown.

        From the call on (before its first await), no run starts on the thread here:
        ``start_run`` answers ``NotFound``, as the thread is going. The run going on it
        is cancelled (``the run was cancelled: its thread was deleted``) and its outcome
        stored before the delete; a run on another replica finds its record gone at its
        next write or step and ends cancelled the same way.
        """
        self._deleting[thread_id] = self._deleting.get(thread_id, 0) + 1
        try:
            await self._cancel_for_delete(thread_id)
            deleted = await self._store.delete_thread(thread_id)
            await self._cancel_for_delete(thread_id)  # none can start meanwhile: a safeguard
            for run_id in [r for r, log in self._finished.items() if log.thread_id == thread_id]:
                del self._finished[run_id]
            return deleted
        finally:
            if (left := self._deleting.pop(thread_id) - 1) > 0:
                self._deleting[thread_id] = left

    async def _cancel_for_delete(self, thread_id: str) -> None:
        """Cancel the run going on ``thread_id`` here, if any, and wait until it is stored."""
        run_id = self._busy.get(thread_id)
        if run_id is None or (handle := self._live.get(run_id)) is None:
            return
        if (body := self._bodies.get(run_id)) is not None:
            body.cancelled_as = ErrorInfo(**THREAD_DELETED)
        _cancel_once(handle.task)
        await asyncio.wait({handle.task})
        if handle.settling is not None:  # cancelled before it started: stored separately
            await asyncio.wait({handle.settling})
        # A run cancelled while it stored its outcome (shielded) ends after its task: the
        # delete waits for that write too, or it would refuse an answer already given;
        # for a lease at most, so a run that cannot end never holds a delete forever.
        try:
            await asyncio.wait_for(_until_done(handle.log), self._settings.run_lease)
        except TimeoutError:
            _logger.warning("thread.delete_wait_expired", thread_id=thread_id, run_id=run_id)

    @property
    def active_runs(self) -> int:
        """How many runs this process is executing (for metrics)."""
        return len(self._live)
