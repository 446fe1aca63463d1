"""Service routes: ``/``, ``/health``, ``/ready``, ``/metrics`` and the ``/ui`` playground.

``/health`` is liveness (the process answers); ``/ready`` is 200 only when a
valid manifest set is loaded and the store answers (``ThreadStore.ping``; the
SQLite store's checks that its file is still there, and writes while the file
fails, so a freed disk turns it 200 with no traffic), else 503 with the error
body, so a load balancer sends traffic only to replicas that can serve it.
While ``gateway serve`` drains on SIGTERM/SIGINT ``/ready`` is 503 and
``/health`` stays 200. ``/``, ``/health``, ``/ready`` and ``/ui`` also answer HEAD
(load balancers probe with it): the GET's status and headers, no body.
Imports ``gateway.api.*``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from litestar import HttpMethod, Request, Response, get, route
from litestar.openapi.datastructures import ResponseSpec

from gateway.api.errors import correlation_id_of
from gateway.api.metrics import CONTENT_TYPE_LATEST
from gateway.api.schemas import ErrorBody, ErrorDetail, HealthBody, ReadyBody, RootBody
from gateway.api.services import ServicesDep

__all__ = ["health", "metrics", "playground", "ready", "root"]

_UI = Path(__file__).resolve().parent.parent / "ui" / "index.html"
_FALLBACK_UI = (
    "<!doctype html><title>gateway</title><p>The playground is not installed; "
    "see <a href='/schema'>/schema</a> for the API.</p>"
)

try:
    _VERSION = metadata.version("gateway")
except metadata.PackageNotFoundError:  # running from a source tree without install
    _VERSION = "0.0.0"


# Load balancers and uptime monitors probe with HEAD: these routes answer it as GET,
# without the body (``GatewayMiddleware`` drops it, whatever the server does).
_PROBED = [HttpMethod.GET, HttpMethod.HEAD]


@route("/", http_method=_PROBED, tags=["service"])
async def root(services: ServicesDep) -> RootBody:
    """Service name, version, live manifest version and how many assistants it serves."""
    catalog = services.catalog_ref.current
    return RootBody(
        service="gateway",
        version=_VERSION,
        manifest_version=catalog.version if catalog else None,
        assistants=len(catalog.assistants) if catalog else 0,
    )


@route("/health", http_method=_PROBED, tags=["service"])
async def health() -> HealthBody:
    """Liveness: the process answers."""
    return HealthBody()


@route(
    "/ready",
    http_method=_PROBED,
    tags=["service"],
    responses={503: ResponseSpec(ErrorBody, description="No valid manifest set, or store down")},
)
async def ready(request: Request[Any, Any, Any], services: ServicesDep) -> Response[Any]:
    """200 when a valid manifest set is loaded and the store answers, else 503 (also while
    the gateway drains its runs on shutdown)."""
    catalog = services.catalog_ref.current
    store_ok = False
    if services.store is not None:
        try:
            store_ok = await services.store.ping()
        except Exception:  # a store that raises is a store that does not answer
            store_ok = False
    draining = services.engine is not None and services.engine.draining
    if catalog is not None and store_ok and services.engine is not None and not draining:
        return Response(ReadyBody(status="ready", manifest_version=catalog.version, store=True))
    reason = (
        "the gateway is shutting down"
        if draining
        else "no valid manifest set is loaded"
        if catalog is None
        else "the thread store does not answer"
        if not store_ok
        else "the gateway is starting"
    )
    detail = ErrorDetail(
        type="not_ready", message=reason, correlation_id=correlation_id_of(request.scope)
    )
    return Response(ErrorBody(error=detail), status_code=503)


# Litestar appends "; charset=utf-8" to text types itself; a second charset
# parameter makes strict parsers (Prometheus' Go client) reject the scrape.
_METRICS_MEDIA_TYPE = "; ".join(
    part for part in CONTENT_TYPE_LATEST.split("; ") if not part.startswith("charset=")
)


@get("/metrics", tags=["service"], include_in_schema=False)
async def metrics(services: ServicesDep) -> Response[bytes]:
    """Prometheus metrics (text format)."""
    return Response(services.metrics.render(), media_type=_METRICS_MEDIA_TYPE)


_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def _page_headers(page: str) -> dict[str, str]:
    """The playground's security headers; its inline script and style are allowed by hash.

    The page shows what models, tools and manifests wrote and takes an API key:
    the policy keeps any markup that ever slipped into it from running script or
    sending data anywhere but the gateway, and other sites from framing it.
    """
    allowed: dict[str, list[str]] = {"script": [], "style": []}
    for kind, body in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        allowed[kind].append(f"'sha256-{digest}'")
    scripts = " ".join(allowed["script"]) or "'none'"
    styles = " ".join(allowed["style"]) or "'none'"
    policy = (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; "
        "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }


@route(
    "/ui", http_method=_PROBED, tags=["service"], include_in_schema=False, media_type="text/html"
)
async def playground() -> Response[str]:
    """The web playground (a static page speaking the public API), with a strict CSP."""
    try:
        page = _UI.read_text(encoding="utf-8")
    except OSError:
        page = _FALLBACK_UI
    return Response(page, media_type="text/html", headers=_page_headers(page))
