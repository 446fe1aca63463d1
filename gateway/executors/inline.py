"""``isolation: inline``: ``http`` and ``sql`` calls run in the server process, pooled.

The default, ``isolation: sandbox``, runs every call in a forked, confined
child (``gateway.sandbox``). An action may opt into ``inline`` when its kind
allows it (``ActionConfig.inline``: ``http`` and ``sql``), trading isolation
for speed: no fork, one shared keep-alive HTTP client, pooled database
connections. What an inline call gives up: rlimits (memory, CPU, files,
processes), a separate uid, Landlock, seccomp and the network namespace; a bug
in a template or a driver shares the server's memory. What still holds: the
templates are a sandboxed Jinja environment that sees only the call's
arguments and its declared secrets (never the server's environment), the
URL's scheme and host are fixed, SQL values are bound parameters, read-only
is enforced by the database.

``InlineExecutor.call`` gives an inline call the same contract as
``Supervisor.call``: the action's ``timeout`` (the call is cancelled, its
statement interrupted; its templates stop at the same deadline, ``_templates``,
and those with loops or calls render in a worker thread; any ``timeout`` is
``timed_out``),
``max_output_kb`` with the same truncation mark, the
same error types, declared secrets (and ``${VAR}`` values, ``CallContext.masked``)
masked in what goes back (``redact`` and
``from_result`` of ``gateway.sandbox.results``, shared with the sandbox). Log
lines written during an inline call carry ``isolation=inline``.

Concurrency: at most ``concurrency`` inline calls (``http`` and ``sql``
together, ``GATEWAY_INLINE_CONCURRENCY``) run at once per server; the others
wait in one FIFO queue (``_limit.FifoLimiter``). The action's ``timeout``
starts when the call arrives, so time spent queued counts: a call still
queued at its deadline fails with ``timeout`` and never runs. A cancelled
call leaves the queue (or gives back its slot) at once.

Imports ``gateway.executors``, ``gateway.manifests.model`` and
``gateway.sandbox.results`` / ``protocol`` / ``_mask`` / ``worker`` (the shared result
shapes, masking and limits).
"""

from __future__ import annotations

import asyncio
import time
import traceback
from typing import Any, Protocol, runtime_checkable

import msgspec
import structlog

from gateway.executors import _templates
from gateway.executors._common import ToolError
from gateway.executors._limit import FifoLimiter
from gateway.executors._pools import Pools
from gateway.executors.base import ToolResult
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action, CallContext
from gateway.sandbox._mask import mask
from gateway.sandbox.protocol import CallResult, output_result
from gateway.sandbox.results import failure, from_result, redact
from gateway.sandbox.worker import MESSAGE_CHARS, TRACEBACK_CHARS

__all__ = ["DEFAULT_CONCURRENCY", "InlineExecutor", "InlineKind", "inline_database_urls"]

log = structlog.get_logger("gateway.executors")

DEFAULT_CONCURRENCY = 16
"""Inline calls at once by default (``Settings.inline_concurrency``): the SQL threads and the
most connections of one PostgreSQL pool (``Pools``), so a call that got its slot never waits
for a thread or a connection; far below the HTTP client's 100 connections."""


@runtime_checkable
class InlineKind(Protocol):
    """An action kind that can run in the server process (its ``inline`` ClassVar is true)."""

    async def run_inline(self, call: CallContext, pools: Pools) -> Any:
        """Run one call with the shared ``pools``; return what ``run`` would return.

        Raise ``ToolError`` for a failure the model should read; must not block
        the event loop (blocking work goes through the pools' threads).
        """
        ...


def inline_database_urls(catalog: Catalog) -> set[str]:
    """The database URLs the inline ``sql`` actions of ``catalog`` use (pools to keep)."""
    urls = catalog.database_urls()
    return {
        urls[name]
        for action in catalog.actions.values()
        if action.isolation == "inline"
        and isinstance(name := getattr(action.config, "database", None), str)
        and name in urls
    }


class InlineExecutor:
    """Runs ``isolation: inline`` calls in the server process (see the module doc).

    Args:
        pools: the shared connections (default: a fresh ``Pools``, closed by ``aclose``).
        concurrency: the most inline calls running at once; more wait in a FIFO queue.

    Raises:
        ValueError: ``concurrency`` below 1.
    """

    def __init__(
        self, pools: Pools | None = None, *, concurrency: int = DEFAULT_CONCURRENCY
    ) -> None:
        self.pools = pools if pools is not None else Pools()
        self._limit = FifoLimiter(concurrency)

    @property
    def concurrency(self) -> int:
        """The most inline calls running at once."""
        return self._limit.limit

    @property
    def in_flight(self) -> int:
        """Inline calls running now (holding a slot)."""
        return self._limit.held

    @property
    def queued(self) -> int:
        """Inline calls waiting for a slot now."""
        return self._limit.waiting

    async def call(
        self, action: Action, call: CallContext, *, correlation_id: str = ""
    ) -> ToolResult:
        """Run one inline call of ``action``; never raises for a failure (cancellation aside).

        Waits for a slot first (FIFO); the action's ``timeout`` covers the wait and the run.
        """
        started = time.perf_counter()
        config = action.config
        masked = call.masked()
        with structlog.contextvars.bound_contextvars(isolation="inline"):
            if config is None or not type(config).inline or not isinstance(config, InlineKind):
                return failure(
                    started,
                    "configuration_error",
                    f"action {action.name!r} ({action.kind_key}) cannot run inline",
                )
            deadline = asyncio.timeout(action.timeout)
            ran = False
            try:
                # The same deadline for the work in threads (template renders), which
                # cancelling does not stop: they check it themselves.
                with _templates.deadline(action.timeout):
                    async with deadline, self._limit.hold():
                        ran = True
                        value = await config.run_inline(call, self.pools)
                res = _encoded(value, action.sandbox.max_output_kb, masked)
            except TimeoutError:
                if not deadline.expired():
                    raise
                result = self._timed_out(action, started, ran=ran, correlation_id=correlation_id)
            except ToolError as exc:
                res = CallResult(
                    ok=False,
                    error_type=exc.error_type,
                    message=mask(str(exc), masked)[:MESSAGE_CHARS],
                    detail=exc.detail,
                )
                # A ``timeout`` error is ``timed_out`` (whichever saw the deadline first: a
                # render, a SQLite statement, the body's reader): ``from_result`` trusts
                # the kinds that may run inline, in the sandbox too.
                result = from_result(res, action, started, masked)
            except Exception as exc:  # a bug in a kind or a driver: the call fails, not the run
                res = CallResult(
                    ok=False,
                    error_type="exception",
                    message=mask(f"{type(exc).__name__}: {exc}", masked)[:MESSAGE_CHARS],
                    traceback=mask(traceback.format_exc(), masked)[-TRACEBACK_CHARS:],
                )
                result = from_result(res, action, started, masked)
            else:
                result = from_result(res, action, started, masked)
            result = redact(result, masked, action.name, correlation_id)
            log.debug(
                "executors.inline_call",
                action=action.name,
                status=result.status,
                duration_ms=result.duration_ms,
                correlation_id=correlation_id,
            )
            return result

    def _timed_out(
        self, action: Action, started: float, *, ran: bool, correlation_id: str
    ) -> ToolResult:
        """The ``timeout`` failure of a call at its deadline: queued (never ran) or running."""
        if ran:
            message = f"the action did not finish within {action.timeout:g}s and was cancelled"
        else:
            # The model reads this; the operator's hint (which setting) goes to the log.
            message = (
                f"no inline call slot was free within {action.timeout:g}s; the action did not run"
            )
            log.warning(
                "executors.inline_queue_timeout",
                action=action.name,
                timeout=action.timeout,
                concurrency=self.concurrency,
                queued=self.queued,
                hint="raise GATEWAY_INLINE_CONCURRENCY or the action's timeout",
                correlation_id=correlation_id,
            )
        return failure(started, "timeout", message, outcome="timed_out")

    async def retain(self, catalog: Catalog) -> None:
        """Close the database pools ``catalog`` no longer uses inline (call after a swap)."""
        await self.pools.retain(inline_database_urls(catalog))

    async def aclose(self) -> None:
        """Close the HTTP client, the database pools and their threads."""
        await self.pools.aclose()


def _encoded(value: Any, max_output_kb: int, secrets: dict[str, str]) -> CallResult:
    """``value`` as the text the model reads, ``secrets`` masked, then cut at
    ``max_output_kb`` as the sandbox cuts it."""
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return output_result(text, max_output_kb, secrets)
