"""The OpenAI-compatible endpoint: ``POST /v1/chat/completions``, ``GET /v1/models`` and
``GET /v1/models/{model}``.

``model`` names an assistant; the conversation comes from the client's
``messages`` (nothing is stored); the assistant's tools run server-side, so the
client sees only the final text. ``system`` and ``developer`` messages are kept
in the history after the assistant's own instructions (which always come
first). Streaming sends ``chat.completion.chunk`` frames exactly as OpenAI
does: the role first, then content deltas, then ``finish_reason`` (``stop``;
``length`` or ``content_filter`` when the run ended ``incomplete``, its answer
cut short; the JSON answer says the same), a usage chunk when
``stream_options.include_usage`` is set, and ``data: [DONE]``. The stream
starts with the run's first word (text, a tool call, or a heartbeat's wait): a
run failing before it gets its error's HTTP status, as OpenAI answers; a later
failure is a ``data: {"error": ...}`` frame before ``[DONE]``. A JSON answer
failing after the run's tools ran carries ``x-should-retry: false`` (the SDKs
would otherwise retry the 5xx and run the actions again). Several assistant
messages of one run (text before and after a tool call) are joined with a blank
line. ``stop`` (up to 4 sequences) cuts the answer before the first of them,
streamed or not, and cancels the run there: nothing after it can reach the
client, so the model stops and no later tool runs. Parameters it cannot honour
are a 400 naming them rather than silently ignored: ``n`` above 1 (one run
answers one choice), a ``response_format`` other than ``text`` (the assistant's
answer is free text), the client's own ``tools`` (unless ``tool_choice`` is
``none``) or ``functions`` (only the assistant's tools run, and only text comes
back), a ``tool_choice`` other than ``auto`` or ``none`` (``required``, a named
function: the assistant decides when its tools run; ``none`` is honoured: the
model is offered none of the assistant's tools, and none runs), ``logprobs`` and
``top_logprobs`` (no token log probabilities come from a run), audio output
(``modalities`` other than ``text``, ``audio``), and content parts other
than text (an image, audio, a file: the assistant reads text). The run is
stateless, so its client is its only reader: when the client leaves (a closed
stream, a dropped connection while waiting for the JSON answer), the run is
cancelled, which stops the model call and kills its actions, instead of
running to an end nobody can read.

Imports ``gateway.api.*``, ``gateway.engine``, ``gateway.errors``,
``gateway.events``, ``gateway.providers.base``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import structlog
from litestar import Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody
from litestar.response import Stream

from gateway.api.chat import CHAT_ERRORS, raise_run_error
from gateway.api.errors import NO_RETRY_KEY, correlation_id_of, status_and_type
from gateway.api.middleware import principal_of
from gateway.api.services import ServicesDep
from gateway.api.streaming import SSE_HEADERS, follow
from gateway.engine import RunHandle
from gateway.errors import GatewayError, InvalidInput, NotFound
from gateway.events import (
    IncompleteDetails,
    MessageCompleted,
    MessageDelta,
    Metadata,
    RunCompleted,
    RunFailed,
    StepCreated,
)
from gateway.providers.base import ChatMessage, ToolCall, Usage

__all__ = [
    "ChatCompletion",
    "CompletionRequest",
    "chat_completions",
    "get_model",
    "list_models",
]

log = structlog.get_logger("gateway.api")
T = TypeVar("T")


class ContentPart(msgspec.Struct, frozen=True, kw_only=True):
    """A part of a message's content; only ``text`` parts are read."""

    type: str
    text: str | None = None


class FunctionCall(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    arguments: str = ""


class ToolCallIn(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    function: FunctionCall
    type: str = "function"


class MessageIn(msgspec.Struct, frozen=True, kw_only=True):
    """A message in OpenAI's Chat Completions form."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct, frozen=True, kw_only=True):
    include_usage: bool = False


class ResponseFormat(msgspec.Struct, frozen=True, kw_only=True):
    type: str = "text"


Stop = Annotated[str, msgspec.Meta(max_length=1000)]
_FEW = msgspec.Meta(max_length=8)
# Content parts read as text; an assistant's earlier ``refusal`` is harmless to skip.
_READ_PARTS = frozenset({"text", "input_text", "refusal"})


class CompletionRequest(msgspec.Struct, frozen=True, kw_only=True):
    """The request body; fields the gateway does not use (temperature...) are ignored."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    messages: Annotated[list[MessageIn], msgspec.Meta(min_length=1)]
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: Stop | Annotated[list[Stop], msgspec.Meta(max_length=4)] | None = None
    n: int | None = None
    response_format: ResponseFormat | None = None
    # Only checked (see ``check_supported``): the client's own tools are never called.
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[Any] | None = None
    # Only checked: token log probabilities and audio output cannot come from a run.
    logprobs: bool | None = None
    top_logprobs: int | None = None
    modalities: Annotated[list[Annotated[str, msgspec.Meta(max_length=64)]], _FEW] | None = None
    audio: dict[str, Any] | None = None

    def stops(self) -> tuple[str, ...]:
        """The non-empty stop sequences."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return tuple(s for s in stop if s)

    def check_supported(self) -> None:
        """Refuse what the gateway would otherwise silently not do.

        Raises:
            InvalidInput: ``n`` other than 1, a ``response_format`` other than ``text``,
                the client's own ``tools`` (unless ``tool_choice`` is ``none``) or
                ``functions``, a ``tool_choice`` other than ``auto`` or ``none``,
                ``logprobs`` or ``top_logprobs``, audio output (``modalities``,
                ``audio``), or a content part that is not text (an image...).
        """
        if self.tools and self.tool_choice != "none":
            raise InvalidInput(
                "tools: the assistant's own tools run in the gateway and only its text "
                "comes back, so a client's tools are never called; leave tools out",
                "tools",
            )
        if self.functions:
            raise InvalidInput(
                "functions: the assistant's own tools run in the gateway and only its text "
                "comes back, so a client's functions are never called; leave functions out",
                "functions",
            )
        for i, message in enumerate(self.messages):
            for j, part in enumerate(message.content if isinstance(message.content, list) else ()):
                if part.type not in _READ_PARTS:
                    raise InvalidInput(
                        f"messages[{i}].content[{j}]: a {part.type[:64]!r} part is not "
                        "supported; the assistant reads text parts only",
                        "messages",
                    )
        if self.n is not None and self.n != 1:
            raise InvalidInput(
                f"n: the gateway answers with one choice; n must be 1, not {self.n}", "n"
            )
        if self.response_format is not None and self.response_format.type != "text":
            raise InvalidInput(
                f"response_format: {self.response_format.type[:64]!r} is not supported; "
                "the assistant answers in free text (type 'text')",
                "response_format",
            )
        self._check_output()

    def _check_output(self) -> None:
        """Refuse output a run cannot give: log probabilities, audio, a forced tool call."""
        if self.logprobs:
            raise InvalidInput(
                "logprobs: token log probabilities are not available (the answer comes "
                "from the assistant's run); leave logprobs out or false",
                "logprobs",
            )
        if self.top_logprobs:
            raise InvalidInput(
                "top_logprobs: token log probabilities are not available; leave top_logprobs out",
                "top_logprobs",
            )
        for modality in self.modalities or ():
            if modality != "text":
                raise InvalidInput(
                    f"modalities: {modality!r} is not supported; the assistant answers "
                    "in text (modalities ['text'])",
                    "modalities",
                )
        if self.audio is not None:
            raise InvalidInput(
                "audio: audio output is not supported; the assistant answers in text",
                "audio",
            )
        if self.tool_choice not in (None, "auto", "none"):
            choice = self.tool_choice
            shown = repr(choice[:64]) if isinstance(choice, str) else "a named tool"
            raise InvalidInput(
                f"tool_choice: {shown} cannot be honoured: the assistant decides when "
                "its own tools run; use 'auto' or 'none', or leave tool_choice out",
                "tool_choice",
            )


class CompletionUsage(msgspec.Struct, frozen=True, kw_only=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(msgspec.Struct, frozen=True, kw_only=True):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None


class Choice(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(msgspec.Struct, frozen=True, kw_only=True):
    """OpenAI's ``chat.completion`` object."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: str | None = None


class _Delta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None


class _ChunkChoice(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    delta: _Delta
    finish_reason: str | None = None
    logprobs: None = None


class _Chunk(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    id: str
    object: str  # always given: omit_defaults would drop it
    created: int
    model: str
    choices: list[_ChunkChoice]
    usage: CompletionUsage | None = None


class _StopCut:
    """Cuts a text, fed piece by piece, before the first of the ``stop`` sequences.

    The tail that could be the start of a stop sequence is held back until the
    next piece shows whether it is; after a stop sequence nothing more comes out.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        """The part of ``text`` (with what was held back) that is surely before any stop."""
        if self.hit:
            return ""
        if not self.stops:
            return text
        self.pending += text
        found = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if found:
            out, self.pending, self.hit = self.pending[: min(found)], "", True
            return out
        keep = min(self.hold, len(self.pending))
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        """What was held back, at the end of the text."""
        out, self.pending = ("" if self.hit else self.pending), ""
        return out


def _cut(text: str, stops: tuple[str, ...]) -> str:
    cutter = _StopCut(stops)
    return cutter.feed(text) + cutter.flush()


class ModelInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "gateway"


class ModelList(msgspec.Struct, frozen=True, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


def _text(content: str | list[ContentPart] | None) -> str | None:
    if content is None or isinstance(content, str):
        return content
    return "".join(p.text or "" for p in content if p.type in ("text", "input_text"))


def to_history(messages: list[MessageIn]) -> list[ChatMessage]:
    """The client's messages as the engine's history (``developer`` becomes ``system``)."""
    history: list[ChatMessage] = []
    for m in messages:
        calls = [
            ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
            for c in m.tool_calls or []
        ]
        role: Literal["system", "user", "assistant", "tool"] = (
            "system" if m.role == "developer" else m.role
        )
        history.append(
            ChatMessage(
                role=role,
                content=_text(m.content),
                tool_calls=calls,
                tool_call_id=m.tool_call_id,
                name=m.name,
            )
        )
    if history[-1].role not in ("user", "tool"):
        raise InvalidInput("the last message must be from the user", "messages")
    return history


def _finish_reason(incomplete: IncompleteDetails | None) -> str:
    """OpenAI's ``finish_reason`` for a run: ``stop``, or why its answer was cut short
    (``length``: a limit, the model's token limit or ``max_tool_rounds``; ``content_filter``).

    OpenAI has no word for a run stopped after ``max_tool_rounds``; its clients
    know ``length`` as "stopped by a limit, the answer may be unfinished".
    """
    if incomplete is None:
        return "stop"
    if incomplete.reason in ("max_completion_tokens", "max_tool_rounds"):
        return "length"
    return incomplete.reason


def _usage(usage: Usage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


_encoder = msgspec.json.Encoder()
_CHUNK = "chat.completion.chunk"


@post(
    "/v1/chat/completions",
    tags=["openai"],
    status_code=200,
    summary="OpenAI-compatible chat (model = assistant name)",
    responses={200: ResponseSpec(ChatCompletion, description="A chat.completion"), **CHAT_ERRORS},
)
async def chat_completions(
    request: Request[Any, Any, Any], data: JSONBody[CompletionRequest], services: ServicesDep
) -> Response[Any]:
    """Run the assistant named by ``model`` on the client's messages."""
    data.check_supported()
    catalog = services.catalog()
    # An assistant the key may not use is as missing: it cannot tell which names exist.
    if not principal_of(request.scope).may_use(data.model) or data.model not in catalog.assistants:
        raise NotFound("model", data.model)
    cid = correlation_id_of(request.scope)
    handle = services.track(
        await services.the_engine().start_stateless_run(
            assistant=data.model,
            messages=to_history(data.messages),
            correlation_id=cid,
            offer_tools=data.tool_choice != "none",
        )
    )
    structlog.contextvars.bind_contextvars(run_id=handle.run_id)
    completion_id = f"chatcmpl-{handle.run_id}"
    created = int(time.time())
    if data.stream:
        heartbeat = services.settings.sse_heartbeat
        await _unless_client_leaves(
            request, handle, _first_word(handle, heartbeat if heartbeat > 0 else 15.0)
        )
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        chunks = _chunks(
            handle.log,
            completion_id=completion_id,
            created=created,
            model=data.model,
            include_usage=include_usage,
            stops=data.stops(),
            heartbeat=heartbeat,
            correlation_id=cid,
            stop_run=handle.task.cancel,
        )
        return Stream(_owned(chunks, handle), media_type="text/event-stream", headers=SSE_HEADERS)
    stops = data.stops()
    stopper = asyncio.create_task(_stop_at(handle, stops)) if stops else None
    try:
        result = await _unless_client_leaves(request, handle, handle.result())
        stopped = stopper is not None and stopper.done() and stopper.result()
        if result.error is not None and not (stopped and result.error.type == "cancelled"):
            raise_run_error(result.error.type, result.error.message, drained=handle.drained)
    except GatewayError:
        if any(isinstance(event, StepCreated) for event in handle.log.events):
            # Its tools ran (a ticket created, a mail sent): the SDKs would retry a 5xx
            # twice and run them again, so the answer tells them not to.
            request.scope["state"][NO_RETRY_KEY] = True
        raise
    finally:
        if stopper is not None:
            stopper.cancel()
    # A run stopped at a stop sequence has its last message in deltas only.
    text = _joined(handle.log.events) if stopped else "\n\n".join(result.responses)
    cut = _cut(text, stops)
    body = ChatCompletion(
        id=completion_id,
        created=created,
        model=data.model,
        choices=[
            Choice(
                index=0,
                message=AssistantMessage(content=cut),
                # A stop sequence found ends the answer before any cut it had.
                finish_reason=_finish_reason(None if cut != text else result.incomplete_details),
            )
        ],
        usage=_usage(result.usage),
    )
    return Response(body)


def _joined(events: list[Any]) -> str:
    """The run's text as its deltas streamed it, messages joined with a blank line."""
    parts: list[str] = []
    separate = False
    for event in events:
        if isinstance(event, MessageDelta):
            parts.append(("\n\n" + event.delta) if separate else event.delta)
            separate = False
        elif isinstance(event, MessageCompleted):
            separate = True
    return "".join(parts)


async def _stop_at(handle: RunHandle, stops: tuple[str, ...]) -> bool:
    """Cancel the run once its text reaches one of ``stops`` (nothing after it could reach
    the client; the model would go on generating and its tools on running).

    Returns:
        True when it cancelled the run, False when the run ended first.
    """
    cutter = _StopCut(stops)
    separate = False
    async for _, event in handle.log.follow(0):
        if isinstance(event, MessageDelta):
            cutter.feed(("\n\n" + event.delta) if separate else event.delta)
            separate = False
            if cutter.hit:
                handle.task.cancel()
                return True
        elif isinstance(event, MessageCompleted):
            separate = True
    return False


async def _owned(chunks: AsyncIterator[bytes], handle: RunHandle) -> AsyncIterator[bytes]:
    """``chunks``, cancelling the run if they stop before its end (the client left)."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        if not handle.log.done:
            handle.task.cancel()


async def _first_word(handle: RunHandle, wait: float) -> None:
    """Wait, at most ``wait`` seconds, until the run says something: text, a tool call, its end.

    A stream's status is sent with its first byte, so this decides it: a run that fails
    before any text (the model down, a bad request to it) is answered with its error's
    HTTP status, as OpenAI answers a request that fails before its stream starts (the
    SDKs raise the status's exception class and retry a 5xx), not a 200 stream holding
    only an error. After ``wait`` (the heartbeat, so a slow first round costs a client
    no more silence than a keep-alive would), the stream starts anyway.

    Raises:
        GatewayError: the run failed before its first word (see ``raise_run_error``).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            async for _, event in handle.log.follow(0):
                if isinstance(event, RunFailed):
                    raise_run_error(event.error.type, event.error.message, drained=handle.drained)
                if isinstance(event, MessageDelta | StepCreated | RunCompleted):
                    return


async def _unless_client_leaves(
    request: Request[Any, Any, Any], handle: RunHandle, waiting: Awaitable[T]
) -> T:
    """``waiting`` awaited, cancelling the run if the client disconnects meanwhile."""

    async def watch() -> None:
        # The body is read: the next ASGI message is the disconnect, if it comes.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        handle.task.cancel()

    watcher = asyncio.create_task(watch(), name=f"disconnect:{handle.run_id}")
    try:
        return await waiting
    finally:
        watcher.cancel()


async def _usage_at_end(run_log: Any) -> Usage:
    """The run's usage once it ended (cancelled at a stop sequence: what it used so far)."""
    usage = Usage()
    async for _, event in run_log.follow(0):
        if isinstance(event, Metadata):
            usage = event.usage
    return usage


def _error_frame(error_type: str, message: str, *, correlation_id: str) -> bytes:
    """A failed run's error as OpenAI sends one in a started stream (client-safe text)."""
    try:
        raise_run_error(error_type, message)
    except GatewayError as exc:
        _, type_, safe = status_and_type(exc)
    error = {"message": safe, "type": type_, "code": None, "correlation_id": correlation_id}
    return b"data: " + _encoder.encode({"error": error}) + b"\n\n"


async def _chunks(
    run_log: Any,
    *,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
    stops: tuple[str, ...] = (),
    heartbeat: float,
    correlation_id: str,
    stop_run: Callable[[], object] = lambda: None,
) -> AsyncIterator[bytes]:
    """The run's events as chunks; at a stop sequence, ``stop_run`` ends the run (the
    rest of its answer is cut anyway) and the stream ends once it has."""

    def frame(delta: _Delta, finish: str | None = None) -> bytes:
        chunk = _Chunk(
            id=completion_id,
            object=_CHUNK,
            created=created,
            model=model,
            choices=[_ChunkChoice(index=0, delta=delta, finish_reason=finish)],
        )
        return b"data: " + _encoder.encode(chunk) + b"\n\n"

    yield frame(_Delta(role="assistant", content=""))
    usage = Usage()
    incomplete: IncompleteDetails | None = None
    cutter = _StopCut(stops)
    separate = False
    failed: tuple[str, str] | None = None
    try:
        async for item in follow(run_log, heartbeat=heartbeat):
            if item is None:
                yield b": keep-alive\n"
                continue
            event = item[1]
            if isinstance(event, MessageDelta):
                text = cutter.feed(("\n\n" + event.delta) if separate else event.delta)
                separate = False
                if text:
                    yield frame(_Delta(content=text))
                if cutter.hit:
                    stop_run()
                    usage = await _usage_at_end(run_log)
                    break
            elif isinstance(event, MessageCompleted):
                separate = True
            elif isinstance(event, RunCompleted):
                usage, incomplete = event.usage, event.incomplete_details
            elif isinstance(event, RunFailed):
                failed = (event.error.type, event.error.message)
    except Exception as exc:
        log.error("completion_stream_failed", exc_info=exc)
        failed = ("internal_error", "the stream failed")
    if failed is not None:
        yield _error_frame(*failed, correlation_id=correlation_id)
        yield b"data: [DONE]\n\n"
        return
    rest = cutter.flush()
    if rest:
        yield frame(_Delta(content=rest))
    yield frame(_Delta(), _finish_reason(None if cutter.hit else incomplete))
    if include_usage:
        chunk = _Chunk(
            id=completion_id,
            object=_CHUNK,
            created=created,
            model=model,
            choices=[],
            usage=_usage(usage),
        )
        yield b"data: " + _encoder.encode(chunk) + b"\n\n"
    yield b"data: [DONE]\n\n"


@get("/v1/models", tags=["openai"], responses={401: CHAT_ERRORS[401], 503: CHAT_ERRORS[503]})
async def list_models(request: Request[Any, Any, Any], services: ServicesDep) -> ModelList:
    """The assistants this key may use, as OpenAI models."""
    catalog = services.catalog()
    principal = principal_of(request.scope)
    created = int(catalog.loaded_at)
    return ModelList(
        data=[
            ModelInfo(id=name, created=created)
            for name in sorted(catalog.assistants)
            if principal.may_use(name)
        ]
    )


@get(
    "/v1/models/{model:str}",
    tags=["openai"],
    responses={status: CHAT_ERRORS[status] for status in (401, 404, 503)},
)
async def get_model(
    request: Request[Any, Any, Any], services: ServicesDep, model: FromPath[str]
) -> ModelInfo:
    """One assistant, as an OpenAI model (``client.models.retrieve``).

    Raises:
        NotFound: no assistant has that name, or this key may not use it (the same
            404, as OpenAI answers an unknown model: a key cannot tell which exist).
    """
    catalog = services.catalog()
    if not principal_of(request.scope).may_use(model) or model not in catalog.assistants:
        raise NotFound("model", model[:64])
    return ModelInfo(id=model, created=int(catalog.loaded_at))
