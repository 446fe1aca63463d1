"""Provider resolution: defaults, built-ins, manifests, caching across reloads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.errors import NotFound, ProviderError
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Assistant
from gateway.manifests.model import Provider as ProviderManifest
from gateway.providers.offline import OfflineProvider
from gateway.providers.openai_chat import ChatCompletionsProvider
from gateway.providers.openai_responses import ResponsesProvider
from gateway.providers.registry import ProviderRegistry
from gateway.settings import Settings


def _catalog(version: str = "v1", **providers: ProviderManifest) -> Catalog:
    return Catalog(
        version=version,
        root=Path("/tmp"),
        gateway_root=Path("/tmp"),
        loaded_at=0.0,
        providers=dict(providers),
    )


def _assistant(provider: str | None = None) -> Assistant:
    return Assistant(name="a", provider=provider)


async def test_default_is_offline_without_key() -> None:
    """With no OPENAI_API_KEY an assistant without provider gets the offline model."""
    registry = ProviderRegistry(Settings())
    assert registry.default_name == "offline"
    assert isinstance(registry.get(_catalog(), _assistant()), OfflineProvider)
    await registry.aclose()


async def test_default_is_openai_responses_with_key() -> None:
    """With OPENAI_API_KEY set the default is the built-in openai provider on the Responses API."""
    settings = Settings(openai_api_key="sk-test-123456", openai_base_url="http://127.0.0.1:9/v1")
    registry = ProviderRegistry(settings)
    provider = registry.get(_catalog(), _assistant())
    assert isinstance(provider, ResponsesProvider)
    assert provider.name == "openai"
    assert str(provider.client.base_url).rstrip("/") == "http://127.0.0.1:9/v1"
    assert provider.client.api_key == "sk-test-123456"
    assert isinstance(registry.get(_catalog(), _assistant("offline")), OfflineProvider)
    await registry.aclose()


async def test_manifest_provider_uses_its_config() -> None:
    """A kind: provider manifest gets a Chat Completions client with its URL, key and limits."""
    manifest = ProviderManifest(
        name="local",
        base_url="http://127.0.0.1:11434/v1",
        api_key="local-key-123",
        timeout=7.5,
        max_retries=4,
        default_headers={"X-Team": "a"},
    )
    registry = ProviderRegistry(Settings(openai_api_key="sk-server-secret"))
    provider = registry.get(_catalog(local=manifest), _assistant("local"))
    assert isinstance(provider, ChatCompletionsProvider)
    assert provider.client.api_key == "local-key-123"
    assert provider.client.max_retries == 4
    assert provider.client.timeout == 7.5
    assert provider.client.default_headers["X-Team"] == "a"
    await registry.aclose()


async def test_manifest_without_key_never_gets_the_server_key() -> None:
    """A provider manifest with no api_key is not sent the server's OPENAI_API_KEY."""
    manifest = ProviderManifest(name="local", base_url="http://127.0.0.1:11434/v1")
    registry = ProviderRegistry(Settings(openai_api_key="sk-server-secret"))
    provider = registry.get(_catalog(local=manifest), _assistant("local"))
    assert isinstance(provider, ChatCompletionsProvider)
    assert provider.client.api_key != "sk-server-secret"
    await registry.aclose()


async def test_unknown_provider_is_not_found() -> None:
    """Naming a provider that is neither built in nor declared raises NotFound."""
    registry = ProviderRegistry(Settings())
    with pytest.raises(NotFound) as info:
        registry.get(_catalog(), _assistant("nope"))
    assert info.value.what == "provider"
    assert info.value.name == "nope"


async def test_clients_cached_until_config_changes() -> None:
    """A reload keeps the client when the provider is unchanged and replaces it when it changes."""
    registry = ProviderRegistry(Settings())
    first = ProviderManifest(name="p", base_url="http://127.0.0.1:1/v1")
    changed = ProviderManifest(name="p", base_url="http://127.0.0.1:2/v1", api="responses")
    a = registry.get(_catalog("v1", p=first), _assistant("p"))
    b = registry.get(_catalog("v2", p=first), _assistant("p"))
    c = registry.get(_catalog("v3", p=changed), _assistant("p"))
    assert a is b
    assert c is not a
    assert isinstance(c, ResponsesProvider)
    await registry.aclose()
    assert isinstance(a, ChatCompletionsProvider)
    assert a.client.is_closed()
    assert isinstance(c, ResponsesProvider)
    assert c.client.is_closed()


async def test_explicit_openai_without_key_fails_clearly() -> None:
    """Naming the openai provider with no key and no base URL is a clear ProviderError."""
    registry = ProviderRegistry(Settings())
    with pytest.raises(ProviderError, match="OPENAI_API_KEY"):
        registry.get(_catalog(), _assistant("openai"))


async def test_a_replaced_client_closes_when_its_last_run_releases_it() -> None:
    """A client replaced while runs hold it stays open until the last one releases it."""
    registry = ProviderRegistry(Settings())
    first = ProviderManifest(name="p", base_url="http://127.0.0.1:1/v1")
    changed = ProviderManifest(name="p", base_url="http://127.0.0.1:2/v1")
    v1, v2 = _catalog("v1", p=first), _catalog("v2", p=changed)
    registry.prune(v1)
    old = registry.acquire(v1, _assistant("p"))
    assert registry.acquire(v1, _assistant("p")) is old
    registry.prune(v2)
    new = registry.acquire(v2, _assistant("p"))
    assert isinstance(old, ChatCompletionsProvider) and isinstance(new, ChatCompletionsProvider)
    assert new is not old
    registry.release(old)
    await asyncio.sleep(0)
    assert not old.client.is_closed()
    registry.release(old)
    await asyncio.sleep(0.01)
    assert old.client.is_closed() and not new.client.is_closed()
    registry.release(new)
    await asyncio.sleep(0.01)
    assert not new.client.is_closed()  # still the live set's client
    await registry.aclose()
    assert new.client.is_closed()


async def test_a_dropped_provider_is_closed_by_the_swap() -> None:
    """A swap to a set without the provider closes its idle client at once."""
    registry = ProviderRegistry(Settings())
    manifest = ProviderManifest(name="p", base_url="http://127.0.0.1:1/v1")
    v1 = _catalog("v1", p=manifest)
    registry.prune(v1)
    provider = registry.acquire(v1, _assistant("p"))
    registry.release(provider)
    registry.prune(_catalog("v2"))
    await asyncio.sleep(0.01)
    assert isinstance(provider, ChatCompletionsProvider) and provider.client.is_closed()
    await registry.aclose()


async def test_a_run_of_a_replaced_set_does_not_displace_the_live_client() -> None:
    """A run that read the set before a reload gets a client of its own, closed on release;
    the live set's client is kept."""
    registry = ProviderRegistry(Settings())
    v1 = _catalog("v1", p=ProviderManifest(name="p", base_url="http://127.0.0.1:1/v1"))
    v2 = _catalog("v2", p=ProviderManifest(name="p", base_url="http://127.0.0.1:2/v1"))
    registry.prune(v2)
    live = registry.acquire(v2, _assistant("p"))
    stale = registry.acquire(v1, _assistant("p"))
    assert stale is not live
    assert registry.acquire(v2, _assistant("p")) is live
    registry.release(stale)
    await asyncio.sleep(0.01)
    assert isinstance(stale, ChatCompletionsProvider) and stale.client.is_closed()
    assert isinstance(live, ChatCompletionsProvider) and not live.client.is_closed()
    await registry.aclose()
    assert live.client.is_closed()
