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

Clients are cached per provider name and configuration. A run holds its
provider from ``acquire`` to ``release``. A reload that changes a provider's
manifest (or drops it) retires its client (``prune``, called after each swap,
or the next ``acquire`` under the new set); a retired client is closed as soon
as the last run holding it has finished, so runs in flight are never cut and
replaced connection pools do not pile up. A reload that does not touch a
provider keeps its client and connections. ``aclose()`` closes every client.
Imports ``gateway.settings``, ``gateway.errors``, ``gateway.manifests``, this
package and structlog.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import msgspec
import structlog

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

log = structlog.get_logger("gateway.providers")

# The API modules register themselves on import; keep them imported here.
_REGISTERED = (openai_chat.ChatCompletionsProvider, openai_responses.ResponsesProvider)

BUILTIN_PROVIDERS = ("openai", "offline")
"""Provider names that exist without a manifest."""


class ProviderRegistry:
    """Resolves the provider of each assistant and owns the lifetime of every client."""

    def __init__(self, settings: Settings) -> None:
        """Create an empty registry; clients are built on first use.

        Args:
            settings: supplies ``openai_api_key`` / ``openai_base_url`` for the
                built-in ``openai`` provider and the default provider choice.
        """
        self._settings = settings
        self._offline = OfflineProvider()
        # name -> (configuration, client) of the client new runs get.
        self._current: dict[str, tuple[bytes, Provider]] = {}
        self._users: Counter[Provider] = Counter()  # client -> runs holding it
        self._retired: set[Provider] = set()  # replaced, closed once no run holds it
        self._closing: set[asyncio.Task[None]] = set()
        self._live: Catalog | None = None  # the set ``prune`` last saw go live

    @property
    def default_name(self) -> str:
        """The provider used when an assistant names none."""
        return "openai" if self._settings.openai_api_key else "offline"

    def names(self, catalog: Catalog) -> list[str]:
        """Every provider name an assistant of ``catalog`` may use."""
        return sorted(set(BUILTIN_PROVIDERS) | set(catalog.providers))

    def get(self, catalog: Catalog, assistant: Assistant) -> Provider:
        """The provider for ``assistant`` under ``catalog``, without holding it.

        A client got this way may be closed by the next reload that replaces it;
        a run uses ``acquire`` / ``release`` instead.

        Raises:
            NotFound: the assistant names a provider that is neither built in
                nor declared in ``catalog``.
            ProviderError: the assistant names ``openai`` but neither
                ``OPENAI_API_KEY`` nor ``OPENAI_BASE_URL`` is set.
        """
        name = assistant.provider or self.default_name
        manifest = self._manifest(catalog, name)
        if manifest is None:
            return self._offline
        config = msgspec.json.encode(manifest)
        current = self._current.get(name)
        if current is not None and current[0] == config:
            return current[1]
        provider = self._build(manifest)
        if self._live is not None and catalog is not self._live:
            # A run that read the set before the reload that replaced it: a client
            # of its own, closed when it is released; the live set's client stays.
            self._retired.add(provider)
            return provider
        self._current[name] = (config, provider)
        if current is not None:
            self._retire(current[1])
        return provider

    def acquire(self, catalog: Catalog, assistant: Assistant) -> Provider:
        """``get``, held by the caller until ``release``: it is not closed meanwhile.

        Raises:
            NotFound, ProviderError: as ``get``.
        """
        provider = self.get(catalog, assistant)
        if provider is not self._offline:
            self._users[provider] += 1
        return provider

    def release(self, provider: Provider) -> None:
        """Give back a provider from ``acquire``; a retired client no run holds is closed."""
        if provider is self._offline or self._users[provider] <= 0:
            return
        self._users[provider] -= 1
        if self._users[provider] == 0:
            del self._users[provider]
            if provider in self._retired:
                self._close(provider)

    def prune(self, catalog: Catalog) -> None:
        """``catalog`` went live: retire the clients whose provider it changed or dropped.

        Called after every swap, so a replaced client is closed without waiting
        for the next run that uses its provider (there may be none).
        """
        self._live = catalog
        for name, (config, provider) in list(self._current.items()):
            try:
                manifest = self._manifest(catalog, name)
            except (NotFound, ProviderError):  # dropped from the set
                manifest = None
            if manifest is None or msgspec.json.encode(manifest) != config:
                del self._current[name]
                self._retire(provider)

    def _manifest(self, catalog: Catalog, name: str) -> ProviderManifest | None:
        """The manifest of provider ``name`` in ``catalog``; None for the offline model.

        Raises:
            NotFound, ProviderError: as ``get``.
        """
        manifest = catalog.providers.get(name)
        if manifest is None and name == "offline":
            return None
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
        return manifest

    def _retire(self, provider: Provider) -> None:
        """``provider`` serves no new run: close it now, or when its last run releases it."""
        if self._users[provider] > 0:
            self._retired.add(provider)
        else:
            self._users.pop(provider, None)
            self._close(provider)

    def _close(self, provider: Provider) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): ``aclose`` closes it
            self._retired.add(provider)
            return
        self._retired.discard(provider)
        task = loop.create_task(self._aclose_one(provider))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _aclose_one(provider: Provider) -> None:
        try:
            await provider.aclose()
        except Exception:  # a client that fails to close must not stop the others
            log.warning("provider.close_failed", provider=provider.name, exc_info=True)

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
                max_stream_seconds=manifest.max_stream_seconds,
            )
        )

    async def aclose(self) -> None:
        """Close every client this registry created (at shutdown, after the runs ended)."""
        providers = {provider for _, provider in self._current.values()} | self._retired
        self._current.clear()
        self._retired.clear()
        self._users.clear()
        for provider in providers:
            await self._aclose_one(provider)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
