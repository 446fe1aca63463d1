"""Logs of runs this process is not executing: replayed, synthesized, or followed remotely.

A finished run's events are saved in the store; any replica (or this one after
a restart) rebuilds its ``RunLog`` from them. A run still going on another
replica is followed live: its owner stores its events in batches as they come
(``gateway.engine._writer``), and the follower reads each new batch when the
store notifies it (PostgreSQL LISTEN/NOTIFY) or at its next poll, until the
final log is stored, or until the run's lease lapses (its replica died: the
follower fails it, interrupted). A read that fails (the store is down, its
pool timed out) is a missed poll, never the end of the log. A finished run
whose log was never saved (a crash), or whose stored log has no ending (it
ended elsewhere: cancelled from another replica, lease lapsed), gets the
events stored before it ended, then an ending made from its record. A run whose
record vanished (its thread was deleted meanwhile) ends cancelled
(``THREAD_DELETED``), never interrupted: no gateway stopped. Imports
the store interface, ``gateway.events`` and ``runlog``.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import structlog

from gateway.engine.runlog import RunLog
from gateway.events import (
    Done,
    ErrorInfo,
    IncompleteDetails,
    RunCompleted,
    RunCreated,
    RunFailed,
    decode_ws,
)
from gateway.store.base import INTERRUPTED, RunRecord, RunStatus, ThreadStore

__all__ = [
    "ACTIVE",
    "THREAD_DELETED",
    "extend",
    "final_record",
    "follow_remote",
    "mark_finished",
    "synthesize",
]

ACTIVE = ("queued", "in_progress")

# The error of a run whose record vanished: its thread was deleted (here or on another
# replica) while it went on. Cancelled by that delete, not interrupted: no gateway stopped.
THREAD_DELETED = {"type": "cancelled", "message": "the run was cancelled: its thread was deleted"}

_logger = structlog.get_logger("gateway.engine")


def mark_finished(record: RunRecord, *, status: RunStatus, error: dict[str, str]) -> RunRecord:
    """``record`` ended now with ``status`` and ``error``."""
    return msgspec.structs.replace(record, status=status, error=error, completed_at=time.time())


def _interrupted(record: RunRecord) -> RunRecord:
    return mark_finished(record, status="failed", error=dict(INTERRUPTED))


def _deleted(record: RunRecord) -> RunRecord:
    # A run gone from the store ends as its own replica ends it: cancelled by the delete.
    return mark_finished(record, status="cancelled", error=dict(THREAD_DELETED))


async def final_record(store: ThreadStore, record: RunRecord) -> RunRecord:
    """The record of a run whose log is final: ``record`` if it has ended, else as stored
    now; cancelled (``THREAD_DELETED``) if it is gone, failed (interrupted) if, against
    the store's rules, it is still active."""
    if record.status not in ACTIVE:
        return record
    current = await store.get_run(record.id)
    if current is None:
        return _deleted(record)
    if current.status in ACTIVE:
        return _interrupted(record)
    return current


def synthesize(log: RunLog, record: RunRecord) -> None:
    """End ``log`` from ``record`` alone (a finished run whose stored events have no ending)."""
    if not log:
        log.append(
            RunCreated(
                thread_id=record.thread_id,
                run_id=record.id,
                assistant=record.assistant,
                manifest_version=record.manifest_version,
            )
        )
    if record.status in ("completed", "incomplete"):
        incomplete = None
        if record.status == "incomplete":
            reason = (record.incomplete_details or {}).get("reason", "unknown")
            incomplete = IncompleteDetails(reason=reason)
        log.append(
            RunCompleted(run_id=record.id, usage=record.usage, incomplete_details=incomplete)
        )
    else:
        error = record.error or {}
        info = ErrorInfo(
            type=error.get("type", record.status), message=error.get("message", record.status)
        )
        log.append(RunFailed(run_id=record.id, error=info))
    log.append(Done())


def extend(log: RunLog, frames: list[bytes]) -> int:
    """Append the decoded ``frames`` to ``log`` (none past ``Done``); returns how many."""
    added = 0
    for frame in frames:
        if log.done:
            break
        log.append(decode_ws(frame))
        added += 1
    return added


async def _current(store: ThreadStore, record: RunRecord) -> RunRecord | None:
    """The run as stored now; failed (interrupted) if its lease lapsed meanwhile."""
    current = await store.get_run(record.id)
    if current is not None and current.status in ACTIVE:
        expired = await store.expire_leases(current.thread_id)
        current = next((run for run in expired if run.id == record.id), current)
    return current


async def follow_remote(
    store: ThreadStore,
    log: RunLog,
    record: RunRecord,
    *,
    interval: float = 0.5,
    check_every: float = 1.0,
    idle_timeout: float = 900.0,
) -> bool:
    """Stream into ``log`` the events the replica running ``record`` stores, as it stores them.

    ``log`` may already hold the first events (read by the caller); each read
    asks for what lies past its length, so sequence numbers are the owner's.
    Reads when the store's notices say the owner committed events, and every
    ``interval`` seconds anyway (notices are hints: a lost one only delays).
    Every ``check_every`` seconds the run's record is read: a run no longer
    active (cancelled elsewhere, or failed here because its lease lapsed) gets,
    after one more ``interval`` for its owner's final commit, its stored ending
    or one made from its record. A failed read is a missed poll: logged once
    per streak of failures and retried after ``interval``. With no new event
    for ``idle_timeout`` seconds (failed reads included) the log ends with a
    failure saying so. ``log`` always ends with ``Done``. Returns True when
    the log shows the run's stored outcome (False after a timeout: another
    reader may do better later).
    """
    last_event = last_check = time.monotonic()
    ended: RunRecord | None = None  # the run's record, once seen no longer active
    failing = False  # a streak of failed reads is logged once, not once a poll
    try:
        async with store.run_event_notices(record.id) as notices:
            while True:
                try:
                    page = await store.load_run_events_after(record.id, len(log))
                    if extend(log, page.events):
                        last_event = time.monotonic()
                    if log.done:
                        return True
                    if page.finished or ended is not None:
                        # A final log without an ending, or none at all: it ended elsewhere.
                        synthesize(log, ended or await final_record(store, record))
                        return True
                    if time.monotonic() - last_check >= check_every:
                        last_check = time.monotonic()
                        current = await _current(store, record)
                        if current is None or current.status not in ACTIVE:
                            ended = current or _deleted(record)
                            await asyncio.sleep(interval)  # its owner may be storing the log
                            continue
                except Exception as exc:  # the store failed this read: the next poll retries
                    if not failing:
                        _logger.warning(
                            "run.follow_read_failed",
                            run_id=record.id,
                            thread_id=record.thread_id,
                            error=type(exc).__name__,
                        )
                    failing = True
                else:
                    failing = False
                if time.monotonic() - last_event >= idle_timeout:
                    error = {
                        "type": "timeout",
                        "message": "the run did not finish in time to be followed",
                    }
                    synthesize(log, mark_finished(record, status="failed", error=error))
                    return False
                if failing:
                    await asyncio.sleep(interval)  # notices do not hurry a retry: back off
                else:
                    await notices.wait(interval)
    finally:
        if not log.done:
            log.append(Done())
