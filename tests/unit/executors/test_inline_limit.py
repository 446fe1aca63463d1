"""``FifoLimiter``: the cap and queue of inline calls, including its cancellation races."""

from __future__ import annotations

import asyncio

import pytest

from gateway.executors._limit import FifoLimiter
from gateway.executors.inline import DEFAULT_CONCURRENCY
from gateway.settings import Settings


async def _queued(limiter: FifoLimiter, n: int) -> list[asyncio.Task[None]]:
    """Start ``n`` acquirers, one after the other, and wait until all of them are queued."""
    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(limiter.acquire()))
        await asyncio.sleep(0)
    assert limiter.waiting == n
    return tasks


async def test_release_hands_the_permit_to_the_oldest_waiter_and_nobody_barges_in() -> None:
    """A freed permit goes to the oldest waiter, even when a newcomer asks before it runs."""
    limiter = FifoLimiter(1)
    await limiter.acquire()
    first, second = await _queued(limiter, 2)
    limiter.release()
    newcomer = asyncio.create_task(limiter.acquire())  # asks before ``first`` resumes
    await first
    assert not second.done() and not newcomer.done()
    assert (limiter.held, limiter.waiting) == (1, 2)
    limiter.release()
    await second
    assert not newcomer.done()
    limiter.release()
    await newcomer
    limiter.release()
    assert (limiter.held, limiter.waiting) == (0, 0)


async def test_a_waiter_cancelled_in_the_queue_takes_nothing_with_it() -> None:
    """A cancelled waiter leaves the queue; the permits held are unchanged."""
    limiter = FifoLimiter(2)
    await limiter.acquire()
    await limiter.acquire()
    [waiter] = await _queued(limiter, 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (limiter.held, limiter.waiting) == (2, 0)
    limiter.release()
    limiter.release()
    assert limiter.held == 0
    with pytest.raises(RuntimeError):
        limiter.release()


async def test_a_waiter_cancelled_after_the_hand_over_passes_the_permit_on() -> None:
    """A waiter cancelled after it was handed a permit, before it resumed, gives it to the next."""
    limiter = FifoLimiter(1)
    await limiter.acquire()
    handed, next_ = await _queued(limiter, 2)
    limiter.release()  # ``handed`` now holds the permit but has not run yet
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    async with asyncio.timeout(10):  # a leaked permit would leave ``next_`` waiting forever
        await next_
    assert (limiter.held, limiter.waiting) == (1, 0)
    limiter.release()
    assert limiter.held == 0


async def test_a_release_skipping_a_cancelled_waiter_leaves_its_cleanup_harmless() -> None:
    """A release that runs between a waiter's cancellation and its cleanup skips it safely."""
    limiter = FifoLimiter(1)
    await limiter.acquire()
    cancelled, next_ = await _queued(limiter, 2)
    cancelled.cancel()  # its future is cancelled now; its cleanup runs when it resumes
    limiter.release()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await next_
    assert (limiter.held, limiter.waiting) == (1, 0)


async def test_a_timeout_while_queued_leaves_nothing_behind() -> None:
    """``asyncio.timeout`` around a queued acquire removes the waiter and holds nothing."""
    limiter = FifoLimiter(1)
    await limiter.acquire()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await limiter.acquire()
    assert (limiter.held, limiter.waiting) == (1, 0)


def test_the_limit_must_be_positive_and_the_defaults_agree() -> None:
    """A limit below 1 is refused; the setting's default is the executor's default."""
    with pytest.raises(ValueError, match="at least 1"):
        FifoLimiter(0)
    assert Settings().inline_concurrency == DEFAULT_CONCURRENCY
