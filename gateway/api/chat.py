"""Chat routes: ``GET /start``, ``POST /chat`` (JSON or SSE) and ``WS /ws/chat``.

Every exchange starts a run in the engine (a task of the server, not of the
request) and then reads its event log: the JSON answer waits for the result,
SSE and WebSocket clients follow the log, so a client that goes away never
stops a run. Keys limited to some assistants are checked before a run starts.
Imports ``gateway.api.*``, ``gateway.events``, ``gateway.errors`` and ``NAME_PATTERN``
from ``gateway.manifests.model``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, cast

import msgspec
import structlog
from litestar import Request, Response, WebSocket, get, post, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import JSONBody, QueryParameter
from litestar.response import Stream

from gateway._nesting import too_deep
from gateway.api.errors import RunCrashed, correlation_id_of, error_responses, readable
from gateway.api.middleware import SUBPROTOCOL_KEY, principal_of, take_rate_token
from gateway.api.request import TOO_DEEP, bom_problem
from gateway.api.schemas import ChatRequest, ChatResponse, StartResponse
from gateway.api.services import Services, ServicesDep
from gateway.api.streaming import SSE_HEADERS, parse_last_event_id, sse_frames
from gateway.api.threads import stream_run
from gateway.errors import Conflict, GatewayError, InvalidInput, NotFound, NotReady, ProviderError
from gateway.events import ErrorEvent, encode_ws
from gateway.manifests.model import NAME_PATTERN

if TYPE_CHECKING:
    from litestar.types.asgi_types import WebSocketDisconnectEvent, WebSocketReceiveEvent

    from gateway.api.auth import Principal
    from gateway.engine import RunHandle, RunResult

__all__ = ["chat", "chat_ws", "finished", "raise_run_error", "start"]

log = structlog.get_logger("gateway.api")

_START_ERRORS = {
    400: "Invalid input",
    # An assistant the key may not use is as missing: a key cannot tell which names exist.
    404: "Unknown thread or assistant, or an assistant the key may not use",
}
_ERRORS = error_responses(_START_ERRORS)
CHAT_ERRORS = error_responses(
    {
        **_START_ERRORS,
        403: "The key may not use the thread's assistant",
        409: "A run is already active on the thread",
        413: "Body too large",
        429: "Rate limited",
        502: "The model provider failed",
    }
)


@get("/start", tags=["chat"], responses=_ERRORS, summary="Start a thread")
async def start(
    request: Request[Any, Any, Any],
    services: ServicesDep,
    assistant: Annotated[str | None, QueryParameter(pattern=NAME_PATTERN)] = None,
) -> StartResponse:
    """Create a thread for ``assistant`` (or the default one) and return its greeting.

    ``assistant`` must be a name (``NAME_PATTERN``, as in the JSON bodies): anything
    else (``helper%0A``, an empty value) is a 400 naming the parameter, not a 404.
    """
    principal = principal_of(request.scope)
    if assistant is not None:
        principal.check_assistant(assistant)
    elif principal.assistants is not None and not principal.admin:
        assistant = _default_for(principal, services.settings.default_assistant)
    thread, asst = await services.the_engine().create_thread(assistant)
    if not principal.may_use(asst.name):
        await services.the_store().delete_thread(thread.id)
        principal.check_assistant(asst.name)
    return StartResponse(
        thread_id=thread.id, assistant=asst.name, initial_message=asst.initial_message
    )


async def begin_run(
    services: Services, principal: Principal, data: ChatRequest, correlation_id: str
) -> RunHandle:
    """Check the caller may use the thread's assistant, then start the run."""
    engine = services.the_engine()
    thread_id = data.thread_id if data.thread_id not in (None, "new") else None
    assistant = data.assistant
    if assistant is not None:
        principal.check_assistant(assistant)
    if principal.assistants is not None and not principal.admin:
        if thread_id is not None:
            await services.thread_for(thread_id, principal)
        elif assistant is None:
            assistant = _default_for(principal, services.settings.default_assistant)
    handle = services.track(
        await engine.start_run(
            thread_id=thread_id,
            message=data.message,
            assistant=assistant,
            correlation_id=correlation_id,
        )
    )
    structlog.contextvars.bind_contextvars(run_id=handle.run_id, thread_id=handle.thread_id)
    return handle


def _default_for(principal: Principal, default: str | None) -> str:
    """The assistant a limited key uses when it names none: its only one, else
    ``GATEWAY_DEFAULT_ASSISTANT`` if the key may use it, else a 400 naming the field."""
    if principal.assistants is not None and len(principal.assistants) == 1:
        return next(iter(principal.assistants))
    if default is not None and principal.may_use(default):
        return default
    raise InvalidInput("this key may use several assistants: name one", "assistant")


def raise_run_error(error_type: str, message: str, *, drained: bool = False) -> NoReturn:
    """Turn a failed run's error into the exception the handlers map to a status.

    The model provider failing (after retries) is a 502 (a model looping on tools
    past ``max_tool_rounds`` is no failure: the run ends ``incomplete``); a run
    cancelled by another request is a 409, one the drain of a shutdown cancelled
    (``drained``: ``RunHandle.drained``) a 503, which a client or load balancer
    retries elsewhere; one the store failed or another replica took over
    (``not_ready``, ``interrupted``, ``not_started``) a 503 keeping its type and
    message; anything else (``internal_error``) a 500 with a generic message, not
    logged again (``RunCrashed``: the run logged its crash).
    """
    err: GatewayError
    if error_type == "provider_error":
        err = ProviderError(message)
    elif error_type == "cancelled" and drained:
        err = NotReady(f"the gateway is shutting down: {message}; retry")
    elif error_type == "cancelled":
        err = Conflict(message)
    elif error_type in ("not_ready", "interrupted", "not_started"):
        # The store failed, or another replica took the run over (this one lost the
        # database for a whole lease): nothing the client did; retrying may succeed.
        err = NotReady(message)
    elif error_type in ("invalid_request", "invalid_input"):
        err = InvalidInput(message)
    else:
        err = RunCrashed(message)
    err.type = error_type or "run_failed"
    raise err


async def finished(handle: RunHandle) -> RunResult:
    """Wait for the run's end; a failed run raises its error (see ``raise_run_error``)."""
    result = await handle.result()
    if result.error is not None:
        raise_run_error(result.error.type, result.error.message, drained=handle.drained)
    return result


@post(
    "/chat",
    tags=["chat"],
    status_code=200,
    summary="Send a message (JSON answer, or SSE with stream / Accept: text/event-stream)",
    responses={
        200: ResponseSpec(
            ChatResponse,
            description="The run's answer; with streaming, a text/event-stream of run events",
            examples=[Example(summary="answer", value={"thread_id": "t", "run_id": "r"})],
        ),
        **CHAT_ERRORS,
    },
)
async def chat(
    request: Request[Any, Any, Any], data: JSONBody[ChatRequest], services: ServicesDep
) -> Response[Any]:
    """Run one exchange; answer as JSON or stream the run's events as SSE.

    A streamed request that carries ``Last-Event-ID`` is a client resuming a cut
    stream by sending the same request again (``@microsoft/fetch-event-source``
    does so on a network error, and when a hidden tab is shown again): it gets
    the rest of that run (see ``_resumed``), never a second run of the message.
    """
    cid = correlation_id_of(request.scope)
    streaming = data.stream or "text/event-stream" in request.headers.get("accept", "")
    last_event_id = request.headers.get("last-event-id")
    if streaming and last_event_id:
        return await _resumed(request, services, data, last_event_id)
    handle = await begin_run(services, principal_of(request.scope), data, cid)
    if streaming:
        frames = sse_frames(
            handle.log,
            run_id=handle.run_id,
            after=0,
            heartbeat=services.settings.sse_heartbeat,
            correlation_id=cid,
        )
        return Stream(frames, media_type="text/event-stream", headers=SSE_HEADERS)
    result = await finished(handle)
    body = ChatResponse(
        thread_id=result.thread_id,
        run_id=result.run_id,
        responses=result.responses,
        tool_calls=result.tool_calls,
        usage=result.usage,
        metadata=result.metadata,
        status="incomplete" if result.status == "incomplete" else "completed",
        incomplete_details=result.incomplete_details,
    )
    return Response(body)


_ws_decoder = msgspec.json.Decoder(ChatRequest)


async def _resumed(
    request: Request[Any, Any, Any], services: Services, data: ChatRequest, last_event_id: str
) -> Response[Any]:
    """The SSE of the run ``last_event_id`` names, after its position (no new run).

    The run must be on the body's thread (any thread when the body starts a new
    one, as the first request of a conversation did).

    Raises:
        InvalidInput: ``last_event_id`` is not ``<run_id>:<seq>``.
        NotFound: no such run (on that thread).
        Forbidden: the key may not use the run's assistant.
    """
    run_id, after = parse_last_event_id(last_event_id)
    if not run_id:
        raise InvalidInput(
            "Last-Event-ID must be '<run_id>:<seq>' (the last id: of the stream to resume)",
            "Last-Event-ID",
        )
    thread_id = data.thread_id if data.thread_id not in (None, "new") else None
    if thread_id is None:
        record = await services.the_store().get_run(run_id)
        if record is None:
            raise NotFound("run", run_id)
        thread_id = record.thread_id
    return await stream_run(request, services, thread_id, run_id, after)


_MAX_WAITING = 8
"""Messages a WebSocket may have waiting behind its running run; one more is refused."""
_MAX_WAITING_CHARS = 1 << 20
"""And their total size (text characters or bytes): past it, only one may wait."""


class _Inbox:
    """The frames a socket sent that wait for their turn, bounded in count and size.

    Whatever the bounds, one frame may always wait (the server's frame limit,
    ``GATEWAY_MAX_BODY_BYTES``, bounds it), so a socket holds at most about
    two frames' worth of memory besides the one being handled.
    """

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str | bytes] = asyncio.Queue()
        self._chars = 0

    def offer(self, raw: str | bytes) -> str | None:
        """Queue ``raw``; None when queued, else why it was refused (for the client)."""
        size = self._queue.qsize()
        if size >= _MAX_WAITING:
            held = f"{_MAX_WAITING} messages are already"
        elif size and self._chars + len(raw) > _MAX_WAITING_CHARS:
            held = f"with this one, the messages would be over {_MAX_WAITING_CHARS} characters"
        else:
            self._chars += len(raw)
            self._queue.put_nowait(raw)
            return None
        return (
            f"too many messages waiting: {held} queued behind the run in progress; "
            "wait for its done"
        )

    async def next(self, *stops: asyncio.Future[Any]) -> str | bytes | None:
        """The next waiting frame; None once one of ``stops`` ended (the reader: the
        client left; the gateway shutting down) and nothing is waiting."""
        if self._queue.empty():
            if any(stop.done() for stop in stops):
                return None
            getter = asyncio.ensure_future(self._queue.get())
            either: set[asyncio.Future[Any]] = {getter, *stops}
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                return None
            raw = getter.result()
        else:
            raw = self._queue.get_nowait()
        self._chars -= len(raw)
        return raw


@websocket("/ws/chat", tags=["chat"])
async def chat_ws(socket: WebSocket[Any, Any, Any], services: ServicesDep) -> None:
    """Many exchanges per connection: each message starts a run whose events stream back.

    A bad frame (invalid JSON, no message, unknown assistant...) is answered
    with an ``error`` event, and so is an unexpected failure (``internal_error``,
    logged with its traceback like an HTTP 500); the connection stays open. With
    ``GATEWAY_RATE_LIMIT``, every frame after the first (a bad one too) takes
    a token from the key's bucket (the handshake paid for the first); one over
    the limit gets a ``rate_limited`` error event and starts no run. Messages are handled
    one at a time, in order: those sent while a run streams wait for its
    ``done`` (``_Inbox`` bounds them; one more gets a ``rate_limited`` error
    event at once). The socket is read all along, by ``_read_frames``: a
    frame left unread makes uvicorn stop reading the socket, pongs included,
    and its keepalive would close a socket busy with a long run (1011); and a
    client that leaves is noticed at once (the run goes on) and its closing
    handshake answered. When ``gateway serve`` shuts down, the socket's run ends
    first (finished, or cancelled after ``GATEWAY_DRAIN_SECONDS``; its events end
    with ``done``), then the server closes the socket with 1001 (going away).
    """
    cid = correlation_id_of(socket.scope)
    principal = principal_of(socket.scope)
    subprotocol = socket.scope.get("state", {}).get(SUBPROTOCOL_KEY)
    await socket.accept(subprotocols=subprotocol)
    services.open_sockets += 1
    inbox = _Inbox()
    reader = asyncio.ensure_future(_read_frames(socket, inbox, cid))
    closing = asyncio.ensure_future(services.closing.wait())
    prepaid = True  # the handshake's rate-limit token pays for the first exchange
    try:
        while True:
            raw = await inbox.next(reader, closing)
            if closing.done():  # shutdown: the runs have ended (their ``done`` was sent)
                await socket.close(code=1001, reason="the gateway is shutting down")
                return
            if raw is None:
                return
            # Every frame pays, a bad one too: answering it costs as much as a refusal.
            wait = 0.0 if prepaid else take_rate_token(socket.scope)
            prepaid = False
            if wait > 0:
                message = f"too many requests; slow down (retry in {math.ceil(wait)} s)"
                await _ws_error(socket, "rate_limited", message, cid)
                continue
            if too_deep(raw):
                await _ws_error(socket, "invalid_request", f"bad frame: {TOO_DEEP}", cid)
                continue
            if (problem := bom_problem(raw)) is not None:
                await _ws_error(socket, "invalid_request", f"bad frame: it {problem}", cid)
                continue
            try:
                data = _ws_decoder.decode(raw)
            # Any frame a client can send: not JSON, not UTF-8, nested past the
            # decoder's depth, or not the right shape (msgspec.ValidationError is a
            # DecodeError).
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, TypeError) as exc:
                await _ws_error(socket, "invalid_request", f"bad frame: {readable(str(exc))}", cid)
                continue
            # ``begin_run`` binds the run's ids to the log context: this exchange's
            # log lines must not name the socket's previous run.
            structlog.contextvars.unbind_contextvars("run_id", "thread_id")
            try:
                handle = await begin_run(services, principal, data, cid)
            except GatewayError as exc:
                await _ws_error(socket, exc.type, exc.message, cid)
                continue
            except Exception as exc:
                # What a 500 is over HTTP (see ``gateway.api.errors``): logged with its
                # traceback, answered without details. Litestar would close the socket
                # (4500) without a log line, and end the client's other exchanges.
                log.error("unhandled_error", path=socket.scope["path"], exc_info=exc)
                await _ws_error(socket, "internal_error", "internal error", cid)
                continue
            sender = asyncio.ensure_future(_send_run(socket, handle))
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done():
                sender.cancel()  # the client left: stop reading the log, the run goes on
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
                return
            if not await sender:
                return
    except (WebSocketDisconnect, OSError):  # an error event for a client that just left
        return
    finally:
        closing.cancel()
        services.open_sockets -= 1
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def _read_frames(socket: WebSocket[Any, Any, Any], inbox: _Inbox, cid: str) -> None:
    """Read every frame as it comes into ``inbox``; return when the client leaves.

    A frame the inbox refuses (``_MAX_WAITING`` frames wait already, or
    ``_MAX_WAITING_CHARS`` of them) gets a ``rate_limited`` error event instead:
    the client sends faster than its runs finish.
    """
    try:
        while True:
            refused = inbox.offer(await _receive(socket))
            if refused is not None:
                await _ws_error(socket, "rate_limited", refused, cid)
    except (WebSocketDisconnect, OSError):  # uvicorn's ClientDisconnected is an OSError
        return


async def _receive(socket: WebSocket[Any, Any, Any]) -> str | bytes:
    """The next frame's payload, text or binary: many clients send JSON as binary frames
    (Litestar's ``receive_data(mode="text")`` would turn those into ``""``).

    Raises:
        WebSocketDisconnect: the client left.
    """
    event = cast("WebSocketReceiveEvent | WebSocketDisconnectEvent", await socket.receive())
    if event["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(detail="disconnect event", code=event["code"])
    text = event.get("text")
    return text if text is not None else event.get("bytes") or b""


async def _send_run(socket: WebSocket[Any, Any, Any], handle: RunHandle) -> bool:
    """Send the run's events until ``done``; False when the client went away."""
    try:
        async for _seq, event in handle.log.follow(0):
            await socket.send_data(encode_ws(event).decode(), mode="text")
    except (WebSocketDisconnect, OSError):  # uvicorn's ClientDisconnected is an OSError
        return False
    return True


async def _ws_error(socket: WebSocket[Any, Any, Any], type_: str, message: str, cid: str) -> None:
    frame = encode_ws(ErrorEvent(type=type_, message=message, correlation_id=cid))
    await socket.send_data(frame.decode(), mode="text")
