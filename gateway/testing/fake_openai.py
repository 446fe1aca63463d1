"""A fake OpenAI-compatible server for tests: real HTTP on loopback, scripted answers.

Shipped for users' own tests as well as ours. It imports only
``gateway.testing._wire`` and uvicorn, never the rest of the gateway, so a
test can point any OpenAI client (the SDK, the gateway's providers, a chat UI)
at it::

    from gateway.testing.fake_openai import FakeOpenAI

    with FakeOpenAI() as fake:
        fake.add_tool_calls([("get_weather", {"city": "Paris"})])
        fake.add_text("It is sunny in Paris.")
        client = openai.OpenAI(base_url=fake.base_url, api_key="test")
        ...
        assert fake.requests[0].body["tools"][0]["function"]["name"] == "get_weather"

It serves ``POST /v1/chat/completions`` and ``POST /v1/responses`` (streaming
and not, byte-compatible with OpenAI's SSE) and ``GET /v1/models``, on
``127.0.0.1`` and a free port, from a background thread. Each model request
takes the next scripted reply (``add_text``, ``add_tool_calls``, ``add_reply``
with a value or a callable); with none left it echoes the last user message.
A reply may end with ``finish_reason="length"`` (the model's token limit; the
Responses API: ``response.incomplete``) or ``"content_filter"``.
A request OpenAI would refuse (a tool call without its result, a tool result
without its call, ``stream_options`` without ``stream``: see
``_wire.request_error``) gets OpenAI's 400 and consumes nothing scripted.
Faults: ``fail_next`` (status codes, consumed before replies), ``delay``
(before the response and between chunks), ``cut_stream_after`` (abort the
connection mid-stream), ``fail_stream_after`` (an error event mid-stream),
``stall_stream_after`` (a stream that stays alive and never ends), and
``quirks`` that emulate how compatible servers stream tool calls (see
``QUIRKS``). Every request is logged in ``requests``; ``open_connections`` and
``clients_seen`` tell a test whether a client kept, reused or closed its
connections. By default nothing is
delayed, so it doubles as an instant model for benchmarks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

import msgspec
import uvicorn

from gateway.testing._wire import (
    QUIRKS,
    FakeReply,
    FakeToolCall,
    RecordedRequest,
    ReplyUsage,
    chat_body,
    chat_chunks,
    error_body,
    request_error,
    responses_body,
    responses_events,
    sse_chat,
    sse_error,
    sse_responses,
)

__all__ = [
    "QUIRKS",
    "FakeOpenAI",
    "FakeReply",
    "FakeToolCall",
    "RecordedRequest",
    "ReplyUsage",
]

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ReplyFactory = Callable[["RecordedRequest"], "FakeReply | str"]
ToolCallSpec = tuple[str, Mapping[str, Any] | str] | tuple[str, Mapping[str, Any] | str, str]


class _Failure(msgspec.Struct, kw_only=True):
    status: int
    message: str
    retry_after: float | None
    times: int


class _StreamCut(Exception):
    """Raised inside the ASGI app to make uvicorn abort the connection mid-response."""


class _DropStreamCut(logging.Filter):
    """Keeps uvicorn's log quiet about the connections we abort on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, _StreamCut)


_LOG_FILTER = _DropStreamCut()


def _serve(server: uvicorn.Server, sock: socket.socket, failure: list[BaseException]) -> None:
    """The server thread: serve on ``sock``; a failure while starting goes to ``failure``.

    ``start`` raises it (chained) in the caller's thread; one after the start is
    raised here too, for ``threading.excepthook`` to report.
    """
    try:
        server.run(sockets=[sock])
    except BaseException as exc:  # SystemExit included: uvicorn exits when it cannot serve
        failure.append(exc)
        if server.started:
            raise


def _halt(server: uvicorn.Server, thread: threading.Thread) -> None:
    """Ask ``server`` to exit and wait for its thread (forcing it after 3 s)."""
    server.should_exit = True
    thread.join(timeout=3)
    if thread.is_alive():
        server.force_exit = True
        thread.join(timeout=3)


class FakeOpenAI:
    """The fake server. Use as a context manager (or ``start()`` / ``stop()``)."""

    def __init__(
        self,
        *,
        model: str = "fake-model",
        models: Iterable[str] = (),
        quirks: Iterable[str] = (),
        api_key: str | None = None,
        keep_alive: int = 5,
    ) -> None:
        """Configure the fake; nothing listens until ``start()`` / ``__enter__``.

        Args:
            model: the model name reported in answers when a request names none.
            models: ids listed by ``GET /v1/models`` (default: ``model``).
            quirks: Chat Completions streaming quirks to emulate (``QUIRKS``).
            api_key: when set, requests without ``Authorization: Bearer <key>``
                get 401.
            keep_alive: seconds an idle kept-alive connection stays open before the
                fake closes it (uvicorn's default of 5; some servers never close one).
        """
        self.model = model
        self.models = list(models) or [model]
        self.api_key = api_key
        self.keep_alive = keep_alive
        self.quirks: frozenset[str] = frozenset()
        self.set_quirks(*quirks)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._replies: deque[FakeReply | ReplyFactory] = deque()
        self._failures: deque[_Failure] = deque()
        self._cuts: deque[int] = deque()
        self._stream_errors: deque[tuple[int, str]] = deque()
        self._stalls: deque[tuple[int, float, str]] = deque()
        self._delay = 0.0
        self._chunk_delay = 0.0
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._port = 0
        self._clients: set[tuple[str, int]] = set()

    # -- lifecycle ---------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no path)."""
        if not self._port:
            raise RuntimeError("FakeOpenAI is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client: ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    def start(self) -> FakeOpenAI:
        """Listen on a free loopback port in a background thread; returns self.

        Raises:
            RuntimeError: the server did not start within 10 s, or its thread died
                while starting (the cause chained); nothing is left behind (socket,
                thread), so ``start()`` may be called again.
        """
        if self._server is not None:
            return self
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted sockets
        # only when their proto says TCP; without it a kept-alive connection
        # stalls ~40 ms per response (Nagle meets delayed ACK).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        server: uvicorn.Server | None = None
        thread: threading.Thread | None = None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            config = uvicorn.Config(
                self._app,
                log_config=None,
                access_log=False,
                lifespan="off",
                interface="asgi3",
                http="h11",
                ws="none",
                timeout_graceful_shutdown=1,
                timeout_keep_alive=self.keep_alive,
            )
            logging.getLogger("uvicorn.error").addFilter(_LOG_FILTER)
            server = uvicorn.Server(config)
            failure: list[BaseException] = []
            thread = threading.Thread(
                target=_serve, args=(server, sock, failure), name="fake-openai", daemon=True
            )
            thread.start()
            deadline = time.monotonic() + 10
            while not server.started:
                if not thread.is_alive():
                    cause = failure[0] if failure else None
                    raise RuntimeError(f"FakeOpenAI failed to start: {cause!r}") from cause
                if time.monotonic() > deadline:
                    raise RuntimeError("FakeOpenAI failed to start within 10 s")
                time.sleep(0.005)
        except BaseException:
            if server is not None and thread is not None:
                _halt(server, thread)
            sock.close()  # uvicorn closes it only once it was serving on it
            raise
        self._server, self._thread, self._sock = server, thread, sock
        self._port = sock.getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        _halt(server, thread)
        if self._sock is not None:
            self._sock.close()  # already closed by a server that stopped cleanly
        self._server = self._thread = self._sock = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------

    def add_text(
        self,
        text: str,
        *,
        usage: tuple[int, int] | None = None,
        finish_reason: str | None = None,
    ) -> None:
        """Queue a plain text answer; ``usage`` is (prompt, completion) tokens.

        ``finish_reason="length"`` plays an answer cut by the model's token limit
        (``"content_filter"``: stopped by a filter); see ``FakeReply``.
        """
        self.add_reply(FakeReply(text=text, usage=_usage(usage), finish_reason=finish_reason))

    def add_tool_calls(
        self,
        calls: Iterable[ToolCallSpec],
        *,
        text: str = "",
        usage: tuple[int, int] | None = None,
        finish_reason: str | None = None,
    ) -> list[str]:
        """Queue an answer calling tools (several = parallel calls); returns their ids.

        Args:
            calls: ``(name, arguments)`` or ``(name, arguments, call_id)``;
                arguments are a mapping (sent as JSON) or JSON text as is
                (so truncated JSON can be scripted: ``'{"city": "Par'``).
            text: optional text sent before the calls.
            usage: (prompt, completion) tokens to report.
            finish_reason: default ``tool_calls``; ``"length"`` plays an answer
                cut by the model's token limit in the middle of its calls.
        """
        built = []
        for spec in calls:
            name, arguments = spec[0], spec[1]
            call_id = spec[2] if len(spec) == 3 else f"call_fake{next(self._ids):06d}"
            text_args = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
            built.append(FakeToolCall(id=call_id, name=name, arguments=text_args))
        reply = FakeReply(
            text=text, tool_calls=built, usage=_usage(usage), finish_reason=finish_reason
        )
        self.add_reply(reply)
        return [c.id for c in built]

    def add_reply(self, reply: FakeReply | ReplyFactory) -> None:
        """Queue a reply, or a callable that gets the ``RecordedRequest`` and returns one.

        A callable may return a ``FakeReply`` or a string (a text answer).
        """
        with self._lock:
            self._replies.append(reply)

    def fail_next(
        self,
        status: int = 500,
        times: int = 1,
        *,
        message: str = "fake failure",
        retry_after: float | None = 0.001,
    ) -> None:
        """Answer the next ``times`` model requests with ``status`` (replies are kept).

        Args:
            status: the HTTP status (429, 500, 503...).
            times: how many requests fail.
            message: the error message in the OpenAI-shaped error body.
            retry_after: seconds sent as ``retry-after-ms`` so clients retry
                fast; ``None`` sends no header (the client's own backoff applies).
        """
        with self._lock:
            self._failures.append(
                _Failure(status=status, message=message, retry_after=retry_after, times=times)
            )

    def delay(self, seconds: float, *, between_chunks: float = 0.0) -> None:
        """Wait ``seconds`` before every model response and ``between_chunks`` between frames."""
        with self._lock:
            self._delay = seconds
            self._chunk_delay = between_chunks

    def cut_stream_after(self, n_chunks: int, times: int = 1) -> None:
        """Abort the next ``times`` streamed responses after ``n_chunks`` SSE frames."""
        with self._lock:
            self._cuts.extend([n_chunks] * times)

    def fail_stream_after(
        self, n_chunks: int, *, message: str = "The server had an error", times: int = 1
    ) -> None:
        """End the next ``times`` streams after ``n_chunks`` frames with an in-stream error.

        Chat Completions get ``data: {"error": {...}}``, Responses an ``error``
        event, as OpenAI sends when a stream fails after it started (status 200).
        """
        with self._lock:
            self._stream_errors.extend([(n_chunks, message)] * times)

    def stall_stream_after(
        self, n_chunks: int, *, every: float = 0.1, filler: str = "comment", times: int = 1
    ) -> None:
        """Keep the next ``times`` streams alive forever after ``n_chunks`` frames.

        Every ``every`` seconds the fake sends ``filler`` until the client hangs
        up, and never the end of the answer: a server stuck generating behind a
        proxy that keeps the connection alive.

        Args:
            n_chunks: frames of the scripted answer sent first.
            every: seconds between two fillers.
            filler: ``"comment"`` (an SSE comment, ``: keep-alive``), ``"empty"``
                (a chunk with an empty delta; the Responses API: a
                ``response.in_progress`` event) or ``"text"`` (one more character
                of text each time: a model trickling an endless answer).
            times: how many streams stall.

        Raises:
            ValueError: for an unknown ``filler``.
        """
        if filler not in _FILLERS:
            raise ValueError(f"unknown filler {filler!r}; known: {sorted(_FILLERS)}")
        with self._lock:
            self._stalls.extend([(n_chunks, every, filler)] * times)

    def set_quirks(self, *quirks: str) -> None:
        """Emulate compatible servers' Chat Completions streaming (see ``QUIRKS``).

        Raises:
            ValueError: for an unknown quirk name.
        """
        unknown = set(quirks) - QUIRKS
        if unknown:
            raise ValueError(f"unknown quirks {sorted(unknown)}; known: {sorted(QUIRKS)}")
        self.quirks = frozenset(quirks)

    def reset(self) -> None:
        """Forget scripted replies, faults, delays, quirks and the request log."""
        with self._lock:
            self.quirks = frozenset()
            self._replies.clear()
            self._failures.clear()
            self._cuts.clear()
            self._stream_errors.clear()
            self._stalls.clear()
            self._delay = self._chunk_delay = 0.0
            self.requests.clear()
            self._clients.clear()

    @property
    def pending_replies(self) -> int:
        """How many scripted replies are still queued."""
        with self._lock:
            return len(self._replies)

    @property
    def open_connections(self) -> int:
        """How many client connections are open right now (idle kept-alive ones included)."""
        server = self._server
        return len(server.server_state.connections) if server is not None else 0

    @property
    def clients_seen(self) -> int:
        """How many distinct client connections (address and port) have sent a request."""
        with self._lock:
            return len(self._clients)

    def model_requests(self) -> list[RecordedRequest]:
        """The logged requests to ``/chat/completions`` and ``/responses``."""
        with self._lock:
            return [r for r in self.requests if r.api != "other"]

    # -- the ASGI app ------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = RecordedRequest(
            method=scope["method"], path=scope["path"], headers=headers, body=body
        )
        with self._lock:
            self.requests.append(request)
            if scope.get("client"):
                self._clients.add((scope["client"][0], scope["client"][1]))
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            await _send_json(send, 401, error_body(401, "Incorrect API key provided."))
            return
        if scope["method"] == "GET" and scope["path"].rstrip("/").endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            await _send_json(send, 200, {"object": "list", "data": data})
            return
        if scope["method"] != "POST" or request.api == "other":
            await _send_json(send, 404, error_body(404, f"no route {scope['path']}"))
            return
        if not isinstance(body, dict):
            await _send_json(send, 400, error_body(400, "the body must be a JSON object"))
            return
        refused = request_error(request.api, body)
        if refused is not None:  # what OpenAI refuses; no scripted reply or fault is used
            reason, param = refused
            await _send_json(send, 400, error_body(400, reason, param=param))
            return
        await self._answer(request, body, receive, send)

    def _take(self) -> tuple[float, float, _Failure | None, FakeReply | ReplyFactory | None]:
        with self._lock:
            failure = None
            if self._failures:
                failure = self._failures[0]
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.popleft()
            reply = self._replies.popleft() if self._replies and failure is None else None
            return self._delay, self._chunk_delay, failure, reply

    async def _answer(
        self, request: RecordedRequest, body: dict[str, Any], receive: Receive, send: Send
    ) -> None:
        delay, chunk_delay, failure, scripted = self._take()
        if delay:
            await asyncio.sleep(delay)
        if failure is not None:
            extra = {}
            if failure.retry_after is not None:
                extra["retry-after-ms"] = str(max(1, round(failure.retry_after * 1000)))
            await _send_json(
                send, failure.status, error_body(failure.status, failure.message), extra
            )
            return
        reply = self._resolve(scripted, request)
        usage = reply.usage or ReplyUsage(
            prompt_tokens=_count_words(json.dumps(body.get("messages") or body.get("input"))),
            completion_tokens=_count_words(reply.text)
            + sum(1 + _count_words(c.arguments) for c in reply.tool_calls),
        )
        model = str(body.get("model") or self.model)
        ident = f"fake{next(self._ids):06d}"
        ignores_stream = "no_stream_with_tools" in self.quirks and bool(body.get("tools"))
        if request.api == "chat" and (not request.stream or ignores_stream):
            await _send_json(
                send, 200, chat_body(reply, usage, model=model, ident=f"chatcmpl-{ident}")
            )
            return
        if request.api == "responses" and not request.stream:
            payload = responses_body(reply, usage, model=model, ident=ident, request=body)
            await _send_json(send, 200, payload)
            return
        if request.api == "chat":
            options = body.get("stream_options") or {}
            frames = sse_chat(
                chat_chunks(
                    reply,
                    usage,
                    model=model,
                    ident=f"chatcmpl-{ident}",
                    include_usage=bool(options.get("include_usage")),
                    quirks=self.quirks,
                )
            )
        else:
            frames = sse_responses(
                responses_events(reply, usage, model=model, ident=ident, request=body)
            )
        with self._lock:
            stream_error = self._stream_errors.popleft() if self._stream_errors else None
        if stream_error is not None:
            kept, message = stream_error
            frames = [*frames[:kept], sse_error(request.api, message, sequence_number=kept)]
        with self._lock:
            stall = self._stalls.popleft() if self._stalls else None
        if stall is not None:
            kept, every, filler = stall
            fill = (every, _FILLERS[filler][request.api])
            await self._stream(frames[:kept], chunk_delay, receive, send, stall=fill)
            return
        await self._stream(frames, chunk_delay, receive, send)

    def _resolve(
        self, scripted: FakeReply | ReplyFactory | None, request: RecordedRequest
    ) -> FakeReply:
        if scripted is None:
            return FakeReply(text=request.last_user_text())
        if isinstance(scripted, FakeReply):
            return scripted
        produced = scripted(request)
        return FakeReply(text=produced) if isinstance(produced, str) else produced

    async def _stream(
        self,
        frames: list[bytes],
        chunk_delay: float,
        receive: Receive,
        send: Send,
        *,
        stall: tuple[float, bytes] | None = None,
    ) -> None:
        """Send ``frames``; with ``stall`` (seconds, frame), then that frame forever."""
        with self._lock:
            cut = self._cuts.popleft() if self._cuts else None
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
        ]
        if cut is None and not chunk_delay and stall is None:
            # An instant model: the whole stream in one write. A known length
            # avoids chunked encoding, whose terminator would be a second small
            # write (and a delayed-ACK stall of ~40 ms on some TCP stacks).
            body = b"".join(frames)
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # The only ASGI message left to receive is the client's disconnect: stop
        # writing a slow stream as soon as the client went away.
        disconnected = asyncio.ensure_future(receive())
        try:
            for number, frame in enumerate(frames):
                if cut is not None and number >= cut:
                    raise _StreamCut("stream cut on purpose by FakeOpenAI.cut_stream_after")
                if chunk_delay and number:
                    await asyncio.wait({disconnected}, timeout=chunk_delay)
                if disconnected.done():
                    return
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            if stall is not None:
                every, frame = stall
                while not disconnected.done():
                    await send({"type": "http.response.body", "body": frame, "more_body": True})
                    await asyncio.wait({disconnected}, timeout=every)
                return
            await send({"type": "http.response.body", "body": b""})
        finally:
            disconnected.cancel()


_FILLERS: dict[str, dict[str, bytes]] = {
    "comment": {"chat": b": keep-alive\n\n", "responses": b": keep-alive\n\n"},
    "empty": {
        "chat": b'data: {"object": "chat.completion.chunk", "choices": '
        b'[{"index": 0, "delta": {}, "finish_reason": null}]}\n\n',
        "responses": b"event: response.in_progress\n"
        b'data: {"type": "response.in_progress", "response": {"status": "in_progress"}}\n\n',
    },
    "text": {
        "chat": b'data: {"object": "chat.completion.chunk", "choices": '
        b'[{"index": 0, "delta": {"content": "."}, "finish_reason": null}]}\n\n',
        "responses": b"event: response.output_text.delta\n"
        b'data: {"type": "response.output_text.delta", "item_id": "msg_stall", '
        b'"output_index": 0, "content_index": 0, "delta": "."}\n\n',
    },
}
"""What a stalled stream sends (``stall_stream_after``), by filler and API."""


def _usage(pair: tuple[int, int] | None) -> ReplyUsage | None:
    if pair is None:
        return None
    return ReplyUsage(prompt_tokens=pair[0], completion_tokens=pair[1])


def _count_words(text: str) -> int:
    return len(text.split())


async def _send_json(
    send: Send, status: int, payload: Any, extra_headers: Mapping[str, str] | None = None
) -> None:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
