"""The OpenAI-compatible endpoint, driven by the official openai SDK unchanged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import GatewayServer, ServerFactory, write_api_manifests

from gateway.testing.fake_openai import FakeOpenAI


@pytest.fixture
def sdk(api_server: GatewayServer) -> openai.OpenAI:
    """The official SDK pointed at the gateway's /v1."""
    return openai.OpenAI(base_url=f"{api_server.url}/v1", api_key="unused-in-development")


def test_models_lists_the_assistants(sdk: openai.OpenAI) -> None:
    """GET /v1/models lists every assistant as a model."""
    assert sorted(m.id for m in sdk.models.list()) == ["helper", "other"]


def test_a_model_is_retrieved_by_its_id(sdk: openai.OpenAI) -> None:
    """``client.models.retrieve`` (LangChain, LiteLLM and chat UIs check a model this way)
    answers the assistant as a model; an unknown one is the SDK's NotFoundError naming it
    (GET /v1/models/{id} was no route at all: a bare 404 "Not Found" for every model).
    """
    model = sdk.models.retrieve("helper")
    assert (model.id, model.object, model.owned_by) == ("helper", "model", "gateway")
    assert model.created == next(m for m in sdk.models.list() if m.id == "helper").created
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.models.retrieve("ghost")
    assert "model 'ghost' not found" in str(missing.value)


def test_non_streaming_completion_runs_tools_server_side(sdk: openai.OpenAI) -> None:
    """model = assistant; the tool runs in the gateway and only the answer comes back."""
    completion = sdk.chat.completions.create(
        model="helper", messages=[{"role": "user", "content": "What is the weather in Paris?"}]
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "helper"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == (
        "Here is what get_weather returned: city: Paris, temperature: 21, unit: c."
    )
    assert choice.message.tool_calls is None
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0


def test_history_and_content_parts_come_from_the_client(sdk: openai.OpenAI) -> None:
    """Earlier turns, system messages and list-of-parts content are accepted."""
    completion = sdk.chat.completions.create(
        model="other",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": [{"type": "text", "text": "who are you?"}]},
        ],
        temperature=0.1,
    )
    assert "offline model" in (completion.choices[0].message.content or "")


def test_streaming_chunks_are_openai_shaped(sdk: openai.OpenAI) -> None:
    """Streaming: role first, content deltas, finish_reason stop, then the usage chunk."""
    stream = sdk.chat.completions.create(
        model="helper",
        messages=[{"role": "user", "content": "weather in Oslo"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Here is what get_weather returned: city: Oslo, temperature: 21, unit: c."
    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content_chunks) > 1  # streamed in several deltas
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0


def test_streaming_wire_format_ends_with_done(api_server: GatewayServer) -> None:
    """The raw stream is data: lines only, ending with data: [DONE]; no usage chunk unless asked."""
    body = {"model": "other", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    text = httpx.post(f"{api_server.url}/v1/chat/completions", json=body, timeout=30).text
    frames = [f for f in text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    payloads = [json.loads(f.removeprefix("data: ")) for f in frames[:-1]]
    assert all("usage" not in p for p in payloads)
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop"


def test_unknown_model_and_bad_requests(sdk: openai.OpenAI) -> None:
    """An unknown model is a 404 and a malformed request a 400, as SDK exceptions."""
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "hi"}])
    assert "ghost" in str(missing.value)
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="helper", messages=[])
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(
            model="helper", messages=[{"role": "assistant", "content": "last word is mine"}]
        )


async def test_async_sdk_streams_too(api_server: GatewayServer) -> None:
    """The async SDK client streams the same answer."""
    client = openai.AsyncOpenAI(base_url=f"{api_server.url}/v1", api_key="x")
    stream = await client.chat.completions.create(
        model="other", messages=[{"role": "user", "content": "hello"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    await client.close()
    assert "offline model" in text


def test_stop_sequences_cut_the_answer(sdk: openai.OpenAI) -> None:
    """``stop`` ends the answer before the first stop sequence, streamed or not (it was
    ignored: the whole answer came back, the stop sequence and all after it included).
    """
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    whole = sdk.chat.completions.create(model="other", messages=messages)
    full = whole.choices[0].message.content or ""
    assert "offline model" in full
    cut = sdk.chat.completions.create(model="other", messages=messages, stop=["offline", "zzz"])
    assert cut.choices[0].message.content == full[: full.index("offline")]
    assert cut.choices[0].finish_reason == "stop"
    stream = sdk.chat.completions.create(
        model="other", messages=messages, stop="offline model", stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == full[: full.index("offline model")]


def test_parameters_the_gateway_cannot_honour_are_refused(sdk: openai.OpenAI) -> None:
    """``n`` above 1 and a JSON ``response_format`` are a 400 naming the field: they were
    ignored, so a client got one choice for n=2 (``choices[1]``: IndexError) or prose it
    then failed to parse as JSON.
    """
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    with pytest.raises(openai.BadRequestError) as many:
        sdk.chat.completions.create(model="other", messages=messages, n=2)
    assert "n" in str(many.value)
    with pytest.raises(openai.BadRequestError) as json_mode:
        sdk.chat.completions.create(
            model="other", messages=messages, response_format={"type": "json_object"}
        )
    assert "response_format" in str(json_mode.value)
    # What a client sends by default is fine.
    ok = sdk.chat.completions.create(
        model="other", messages=messages, n=1, response_format={"type": "text"}, stop=None
    )
    assert len(ok.choices) == 1


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"logprobs": True}, "logprobs"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ],
    ids=["logprobs", "both", "top_logprobs", "audio-modality", "audio", "required", "named"],
)
def test_output_the_gateway_cannot_give_is_refused_naming_the_field(
    sdk: openai.OpenAI, extra: dict[str, Any], field: str
) -> None:
    """Log probabilities, audio output and a forced tool call are a 400 naming the field:
    they were ignored (200 with ``logprobs: null``, so SDK code reading
    ``choices[0].logprobs.content`` crashed; text for audio; no tool call for
    ``required``)."""
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="other", messages=messages, extra_body=extra)
    assert refused.value.status_code == 400
    message = refused.value.body["message"]  # type: ignore[index]
    assert message.startswith(f"{field}: "), message


def test_output_parameters_at_their_defaults_are_accepted(sdk: openai.OpenAI) -> None:
    """What clients send by default (``logprobs: false``, ``modalities: ["text"]``,
    ``tool_choice`` ``auto`` or ``none``, nulls) is accepted."""
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    for extra in (
        {"logprobs": False, "top_logprobs": None, "modalities": ["text"], "audio": None},
        {"tool_choice": "auto"},
        {"tool_choice": "none", "logprobs": None, "top_logprobs": 0},
    ):
        reply = sdk.chat.completions.create(model="other", messages=messages, extra_body=extra)
        assert reply.choices[0].message.content, extra


def test_content_the_assistant_cannot_read_is_refused(sdk: openai.OpenAI) -> None:
    """An image (or audio, a file) in a message is a 400 naming the message and the part:
    it was dropped silently, so the assistant answered as if the user had sent no image.
    Text parts (``text``, ``input_text``) and an assistant's ``refusal`` part are read.
    """
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages: list[Any] = [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        {"role": "user", "content": [{"type": "text", "text": "what is this?"}, image]},
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="other", messages=messages)
    assert "messages[2].content[1]" in str(refused.value)
    assert "'image_url'" in str(refused.value)
    messages[2]["content"] = [{"type": "text", "text": "who are you?"}]
    answer = sdk.chat.completions.create(model="other", messages=messages)
    assert "offline model" in (answer.choices[0].message.content or "")


def test_tools_sent_by_the_client_are_refused(sdk: openai.OpenAI) -> None:
    """A client's own ``tools`` (LangChain's bind_tools, with_structured_output) are a 400
    naming the field: they were ignored, so the client never got the tool call it asked for
    (``tool_choice="required"`` included) and its agent or parser broke on plain text.
    ``tool_choice="none"`` with them, or an empty list, is honoured as it is.
    """
    messages: list[Any] = [{"role": "user", "content": "hello"}]
    tool: Any = {
        "type": "function",
        "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}},
    }
    for choice in ("auto", "required", {"type": "function", "function": {"name": "lookup"}}):
        with pytest.raises(openai.BadRequestError) as refused:
            sdk.chat.completions.create(
                model="other", messages=messages, tools=[tool], tool_choice=choice
            )
        assert "tools:" in str(refused.value)
    with pytest.raises(openai.BadRequestError) as legacy:
        sdk.chat.completions.create(model="other", messages=messages, functions=[tool["function"]])
    assert "functions:" in str(legacy.value)
    for ok in (
        sdk.chat.completions.create(
            model="other", messages=messages, tools=[tool], tool_choice="none"
        ),
        sdk.chat.completions.create(model="other", messages=messages, tools=[]),
    ):
        assert "offline model" in (ok.choices[0].message.content or "")


def test_openai_apis_the_gateway_lacks_say_what_it_serves(sdk: openai.OpenAI) -> None:
    """The Responses API (the OpenAI Agents SDK's default), embeddings and the like are a
    404 saying which OpenAI API the gateway serves: a bare "Not Found" read as a wrong
    base_url, the first thing a user then checks and finds right.
    """
    with pytest.raises(openai.NotFoundError) as responses:
        sdk.responses.create(model="helper", input="hi")
    assert "/v1/responses" in str(responses.value)
    assert "POST /v1/chat/completions" in str(responses.value)
    with pytest.raises(openai.NotFoundError) as embeddings:
        sdk.embeddings.create(model="helper", input="hi")
    assert "/v1/embeddings" in str(embeddings.value)
    assert "POST /v1/chat/completions" in str(embeddings.value)


def test_tool_choice_none_runs_no_tool(sdk: openai.OpenAI) -> None:
    """``tool_choice: "none"`` is honoured: the model is offered no tool and none runs,
    where it was accepted and ignored (the assistant's actions still ran, side effects
    and all)."""
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
    reply = sdk.chat.completions.create(model="helper", messages=messages, tool_choice="none")
    content = reply.choices[0].message.content or ""
    assert "get_weather returned" not in content, content
    assert "offline model" in content, content
    auto = sdk.chat.completions.create(model="helper", messages=messages, tool_choice="auto")
    assert "get_weather returned" in (auto.choices[0].message.content or "")


def test_tool_choice_none_sends_no_tools_and_refuses_a_call(
    gateway_server: ServerFactory, fake: FakeOpenAI, tmp_path: Path
) -> None:
    """With ``tool_choice: "none"`` the real model request carries no tools, and a call
    the model makes anyway is answered as to an assistant without tools, not run."""
    manifests = write_api_manifests(tmp_path / "site")
    (manifests / "remote.yaml").write_text(
        f"kind: provider\nname: fake\nbase_url: {fake.base_url}\napi_key: test-key\n"
        "max_retries: 0\n---\nkind: assistant\nname: remote\nprovider: fake\n"
        "model: fake-model\nactions: [explode]\n"
    )
    server = gateway_server(manifests)
    fake.add_tool_calls([("explode", {"reason": "side effect"})])
    fake.add_text("done")
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    messages: list[Any] = [{"role": "user", "content": "explode please"}]
    reply = client.chat.completions.create(model="remote", messages=messages, tool_choice="none")
    assert reply.choices[0].message.content == "done"
    first, second = fake.model_requests()
    assert not first.body.get("tools"), first.body
    result = json.dumps(second.body["messages"][-1])
    assert "no tools" in result, result
    assert "boom" not in result, result
