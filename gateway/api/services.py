"""What the route handlers use: the live pieces of one running gateway, in one object.

``create_app`` builds a ``Services`` (empty until startup), fills it in its
lifespan and hands it to every handler through Litestar's dependency
injection (``services: Services``). Handlers read ``catalog()`` once per
request; a missing piece (startup not done, no valid manifest set) is a
``NotReady`` (503). Imports ``gateway.errors``, ``gateway.events`` (to count a run's outcome),
``gateway.settings``, ``gateway.manifests.catalog``, ``gateway.api.auth``,
``gateway.api.metrics`` and, for types, the engine, store, runner,
reloader and knowledge index.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from litestar.di import NamedDependency

from gateway.api.auth import KeyRing, Principal
from gateway.api.metrics import Metrics
from gateway.errors import Forbidden, NotFound, NotReady
from gateway.events import Metadata, RunCompleted, RunFailed
from gateway.manifests.catalog import Catalog, CatalogRef
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.engine import Engine, RunHandle
    from gateway.executors.base import ActionRunner
    from gateway.knowledge import KnowledgeIndex
    from gateway.manifests.watch import Reloader
    from gateway.store.base import ThreadRecord, ThreadStore

__all__ = ["Services", "ServicesDep"]


class Services:
    """The running gateway's pieces, filled in by the app's lifespan.

    Attributes:
        settings: the settings the app was built with.
        catalog_ref: the live manifest set (None inside until one loads).
        keys: API keys and who they are.
        metrics: the Prometheus registry and its instruments.
        store / engine / runner / reloader / knowledge: set on startup
            (``knowledge``: the file_search index).
        stopping: set when ``gateway serve`` got SIGTERM/SIGINT (a start-up in
            progress gives up).
        closing: set once a shutdown drained the runs (``gateway.app.drain``): open
            WebSockets close with 1001 (going away).
        open_sockets: how many ``WS /ws/chat`` connections are being served.
    """

    def __init__(self, settings: Settings, keys: KeyRing) -> None:
        self.settings = settings
        self.keys = keys
        self.metrics = Metrics()
        self.catalog_ref = CatalogRef()
        self.store: ThreadStore | None = None
        self.engine: Engine | None = None
        self.runner: ActionRunner | None = None
        self.reloader: Reloader | None = None
        self.knowledge: KnowledgeIndex | None = None
        self.stopping = asyncio.Event()
        self.closing = asyncio.Event()
        self.open_sockets = 0

    def catalog(self) -> Catalog:
        """The live catalog, read once per request.

        Raises:
            NotReady: no valid manifest set is loaded.
        """
        catalog = self.catalog_ref.current
        if catalog is None:
            raise NotReady("no valid manifest set is loaded")
        return catalog

    def the_engine(self) -> Engine:
        """The engine, or ``NotReady`` before startup finished."""
        if self.engine is None or self.catalog_ref.current is None:
            raise NotReady("the gateway is not ready")
        return self.engine

    def the_store(self) -> ThreadStore:
        """The thread store, or ``NotReady`` before startup finished."""
        if self.store is None:
            raise NotReady("the thread store is not open")
        return self.store

    def track(self, handle: RunHandle) -> RunHandle:
        """Count the run in the metrics when it ends (status and duration)."""
        metrics = self.metrics

        def ended(_task: object) -> None:
            status, seconds = "completed", 0.0
            for event in handle.log.events:
                if isinstance(event, RunCompleted) and event.incomplete_details is not None:
                    status = "incomplete"
                elif isinstance(event, RunFailed):
                    status = "cancelled" if event.error.type == "cancelled" else "failed"
                elif isinstance(event, Metadata):
                    seconds = event.timings.total_ms / 1000.0
            metrics.on_run(status, seconds)

        handle.task.add_done_callback(ended)
        return handle

    async def thread_for(self, thread_id: str, principal: Principal) -> ThreadRecord:
        """The thread ``thread_id`` if it exists and ``principal`` may use its assistant.

        Raises:
            NotFound: no such thread.
            Forbidden: the key is limited to other assistants.
        """
        thread = await self.the_store().get_thread(thread_id)
        if thread is None:
            raise NotFound("thread", thread_id)
        if not principal.may_use(thread.assistant):
            # Not the name: a limited key must not learn other assistants' names.
            raise Forbidden("this key may not use this thread's assistant")
        return thread


ServicesDep = NamedDependency[Services]
"""How a handler asks for the services: ``services: ServicesDep``."""
