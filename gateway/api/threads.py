"""Thread routes: history, delete, a run's record, its events (replay + follow), cancel.

``GET /threads/{id}/runs/{run_id}/events`` is how a client resumes after a
dropped stream: it sends the last ``id:`` it saw as ``Last-Event-ID``
(``<run_id>:<seq>``) or ``?after=SEQ`` and gets every later event, then the
live ones until ``done``. Imports ``gateway.api.*`` and ``gateway.errors``.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from litestar import Request, delete, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.response import Stream

from gateway.api.errors import correlation_id_of, error_responses
from gateway.api.middleware import principal_of
from gateway.api.schemas import MessageOut, RunOut
from gateway.api.services import Services, ServicesDep
from gateway.api.streaming import SSE_HEADERS, parse_last_event_id, sse_frames
from gateway.errors import InvalidInput, NotFound

__all__ = ["cancel_run", "delete_thread", "get_run", "list_messages", "run_events"]

# Sequence numbers are 64-bit signed integers in both stores: a larger ``before`` could not
# be bound as a SQLite INTEGER (a 500), so it is a 400 naming the parameter instead.
_MAX_SEQ = 2**63 - 1

_ERRORS = error_responses(
    {
        400: "Invalid input",
        403: "The key may not use this thread's assistant",
        404: "Unknown thread or run",
    }
)


@get("/threads/{thread_id:str}/messages", tags=["threads"], responses=_ERRORS)
async def list_messages(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    thread_id: FromPath[str],
    limit: Annotated[int | None, QueryParameter(ge=1, le=10_000)] = None,
    before: Annotated[int | None, QueryParameter(ge=1, le=_MAX_SEQ)] = None,
) -> list[MessageOut]:
    """The thread's messages in order (with ``limit``, the newest ones; with ``before``,
    only those whose ``seq`` is lower: ``?limit=100&before=<first seq read>`` pages back
    through a long thread without loading it whole)."""
    await services.thread_for(thread_id, principal_of(request.scope))
    stored = await services.the_store().list_messages(thread_id, limit=limit, before=before)
    return [
        MessageOut(
            id=m.id,
            role=m.message.role,
            content=m.message.content,
            created_at=m.created_at,
            seq=m.seq,
            run_id=m.run_id,
            tool_calls=m.message.tool_calls,
            tool_call_id=m.message.tool_call_id,
            name=m.message.name,
        )
        for m in stored
    ]


@delete(
    "/threads/{thread_id:str}",
    tags=["threads"],
    status_code=204,
    responses=_ERRORS,
)
async def delete_thread(
    request: Request[Any, Any, Any], services: ServicesDep, thread_id: FromPath[str]
) -> None:
    """Delete a thread with its messages and runs (a run going on it is cancelled first)."""
    await services.thread_for(thread_id, principal_of(request.scope))
    if not await services.the_engine().delete_thread(thread_id):
        raise NotFound("thread", thread_id)


def _after(last_event_id: str | None, after: int | None, run_id: str) -> int:
    """Where the stream resumes: after ``?after=`` or ``Last-Event-ID``, the later of both.

    An ``EventSource`` opened on ``...?after=N`` reconnects to that same URL with
    the ``Last-Event-ID`` it reached: taking ``N`` would send it every event in
    between a second time.
    """
    if not last_event_id:
        return after or 0
    head, seq = parse_last_event_id(last_event_id)
    if head and head != run_id:
        raise InvalidInput("Last-Event-ID must be '<run_id>:<seq>' for this run", "Last-Event-ID")
    return max(seq, after or 0)


@get(
    "/threads/{thread_id:str}/runs/{run_id:str}/events",
    tags=["threads"],
    summary="Replay and follow a run's events (SSE)",
    responses={
        200: ResponseSpec(None, description="text/event-stream of the run's events"),
        **_ERRORS,
    },
)
async def run_events(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    thread_id: FromPath[str],
    run_id: FromPath[str],
    after: Annotated[int | None, QueryParameter(ge=0, le=_MAX_SEQ)] = None,
    last_event_id: Annotated[
        str | None, HeaderParameter(name="Last-Event-ID", max_length=200)
    ] = None,
) -> Stream:
    """SSE of the run's events after ``Last-Event-ID`` / ``?after=`` (the later of both),
    then live until ``done``."""
    return await stream_run(
        request, services, thread_id, run_id, _after(last_event_id, after, run_id)
    )


async def stream_run(
    request: Request[Any, Any, Any], services: Services, thread_id: str, run_id: str, after: int
) -> Stream:
    """The SSE response of run ``run_id`` of ``thread_id`` after its event ``after``, then
    live until ``done`` (here, and for a streamed ``POST /chat`` that resumes a run).

    Raises:
        NotFound: no such thread or run.
        Forbidden: the request's key may not use the thread's assistant.
    """
    await services.thread_for(thread_id, principal_of(request.scope))
    run_log = await services.the_engine().get_run_log(thread_id, run_id)
    structlog.contextvars.bind_contextvars(run_id=run_id, thread_id=thread_id)
    frames = sse_frames(
        run_log,
        run_id=run_id,
        after=after,
        heartbeat=services.settings.sse_heartbeat,
        correlation_id=correlation_id_of(request.scope),
    )
    return Stream(frames, media_type="text/event-stream", headers=SSE_HEADERS)


@post(
    "/threads/{thread_id:str}/runs/{run_id:str}/cancel",
    tags=["threads"],
    status_code=200,
    responses=_ERRORS,
)
async def cancel_run(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    thread_id: FromPath[str],
    run_id: FromPath[str],
) -> RunOut:
    """Stop the run: the model call ends and its running actions are killed."""
    await services.thread_for(thread_id, principal_of(request.scope))
    run = await services.the_engine().cancel(thread_id, run_id)
    return RunOut.of(run)


@get("/threads/{thread_id:str}/runs/{run_id:str}", tags=["threads"], responses=_ERRORS)
async def get_run(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    thread_id: FromPath[str],
    run_id: FromPath[str],
) -> RunOut:
    """The run's record: status (``incomplete`` when its answer was cut short), usage, error."""
    await services.thread_for(thread_id, principal_of(request.scope))
    return RunOut.of(await services.the_engine().get_run(thread_id, run_id))
