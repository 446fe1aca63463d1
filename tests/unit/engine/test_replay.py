"""Following a run another replica executes, from the batches it stores (a real SQLite store)."""

from __future__ import annotations

import asyncio
from asyncio import Task
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from structlog.testing import capture_logs

from gateway.engine.replay import THREAD_DELETED, follow_remote
from gateway.engine.runlog import RunLog
from gateway.errors import NotReady
from gateway.events import (
    Done,
    ErrorInfo,
    MessageCompleted,
    MessageDelta,
    RunCompleted,
    RunCreated,
    RunFailed,
)
from gateway.providers.base import Usage
from gateway.store.base import RunRecord
from gateway.store.sqlite import SQLiteStore
from tests.unit.engine._fakes import active_run


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """An opened SQLite store (the owner's and the follower's: batches work the same)."""
    opened = SQLiteStore(tmp_path / "gateway.db")
    await opened.open()
    yield opened
    await opened.close()


class Flaky:
    """The store as a follower sees it, with some reads failing as a pool timeout does.

    Reads (``load_run_events_after``, ``get_run``, ``expire_leases``) are counted
    together; the ones numbered in ``failing`` raise ``NotReady``.
    """

    _READS = frozenset({"load_run_events_after", "get_run", "expire_leases"})

    def __init__(self, store: SQLiteStore, failing: set[int]) -> None:
        self._store, self._failing = store, failing
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if name not in self._READS:
            return attr

        async def read(*args: Any) -> Any:
            self.reads += 1
            if self.reads in self._failing:
                raise NotReady("the thread store does not answer (PoolTimeout)")
            return await attr(*args)

        return read


async def _started(store: SQLiteStore) -> RunRecord:
    thread = await store.create_thread("support")
    run = active_run(thread.id)
    await store.create_run(run)
    return run


def _owner_log(run: RunRecord) -> RunLog:
    """The whole log of ``run`` as its owner ends it."""
    log = RunLog(run.id, run.thread_id)
    log.append(
        RunCreated(
            thread_id=run.thread_id, run_id=run.id, assistant="support", manifest_version="v1"
        )
    )
    for n in range(6):
        log.append(MessageDelta(run_id=run.id, message_id="msg_1", delta=f"w{n} "))
    log.append(MessageCompleted(run_id=run.id, message_id="msg_1", content="w0 w1 w2 w3 w4 w5 "))
    log.append(RunCompleted(run_id=run.id, usage=Usage()))
    log.append(Done())
    return log


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.005)


async def test_failed_reads_are_missed_polls_and_the_log_still_ends_as_the_owners(
    store: SQLiteStore,
) -> None:
    """Reads failing in two streaks (pages and record checks alike) delay the follower, never
    end its log: it ends as the owner's, and each streak is one compact warning."""
    run = await _started(store)
    owner = _owner_log(run)
    frames = owner.encoded()
    await store.append_run_events(run.id, 1, frames[:4])
    # With a check every poll, a good poll reads 3 times (page, run, lease): read 2 is the
    # run's record, 3 and 4 pages (one streak); 8 and 9 pages again after a good poll.
    flaky = Flaky(store, failing={2, 3, 4, 8, 9})
    log = RunLog(run.id, run.thread_id)
    with capture_logs() as logs:
        follower = asyncio.create_task(
            follow_remote(flaky, log, run, interval=0.01, check_every=0)  # type: ignore[arg-type]
        )
        await _until(lambda: flaky.reads >= 12 or follower.done())
        assert not follower.done(), "a failed read ended the follower"
        await store.append_run_events(run.id, 5, frames[4:7])
        await _until(lambda: len(log) == 7)
        done = msgspec.structs.replace(run, status="completed", completed_at=2.0)
        assert await store.finish_run(done, frames) is True
        assert await asyncio.wait_for(follower, 5) is True
    assert log.events == owner.events
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warnings == 2 * [
        {
            "event": "run.follow_read_failed",
            "log_level": "warning",
            "run_id": run.id,
            "thread_id": run.thread_id,
            "error": "NotReady",
        }
    ]


async def _followed(store: SQLiteStore, check_every: float) -> tuple[RunRecord, RunLog, Task[bool]]:
    """A run whose first three events are stored, and a follower that has read them."""
    run = await _started(store)
    await store.append_run_events(run.id, 1, _owner_log(run).encoded()[:3])
    log = RunLog(run.id, run.thread_id)
    follower = asyncio.create_task(
        follow_remote(store, log, run, interval=0.01, check_every=check_every)
    )
    await _until(lambda: len(log) == 3)
    return run, log, follower


async def test_a_followed_run_whose_thread_is_deleted_ends_cancelled(
    store: SQLiteStore,
) -> None:
    """A run gone from the store while followed ends cancelled, its thread deleted (as its
    own replica ends it), never with its last active status as the error, nor as
    ``interrupted`` ("the gateway stopped during the run") though no gateway stopped."""
    run, log, follower = await _followed(store, check_every=0.01)
    assert await store.delete_thread(run.thread_id) is True
    assert await asyncio.wait_for(follower, 5) is True
    assert log.events[:3] == _owner_log(run).events[:3]
    deleted = ErrorInfo(**THREAD_DELETED)
    assert log.events[3:] == [RunFailed(run_id=run.id, error=deleted), Done()]


async def test_a_run_cancelled_elsewhere_ends_from_its_kept_batches_and_record(
    store: SQLiteStore,
) -> None:
    """A cancel from another replica keeps the run's batches as its final log; a follower
    reads them as final and ends the log with the cancel from the record."""
    run, log, follower = await _followed(store, check_every=60)  # only the final log ends it
    error = {"type": "cancelled", "message": "the run was cancelled"}
    cancelled = msgspec.structs.replace(run, status="cancelled", completed_at=2.0, error=error)
    assert await store.update_run(cancelled) is True
    assert await asyncio.wait_for(follower, 5) is True
    assert log.events[:3] == _owner_log(run).events[:3]
    assert log.events[3:] == [RunFailed(run_id=run.id, error=ErrorInfo(**error)), Done()]
