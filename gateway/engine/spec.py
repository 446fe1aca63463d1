"""What a run is started with: its pinned inputs, ids, and the history budget.

Plain data shared by ``core`` (which builds a ``RunSpec``) and ``run`` (which
executes it). Imports only interface modules (providers, store, manifests).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Protocol

from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Assistant
from gateway.providers.base import ChatMessage, Provider
from gateway.store.base import RunRecord

__all__ = ["HistoryBudget", "ProviderLookup", "RunSpec", "new_id"]


def new_id(prefix: str) -> str:
    """A fresh id such as ``run_3f2a...`` (prefix, underscore, 24 hex digits)."""
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True)
class HistoryBudget:
    """How much history goes to the model (whole turns, newest first).

    The engine's budget comes from the settings; each run's from its
    assistant's ``history`` over it (``for_assistant``).

    Attributes:
        max_messages: at most this many messages.
        max_chars: at most about this many characters (content plus call arguments).
    """

    max_messages: int = 200
    max_chars: int = 400_000

    def for_assistant(self, assistant: Assistant) -> HistoryBudget:
        """This budget with the limits ``assistant``'s ``history`` sets (``max_kb``: x 1000)."""
        history = assistant.history
        return HistoryBudget(
            max_messages=history.max_messages or self.max_messages,
            max_chars=history.max_kb * 1000 if history.max_kb else self.max_chars,
        )


@dataclass(slots=True)
class RunSpec:
    """Everything a run needs, fixed at start: the catalog and assistant are pinned here.

    Attributes:
        run_id / thread_id: ids (``thread_id`` is ``""`` for a stateless run).
        catalog: the manifest set the run started with, kept to its end.
        assistant: the assistant answering.
        provider: its model provider, acquired from the ``ProviderLookup`` and
            released by the engine when the run's task is done.
        record: the stored run record; None for a stateless run (nothing is persisted).
        correlation_id: the request's correlation id (logs, events, actions).
        history: the conversation so far (loaded from the store, or the client's).
        history_loaded: ``history`` is already complete (a stateless run, or a new
            thread holding only its first message), so the run does not read the store.
        offer_tools: the model is offered the assistant's tools; False (``tool_choice:
            "none"`` on /v1/chat/completions) offers none and runs none it calls anyway.
    """

    run_id: str
    thread_id: str
    catalog: Catalog
    assistant: Assistant
    provider: Provider
    record: RunRecord | None
    correlation_id: str = ""
    history: list[ChatMessage] = field(default_factory=list)
    history_loaded: bool = False
    offer_tools: bool = True


class ProviderLookup(Protocol):
    """What the engine needs from ``gateway.providers.registry.ProviderRegistry``."""

    def acquire(self, catalog: Catalog, assistant: Assistant) -> Provider:
        """The provider serving ``assistant`` in ``catalog``, held until ``release``.

        A provider replaced by a reload stays open while a run holds it.
        """
        ...

    def release(self, provider: Provider) -> None:
        """Give back a provider from ``acquire`` (once per ``acquire``)."""
        ...
