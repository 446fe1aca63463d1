"""Stores a running run's events in small batches, so other replicas can follow it live.

Private to ``gateway.engine``. ``EventWriter`` runs beside a run whose store is
shared: it waits until the run is stored, then, whenever the log grows, waits
``interval`` more (so a burst of token deltas becomes one write) and appends
everything new as one batch (``ThreadStore.append_run_events``, numbered with
the log's own sequence numbers). It never slows the run: the run only appends
to its in-memory log, and a slow store just makes the next batch bigger. One
write is in flight at a time; a failed write is retried, the same batch
(numbers and frames), so a write whose commit was in doubt cannot leave a gap.
The run closes the writer before its final commit (``finish_run`` stores the
whole log and drops the batches), so no batch lands after it. A writer that
fails otherwise is logged as it stops; the final commit still stores the
whole log. Imports the store interface and ``runlog``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.engine.runlog import RunLog
from gateway.store.base import ThreadStore

__all__ = ["EventWriter"]

# Retries of a failed batch back off up to this many seconds (the store is down or slow).
_MAX_BACKOFF = 5.0


class EventWriter:
    """Appends ``log``'s new events to ``store`` every ``interval`` seconds while they come.

    Args:
        log: the run's log.
        store: a shared store (other replicas read the batches).
        interval: how long new events wait to be batched with the ones after them.
        begun: the commit of the run's record, if still in flight: nothing is
            written before it, and nothing at all if it fails.
        logger: the run's bound logger.
    """

    def __init__(
        self,
        log: RunLog,
        store: ThreadStore,
        *,
        interval: float,
        begun: asyncio.Future[Any] | None,
        logger: Any,
    ) -> None:
        self._log, self._store, self._interval = log, store, interval
        self._begun, self._logger = begun, logger
        self.written = 0  # events stored so far (their sequence numbers are 1..written)
        self._write: asyncio.Future[bool] | None = None
        self._task = asyncio.create_task(self._run(), name=f"events:{log.run_id}")
        self._task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        # Store failures are retried in the loop; anything else ends the writer, and is said
        # here, as it happens (``close`` waits for the task and would drop its error).
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._logger.error(
                "run.events_writer_failed", error=type(exc).__name__, message=str(exc)
            )

    async def _run(self) -> None:
        begun = self._begun
        if begun is not None:
            await asyncio.wait({begun})
            if begun.cancelled() or begun.exception() is not None:
                return  # never stored: nobody can follow it
        batch: list[bytes] | None = None
        failures = 0
        while True:
            if batch is None:
                await self._log.wait(self.written)
                await asyncio.sleep(self._interval)  # whatever comes meanwhile joins the batch
                if self._log.done:
                    return  # the final commit holds everything
                batch = self._log.encoded(self.written)
            self._write = asyncio.ensure_future(
                self._store.append_run_events(self._log.run_id, self.written + 1, batch)
            )
            try:
                # Shielded: ``close`` waits for a write in flight instead of abandoning it.
                kept = await asyncio.shield(self._write)
            except Exception as exc:  # the store failed: retry the very same batch
                self._write = None
                failures += 1
                if failures == 1:
                    self._logger.warning("run.events_persist_failed", error=type(exc).__name__)
                await asyncio.sleep(min(self._interval * 2**failures, _MAX_BACKOFF))
                continue
            self._write = None
            if not kept:
                return  # cancelled or taken over elsewhere: the run stops soon
            self.written += len(batch)
            batch, failures = None, 0

    async def close(self) -> None:
        """Stop writing; returns once no write is in flight (what is left is for the final
        commit)."""
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self._write is not None:
            await asyncio.wait({self._write})
