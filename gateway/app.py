"""``create_app(settings)``: the one place where the gateway's pieces are wired together.

Building the app only configures logging, checks the auth settings and
declares routes; nothing touches the disk or the network until the ASGI
lifespan starts. On startup, in order: the thread store and the engine
(``Engine.start`` opens the store), the provider registry, the sandbox
(started by the first valid manifest set), the action runner (whose inline
executor caps inline calls at ``GATEWAY_INLINE_CONCURRENCY`` and opens its
HTTP client and database pools on first use), the reloader (which loads
the manifests off the event loop and swaps each valid set in, calling
``Supervisor.reload`` and the runner's ``reload`` first, and letting the
provider registry close the clients a swap replaced), and file watching.
A manifest set that does not load leaves the gateway up but not ready
(``/ready`` is 503, chat routes answer 503) until a valid set arrives; a
thread store that cannot open (unreachable, its migration blocked) fails the
start-up with ``StartupFailed``: one logged line, no traceback.
Shutdown closes everything in reverse. Before it, ``gateway serve`` calls
``drain`` on SIGTERM/SIGINT (see its docstring): runs get
``GATEWAY_DRAIN_SECONDS`` to finish and their clients a clean end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import cast

import structlog
from litestar import Litestar
from litestar.config.compression import CompressionConfig
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.types import (
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    LifeSpanSendMessage,
    Receive,
    Scope,
    Send,
)

from gateway._origins import AllowedOrigins
from gateway.api import admin, assistants, chat, health, openai_compat, threads
from gateway.api.auth import KeyRing, RateLimiter
from gateway.api.errors import exception_handlers
from gateway.api.logs import configure_logging
from gateway.api.metrics import MeteredRunner
from gateway.api.middleware import GatewayMiddleware, is_loopback_host
from gateway.api.request import GatewayRequest
from gateway.api.services import Services
from gateway.engine import Engine
from gateway.errors import GatewayError, InvalidInput, NotReady
from gateway.executors.inline import InlineExecutor
from gateway.executors.runner import SandboxRunner
from gateway.knowledge.index import KnowledgeIndex, cache_dir_for
from gateway.manifests.catalog import Catalog
from gateway.manifests.loader import load_catalog
from gateway.manifests.validate import secret_warnings, variable_warnings
from gateway.manifests.watch import Reloader, ReloadResult
from gateway.providers.registry import ProviderRegistry
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings, SettingsError
from gateway.store import open_store

__all__ = ["StartupFailed", "create_app", "drain"]

log = structlog.get_logger("gateway.app")

ROUTES = [
    health.root,
    health.health,
    health.ready,
    health.metrics,
    health.playground,
    chat.start,
    chat.chat,
    chat.chat_ws,
    threads.list_messages,
    threads.delete_thread,
    threads.run_events,
    threads.cancel_run,
    threads.get_run,
    assistants.list_assistants,
    assistants.get_assistant,
    assistants.tool_schemas,
    assistants.list_actions,
    admin.manifests_status,
    admin.reload_manifests,
    admin.invoke_action,
    openai_compat.chat_completions,
    openai_compat.list_models,
    openai_compat.get_model,
]


def create_app(settings: Settings) -> Litestar:
    """Build the gateway's Litestar app from ``settings``.

    Raises:
        SettingsError: ``ENVIRONMENT=production`` without keys and without ``GATEWAY_AUTH=none``,
            or a ``GATEWAY_DATABASE_URL`` no store takes (unknown scheme, a URL libpq
            cannot parse).
    """
    configure_logging(settings)
    keys = KeyRing.from_settings(settings)
    try:
        # Building a store only parses its URL (it connects on startup): checked here, a
        # bad URL is one error naming the variable, not a traceback out of the lifespan.
        open_store(settings.database_url, root=Path.cwd(), lease_seconds=settings.run_lease)
    except InvalidInput as exc:
        raise SettingsError(f"GATEWAY_DATABASE_URL: {exc}") from None
    services = Services(settings, keys)
    limiter = (
        RateLimiter(settings.rate_limit, settings.rate_limit_burst)
        if settings.rate_limit > 0
        else None
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await _start_unless_stopped(services, stack)
            except StartupFailed as exc:
                if isinstance(exc, _StoppedDuringStartup):  # asked to stop: not an error
                    log.info("gateway.startup_stopped")
                else:
                    log.error("gateway.startup_failed", error=exc.message)
                app.state[_STARTUP_FAILURE] = exc.message  # the traceback is not logged
                raise
            log.info(
                "gateway.started",
                manifests=str(settings.manifests),
                manifest_version=services.catalog_ref.current.version
                if services.catalog_ref.current
                else None,
                auth="open" if keys.open else "keys",
            )
            yield
            log.info("gateway.stopping")

    app = _Gateway(
        route_handlers=ROUTES,
        dependencies={"services": Provide(lambda: services, use_cache=True, sync_to_thread=False)},
        exception_handlers=exception_handlers,
        request_class=GatewayRequest,
        lifespan=[lifespan],
        request_max_body_size=settings.max_body_bytes,
        compression_config=CompressionConfig(
            backend="gzip", minimum_size=1024, exclude=["/chat", "/v1/chat/completions", "/threads"]
        ),
        openapi_config=OpenAPIConfig(
            title="gateway",
            version="1",
            description="AI assistants declared in YAML: chat, threads, runs, OpenAI-compatible.",
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        cors_config=_cors(settings),
        logging_config=None,
        debug=False,
    )
    app.state["services"] = services
    # Outermost layer (around Litestar's router and exception handling) so every
    # response, a 404 for an unknown path included, gets a correlation id and an access line.
    app.asgi_handler = GatewayMiddleware(
        app.asgi_handler,
        keys=keys,
        limiter=limiter,
        metrics=services.metrics,
        max_body_bytes=settings.max_body_bytes,
        cors_origins=settings.cors_origins,
        loopback=is_loopback_host(settings.host),
    )
    return app


_STARTUP_FAILURE = "gateway.startup_failure"

# How long open WebSockets get to send their 1001 close frame once the runs have ended.
_SOCKETS_CLOSE_SECONDS = 2.0


async def drain(app: Litestar, *, forced: Callable[[], bool] = lambda: False) -> None:
    """The graceful half of a shutdown, run before the server closes its connections.

    While it runs the port still answers: ``/ready`` is 503 (load balancers stop
    sending traffic), new runs are refused with 503 ``not_ready``, ``/health``
    and reads keep working. Runs in progress get ``GATEWAY_DRAIN_SECONDS`` to
    finish, then are cancelled (stored as ``cancelled``), so every SSE stream
    and WebSocket following one gets the run's last events and ``done``; then
    each ``WS /ws/chat`` closes with 1001 (going away). ``forced()`` true (a
    second Ctrl-C) skips the wait.
    """
    services: Services = app.state["services"]
    if services.engine is not None:
        log.info("gateway.draining", runs=services.engine.active_runs)
        await services.engine.drain(services.settings.drain_seconds, forced=forced)
    services.closing.set()
    until = asyncio.get_running_loop().time() + _SOCKETS_CLOSE_SECONDS
    while services.open_sockets and asyncio.get_running_loop().time() < until and not forced():
        await asyncio.sleep(0.01)  # each socket's handler sends its close frame and returns


class StartupFailed(GatewayError):
    """A dependency the gateway cannot serve without stayed unavailable at start-up.

    Logged as one ``gateway.startup_failed`` line naming the setting and the cause;
    uvicorn then stops (``gateway serve`` exits 3) without logging a traceback.
    """

    type = "startup_failed"


class _StoppedDuringStartup(StartupFailed):
    """SIGTERM/SIGINT arrived while the gateway was starting: logged at info level."""


class _Gateway(Litestar):
    """Litestar, minus the traceback of a start-up failure the gateway explained itself.

    Litestar sends any exception out of the lifespan as ``lifespan.startup.failed``
    with its formatted traceback, which uvicorn logs at error level (through anyio,
    an ``ExceptionGroup`` of 40 lines). After a ``StartupFailed``, logged as one
    line, the event goes without it; uvicorn still stops and exits 3. Any other
    failure keeps its traceback: that one is a bug to read.
    """

    __slots__ = ()

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        """The ASGI entry point, with ``send`` filtered for the lifespan scope."""
        if scope["type"] == "lifespan":
            lifespan_send = cast("LifeSpanSend", send)

            async def quiet_send(message: LifeSpanSendMessage) -> None:
                if message["type"] == "lifespan.startup.failed" and self.state.get(
                    _STARTUP_FAILURE
                ):
                    message = {"type": "lifespan.startup.failed", "message": ""}
                await lifespan_send(message)

            send = quiet_send
        await super().__call__(scope, receive, send)


def _default_assistant_warnings(settings: Settings, catalog: Catalog) -> list[str]:
    """A warning when ``GATEWAY_DEFAULT_ASSISTANT`` (``ASSISTANT_ID``) names no assistant of
    ``catalog``: every request naming none got 404 with no other clue (an old
    deployment's ``asst_...`` id, a rename)."""
    name = settings.default_assistant
    if name is None or name in catalog.assistants:
        return []
    return [
        f"GATEWAY_DEFAULT_ASSISTANT (or ASSISTANT_ID) names assistant {name[:64]!r}, not in "
        "the manifest set: a request naming no assistant gets 404"
    ]


def _cors(settings: Settings) -> CORSConfig | None:
    """CORS for browser front-ends on other origins (``GATEWAY_CORS_ORIGINS``), else none.

    Any request header is allowed (a preflight's list is echoed, Authorization included):
    the origins are the operator's own front-ends, and clients add headers of their own
    (the openai JS SDK sends X-Stainless-*), which a fixed list would refuse with a 400
    preflight, so no browser could call the OpenAI-compatible endpoint. Origins are matched
    by ``gateway._origins``' regular expression, the one the gateway's own Origin check
    uses, never by Litestar's wildcard rule (``*`` matches anything there, dots included).
    """
    if not settings.cors_origins:
        return None
    origins = AllowedOrigins(settings.cors_origins)
    return CORSConfig(
        allow_origins=["*"] if origins.any else [],
        allow_origin_regex=origins.regex,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        allow_headers=["*"],
        # x-should-retry: the openai JS SDK reads it (see ``gateway.api.openai_compat``).
        expose_headers=["X-Correlation-ID", "Retry-After", "X-Should-Retry"],
        max_age=600,
    )


async def _start_unless_stopped(services: Services, stack: contextlib.AsyncExitStack) -> None:
    """``_start``, abandoned when ``services.stopping`` is set (SIGTERM/SIGINT meanwhile).

    A start-up waiting up to 30 s for PostgreSQL otherwise held ``docker stop`` and
    Ctrl-C until the wait ended. What had started is closed by ``stack``.

    Raises:
        StartupFailed: a dependency stayed unavailable, or the gateway was stopped.
    """
    start = asyncio.ensure_future(_start(services, stack))
    stop = asyncio.ensure_future(services.stopping.wait())
    try:
        await asyncio.wait({start, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if not start.done():
        start.cancel()
        await asyncio.gather(start, return_exceptions=True)
        raise _StoppedDuringStartup("stopped (SIGTERM/SIGINT) during start-up")
    start.result()


async def _start(services: Services, stack: contextlib.AsyncExitStack) -> None:
    """Start every piece; each registers its own shutdown on ``stack`` (run in reverse)."""
    settings = services.settings
    store = open_store(settings.database_url, root=Path.cwd(), lease_seconds=settings.run_lease)
    stack.push_async_callback(store.close)
    services.store = store
    providers = ProviderRegistry(settings)
    stack.push_async_callback(providers.aclose)
    supervisor = Supervisor(settings)
    stack.push_async_callback(supervisor.aclose)
    knowledge = KnowledgeIndex(cache_dir_for(settings.database_url))
    stack.callback(knowledge.close)
    services.knowledge = knowledge  # its parse failures show in /manifests/status
    inline = InlineExecutor(concurrency=settings.inline_concurrency)
    actions = SandboxRunner(supervisor, knowledge, inline=inline)
    stack.push_async_callback(actions.aclose)  # inline pools, after the engine stopped its runs
    services.metrics.watch_concurrency(
        "sandbox", lambda: supervisor.stats.active, lambda: supervisor.stats.queued
    )
    services.metrics.watch_concurrency("inline", lambda: inline.in_flight, lambda: inline.queued)
    runner = MeteredRunner(actions, services.metrics)
    services.runner = runner
    engine = Engine(
        catalog=services.catalog_ref,
        store=store,
        runner=runner,
        providers=providers,
        settings=settings,
    )
    try:
        await engine.start()  # opens the store: waits for a PostgreSQL server, migrates
    except NotReady as exc:
        raise StartupFailed(f"GATEWAY_DATABASE_URL: {exc.message}") from None
    stack.push_async_callback(engine.aclose)
    services.engine = engine
    services.metrics.active_runs.set_function(lambda: engine.active_runs)

    started = False

    async def sandbox_swap(catalog: Catalog) -> None:
        nonlocal started
        if started:
            await supervisor.reload(catalog)
        else:
            await supervisor.start(catalog)
            started = True

    async def sandbox_refresh(catalog: Catalog) -> None:
        if started:  # git-sync may have switched revisions under a rejected push
            await supervisor.reload(catalog)

    root = settings.manifests

    def load() -> Catalog:
        return load_catalog(root, gateway_root=settings.gateway_root)

    def reloaded(result: ReloadResult) -> None:
        services.metrics.on_reload(result)
        if result.result == "swapped" and services.catalog_ref.current is not None:
            providers.prune(services.catalog_ref.current)  # close the clients it replaced

    reloader = Reloader(
        settings,
        services.catalog_ref,
        load=load,
        on_swap=[sandbox_swap, actions.reload],
        on_refresh=[sandbox_refresh],
        on_result=reloaded,
        # Warnings about a valid set: keys limited to assistants it lacks; a default
        # assistant it lacks; declared secrets too short to mask or not UTF-8 (read where
        # the runner reads them); ${VAR} values too short to mask where they went.
        check=lambda catalog: [
            *services.keys.assistant_warnings(catalog.assistants),
            *_default_assistant_warnings(settings, catalog),
            *secret_warnings(catalog.actions.values(), os.environ),
            *variable_warnings(catalog.short_variables),
        ],
    )
    services.reloader = reloader
    first = await reloader.reload("startup")
    if first.result not in ("swapped", "unchanged"):
        log.error("gateway.not_ready", problems=len(first.errors), result=first.result)
    await reloader.start()
    stack.push_async_callback(reloader.aclose)
