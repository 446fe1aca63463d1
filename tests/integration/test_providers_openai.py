"""The SDK providers over real HTTP against FakeOpenAI, for Chat Completions and Responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.errors import ProviderError
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Assistant
from gateway.manifests.model import Provider as ProviderManifest
from gateway.providers._openai_base import API_KINDS, OpenAIProvider, ProviderConfig
from gateway.providers.base import (
    ChatMessage,
    ModelDone,
    ModelEvent,
    ModelRequest,
    TextDelta,
    ToolCall,
    ToolCallRequest,
    Usage,
)
from gateway.providers.registry import ProviderRegistry
from gateway.settings import Settings
from gateway.testing.fake_openai import QUIRKS, FakeOpenAI

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
REQUEST = ModelRequest(
    model="test-model",
    instructions="Be brief.",
    messages=[ChatMessage(role="user", content="weather in Paris?")],
    tools=[WEATHER],
    temperature=0.2,
)
APIS = ["chat", "responses"]


def _provider(fake: FakeOpenAI, api: str, **options: float) -> OpenAIProvider:
    config = ProviderConfig(
        name="fake",
        base_url=fake.base_url,
        api_key="test-key-123456",
        timeout=float(options.get("timeout", 10.0)),
        max_retries=int(options.get("max_retries", 2)),
    )
    return API_KINDS[api](config)


@pytest.fixture(params=APIS)
async def provider(
    request: pytest.FixtureRequest, fake: FakeOpenAI
) -> AsyncIterator[OpenAIProvider]:
    made = _provider(fake, request.param)
    yield made
    await made.aclose()


async def _collect(provider: OpenAIProvider, request: ModelRequest = REQUEST) -> list[ModelEvent]:
    return [event async for event in provider.stream(request)]


def _text(events: list[ModelEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def _calls(events: list[ModelEvent]) -> list[tuple[str, str, dict[str, object]]]:
    return [
        (e.call.id, e.call.name, json.loads(e.call.arguments))
        for e in events
        if isinstance(e, ToolCallRequest)
    ]


async def test_plain_answer_streams_deltas_and_usage(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    """A text answer arrives as several deltas, then ModelDone with the server's usage."""
    fake.add_text("It is sunny in Paris today.", usage=(42, 7))
    events = await _collect(provider)
    assert sum(isinstance(e, TextDelta) for e in events) > 1
    assert _text(events) == "It is sunny in Paris today."
    assert events[-1] == ModelDone(
        Usage(prompt_tokens=42, completion_tokens=7, total_tokens=49), "stop"
    )


async def test_request_shape_per_api(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    """Each API gets its own request shape: messages + tools, or input items + flat tools."""
    await _collect(provider)
    sent = fake.model_requests()[0]
    assert sent.headers["authorization"] == "Bearer test-key-123456"
    body = sent.body
    assert body["model"] == "test-model"
    assert body["stream"] is True
    assert body["temperature"] == 0.2
    if provider.api == "chat":
        assert sent.path == "/v1/chat/completions"
        assert body["stream_options"] == {"include_usage": True}
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert body["tools"] == [WEATHER]
    else:
        assert sent.path == "/v1/responses"
        assert body["instructions"] == "Be brief."
        assert body["store"] is False
        assert body["input"] == [{"role": "user", "content": "weather in Paris?"}]
        assert body["tools"][0]["name"] == "get_weather"


async def test_one_tool_call(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    """A single tool call is emitted complete, with finish_reason tool_calls."""
    [call_id] = fake.add_tool_calls([("get_weather", {"city": "Paris"})])
    events = await _collect(provider)
    assert _calls(events) == [(call_id, "get_weather", {"city": "Paris"})]
    assert isinstance(events[-1], ModelDone)
    assert events[-1].finish_reason == "tool_calls"


@pytest.mark.parametrize("reason", ["length", "content_filter"])
async def test_a_cut_answer_keeps_its_finish_reason(
    provider: OpenAIProvider, fake: FakeOpenAI, reason: str
) -> None:
    """An answer cut short (token limit, filter) reports why: as text, and with tool calls."""
    fake.add_text("The weather in Par", finish_reason=reason)
    events = await _collect(provider)
    assert _text(events) == "The weather in Par"
    assert isinstance(events[-1], ModelDone) and events[-1].finish_reason == reason
    # Cut inside its second call: the calls come out, the reason is not tool_calls.
    fake.add_tool_calls(
        [("get_weather", {"city": "Paris"}), ("get_weather", '{"city": "Ro')], finish_reason=reason
    )
    events = await _collect(provider)
    assert [e.call.arguments for e in events if isinstance(e, ToolCallRequest)] == [
        '{"city": "Paris"}',
        '{"city": "Ro',
    ]
    assert isinstance(events[-1], ModelDone) and events[-1].finish_reason == reason


async def test_parallel_tool_calls_with_text(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    """Parallel calls come out in order, each complete, after the text that preceded them."""
    ids = fake.add_tool_calls(
        [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome, Italy"})],
        text="Checking both.",
    )
    events = await _collect(provider)
    assert _text(events) == "Checking both."
    assert _calls(events) == [
        (ids[0], "get_weather", {"city": "Paris"}),
        (ids[1], "get_weather", {"city": "Rome, Italy"}),
    ]
    assert isinstance(events[-4], TextDelta)


async def test_tool_results_are_sent_back(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    """History with a call and its result reaches the server in the API's own form."""
    history = ModelRequest(
        model="m",
        instructions="",
        messages=[
            ChatMessage(role="user", content="weather in Paris?"),
            ChatMessage(
                role="assistant",
                tool_calls=[ToolCall(id="c1", name="get_weather", arguments='{"city": "Paris"}')],
            ),
            ChatMessage(role="tool", tool_call_id="c1", content='{"temp": 21}'),
        ],
    )
    fake.add_text("21 degrees.")
    assert _text(await _collect(provider, history)) == "21 degrees."
    body = fake.model_requests()[0].body
    if provider.api == "chat":
        assert body["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "c1",
            "content": '{"temp": 21}',
        }
    else:
        assert body["input"][-1] == {
            "type": "function_call_output",
            "call_id": "c1",
            "output": '{"temp": 21}',
        }


@pytest.mark.parametrize("quirk", sorted(QUIRKS))
async def test_chat_streaming_quirks(fake: FakeOpenAI, quirk: str) -> None:
    """Each way compatible servers stream tool calls still yields the same parallel calls."""
    fake.set_quirks(quirk)
    ids = fake.add_tool_calls(
        [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo"})], usage=(5, 9)
    )
    provider = _provider(fake, "chat")
    try:
        events = await _collect(provider)
    finally:
        await provider.aclose()
    assert _calls(events) == [
        (ids[0], "get_weather", {"city": "Paris"}),
        (ids[1], "get_weather", {"city": "Oslo"}),
    ]
    assert events[-1] == ModelDone(
        Usage(prompt_tokens=5, completion_tokens=9, total_tokens=14), "tool_calls"
    )


async def test_all_quirks_at_once(fake: FakeOpenAI) -> None:
    """No index, all calls on index 0 and finish_reason stop together still assemble."""
    fake.set_quirks("no_index", "all_index_zero", "stop_with_tool_calls", "usage_with_finish")
    ids = fake.add_tool_calls([("a", {"x": 1}), ("b", {"y": 2}), ("c", {})])
    provider = _provider(fake, "chat")
    try:
        events = await _collect(provider)
    finally:
        await provider.aclose()
    assert _calls(events) == [(ids[0], "a", {"x": 1}), (ids[1], "b", {"y": 2}), (ids[2], "c", {})]


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_retries_then_success(
    provider: OpenAIProvider, fake: FakeOpenAI, status: int
) -> None:
    """Retryable statuses are retried by the SDK and the answer still arrives."""
    fake.fail_next(status, times=2)
    fake.add_text("finally")
    assert _text(await _collect(provider)) == "finally"
    assert len(fake.model_requests()) == 3


async def test_retries_exhausted_raise_provider_error(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    """After max_retries the failure is a ProviderError carrying the status."""
    fake.fail_next(502, times=5, message="upstream exploded")
    with pytest.raises(ProviderError) as info:
        await _collect(provider)
    assert info.value.status == 502
    assert "upstream exploded" in info.value.message
    assert "fake" in info.value.message
    assert len(fake.model_requests()) == 3


async def test_client_errors_are_not_retried(provider: OpenAIProvider, fake: FakeOpenAI) -> None:
    """A 400 is final at once, and the error message never repeats a key."""
    fake.fail_next(400, message="bad key sk-proj-abcdef1234567890 and test-key-123456")
    with pytest.raises(ProviderError) as info:
        await _collect(provider)
    assert info.value.status == 400
    assert "abcdef1234567890" not in info.value.message
    assert "test-key-123456" not in info.value.message
    assert len(fake.model_requests()) == 1


async def test_stream_cut_mid_answer_is_an_error(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    """A stream cut after text was yielded raises ProviderError instead of truncating, no retry."""
    fake.add_text("one two three four five six seven eight")
    fake.cut_stream_after(5)
    events: list[ModelEvent] = []
    with pytest.raises(ProviderError):
        async for event in provider.stream(REQUEST):
            events.append(event)
    assert events
    assert all(isinstance(e, TextDelta) for e in events)
    assert len(fake.model_requests()) == 1


async def test_stream_cut_before_first_token_is_retried(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    """A stream that breaks before any event was yielded is retried and then succeeds."""
    fake.add_text("lost")
    fake.add_text("second try")
    fake.cut_stream_after(1)
    assert _text(await _collect(provider)) == "second try"
    assert len(fake.model_requests()) == 2


async def test_timeout_becomes_provider_error(fake: FakeOpenAI) -> None:
    """A server slower than the configured timeout ends in a ProviderError naming the timeout."""
    fake.delay(0.6)
    provider = _provider(fake, "chat", timeout=0.2, max_retries=0)
    try:
        with pytest.raises(ProviderError) as info:
            await _collect(provider)
    finally:
        await provider.aclose()
    assert "timed out" in info.value.message


@pytest.mark.parametrize("api", APIS)
async def test_a_request_that_times_out_is_tried_max_retries_plus_one_times(
    fake: FakeOpenAI, api: str
) -> None:
    """The SDK's retries of a request that never answers are the only ones (not squared).

    Retried again by the stream-level retry, a hung or refused server cost
    (max_retries + 1)² requests: 9 tries of 60 s before the run failed.
    """
    fake.delay(0.6)
    provider = _provider(fake, api, timeout=0.2, max_retries=2)
    try:
        with pytest.raises(ProviderError) as info:
            await _collect(provider)
    finally:
        await provider.aclose()
    assert "timed out" in info.value.message
    assert len(fake.model_requests()) == 3


async def test_registry_providers_reach_the_fake(fake: FakeOpenAI) -> None:
    """The built-in openai provider (Responses) and a kind: provider (Chat) reach their server."""
    catalog = Catalog(
        version="v1",
        root=Path("/tmp"),
        gateway_root=Path("/tmp"),
        loaded_at=0.0,
        providers={
            "local": ProviderManifest(
                name="local",
                base_url=fake.base_url,
                default_headers={"X-Tenant": "acme"},
            )
        },
    )
    registry = ProviderRegistry(
        Settings(openai_api_key="sk-fake-key-000", openai_base_url=fake.base_url)
    )
    try:
        fake.add_text("from openai")
        fake.add_text("from local")
        builtin = registry.get(catalog, Assistant(name="a"))
        local = registry.get(catalog, Assistant(name="b", provider="local"))
        assert _text([e async for e in builtin.stream(REQUEST)]) == "from openai"
        assert _text([e async for e in local.stream(REQUEST)]) == "from local"
    finally:
        await registry.aclose()
    first, second = fake.model_requests()
    assert first.path == "/v1/responses"
    assert first.headers["authorization"] == "Bearer sk-fake-key-000"
    assert second.path == "/v1/chat/completions"
    assert second.headers["x-tenant"] == "acme"
    assert "sk-fake-key-000" not in second.headers["authorization"]


async def test_cancelling_the_consumer_stops_the_stream(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    """Cancelling the task reading a slow stream ends it at once; the provider stays usable."""
    fake.delay(0, between_chunks=0.1)
    fake.add_text(" ".join(["word"] * 200))  # about 20 s if it were read to the end
    first = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(REQUEST):
            if isinstance(event, TextDelta):
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    fake.delay(0)
    fake.add_text("still fine")
    assert _text(await _collect(provider)) == "still fine"


async def test_error_event_mid_answer_is_a_provider_error(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    """An error event after text was streamed raises ProviderError with the server's message."""
    fake.add_text("one two three four five six seven eight")
    fake.fail_stream_after(6, message="overloaded, try later")
    events: list[ModelEvent] = []
    with pytest.raises(ProviderError) as info:
        async for event in provider.stream(REQUEST):
            events.append(event)
    assert any(isinstance(e, TextDelta) for e in events)
    assert "overloaded, try later" in info.value.message
    assert len(fake.model_requests()) == 1


async def test_error_event_before_first_token_is_retried(
    provider: OpenAIProvider, fake: FakeOpenAI
) -> None:
    """An error event before anything was streamed is retried like a broken connection."""
    fake.add_text("lost")
    fake.add_text("recovered")
    fake.fail_stream_after(1, message="overloaded")
    assert _text(await _collect(provider)) == "recovered"
    assert len(fake.model_requests()) == 2


class Loopback:
    """A bare HTTP server on a loopback port; ``_handle`` answers each connection."""

    def __init__(self) -> None:
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class RawSSE(Loopback):
    """Answers each POST with the next queued SSE body, byte for byte."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []
        self.content_type = b"text/event-stream"
        self.missing = 0
        """Bytes the response announces but never sends (the connection closes first)."""

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            self.requests += 1
            body = self.bodies.pop(0)
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\n"
                b"content-length: %d\r\n\r\n%s"
                % (self.content_type, len(body) + self.missing, body)
            )
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def raw_sse() -> AsyncIterator[RawSSE]:
    raw = RawSSE()
    await raw.start()
    yield raw
    await raw.close()


MALFORMED = {
    "chat-invalid-json": ("chat", b"data: {not json\n\n"),
    "responses-invalid-json": ("responses", b"event: response.output_text.delta\ndata: {bad\n\n"),
    "responses-number-as-text": (
        "responses",
        b'data: {"type": "response.output_text.delta", "item_id": "m", "delta": 5}\n\n',
    ),
    "responses-text-usage": (
        "responses",
        b'data: {"type": "response.completed", "response": {"output": [], '
        b'"usage": {"input_tokens": "many", "output_tokens": 1}}}\n\n',
    ),
    "responses-number-as-message-text": (
        "responses",
        b'data: {"type": "response.completed", "response": {"output": [{"type": "message", '
        b'"content": [{"type": "output_text", "text": 7}]}]}}\n\n',
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_stream_items_are_provider_errors_and_retried(
    raw_sse: RawSSE, case: str
) -> None:
    """Items that are not JSON or not of the expected shape raise ProviderError, after retries."""
    api, body = MALFORMED[case]
    config = ProviderConfig(name="raw", base_url=raw_sse.base_url, api_key="k", max_retries=1)
    provider = API_KINDS[api](config)
    raw_sse.bodies = [body, body]
    try:
        with pytest.raises(ProviderError) as info:
            await _collect(provider)
    finally:
        await provider.aclose()
    assert info.value.message.startswith("model provider 'raw'")
    assert raw_sse.requests == 2  # nothing was handed out: retried once


NOT_UTF8 = {
    "chat": b'data: {"choices": [{"index": 0, "delta": {"content": "caf\xe9 \xff"}}]}\n\n',
    "responses": b"event: response.output_text.delta\n"
    b'data: {"type": "response.output_text.delta", "item_id": "m", "delta": "caf\xe9"}\n\n',
}


@pytest.mark.parametrize("api", APIS)
async def test_a_stream_that_is_not_utf8_is_a_provider_error_and_retried(
    raw_sse: RawSSE, api: str
) -> None:
    """Bytes that are not UTF-8 in a stream (a proxy re-encoding to Latin-1, a broken
    server) fail the call as the server's fault, retried while nothing was handed out:
    before, the SDK's UnicodeDecodeError escaped the provider and crashed the run (500
    ``internal_error`` with a traceback)."""
    config = ProviderConfig(name="raw", base_url=raw_sse.base_url, api_key="k", max_retries=1)
    provider = API_KINDS[api](config)
    raw_sse.bodies = [NOT_UTF8[api], NOT_UTF8[api]]
    try:
        with pytest.raises(ProviderError) as info:
            await _collect(provider)
    finally:
        await provider.aclose()
    assert info.value.message == (
        "model provider 'raw' reported an error: the stream carried text that is not UTF-8"
    )
    assert raw_sse.requests == 2  # nothing was handed out: retried once


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("filler", ["comment", "empty", "text"])
async def test_a_stream_that_never_finishes_fails_at_max_stream_seconds(
    fake: FakeOpenAI, api: str, filler: str
) -> None:
    """A server that keeps its stream alive but never finishes the answer (SSE comments,
    empty chunks, text trickled slowly) fails the call after ``max_stream_seconds``, not
    retried: ``timeout`` is per read, so such a stream held the run and its thread
    forever."""
    fake.add_text("Thinking")
    fake.stall_stream_after(1, every=0.1, filler=filler)
    config = ProviderConfig(
        name="fake", base_url=fake.base_url, api_key="k", timeout=5, max_stream_seconds=1
    )
    provider = API_KINDS[api](config)
    try:
        with pytest.raises(ProviderError) as failed:
            await asyncio.wait_for(_collect(provider), 15)
    finally:
        await provider.aclose()
    assert failed.value.message == "model provider 'fake': no complete answer within 1 s"
    assert len(fake.model_requests()) == 1


async def test_a_key_sent_as_a_header_is_redacted_too(fake: FakeOpenAI) -> None:
    """A key in default_headers (Azure's api-key) is hidden from errors like api_key is."""
    config = ProviderConfig(
        name="azure",
        base_url=fake.base_url,
        api_key=None,
        max_retries=0,
        default_headers={"api-key": "azurekey0123456789", "X-Team": "support"},
    )
    provider = API_KINDS["chat"](config)
    fake.fail_next(401, message="Access denied for key azurekey0123456789 (support team)")
    try:
        with pytest.raises(ProviderError) as info:
            await _collect(provider)
    finally:
        await provider.aclose()
    assert fake.model_requests()[0].headers["api-key"] == "azurekey0123456789"
    assert "azurekey0123456789" not in info.value.message
    assert "(support team)" in info.value.message  # other header values are left alone


@pytest.mark.parametrize("api", APIS)
async def test_credentials_in_the_base_url_are_redacted(fake: FakeOpenAI, api: str) -> None:
    """A password or token in base_url's userinfo is hidden from errors like api_key is.

    Proxies in front of a model (LiteLLM, a corporate proxy) echo the URL they
    were called with, credentials included, in their error messages.
    """
    base_url = fake.base_url.replace("://", "://proxyuser:hunter2secret@")
    token_url = fake.base_url.replace("://", "://ghp_tokenuser0123456@")
    fake.fail_next(502, message=f"upstream failed for {base_url} (password hunter2secret)")
    fake.fail_stream_after(0, message=f"refused {token_url}")
    messages = []
    for url in (base_url, token_url):
        config = ProviderConfig(
            name="proxy", base_url=url, api_key="test-key-123456", max_retries=0
        )
        provider = API_KINDS[api](config)
        try:
            with pytest.raises(ProviderError) as info:
                await _collect(provider)
        finally:
            await provider.aclose()
        messages.append(info.value.message)
    assert len(fake.model_requests()) == 2  # both reached the server
    assert "hunter2secret" not in messages[0] and "upstream failed for" in messages[0]
    assert "ghp_tokenuser0123456" not in messages[1] and "[redacted]" in messages[1]
    assert "[redacted]@127.0.0.1" in messages[0]  # where it failed is still said


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("kind", ["text", "arguments"])
async def test_a_runaway_answer_is_cut_at_the_size_limit(
    fake: FakeOpenAI, api: str, kind: str
) -> None:
    """An answer that never ends (a local model looping) is cut like a token limit.

    Past ``max_answer_chars`` of text or tool-call arguments the stream is
    closed (the server stops generating) and the call ends with
    ``finish_reason: "length"`` and no tool calls, instead of growing in
    memory, the run log and the store for as long as the server goes on.
    """
    if kind == "text":
        fake.add_text("loop " * 20_000)  # 100,000 characters
    else:
        fake.add_tool_calls([("get_weather", {"city": "loop " * 20_000})])
    fake.delay(0, between_chunks=0.0005)  # streamed frame by frame, as a model would
    config = ProviderConfig(
        name="fake", base_url=fake.base_url, api_key="k", max_retries=0, max_answer_chars=5_000
    )
    provider = API_KINDS[api](config)
    try:
        events = await asyncio.wait_for(_collect(provider), 60)
    finally:
        await provider.aclose()
    assert isinstance(events[-1], ModelDone) and events[-1].finish_reason == "length"
    # The cut stream never sent its usage: it is estimated (4 characters a token), not
    # reported as zero (a runaway answer is the costliest kind, and it counted nothing).
    usage = events[-1].usage
    assert usage.completion_tokens >= 5_000 // 4 and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert not _calls(events)
    assert len(_text(events)) <= 5_000 + 100
    if kind == "text":
        assert _text(events).startswith("loop loop")
    assert len(fake.model_requests()) == 1


@pytest.mark.parametrize(
    ("cut", "usage"),
    [(5, Usage()), (6, Usage(prompt_tokens=11, completion_tokens=3, total_tokens=14))],
)
async def test_a_chat_stream_cut_after_its_finish_reason_keeps_the_answer(
    fake: FakeOpenAI, cut: int, usage: Usage
) -> None:
    """A connection cut once the answer is whole (after the finish_reason chunk, before
    the usage chunk or ``[DONE]``) ends the call normally instead of failing it.

    The frames of "one two three": the role chunk, three text chunks, the
    finish_reason chunk, the usage chunk, ``[DONE]``. A proxy or load balancer
    that drops the connection there used to fail a run whose answer the
    client had already seen whole, and the thread lost it.
    """
    fake.add_text("one two three", usage=(11, 3))
    fake.delay(0, between_chunks=0.001)
    fake.cut_stream_after(cut)
    provider = _provider(fake, "chat", max_retries=0)
    try:
        events = await _collect(provider)
    finally:
        await provider.aclose()
    assert _text(events) == "one two three"
    assert events[-1] == ModelDone(usage, "stop")
    # Cut before the finish_reason, the answer may be partial: still an error.
    fake.add_text("one two three")
    fake.cut_stream_after(4)
    provider = _provider(fake, "chat", max_retries=0)
    try:
        with pytest.raises(ProviderError):
            await _collect(provider)
    finally:
        await provider.aclose()


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("part", ["name", "id"])
async def test_tool_call_names_and_ids_count_toward_the_size_limit(
    fake: FakeOpenAI, api: str, part: str
) -> None:
    """A call's name and id count toward ``max_answer_chars`` like its arguments: calls
    with 1 MB names and no arguments were never counted, so 60 of them (60 MB) went
    through, into memory, log lines and the stored thread."""
    huge = "x" * 3_000
    fake.add_tool_calls(
        [
            (huge, {}, f"id{n}") if part == "name" else ("get_weather", {}, huge + str(n))
            for n in (1, 2)
        ]
    )
    config = ProviderConfig(
        name="fake", base_url=fake.base_url, api_key="k", max_retries=0, max_answer_chars=5_000
    )
    provider = API_KINDS[api](config)
    try:
        events = await _collect(provider)
    finally:
        await provider.aclose()
    assert not any(isinstance(e, ToolCallRequest) for e in events)
    assert isinstance(events[-1], ModelDone) and events[-1].finish_reason == "length"


async def test_responses_items_with_whole_arguments_count_toward_the_size_limit(
    raw_sse: RawSSE,
) -> None:
    """``response.output_item.done`` items that carry their whole arguments (no deltas
    before them) count toward ``max_answer_chars``: they were never counted, so 20 items
    of 1 MB arguments made one 20 MB answer."""
    item = {"type": "function_call", "name": "get_weather", "status": "completed"}
    events = [
        {
            "type": "response.output_item.done",
            "output_index": n,
            "item": {**item, "id": f"fc{n}", "call_id": f"c{n}", "arguments": "y" * 3_000},
        }
        for n in range(3)
    ]
    events.append({"type": "response.completed", "response": {"output": []}})
    raw_sse.bodies = [b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)]
    config = ProviderConfig(
        name="raw", base_url=raw_sse.base_url, api_key="k", max_retries=0, max_answer_chars=5_000
    )
    provider = API_KINDS["responses"](config)
    try:
        got = await _collect(provider)
    finally:
        await provider.aclose()
    assert not any(isinstance(e, ToolCallRequest) for e in got)
    assert isinstance(got[-1], ModelDone) and got[-1].finish_reason == "length"


@pytest.mark.parametrize("api", APIS)
async def test_a_whole_call_is_counted_once(fake: FakeOpenAI, api: str) -> None:
    """A call streamed in deltas and repeated whole at its end (``output_item.done``,
    ``response.completed``) counts once: an answer under the limit is not cut."""
    args = {"city": "P" * 1_500}
    fake.add_tool_calls([("get_weather", args)])
    config = ProviderConfig(
        name="fake", base_url=fake.base_url, api_key="k", max_retries=0, max_answer_chars=2_000
    )
    provider = API_KINDS[api](config)
    try:
        events = await _collect(provider)
    finally:
        await provider.aclose()
    assert [call[1:] for call in _calls(events)] == [("get_weather", args)]


def _reasoning_stream(api: str, chunks: int) -> bytes:
    """An SSE body that streams ``chunks`` pieces of reasoning (100 characters each) and then
    ends normally with a short answer."""
    piece = "hmm, " * 20
    if api == "chat":
        frames = [
            {"choices": [{"index": 0, "delta": {"reasoning_content": piece}}]}
            for _ in range(chunks)
        ]
        frames.append({"choices": [{"index": 0, "delta": {"content": "ok"}}]})
        frames.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    else:
        frames = [
            {"type": "response.reasoning_text.delta", "item_id": "rs", "delta": piece}
            for _ in range(chunks)
        ]
        frames.append({"type": "response.output_text.delta", "item_id": "m", "delta": "ok"})
        frames.append({"type": "response.completed", "response": {"output": []}})
    return b"".join(b"data: " + json.dumps(frame).encode() + b"\n\n" for frame in frames)


@pytest.mark.parametrize("api", APIS)
async def test_a_runaway_reasoning_is_cut_at_the_size_limit(raw_sse: RawSSE, api: str) -> None:
    """Reasoning streamed apart from the answer (``reasoning_content``, Responses'
    reasoning events) counts toward ``max_answer_chars`` too: a reasoning model that
    thinks in a loop (DeepSeek-R1 on vLLM or Ollama) is cut like a runaway answer."""
    raw_sse.bodies = [_reasoning_stream(api, 200)]  # 20,000 characters of reasoning
    config = ProviderConfig(
        name="raw", base_url=raw_sse.base_url, api_key="k", max_retries=0, max_answer_chars=5_000
    )
    provider = API_KINDS[api](config)
    try:
        events = await _collect(provider)
    finally:
        await provider.aclose()
    [done] = events
    assert isinstance(done, ModelDone)
    assert done.finish_reason == "length" and done.usage.completion_tokens >= 5_000 // 4
    # Under the limit, the reasoning is read and dropped, and the answer goes on.
    raw_sse.bodies = [_reasoning_stream(api, 10)]
    provider = API_KINDS[api](config)
    try:
        events = await _collect(provider)
    finally:
        await provider.aclose()
    assert _text(events) == "ok" and events[-1] == ModelDone(Usage(), "stop")


@pytest.mark.parametrize("api", APIS)
async def test_a_json_body_instead_of_a_stream_says_what_the_server_answered(
    raw_sse: RawSSE, api: str
) -> None:
    """A 200 JSON body to a streamed request: its error is reported as the server wrote it,
    and an answer the API cannot read as a stream is named as such (not "the stream ended
    before the model finished its answer")."""
    raw_sse.content_type = b"application/json"
    raw_sse.bodies = [b'{"error": {"message": "model llama9 is not loaded"}}'] * 2
    raw_sse.bodies += [b'{"id": "x", "object": "something.else"}'] * 2
    config = ProviderConfig(name="raw", base_url=raw_sse.base_url, api_key="k", max_retries=1)
    provider = API_KINDS[api](config)
    try:
        with pytest.raises(ProviderError) as failed:
            await _collect(provider)
        with pytest.raises(ProviderError) as unreadable:
            await _collect(provider)
    finally:
        await provider.aclose()
    assert failed.value.message == (
        "model provider 'raw' reported an error: model llama9 is not loaded"
    )
    assert "answered one JSON body, not the event stream" in unreadable.value.message
    assert raw_sse.requests == 4  # nothing was handed out: each retried once


async def test_a_json_body_cut_mid_way_is_a_cut_stream_and_retried(raw_sse: RawSSE) -> None:
    """A JSON body (asked to stream, the server answered JSON) whose connection closes
    before its announced length is a cut stream like any other: retried while nothing
    was handed out, then a provider error. The SDK reads through httpx2, whose transport
    errors are not httpx's: the read error escaped as a bare ``RemoteProtocolError``,
    which failed the run as an internal error, unretried."""
    raw_sse.content_type = b"application/json"
    raw_sse.missing = 50
    raw_sse.bodies = [b'{"id": "x", "choices": [{"mess'] * 2
    config = ProviderConfig(name="raw", base_url=raw_sse.base_url, api_key="k", max_retries=1)
    provider = API_KINDS["chat"](config)
    try:
        with pytest.raises(ProviderError) as failed:
            await _collect(provider)
    finally:
        await provider.aclose()
    assert failed.value.message == "model provider 'raw': connection failed or the stream was cut"
    assert raw_sse.requests == 2


@pytest.mark.parametrize("chars", [10_000, 400_000])
async def test_a_runaway_json_body_instead_of_a_stream_is_refused(
    fake: FakeOpenAI, chars: int
) -> None:
    """A JSON body answered to a streamed request is bounded by ``max_answer_chars`` too.

    Such a body (SGLang's with tools) is read whole before its answer can be
    cut, so it is read only up to a byte cap derived from ``max_answer_chars``
    (a runaway or broken server sending megabytes of it filled the memory and
    blocked the event loop decoding it), and an answer over the limit within
    that cap is refused too. Neither is retried: a server that wrote it once
    would write it again.
    """
    fake.set_quirks("no_stream_with_tools")
    fake.add_text("loop " * (chars // 5))
    config = ProviderConfig(
        name="fake", base_url=fake.base_url, api_key="k", max_retries=2, max_answer_chars=5_000
    )
    provider = API_KINDS["chat"](config)
    try:
        with pytest.raises(ProviderError) as failed:
            await asyncio.wait_for(_collect(provider), 60)
    finally:
        await provider.aclose()
    message = failed.value.message
    assert message.startswith("model provider 'fake': the server answered one JSON body")
    assert "max_answer_chars (5,000 characters)" in message
    if chars > 100_000:
        assert "more than 95,536 bytes" in message
    assert len(fake.model_requests()) == 1


class Endless(Loopback):
    """Answers every request with a body that never ends.

    It writes ``head`` and then ``chunk`` over and over until the client hangs up
    (or ``give_up`` bytes, so a client that never stops fails the test, not hangs it).
    """

    def __init__(self, head: bytes, chunk: bytes, give_up: int = 64 << 20) -> None:
        super().__init__()
        self.head = head
        self.chunk = chunk
        self.give_up = give_up
        self.written = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.write(self.head)
            while self.written < self.give_up:
                writer.write(self.chunk)
                await writer.drain()
                self.written += len(self.chunk)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _fails(provider: OpenAIProvider, endless: Endless) -> ProviderError:
    """The error ``provider``'s call fails with; both are closed after."""
    try:
        with pytest.raises(ProviderError) as failed:
            await asyncio.wait_for(_collect(provider), 60)
    finally:
        await provider.aclose()
        await endless.close()
    return failed.value


async def _endless(head: bytes, chunk: bytes) -> Endless:
    endless = Endless(head, chunk)
    await endless.start()
    return endless


@pytest.mark.parametrize("api", APIS)
async def test_an_event_that_never_ends_is_refused_not_buffered(api: str) -> None:
    """A server streaming one endless ``data:`` line (a broken proxy, a hostile server)
    fails the call once the event passes the most an answer within ``max_answer_chars``
    can need, and is not retried. The SDK's decoder holds a line until it ends: before,
    the gateway read it into memory for as long as the server wrote."""
    endless = await _endless(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
        b'data: {"x": "',
        b"x" * 65_536,
    )
    config = ProviderConfig(
        name="raw", base_url=endless.base_url, api_key="k", max_retries=2, max_answer_chars=5_000
    )
    failed = await _fails(API_KINDS[api](config), endless)
    assert failed.message == (
        "model provider 'raw': the server streamed an event of more than 95,536 bytes"
    )
    assert endless.requests == 1
    # What the loopback's socket buffers hold at most, far below what the server would
    # have written to a client reading on (give_up, 64 MiB).
    assert endless.written < 24 << 20


async def test_an_endless_error_body_is_read_only_in_part() -> None:
    """A 400 whose body never ends (a misconfigured proxy's error page streamed forever)
    is read up to 64 KiB: the call fails with the status and the start of the body. The
    SDK reads an error body whole: before, it read for as long as the server wrote."""
    endless = await _endless(
        b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/html\r\nconnection: close\r\n\r\n"
        b"<html>proxy says no",
        b"!" * 65_536,
    )
    config = ProviderConfig(name="raw", base_url=endless.base_url, api_key="k", max_retries=0)
    failed = await _fails(API_KINDS["chat"](config), endless)
    assert failed.status == 400
    assert failed.message.startswith(
        "model provider 'raw' answered HTTP 400: <html>proxy says no!!!"
    )
    assert endless.written < 24 << 20


async def test_an_id_and_name_repeated_in_every_delta_count_once(fake: FakeOpenAI) -> None:
    """A server repeating the call's id and name in every Chat Completions delta
    (``id_every_chunk``) has them counted once toward ``max_answer_chars``, as the call
    keeps them once: counted per delta, a 1,500-character argument in 8-character
    deltas counted about 9,000 characters and the legitimate call was cut."""
    fake.set_quirks("id_every_chunk")
    args = {"city": "P" * 1_500}
    fake.add_tool_calls([("get_weather", args, "call_Zx8aQk2LmP0vR7tYbN4sW1eH")])
    config = ProviderConfig(
        name="fake", base_url=fake.base_url, api_key="k", max_retries=0, max_answer_chars=2_000
    )
    provider = API_KINDS["chat"](config)
    try:
        events = await _collect(provider)
    finally:
        await provider.aclose()
    assert [call[1:] for call in _calls(events)] == [("get_weather", args)]
    assert isinstance(events[-1], ModelDone) and events[-1].finish_reason == "tool_calls"
