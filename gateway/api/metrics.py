"""Prometheus metrics: HTTP requests, runs, tool calls and reloads, on one registry per app.

Each app owns its ``CollectorRegistry`` (two apps in one process, as in tests,
never collide). ``MeteredRunner`` wraps the engine's ``ActionRunner`` to count
tool calls and time them, labelled by ``isolation`` (``sandbox`` or ``inline``,
see ``isolation_of``); ``watch_concurrency`` exports how many calls of one
isolation hold a slot of its concurrency limit and how many wait for one,
read live at each scrape; ``on_run`` counts a finished run (called by
``Services.track`` when a run's task ends);
the reloader reports through ``on_reload``. ``GET /metrics`` (any valid key when keys
are set, as every route) serves the text format. Imports ``gateway.executors.base``,
prometheus-client and, for types, ``gateway.manifests`` (catalog, reload results).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gateway.executors.base import ActionRunner, ToolResult, isolation_of

if TYPE_CHECKING:
    from gateway.manifests.catalog import Catalog
    from gateway.manifests.watch import ReloadResult

__all__ = ["CONTENT_TYPE_LATEST", "MeteredRunner", "Metrics"]

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """The gateway's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to the end of the response (streams: until the stream ends).",
            ["method", "route"],
            registry=r,
            buckets=_LATENCY,
        )
        self.in_flight = Gauge(
            "gateway_http_requests_in_flight", "Requests being served.", registry=r
        )
        self.runs = Counter(
            "gateway_runs_total", "Finished runs by status.", ["status"], registry=r
        )
        self.active_runs = Gauge(
            "gateway_runs_active", "Runs this process is executing.", registry=r
        )
        self.run_seconds = Histogram(
            "gateway_run_duration_seconds", "Run wall time.", registry=r, buckets=_LATENCY
        )
        self.tool_calls = Counter(
            "gateway_tool_calls_total",
            "Tool calls by status and isolation (sandbox | inline).",
            ["status", "isolation"],
            registry=r,
        )
        self.tool_seconds = Histogram(
            "gateway_tool_duration_seconds",
            "Tool call duration by isolation (sandbox | inline).",
            ["isolation"],
            registry=r,
            buckets=_LATENCY,
        )
        self.tools_in_flight = Gauge(
            "gateway_tool_calls_in_flight",
            "Tool calls holding a slot of their isolation's concurrency limit, by isolation.",
            ["isolation"],
            registry=r,
        )
        self.tools_queued = Gauge(
            "gateway_tool_calls_queued",
            "Tool calls waiting for a slot of their isolation's concurrency limit, by isolation.",
            ["isolation"],
            registry=r,
        )
        self.reloads = Counter(
            "gateway_reloads_total", "Manifest reload attempts by result.", ["result"], registry=r
        )
        for status in ("completed", "incomplete", "failed", "cancelled"):
            self.runs.labels(status)
        for isolation in ("sandbox", "inline"):
            self.tool_seconds.labels(isolation)
            for status in ("succeeded", "failed", "timed_out"):
                self.tool_calls.labels(status, isolation)
        for result in ("swapped", "unchanged", "rejected", "failed"):
            self.reloads.labels(result)

    def watch_concurrency(
        self,
        isolation: str,
        in_flight: Callable[[], float],
        queued: Callable[[], float] | None = None,
    ) -> None:
        """Export ``in_flight()`` (and ``queued()``) for ``isolation``, read at each scrape."""
        self.tools_in_flight.labels(isolation).set_function(in_flight)
        if queued is not None:
            self.tools_queued.labels(isolation).set_function(queued)

    def on_reload(self, result: ReloadResult) -> None:
        """Count one reload attempt (``Reloader(on_result=...)``)."""
        self.reloads.labels(result.result).inc()

    def on_run(self, status: str, seconds: float) -> None:
        """Count one finished run."""
        self.runs.labels(status).inc()
        self.run_seconds.observe(seconds)

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class MeteredRunner:
    """An ``ActionRunner`` that counts and times every call of the runner it wraps."""

    def __init__(self, inner: ActionRunner, metrics: Metrics) -> None:
        self.inner = inner
        self._metrics = metrics

    async def run(
        self,
        catalog: Catalog,
        name: str,
        arguments: str | dict[str, Any],
        *,
        correlation_id: str = "",
        assistant: str | None = None,
    ) -> ToolResult:
        """Run ``name`` through the wrapped runner and record its status and duration."""
        result = await self.inner.run(
            catalog, name, arguments, correlation_id=correlation_id, assistant=assistant
        )
        isolation = isolation_of(catalog, name)
        self._metrics.tool_calls.labels(result.status, isolation).inc()
        self._metrics.tool_seconds.labels(isolation).observe(result.duration_ms / 1000.0)
        return result
