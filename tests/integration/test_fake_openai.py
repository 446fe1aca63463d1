"""FakeOpenAI as users see it: the real openai SDK and raw HTTP against it over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.testing.fake_openai import FakeOpenAI, FakeReply, RecordedRequest
from gateway.testing.pytest_plugin import fake_openai  # noqa: F401  (fixture under test)


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0) as sdk:
        yield sdk


def _sse_frames(fake: FakeOpenAI, path: str, body: dict[str, object]) -> list[str]:
    response = httpx.post(fake.base_url + path, json=body, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return [frame for frame in response.text.split("\n\n") if frame]


def test_base_url_and_models(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """base_url is loopback with /v1 and GET /v1/models lists the configured models."""
    assert fake.base_url.startswith("http://127.0.0.1:")
    assert fake.base_url.endswith("/v1")
    assert [m.id for m in client.models.list()] == ["fake-model", "other-model"]


def test_default_reply_echoes_last_user_message(client: openai.OpenAI) -> None:
    """With nothing scripted, both APIs answer with the last user message."""
    chat = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "first"}, {"role": "user", "content": "ping"}],
    )
    assert chat.choices[0].message.content == "ping"
    response = client.responses.create(model="m", input=[{"role": "user", "content": "pong"}])
    assert response.output_text == "pong"


def test_non_streamed_tool_calls_both_apis(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """Scripted parallel tool calls come back in each API's non-streamed shape."""
    ids = fake.add_tool_calls(
        [("get_weather", {"city": "Paris"}), ("get_time", '{"tz": "CET"}', "call_x")]
    )
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    calls = chat.choices[0].message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        (ids[0], "get_weather", '{"city": "Paris"}'),
        ("call_x", "get_time", '{"tz": "CET"}'),
    ]
    assert chat.choices[0].finish_reason == "tool_calls"
    fake.add_tool_calls([("get_weather", {"city": "Oslo"}, "call_y")], text="Looking.")
    response = client.responses.create(model="m", input="hi")
    assert response.output_text == "Looking."
    function_calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in function_calls] == [
        ("call_y", "get_weather", '{"city": "Oslo"}')
    ]


def test_streamed_chat_matches_openai_framing(fake: FakeOpenAI) -> None:
    """Chat streams are data frames of chunks, a usage-only last chunk, then [DONE]."""
    fake.add_text("hello there", usage=(3, 2))
    frames = _sse_frames(
        fake,
        "/chat/completions",
        {
            "model": "m",
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert frames[-1] == "data: [DONE]"
    chunks = [json.loads(frame.removeprefix("data: ")) for frame in frames[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_streamed_responses_matches_openai_events(fake: FakeOpenAI) -> None:
    """Responses streams are named events with rising sequence numbers, completed last."""
    fake.add_tool_calls([("lookup", {"q": "x"})], text="ok")
    frames = _sse_frames(fake, "/responses", {"model": "m", "stream": True, "input": "hi"})
    names = [frame.split("\n")[0].removeprefix("event: ") for frame in frames]
    data = [json.loads(frame.split("\n")[1].removeprefix("data: ")) for frame in frames]
    assert names[0] == "response.created"
    assert names[-1] == "response.completed"
    assert "response.output_text.delta" in names
    assert "response.function_call_arguments.delta" in names
    assert [d["sequence_number"] for d in data] == list(range(len(data)))
    assert [d["type"] for d in data] == names
    assert data[-1]["response"]["usage"]["total_tokens"] > 0


def test_sdk_streams_both_apis(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """The SDK's own stream parsing reads the fake's chat chunks and response events."""
    fake.add_text("a b c")
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "a b c"
    fake.add_text("d e f")
    events = list(client.responses.create(model="m", input="x", stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "d e f"


def test_a_reply_cut_by_the_token_limit_both_apis(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """finish_reason="length" is chat's finish_reason, and an incomplete response (both ways)."""
    fake.add_text("It is sun", finish_reason="length")
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert chat.choices[0].finish_reason == "length"
    fake.add_text("It is sun", finish_reason="length")
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert [c.choices[0].finish_reason for c in stream if c.choices][-1] == "length"
    fake.add_tool_calls([("lookup", '{"q": "unfini')], finish_reason="length")
    response = client.responses.create(model="m", input="x")
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[-1].status == "incomplete"
    fake.add_text("It is sun", finish_reason="content_filter")
    events = list(client.responses.create(model="m", input="x", stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details is not None
    assert events[-1].response.incomplete_details.reason == "content_filter"


def test_callable_reply_sees_the_request(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """A callable reply receives the recorded request and its return value is sent."""
    seen: list[RecordedRequest] = []

    def reply(request: RecordedRequest) -> FakeReply | str:
        seen.append(request)
        return f"{request.api}:{request.last_user_text().upper()}"

    fake.add_reply(reply)
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hey"}])
    assert chat.choices[0].message.content == "chat:HEY"
    assert seen[0].body["model"] == "m"
    assert fake.pending_replies == 0


def test_request_log_records_path_headers_body(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """Every request is logged with its path, lowercase headers and parsed JSON body."""
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    [logged] = fake.requests
    assert logged.method == "POST"
    assert logged.path == "/v1/chat/completions"
    assert logged.headers["authorization"] == "Bearer test"
    assert logged.body["messages"] == [{"role": "user", "content": "hi"}]
    assert logged.stream is False


def test_fail_next_status_then_recovers(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """fail_next answers with the status and an OpenAI error body, then serves normally."""
    fake.fail_next(429, message="slow down")
    fake.add_text("ok now")
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert "slow down" in str(info.value)
    assert info.value.response.headers["retry-after-ms"] == "1"
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert chat.choices[0].message.content == "ok now"


def test_cut_stream_breaks_the_connection(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """cut_stream_after aborts the response so the client sees a connection error."""
    fake.add_text("one two three four five")
    fake.cut_stream_after(2)
    received: list[str] = []
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIConnectionError):
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "one "


def test_chunk_delay_still_delivers_everything(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """With a delay between frames the stream is written frame by frame and arrives whole."""
    fake.delay(0, between_chunks=0.005)
    fake.add_text("slow but complete")
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    assert (
        "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        == "slow but complete"
    )


@pytest.mark.parametrize("filler", ["comment", "empty", "text"])
def test_stall_stream_after_keeps_the_stream_alive_without_an_end(
    fake: FakeOpenAI, filler: str
) -> None:
    """After ``n`` frames of the answer, a stalled stream sends its filler again and again,
    never ``[DONE]``; the next stream is whole again."""
    fake.stall_stream_after(1, every=0.01, filler=filler)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    frames: list[str] = []
    with httpx.stream("POST", fake.base_url + "/chat/completions", json=body, timeout=10) as r:
        for line in r.iter_lines():
            if line:
                frames.append(line)
            if len(frames) == 6:
                break
    assert len(set(frames[1:])) == 1 and "[DONE]" not in "".join(frames)
    assert frames[1] == ": keep-alive" if filler == "comment" else frames[1].startswith("data:")
    assert _sse_frames(fake, "/chat/completions", body)[-1] == "data: [DONE]"
    with pytest.raises(ValueError, match="unknown filler 'nothing'"):
        fake.stall_stream_after(1, filler="nothing")


def test_api_key_is_enforced_when_set() -> None:
    """A fake created with api_key answers 401 to other keys and serves the right one."""
    with FakeOpenAI(api_key="sk-right") as fake:
        wrong = openai.OpenAI(base_url=fake.base_url, api_key="sk-wrong", max_retries=0)
        with wrong, pytest.raises(openai.AuthenticationError):
            wrong.models.list()
        with openai.OpenAI(base_url=fake.base_url, api_key="sk-right", max_retries=0) as right:
            assert [m.id for m in right.models.list()] == ["fake-model"]


def test_unknown_quirk_is_refused(fake: FakeOpenAI) -> None:
    """A misspelt quirk raises instead of silently testing nothing."""
    with pytest.raises(ValueError, match="no_indexx"):
        fake.set_quirks("no_indexx")


def test_pytest_plugin_fixture(fake_openai: FakeOpenAI) -> None:  # noqa: F811
    """The shipped fake_openai fixture is a started server."""
    fake_openai.add_text("from the fixture")
    response = httpx.post(
        fake_openai.base_url + "/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        timeout=10,
    )
    assert response.json()["choices"][0]["message"]["content"] == "from the fixture"


def test_fail_stream_after_sends_an_error_event(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """fail_stream_after ends a 200 stream with OpenAI's in-stream error, which the SDK raises."""
    fake.add_text("one two three")
    fake.fail_stream_after(2, message="overloaded")
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="overloaded"):
        for _ in stream:
            pass
    fake.add_text("a b")
    fake.fail_stream_after(3, message="overloaded too")
    frames = _sse_frames(fake, "/responses", {"model": "m", "stream": True, "input": "x"})
    assert len(frames) == 4
    assert frames[-1].startswith("event: error\ndata: ")
    assert json.loads(frames[-1].split("data: ", 1)[1])["message"] == "overloaded too"


_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
_ASKED = {"role": "assistant", "content": None, "tool_calls": [_CALL]}
_USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (
            {"messages": [_USER, _ASKED, _USER]},
            "The following tool_call_ids did not have response messages: call_1",
            "messages.[1].role",
        ),
        (
            {"messages": [_USER, _ASKED]},
            "The following tool_call_ids did not have response messages: call_1",
            "messages.[1].role",
        ),
        (
            {"messages": [_USER, {"role": "tool", "tool_call_id": "call_1", "content": "x"}]},
            "messages with role 'tool' must be a response to a preceeding message with "
            "'tool_calls'",
            "messages.[1].role",
        ),
        (
            {"messages": [_USER, _ASKED, {"role": "tool", "tool_call_id": "c9", "content": "x"}]},
            "'tool_call_id' of 'c9' not found in 'tool_calls' of previous message",
            "messages.[2].tool_call_id",
        ),
        (
            {"messages": [_USER], "stream_options": {"include_usage": True}},
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
        ),
        ({"messages": []}, "Missing required parameter: 'messages'.", "messages"),
        ({"messages": [_USER], "tools": []}, "Invalid 'tools': empty array.", "tools"),
        (
            {"messages": [_USER], "tool_choice": "auto"},
            "'tool_choice' is only allowed when 'tools' are specified.",
            "tool_choice",
        ),
        (
            {
                "messages": [_USER],
                "tools": [{"type": "function", "function": {"name": "get weather"}}],
            },
            "Invalid 'tools[0].function.name': string does not match pattern.",
            "tools[0].function.name",
        ),
        (
            {"messages": [_USER], "tools": [{"type": "function", "function": {"name": "f" * 65}}]},
            "string too long. Expected a string with maximum length 64, but got a string with "
            "length 65 instead.",
            "tools[0].function.name",
        ),
    ],
)
def test_chat_refuses_what_openai_refuses(
    fake: FakeOpenAI, client: openai.OpenAI, body: dict[str, object], message: str, param: str
) -> None:
    """A Chat Completions request OpenAI answers with 400 (a tool call without its result,
    a result without its call, stream_options without stream) gets OpenAI's 400 from the
    fake too, and uses no scripted reply: the fake answered 200, so a client's broken
    history passed its tests and failed against the real service."""
    fake.add_text("scripted")
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="m", **body)  # type: ignore[call-overload]
    error = refused.value.body
    assert isinstance(error, dict)
    assert message in error["message"]
    assert error["param"] == param
    assert fake.pending_replies == 1


def test_chat_accepts_complete_tool_turns(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    """Parallel calls answered in any order, then more turns, are a valid history."""
    second = {**_CALL, "id": "call_2"}
    messages = [
        _USER,
        {"role": "assistant", "content": None, "tool_calls": [_CALL, second]},
        {"role": "tool", "tool_call_id": "call_2", "content": "b"},
        {"role": "tool", "tool_call_id": "call_1", "content": "a"},
        {"role": "assistant", "content": "done"},
        _USER,
    ]
    fake.add_text("ok")
    answer = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "ok"


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (
            [{"type": "function_call_output", "call_id": "call_1", "output": "x"}],
            "No tool call found for function call output with call_id call_1.",
        ),
        (
            [{"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"}],
            "No tool output found for function call call_1.",
        ),
    ],
)
def test_responses_refuses_unpaired_function_calls(
    fake: FakeOpenAI, client: openai.OpenAI, items: list[dict[str, str]], message: str
) -> None:
    """A Responses input with a function_call_output and no function_call (or the reverse)
    gets OpenAI's 400, unless previous_response_id names where the call is."""
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="m", input=[{"role": "user", "content": "hi"}, *items])  # type: ignore[list-item]
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["message"] == message
    assert error["param"] == "input"
    fake.add_text("continued")
    answer = client.responses.create(model="m", input=items, previous_response_id="resp_1")  # type: ignore[arg-type]
    assert answer.output_text == "continued"


def test_responses_refuses_a_tool_name_openai_refuses(
    fake: FakeOpenAI, client: openai.OpenAI
) -> None:
    """A Responses function tool named outside ^[a-zA-Z0-9_-]{1,64}$ gets OpenAI's 400."""
    tool = {"type": "function", "name": "get.weather", "parameters": {"type": "object"}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="m", input="hi", tools=[tool])  # type: ignore[list-item]
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["param"] == "tools[0].name"


_START_WITHOUT_DESCRIPTORS = """
import gc, os, resource
from gateway.testing.fake_openai import FakeOpenAI

def fds():
    return sorted(os.listdir("/proc/self/fd"))

fake = FakeOpenAI()
before = fds()
lowest = os.dup(0)  # the next descriptor a socket gets
os.close(lowest)
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
# Room for the listening socket, none for the server thread's event loop (epoll, self-pipe).
resource.setrlimit(resource.RLIMIT_NOFILE, (lowest + 1, hard))
try:
    fake.start()
except RuntimeError as exc:
    error = str(exc)
else:
    error = "started"
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
gc.collect()  # the half-made event loop's epoll goes with the exception's frames
leaked = sorted(set(fds()) - set(before))
try:
    fake.url
    half = "url answers"
except RuntimeError:
    half = "not started"
with fake:  # starts for real now: it was not left half-started
    import urllib.request
    with urllib.request.urlopen(fake.base_url + "/models") as answer:
        status = answer.status
print(error, leaked, half, status, sep="|")
"""


def test_a_server_thread_dying_at_start_leaves_nothing_behind(tmp_path: Path) -> None:
    """When the server thread died while starting (here: no descriptor left for its event
    loop), start() raised but kept the listening socket open and the instance half-started:
    url answered with a port nothing served and a second start() returned at once without
    a server. Now the socket is closed, the cause is chained, and start() works again."""
    run = subprocess.run(
        [sys.executable, "-c", _START_WITHOUT_DESCRIPTORS],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[2],
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    error, leaked, half, status = run.stdout.strip().splitlines()[-1].split("|")
    assert error.startswith("FakeOpenAI failed to start: OSError(24, "), error
    assert "Too many open files" in error
    assert (leaked, half, status) == ("[]", "not started", "200")
