"""Logs of runs this process is not executing: replayed, synthesized, or followed remotely.

A finished run's events are saved in the store; any replica (or this one after
a restart) rebuilds its ``RunLog`` from them. A run still going on another
replica is followed by polling the store until its owner saves the log, or
until its lease lapses (its replica died: the follower fails it, interrupted).
A finished run whose log was never saved (a crash) gets a minimal log from its
record. Imports the store interface, ``gateway.events`` and ``runlog``.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from gateway.engine.runlog import RunLog
from gateway.events import Done, ErrorInfo, RunCompleted, RunCreated, RunFailed
from gateway.store.base import RunRecord, RunStatus, ThreadStore

__all__ = ["ACTIVE", "follow_remote", "mark_finished", "synthesize"]

ACTIVE = ("queued", "in_progress")


def mark_finished(record: RunRecord, *, status: RunStatus, error: dict[str, str]) -> RunRecord:
    """``record`` ended now with ``status`` and ``error``."""
    return msgspec.structs.replace(record, status=status, error=error, completed_at=time.time())


def synthesize(log: RunLog, record: RunRecord) -> None:
    """End ``log`` from ``record`` alone (for a finished run whose events were never saved)."""
    if not log:
        log.append(
            RunCreated(
                thread_id=record.thread_id,
                run_id=record.id,
                assistant=record.assistant,
                manifest_version=record.manifest_version,
            )
        )
    if record.status == "completed":
        log.append(RunCompleted(run_id=record.id, usage=record.usage))
    else:
        error = record.error or {}
        info = ErrorInfo(
            type=error.get("type", record.status), message=error.get("message", record.status)
        )
        log.append(RunFailed(run_id=record.id, error=info))
    log.append(Done())


def _copy_into(log: RunLog, record: RunRecord, frames: list[bytes]) -> None:
    for event in RunLog.replay(record.id, record.thread_id, frames).events:
        log.append(event)


async def follow_remote(
    store: ThreadStore,
    log: RunLog,
    record: RunRecord,
    *,
    interval: float = 0.5,
    max_wait: float = 900.0,
) -> None:
    """Fill ``log`` once the replica running ``record`` saves its events.

    Polls every ``interval`` seconds; gives up after ``max_wait`` (the log then
    ends with a failure saying so). ``log`` always ends with ``Done``.
    """
    deadline = time.monotonic() + max_wait
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(interval)
            frames = await store.load_run_events(record.id)
            if frames is not None:
                _copy_into(log, record, frames)
                return
            current = await store.get_run(record.id)
            if current is not None and current.status in ACTIVE:
                expired = await store.expire_leases(current.thread_id)
                current = next((run for run in expired if run.id == record.id), current)
            if current is None or current.status not in ACTIVE:
                await asyncio.sleep(interval)  # its owner may still be saving the log
                frames = await store.load_run_events(record.id)
                if frames is not None:
                    _copy_into(log, record, frames)
                else:
                    synthesize(log, current or record)
                return
        error = {"type": "timeout", "message": "the run did not finish in time to be followed"}
        synthesize(log, mark_finished(record, status="failed", error=error))
    finally:
        if not log.done:
            log.append(Done())
