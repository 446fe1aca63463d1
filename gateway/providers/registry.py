"""Which provider serves an assistant: built-ins, manifests, one client each.

``ProviderRegistry(settings)`` is created once by ``create_app`` and handed to
the engine. ``get(catalog, assistant)`` resolves ``assistant.provider``:

- omitted: ``openai`` when ``OPENAI_API_KEY`` is set, else ``offline``;
- ``offline``: the embedded deterministic model (``offline.py``);
- ``openai``: OpenAI through the Responses API, with ``OPENAI_API_KEY`` and
  ``OPENAI_BASE_URL`` from the settings (a ``kind: provider`` manifest named
  ``openai`` overrides it);
- any other name: the catalog's ``kind: provider`` manifest of that name,
  through ``api: chat`` (default) or ``api: responses``.

Clients are cached per provider name and configuration, so a reload that
changes a provider's manifest gets a new client while runs still streaming
keep the old one; a reload that does not touch it keeps the connection pool.
Replaced clients are closed by ``aclose()``. Imports ``gateway.settings``,
``gateway.errors``, ``gateway.manifests`` and this package.
"""

from __future__ import annotations

import msgspec

from gateway.errors import NotFound, ProviderError
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Assistant
from gateway.manifests.model import Provider as ProviderManifest
from gateway.providers import openai_chat, openai_responses
from gateway.providers._openai_base import API_KINDS, ProviderConfig
from gateway.providers.base import Provider
from gateway.providers.offline import OfflineProvider
from gateway.settings import Settings

__all__ = ["BUILTIN_PROVIDERS", "ProviderRegistry"]

# The API modules register themselves on import; keep them imported here.
_REGISTERED = (openai_chat.ChatCompletionsProvider, openai_responses.ResponsesProvider)

BUILTIN_PROVIDERS = ("openai", "offline")
"""Provider names that exist without a manifest."""


class ProviderRegistry:
    """Resolves and caches the provider of each assistant."""

    def __init__(self, settings: Settings) -> None:
        """Create an empty registry; clients are built on first use.

        Args:
            settings: supplies ``openai_api_key`` / ``openai_base_url`` for the
                built-in ``openai`` provider and the default provider choice.
        """
        self._settings = settings
        self._offline = OfflineProvider()
        self._clients: dict[tuple[str, bytes], Provider] = {}
        self._current: dict[str, tuple[str, bytes]] = {}
        self._retired: list[Provider] = []

    @property
    def default_name(self) -> str:
        """The provider used when an assistant names none."""
        return "openai" if self._settings.openai_api_key else "offline"

    def names(self, catalog: Catalog) -> list[str]:
        """Every provider name an assistant of ``catalog`` may use."""
        return sorted(set(BUILTIN_PROVIDERS) | set(catalog.providers))

    def get(self, catalog: Catalog, assistant: Assistant) -> Provider:
        """The provider for ``assistant`` under ``catalog``.

        Raises:
            NotFound: the assistant names a provider that is neither built in
                nor declared in ``catalog``.
            ProviderError: the assistant names ``openai`` but neither
                ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` is set.
        """
        name = assistant.provider or self.default_name
        manifest = catalog.providers.get(name)
        if manifest is None and name == "offline":
            return self._offline
        if manifest is None and name == "openai":
            if not self._settings.openai_api_key and not self._settings.openai_base_url:
                raise ProviderError(
                    "the built-in provider 'openai' needs OPENAI_API_KEY (or OPENAI_BASE_URL "
                    "for a server without keys); unset `provider:` to use the offline model"
                )
            manifest = ProviderManifest(
                name="openai",
                api_key=self._settings.openai_api_key,
                base_url=self._settings.openai_base_url,
                api="responses",
            )
        if manifest is None:
            raise NotFound("provider", name)
        key = (name, msgspec.json.encode(manifest))
        provider = self._clients.get(key)
        if provider is None:
            provider = self._build(manifest)
            self._clients[key] = provider
            previous = self._current.get(name)
            if previous is not None and previous != key:
                # Runs in flight may still stream from it: close it at shutdown only.
                self._retired.append(self._clients.pop(previous))
            self._current[name] = key
        return provider

    @staticmethod
    def _build(manifest: ProviderManifest) -> Provider:
        cls = API_KINDS[manifest.api]
        return cls(
            ProviderConfig(
                name=manifest.name,
                base_url=manifest.base_url,
                api_key=manifest.api_key,
                timeout=manifest.timeout,
                max_retries=manifest.max_retries,
                default_headers=manifest.default_headers,
            )
        )

    async def aclose(self) -> None:
        """Close every client this registry created."""
        providers = [*self._clients.values(), *self._retired]
        self._clients.clear()
        self._current.clear()
        self._retired.clear()
        for provider in providers:
            await provider.aclose()
