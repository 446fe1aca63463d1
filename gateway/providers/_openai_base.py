"""What the two OpenAI-SDK providers share: the client, retries, and safe errors.

Private to ``gateway.providers``; imports ``gateway.errors``, ``gateway._registry``,
``gateway.providers.base`` and the ``openai`` SDK. Each API module
(``openai_chat``, ``openai_responses``) subclasses ``OpenAIProvider``, says
where it posts (``path``), what the SDK decodes each streamed item to
(``stream_item``), the request body (``_body``) and how a ``StreamReader``
turns items into model events, and registers itself with ``register_api``
under the manifest's ``api:`` value, the way action kinds register themselves.

The request goes through the SDK's client (``AsyncOpenAI.post``: auth,
retries, timeouts, typed errors, in-stream error events) but not through the
per-resource ``create`` wrappers, whose recursive parameter transform costs
about a quarter of a call and changes nothing in the plain JSON built here.

Retries: the SDK retries 408/409/429/5xx and connection errors and timeouts
before a response starts (exponential backoff from 0.5 s, capped at 8 s, with
up to 25 % jitter, honouring ``Retry-After``). A request that fails
before its response starts is final once the SDK's retries are spent (never
retried again here). A stream that breaks *after*
the response started but before the first event reached the engine (a cut
connection, a missing final event, an error event in the stream, an item
that is not UTF-8, not JSON or not of the expected shape: ``_decoded``) is
retried here with the same backoff, up to ``max_retries`` more attempts
(each with its own SDK retries); once an event has been handed out, a
failure is final (a retry would duplicate text the client already saw).
A call, its retries included, that has not finished its answer within
``max_stream_seconds`` (``MAX_STREAM_SECONDS``; ``timeout`` is per wait, which a
stream kept alive never meets) fails, not retried, its stream closed.
An answer longer than ``max_answer_chars`` (``MAX_ANSWER_CHARS``) is cut: the
stream is closed and the call ends with ``finish_reason`` ``length``, its usage
estimated (the server's counts come last, never read: ``_estimated_usage``).
A JSON body answered to a streamed request is read whole first, so it cannot
be cut: past a byte cap derived from ``max_answer_chars`` (``_read_json``), or
with an answer over it, the call fails (``TooLarge``, never retried). One event of
a stream has the same byte cap, and an error body is read only in part: both are
bounded as the SDK reads them (``_bounded_client``).
Every failure ends as ``ProviderError`` whose message names the provider and
what went wrong, with keys redacted (``api_key``, the user and password in
``base_url``, and the values of ``default_headers`` named like credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import urllib.parse
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, ClassVar, Protocol, TypeVar, cast

import httpx
import msgspec
import openai
import structlog
from openai._types import RequestOptions

from gateway._registry import add_class
from gateway.errors import ProviderError
from gateway.providers.base import ModelDone, ModelEvent, ModelRequest, Usage

__all__ = [
    "API_KINDS",
    "MAX_ANSWER_CHARS",
    "MAX_STREAM_SECONDS",
    "IncompleteStream",
    "OpenAIProvider",
    "ProviderConfig",
    "StreamFailed",
    "StreamReader",
    "register_api",
    "sendable_arguments",
]

log = structlog.get_logger("gateway.providers")

try:  # openai >= 3 reads through httpx2, a fork of httpx with exception classes of its own
    import httpx2

    _READ_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx2.HTTPError)
except ImportError:  # pragma: no cover - openai 1.x and 2.x read through httpx
    _READ_ERRORS = (httpx.HTTPError,)
"""What reading a response body the SDK opened raises when the connection fails."""

MAX_ANSWER_CHARS = 2_000_000
"""How many characters of text, reasoning and tool calls (names, ids, arguments) one
answer may stream.

Far above what any model writes in one answer (128k output tokens are about
500,000 characters), so only a runaway stream meets it: a local server
generating forever (no token limit, a model in a loop, a reasoning model
thinking in circles) or a broken proxy. Without it such an answer grew in
memory, in the run's log and in the store, and held its thread (409) for as
long as the server went on."""

MAX_STREAM_SECONDS = 600.0
"""How long one model call may take in all, by default (``max_stream_seconds``).

``timeout`` is the SDK's, per request and per read: a server that keeps a
stream alive without ever finishing it (an empty chunk or an SSE comment every
second, text trickled slowly) never meets it, and held the run and its thread
(409 for the next message) for as long as it went on. Ten minutes is more than
an answer of the longest reasoning models takes when streamed."""

_INITIAL_DELAY = 0.5
_MAX_DELAY = 8.0
_KEY_PATTERN = re.compile(r"\b(sk|rk|pk|key)-[A-Za-z0-9_\-*]{6,}")
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|password", re.IGNORECASE)
# What the SDK's own ``create`` methods send: the API key as a bearer token.
_BEARER: RequestOptions = {"security": {"bearer_auth": True}}


class ProviderConfig:
    """How to reach one model server (built from a manifest or the settings)."""

    __slots__ = (
        "api_key",
        "base_url",
        "default_headers",
        "max_answer_chars",
        "max_retries",
        "max_stream_seconds",
        "name",
        "timeout",
    )

    def __init__(
        self,
        *,
        name: str,
        base_url: str | None,
        api_key: str | None,
        timeout: float = 60.0,
        max_retries: int = 2,
        default_headers: dict[str, str] | None = None,
        max_answer_chars: int = MAX_ANSWER_CHARS,
        max_stream_seconds: float = MAX_STREAM_SECONDS,
    ) -> None:
        """Describe a server; ``base_url`` None means OpenAI's own endpoint.

        ``max_answer_chars``: one answer's text, reasoning and tool calls;
        past it the stream is closed and the answer ends cut (``finish_reason``
        ``length``), see ``MAX_ANSWER_CHARS``; a JSON body answered instead of
        a stream over it fails the call (``_read_json``).

        ``max_stream_seconds``: how long one model call (its retries included)
        may take in all to finish its answer, see ``MAX_STREAM_SECONDS``;
        ``timeout`` bounds each wait for the server (a request, one read).
        """
        self.name = name
        self.base_url = base_url
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.default_headers = dict(default_headers or {})
        self.max_answer_chars = max_answer_chars
        self.max_stream_seconds = max_stream_seconds


class TooLarge(Exception):
    """A response is over its bounds: a JSON body answered to a streamed request
    (``_read_json``), or one event of a stream (``_bounded_events``).

    Never retried: a server that wrote such an answer once would write it again.
    """


class IncompleteStream(Exception):
    """The server ended a stream without its final event (no finish reason / completion)."""


class _RequestFailed(Exception):
    """The request itself failed (no stream started): the SDK has already retried it."""

    def __init__(self, error: openai.OpenAIError) -> None:
        super().__init__(str(error))
        self.error = error


class _Overdue(Exception):
    """The call did not end within ``max_stream_seconds`` (``_before``)."""


_T = TypeVar("_T")


async def _before(deadline: float, step: Awaitable[_T]) -> _T:
    """``await step``, unless the loop's clock passes ``deadline`` first.

    Only this wait is bounded, not the consumer's work between two events: a
    timeout around the whole generator would cancel whatever the engine awaits
    at that moment instead.

    Raises:
        _Overdue: the deadline passed (``step`` is cancelled; a stream's
            ``finally`` closes its response).
    """
    scope = asyncio.timeout_at(deadline)
    try:
        async with scope:
            return await step
    except TimeoutError:
        if scope.expired():
            raise _Overdue from None
        raise


class StreamFailed(Exception):
    """The server reported an error inside a started stream (an SSE error event)."""

    def __init__(self, message: str) -> None:
        super().__init__(message or "the response failed")
        self.message = message or "the response failed"


class StreamReader(Protocol):
    """Turns one call's streamed items into model events."""

    size: int
    """Characters of text, reasoning and tool calls (names, ids, arguments) read so
    far (``max_answer_chars``)."""

    @property
    def whole(self) -> bool:
        """True once the item that ends the answer (a finish reason, the completed
        response) was read: what may follow (usage, ``[DONE]``) adds no text or call."""
        ...

    def feed(self, item: Any) -> list[ModelEvent]:
        """The events one streamed item carries (raises ``StreamFailed`` on an error item)."""
        ...

    def finish(self) -> list[ModelEvent]:
        """The events after the stream ended: tool calls, then ``ModelDone``.

        Raises:
            IncompleteStream: the stream ended without its final item.
        """
        ...


_CHARS_PER_TOKEN = 4
"""OpenAI's rule of thumb for English text; only used where the server never said."""


def _estimated_usage(body: dict[str, Any], answer_chars: int) -> Usage:
    """The usage of a call cut at ``max_answer_chars``, estimated from its sizes.

    The server sends the real counts in its last chunk, which a cut stream never
    reads; a runaway answer (the costliest kind) reported zero tokens, so the
    run's usage, its metadata and the metrics counted nothing for it. The
    estimate is ``_CHARS_PER_TOKEN`` characters a token of the request's JSON
    body (prompt) and of the answer read (completion).
    """
    prompt = -(-len(msgspec.json.encode(body)) // _CHARS_PER_TOKEN)
    completion = -(-answer_chars // _CHARS_PER_TOKEN)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )


class OpenAIProvider:
    """Base of the SDK-backed providers: owns the ``AsyncOpenAI`` client."""

    api: ClassVar[str] = ""
    path: ClassVar[str] = ""
    stream_item: ClassVar[Any] = object
    """What the SDK decodes each streamed item to (``object``: the JSON as is)."""

    def __init__(self, config: ProviderConfig) -> None:
        """Create the client (no connection is opened until the first call)."""
        self.name = config.name
        self.config = config
        # Pass key and URL explicitly: the SDK would otherwise read OPENAI_API_KEY
        # and OPENAI_BASE_URL itself and send the server's OpenAI key to any
        # `kind: provider` endpoint that declares no key.
        self.client = openai.AsyncOpenAI(
            api_key=config.api_key or "not-needed",
            base_url=config.base_url or "https://api.openai.com/v1",
            timeout=config.timeout,
            max_retries=config.max_retries,
            default_headers=config.default_headers or None,
            http_client=_bounded_client(_max_body_bytes(config.max_answer_chars)),
        )

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        """Stream one call, retrying a broken stream until its first event; see module doc.

        The call, its retries included, must end within ``max_stream_seconds``;
        only the waits for the server count (not the engine's work between events).
        """
        deadline = asyncio.get_running_loop().time() + self.config.max_stream_seconds
        attempt = 0
        while True:
            handed_out = False
            try:
                # aclosing: when the engine stops early, the HTTP stream closes now, not at GC.
                async with contextlib.aclosing(self._stream_once(request)) as events:
                    while (event := await _before(deadline, anext(events, None))) is not None:
                        handed_out = True
                        yield event
                return
            except _Overdue:
                # Not retried: a server that trickled for this long would do it again.
                raise self._failed(_Overdue()) from None
            except _RequestFailed as failed:
                # The SDK's own retries (``max_retries``) are spent: retrying here too
                # would make a server that is down or hangs cost (max_retries + 1)² tries.
                raise self._failed(failed.error) from None
            except (openai.OpenAIError, IncompleteStream, StreamFailed, TooLarge) as exc:
                retryable = _mid_stream(exc) and not handed_out
                if retryable and attempt < self.config.max_retries:
                    attempt += 1
                    delay = _backoff(attempt)
                    log.warning(
                        "provider stream broke before its first event; retrying",
                        provider=self.name,
                        attempt=attempt,
                        delay_s=round(delay, 3),
                        error=type(exc).__name__,
                    )
                    try:
                        await _before(deadline, asyncio.sleep(delay))
                    except _Overdue:
                        raise self._failed(_Overdue()) from None
                    continue
                raise self._failed(exc) from None

    def _failed(self, exc: BaseException) -> ProviderError:
        """Log the call's final failure; the ``ProviderError`` to raise for it."""
        error = self._error(exc)
        log.warning(
            "provider call failed", provider=self.name, status=error.status, error=error.message
        )
        return error

    async def _stream_once(self, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        body: dict[str, Any] = {"model": request.model, "stream": True}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        body.update(self._body(request))
        try:
            stream = cast(
                "openai.AsyncStream[Any]",
                await self.client.post(
                    self.path,
                    cast_to=object,
                    body=body,
                    options=_BEARER,
                    stream=True,
                    stream_cls=openai.AsyncStream[self.stream_item],  # type: ignore[name-defined]
                ),
            )
        except openai.OpenAIError as exc:
            raise _RequestFailed(exc) from None
        reader = self._reader()
        limit = self.config.max_answer_chars
        if stream.response.headers.get("content-type", "").startswith("application/json"):
            # Asked to stream, the server answered one JSON body (SGLang did with tools).
            # Read whole before any of it is handed out, it cannot be cut like a stream:
            # one over the bounds fails (a half answer would be a made-up one).
            events: list[ModelEvent] = []
            for item in self._json_items(await _read_json(stream, limit)):
                events += reader.feed(item)
            if reader.size > limit:
                raise TooLarge(
                    "the server answered one JSON body instead of the event stream asked "
                    f"for, with an answer over max_answer_chars ({limit:,} characters)"
                )
            for event in [*events, *reader.finish()]:
                yield event
            return
        try:
            # Read to the end even after the final item: a fully read response
            # returns its connection to the pool for the next call.
            async with contextlib.aclosing(_decoded(stream)) as items:
                async for item in items:
                    for event in reader.feed(item):
                        yield event
                    if reader.size > limit:
                        # A runaway answer: closing the stream (``finally``) stops the server
                        # generating; it ends as cut by a token limit, its tool calls unrun.
                        usage = _estimated_usage(body, reader.size)
                        log.warning(
                            "provider answer over max_answer_chars; cut",
                            provider=self.name,
                            max_answer_chars=limit,
                            estimated_prompt_tokens=usage.prompt_tokens,
                            estimated_completion_tokens=usage.completion_tokens,
                        )
                        yield ModelDone(usage, "length")
                        return
        except openai.APIConnectionError:
            if not reader.whole:
                raise
            # Cut after the answer was whole (a proxy dropping the connection before the
            # usage chunk or ``[DONE]``): the answer stands, without what was left.
            log.info("provider stream cut after its answer was whole", provider=self.name)
        finally:
            await stream.close()
        for event in reader.finish():
            yield event

    def _body(self, request: ModelRequest) -> dict[str, Any]:
        """The API's own request fields (``model``, ``stream``, ``temperature`` are set)."""
        raise NotImplementedError

    def _json_items(self, body: Any) -> list[Any]:
        """The stream items a non-streamed JSON answer stands for (``feed`` reads them).

        Here only its error, if it holds one; an API whose servers are known to
        answer so converts the answer (``openai_chat``).

        Raises:
            StreamFailed: the body is an error, or no answer this API can read.
        """
        error = _body_message(body.get("error")) if isinstance(body, dict) else ""
        if error:
            raise StreamFailed(error)
        raise StreamFailed("the server answered one JSON body, not the event stream asked for")

    def _reader(self) -> StreamReader:
        """A reader for one call's stream."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the client's connection pool."""
        await self.client.close()

    def _error(self, exc: BaseException) -> ProviderError:
        """A ``ProviderError`` naming what failed, with no keys in it."""
        prefix = f"model provider {self.name!r}"
        if isinstance(exc, _Overdue):
            seconds = self.config.max_stream_seconds
            return ProviderError(f"{prefix}: no complete answer within {seconds:g} s")
        if isinstance(exc, IncompleteStream | TooLarge):
            return ProviderError(f"{prefix}: {exc}")
        if isinstance(exc, StreamFailed):
            return ProviderError(f"{prefix} reported an error: {self._redact(exc.message)}")
        if isinstance(exc, openai.APITimeoutError):
            return ProviderError(f"{prefix} timed out after {self.config.timeout:g}s")
        if isinstance(exc, openai.APIConnectionError):
            return ProviderError(f"{prefix}: connection failed or the stream was cut")
        if isinstance(exc, openai.APIStatusError):
            detail = _body_message(exc.body) or exc.response.reason_phrase
            return ProviderError(
                f"{prefix} answered HTTP {exc.status_code}: {self._redact(detail)}",
                status=exc.status_code,
            )
        if isinstance(exc, openai.APIError):
            return ProviderError(f"{prefix} reported an error: {self._redact(exc.message)}")
        return ProviderError(f"{prefix} failed: {type(exc).__name__}")

    def _redact(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "[redacted]")
        text = _KEY_PATTERN.sub("[redacted]", text)
        return text[:300]

    def _secrets(self) -> list[str]:
        """The key, the user and password of ``base_url`` (``https://user:pass@proxy/v1``,
        ``https://TOKEN@host/v1``: proxies echo the URL they were called with), and the
        values of headers named like credentials (Azure's ``api-key``,
        ``Authorization``...), longest first; shorter than 6 characters are placeholders,
        and would mangle text."""
        found = [self.config.api_key or ""]
        url = urllib.parse.urlsplit(self.config.base_url or "")
        found += [
            unquoted
            for part in (url.username, url.password)
            if part
            for unquoted in (part, urllib.parse.unquote(part))
        ]
        for name, value in self.config.default_headers.items():
            if _SECRET_HEADER.search(name):
                found += [value, *value.split()[-1:]]  # "Bearer KEY": KEY alone too
        return sorted({v for v in found if len(v) >= 6}, key=len, reverse=True)


def sendable_arguments(arguments: str) -> str:
    """A history call's ``arguments`` as sent back to the model: ``"{}"`` unless a JSON object.

    The history keeps what the model wrote, invalid JSON included (its call
    failed with ``invalid_arguments``, and the result says why). Servers that
    parse every call of the history refuse a request holding such a call
    (Ollama: "invalid tool call arguments"; vLLM's chat templates), which
    would fail every later request of the thread.
    """
    try:
        parsed = msgspec.json.decode(arguments)
    except (msgspec.DecodeError, RecursionError):
        return "{}"
    return arguments if isinstance(parsed, dict) else "{}"


_JSON_BYTES_PER_CHAR = 6
"""Bytes of a JSON body per character of its answer, at most: ``\\uXXXX`` (servers
that escape all non-ASCII text); UTF-8 is at most 4, an escaped ``"`` 2."""
_JSON_ENVELOPE_BYTES = 65_536
"""Room in a JSON body for what is not the answer (ids, roles, usage, call names)."""
_DECODE_ON_LOOP_BYTES = 1 << 20
"""A JSON body larger than this is decoded in a worker thread, not on the event loop."""


async def _read_json(stream: openai.AsyncStream[Any], max_answer_chars: int) -> Any:
    """The whole JSON body of a response that was asked to stream (and closes it).

    The body is read only up to ``max_answer_chars`` times ``_JSON_BYTES_PER_CHAR``
    plus ``_JSON_ENVELOPE_BYTES`` (decompressed), so a runaway or broken server
    cannot fill the memory with it, and a large body is decoded off the event loop.

    Raises:
        TooLarge: the body is over that size.
        StreamFailed: the body is not JSON.
        openai.APIConnectionError: reading it failed (as the SDK reports a cut stream).
    """
    response = stream.response
    cap = _max_body_bytes(max_answer_chars)
    chunks: list[bytes] = []
    size = 0
    try:
        declared = response.headers.get("content-length", "")
        size = int(declared) if declared.isdigit() else 0
        if size <= cap:
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    break
                chunks.append(chunk)
    except _READ_ERRORS as exc:
        raise openai.APIConnectionError(request=response.request) from exc
    finally:
        await stream.close()
    if size > cap:
        raise TooLarge(
            f"the server answered one JSON body of more than {cap:,} bytes instead of the "
            "event stream asked for, too large for an answer within max_answer_chars "
            f"({max_answer_chars:,} characters)"
        )
    raw = b"".join(chunks).removeprefix(b"\xef\xbb\xbf")  # a BOM, as json.loads allowed
    try:
        if len(raw) > _DECODE_ON_LOOP_BYTES:
            return await asyncio.to_thread(msgspec.json.decode, raw)
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        raise StreamFailed("the server answered malformed JSON") from None


def _max_body_bytes(max_answer_chars: int) -> int:
    """The most bytes one JSON body or one streamed event of an answer can need."""
    return max_answer_chars * _JSON_BYTES_PER_CHAR + _JSON_ENVELOPE_BYTES


_ERROR_BODY_BYTES = 65_536
"""How much of an error response's body is read. The SDK reads it whole to build its
error, of which only the message is used (cut at 300 characters, ``_redact``)."""
_EVENT_END = (b"\r\n\r\n", b"\n\n", b"\r\r", b"\n\r\n", b"\r\n\n")
"""An empty line after a line's end, in the line ends SSE allows: where an event ends."""


def _bounded_client(max_event_bytes: int) -> Any:
    """The SDK's default HTTP client, bounding what a response can make it hold in memory.

    The SDK's event-stream decoder holds a ``data:`` line, and an event's lines,
    until the event ends; it reads an error body whole. A broken or hostile server
    (an event that never ends, a 1 GB error page) would fill the gateway's memory
    before ``max_answer_chars`` could cut anything: every response's decoded body is
    bounded as the SDK reads it, in a response hook (which runs before the body is
    read): an event over ``max_event_bytes`` fails the call (``TooLarge``), an error
    body is read up to ``_ERROR_BODY_BYTES``. A JSON body has its own cap
    (``_read_json``).
    """

    async def bound(response: Any) -> None:
        read = response.aiter_bytes
        if response.status_code >= 400:
            response.aiter_bytes = lambda *_: _first_bytes(response, read, _ERROR_BODY_BYTES)
        elif response.headers.get("content-type", "").startswith("text/event-stream"):
            response.aiter_bytes = lambda *_: _bounded_events(read, max_event_bytes)

    return openai.DefaultAsyncHttpxClient(event_hooks={"response": [bound]})


async def _first_bytes(response: Any, read: Any, limit: int) -> AsyncIterator[bytes]:
    """The first ``limit`` bytes of ``read()``; the response is closed past them."""
    size = 0
    async for chunk in read():
        yield chunk[: limit - size]
        size += len(chunk)
        if size >= limit:
            await response.aclose()  # the rest is never read: drop the connection
            return


async def _bounded_events(read: Any, limit: int) -> AsyncIterator[bytes]:
    """``read()``'s chunks, failing once one event has grown past ``limit`` bytes.

    Raises:
        TooLarge: an event is longer than ``limit`` bytes.
    """
    pending = 0  # bytes since the last event ended
    tail = b""  # the last bytes seen: an event's end may straddle two chunks
    async for chunk in read():
        data = tail + chunk
        ends = [at + len(mark) for mark in _EVENT_END if (at := data.rfind(mark)) >= 0]
        pending = len(data) - max(ends) if ends else pending + len(chunk)
        if pending > limit:
            raise TooLarge(f"the server streamed an event of more than {limit:,} bytes")
        tail = data[-3:]
        yield chunk


async def _decoded(stream: openai.AsyncStream[Any]) -> AsyncGenerator[Any, None]:
    """``stream``'s items, the SDK's decoding errors as ``StreamFailed``.

    The SDK decodes each line as UTF-8 and parses each ``data:`` line with
    ``json.loads``, and lets their ``ValueError`` escape: it crashed the run
    (500 ``internal_error``) instead of failing the call as the server's fault.
    Only the SDK's iteration is covered here, not what the reader does with an item.

    Raises:
        StreamFailed: a line is not UTF-8, or not JSON, or an item not of its type.
    """
    iterator = aiter(stream)
    while True:
        try:
            item = await anext(iterator)
        except StopAsyncIteration:
            return
        except UnicodeDecodeError:
            raise StreamFailed("the stream carried text that is not UTF-8") from None
        except json.JSONDecodeError:
            raise StreamFailed("the stream carried malformed JSON") from None
        except ValueError as exc:  # pydantic's ValidationError building a typed item
            raise StreamFailed(
                f"the stream carried a malformed item ({type(exc).__name__})"
            ) from None
        yield item


def _mid_stream(exc: BaseException) -> bool:
    """Whether ``exc`` broke a started stream (worth a retry if nothing was handed out).

    Status errors are excluded: the SDK already judged and retried those.
    A bare ``openai.APIError`` is the SDK's report of an in-stream error event.
    """
    if isinstance(exc, openai.APIStatusError):
        return False
    if type(exc) is openai.APIError:
        return True
    return isinstance(exc, openai.APIConnectionError | IncompleteStream | StreamFailed)


def _backoff(attempt: int) -> float:
    """The SDK's schedule: 0.5 s doubling, capped at 8 s, minus up to 25 % jitter."""
    delay = min(_INITIAL_DELAY * 2.0 ** (attempt - 1), _MAX_DELAY)
    return delay * (1 - 0.25 * random.random())  # noqa: S311 - jitter, not security


def _body_message(body: object) -> str:
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str):
            return message
        inner = body.get("error")
        if isinstance(inner, dict):
            return _body_message(inner)
        if isinstance(inner, str):
            return inner
    if isinstance(body, str):
        return body
    return ""


API_KINDS: dict[str, type[OpenAIProvider]] = {}
"""``api:`` value -> provider class, filled by ``register_api`` at import."""

_P = TypeVar("_P", bound=type[OpenAIProvider])


def register_api(cls: _P) -> _P:
    """Class decorator: register a provider class under ``cls.api``.

    Raises:
        ValueError: if ``api`` is empty or already registered by another class.
    """
    add_class(API_KINDS, cls.api, cls, what="provider api", attribute="api")
    return cls
