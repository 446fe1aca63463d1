"""One assistant, ``remote``, answered by a ``FakeOpenAI`` over real HTTP (Chat Completions
by default, or Responses)."""

from __future__ import annotations

from pathlib import Path

from gateway.testing.fake_openai import FakeOpenAI


def write_remote(
    manifests: Path,
    fake: FakeOpenAI,
    assistant: str = "",
    *,
    api: str = "chat",
    api_key: str = "k",
    provider: str = "",
) -> None:
    """Write ``remote.yaml`` into ``manifests``: provider ``fake`` (no retries, so a failure
    the fake is told to send reaches the client; ``api`` chat or responses; ``api_key``
    for a test that checks it never shows; the ``provider`` YAML lines added) and
    assistant ``remote`` using it, with the ``assistant`` YAML lines added
    (``"initial_message: Hello.\n"``)."""
    manifests.mkdir(parents=True, exist_ok=True)
    (manifests / "remote.yaml").write_text(
        f"kind: provider\nname: fake\nbase_url: {fake.base_url}\napi_key: {api_key}\n"
        f"api: {api}\nmax_retries: 0\n{provider}---\n"
        "kind: assistant\nname: remote\nprovider: fake\nmodel: fake-model\n" + assistant
    )
