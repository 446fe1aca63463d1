"""Wake-ups for followers of runs: PostgreSQL LISTEN/NOTIFY, or plain timeouts.

Private to ``gateway.store``. An owner's commit of a run's events sends
``NOTIFY gateway_run_events, '<run_id>'`` (``pg_notify`` inside the same
transaction, so it is delivered only if the commit is). Each PostgreSQL store
keeps at most one listening connection, open while any follower subscribes:
opened by the first, closed when the last leaves (an idle replica holds none;
it costs at most one connection per run followed), and reopened (with a
pause) when it fails; on every (re)connection all subscribers are woken,
since notices sent while nobody listened are lost.
Once the store closes, new subscribers only poll. A notice is only a hint:
followers always read the store and poll on a timeout as well, so a lost
notice delays, never loses, an event. Imports psycopg and structlog only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import psycopg
import structlog

__all__ = ["CHANNEL", "Listener", "Notices", "polling"]

# One channel for every run of the database; the payload is the run id. (Runs' ids are
# random, so stores of other schemas sharing the database only cost a dictionary lookup.)
CHANNEL = "gateway_run_events"

_logger = structlog.get_logger("gateway.store")


class Notices:
    """A subscriber's wake-up flag (a ``RunEventNotices``)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake the subscriber (now, or at its next ``wait``)."""
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """True once notified since the last ``wait``; False after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True


class _Sleep:
    async def wait(self, timeout: float) -> bool:
        await asyncio.sleep(timeout)
        return False


@contextlib.asynccontextmanager
async def polling() -> AsyncIterator[_Sleep]:
    """Notices of a store that has none: every ``wait`` runs to its timeout."""
    yield _Sleep()


def _stopped(task: asyncio.Task[None]) -> None:
    # Connection failures are retried in ``_listen``; anything else ends it, and is said here,
    # as it happens (stopping the task would drop its error). Followers poll meanwhile; the
    # next subscriber starts it again.
    if not task.cancelled() and (exc := task.exception()) is not None:
        _logger.error("store.listen_crashed", error=type(exc).__name__, message=str(exc))


class Listener:
    """The LISTEN connection of one store, shared by all its subscribers.

    Args:
        url: a libpq URL (with its timeouts and keepalives); a connection of its own
            (autocommit), never a pooled one.
        heartbeat: seconds of silence after which the connection is probed, so a
            connection cut without a word is noticed and replaced.
        retry: pause before reconnecting after a failure.
    """

    def __init__(self, url: str, *, heartbeat: float = 10.0, retry: float = 1.0) -> None:
        self._url = url
        self._heartbeat, self._retry = heartbeat, retry
        self._subscribers: dict[str, set[Notices]] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connected = False

    @contextlib.asynccontextmanager
    async def subscribe(self, run_id: str) -> AsyncIterator[Notices]:
        """Notices for ``run_id`` while the context is open; listens while anyone subscribes
        (after ``aclose``, the notices only time out)."""
        notices = Notices()
        self._subscribers.setdefault(run_id, set()).add(notices)
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._listen(), name="store:listen")
            self._task.add_done_callback(_stopped)
        try:
            yield notices
        finally:
            subscribers = self._subscribers.get(run_id)
            if subscribers is not None:
                subscribers.discard(notices)
                if not subscribers:
                    del self._subscribers[run_id]
            if not self._subscribers:
                await self._stop()  # the last one left: no connection held for nobody

    def _wake(self, run_id: str) -> None:
        for notices in self._subscribers.get(run_id, ()):
            notices.notify()

    def _wake_all(self) -> None:
        for subscribers in self._subscribers.values():
            for notices in subscribers:
                notices.notify()

    async def _listen(self) -> None:
        failing = False  # warn once per streak of failures, not once a second
        while True:
            try:
                # The URL carries the connect timeout and keepalives (``gateway._libpq.conninfo``).
                conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected, failing = True, False
                    self._wake_all()  # whatever was committed while nobody listened
                    while True:
                        async for notice in conn.notifies(timeout=self._heartbeat):
                            self._wake(notice.payload)
                        await conn.execute("SELECT 1")  # a silently cut connection fails here
            except (psycopg.Error, OSError) as exc:
                if not failing:
                    # Followers still poll: events arrive, only later.
                    _logger.warning("store.listen_failed", error=type(exc).__name__)
                    failing = True
            finally:
                self.connected = False
            await asyncio.sleep(self._retry)

    async def _stop(self) -> None:
        """Stop listening and close the connection (a later subscriber opens another)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        """Stop listening and close the connection; later subscribers only poll."""
        self._closed = True
        await self._stop()
