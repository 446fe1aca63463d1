"""``FifoLimiter``: at most N holders at once, the others served strictly in arrival order.

The global cap of ``isolation: inline`` calls (``GATEWAY_INLINE_CONCURRENCY``)
and of sandboxed ones (``GATEWAY_SANDBOX_CONCURRENCY``, in ``Supervisor.call``),
with the queue behind each. ``asyncio.Semaphore`` is not used: a waiter woken by
a release can be overtaken by a newcomer that acquires before it runs, and
its queue length is private. Here a release hands the permit directly to the
oldest waiter (it is counted as held from that moment), so nobody barges in
and ``held`` never exceeds ``limit``.

Cancellation leaks nothing: a waiter cancelled while queued leaves the queue
holding nothing; one cancelled just after a permit was handed to it (before
it could resume) passes that permit on. Single event loop only (no locks).

Imports nothing of the gateway.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

__all__ = ["FifoLimiter"]


class FifoLimiter:
    """A counting limit with a FIFO queue and direct hand-over of permits.

    Args:
        limit: how many holders at once (at least 1).

    Raises:
        ValueError: ``limit`` below 1.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the limit must be at least 1, got {limit}")
        self.limit = limit
        self._held = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def held(self) -> int:
        """Permits held now (calls in flight)."""
        return self._held

    @property
    def waiting(self) -> int:
        """Callers queued for a permit now."""
        return len(self._waiters)

    async def acquire(self) -> None:
        """Take a permit, waiting behind every earlier caller when none is free."""
        if self._held < self.limit and not self._waiters:
            self._held += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a permit as we were cancelled: pass it on
            else:  # a release may have dropped it already (it skips cancelled waiters)
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        # ``release`` handed its permit over: ``_held`` already counts this caller.

    def release(self) -> None:
        """Give a permit back: to the oldest live waiter if any, else to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        if self._held <= 0:
            raise RuntimeError("FifoLimiter released more often than acquired")
        self._held -= 1

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """``async with limiter.hold():`` acquire, and release on the way out (also on error)."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()
