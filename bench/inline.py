"""``isolation: inline`` vs the sandbox, side by side: the same http and sql actions both ways.

Run: ``uv run --frozen python bench/inline.py [--calls N]``. An ``http`` action
(GET to a local keep-alive HTTP server, JSON answer) and a ``sql`` action (one
row from a SQLite file) are each called through the real ``SandboxRunner``
with ``isolation: sandbox`` and with ``isolation: inline``, sequentially and
with 4 calls in flight; p50/p95 latency and calls/s are printed for each,
with the ratios. Same arguments validation, secrets and result handling on
both paths: the difference is the fork, the confinement and the pooling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import gateway.executors  # noqa: F401  (registers the kinds)
from gateway.executors.http import HttpConfig
from gateway.executors.runner import SandboxRunner
from gateway.executors.sql import SqlConfig
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action, Database
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings

_BODY = json.dumps({"city": "Paris", "temperature": 21, "unit": "c"}).encode()


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    call: Callable[[], Awaitable[object]], calls: int, concurrency: int
) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, calls/s) for ``calls`` calls with ``concurrency`` in flight."""
    latencies: list[float] = []
    queue = list(range(calls))

    async def worker() -> None:
        while queue:
            queue.pop()
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    for _ in range(min(5, calls)):  # warm up (inline: opens the pools)
        await call()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return percentile(latencies, 0.5), percentile(latencies, 0.95), calls / elapsed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: what a pooled client can reuse
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_BODY)))
        self.end_headers()
        self.wfile.write(_BODY)


def _actions(base_url: str) -> dict[str, Action]:
    """The http and sql actions, each once per isolation."""
    params = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "id": {"type": "integer"}},
    }
    found: dict[str, Action] = {}
    for isolation in ("sandbox", "inline"):
        found[f"http_{isolation}"] = Action(
            name=f"http_{isolation}",
            description="d",
            parameters=params,
            kind_key="http",
            config=HttpConfig(url=base_url + "/weather/{{ city }}", query={"unit": "c"}),
            isolation=isolation,
        )
        found[f"sql_{isolation}"] = Action(
            name=f"sql_{isolation}",
            description="d",
            parameters=params,
            kind_key="sql",
            config=SqlConfig(
                database="shop", query="SELECT id, status FROM orders WHERE id = {{ id }}"
            ),
            isolation=isolation,
        )
    return found


async def main(calls: int) -> None:
    """Run the four variants and print the table and the ratios."""
    root = Path(tempfile.mkdtemp(prefix="gw-bench-inline-"))
    root.chmod(0o777)  # the sandbox's own uid opens the database too
    db = root / "shop.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT)")
    conn.executemany("INSERT INTO orders VALUES (?, ?)", [(i, "shipped") for i in range(1000)])
    conn.commit()
    conn.close()
    db.chmod(0o666)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    catalog = Catalog(
        version="b",
        root=root,
        gateway_root=root,
        loaded_at=0,
        databases={"shop": Database(name="shop", url="sqlite:///shop.db")},
        actions=_actions(f"http://127.0.0.1:{httpd.server_address[1]}"),
    )
    supervisor = Supervisor(Settings(sandbox_concurrency=8))
    await supervisor.start(catalog)
    runner = SandboxRunner(supervisor)

    def variant(name: str, args: dict[str, Any]) -> Any:
        async def call() -> object:
            result = await runner.run(catalog, name, args)
            assert result.status == "succeeded", result
            return result

        return call

    rows: dict[tuple[str, str, int], tuple[float, float, float]] = {}
    try:
        for concurrency in (1, 4):
            for kind, args in (("http", {"city": "Paris"}), ("sql", {"id": 42})):
                for isolation in ("sandbox", "inline"):  # interleaved: same load on both
                    rows[(kind, isolation, concurrency)] = await measure(
                        variant(f"{kind}_{isolation}", args), calls, concurrency
                    )
    finally:
        await runner.aclose()
        await supervisor.aclose()
        httpd.shutdown()
        httpd.server_close()
        shutil.rmtree(root, ignore_errors=True)

    caps = supervisor.capabilities
    print(
        f"sandbox isolation: netns={caps and caps.network_namespace} "
        f"own uid={caps and caps.drop_privileges} landlock={caps and caps.landlock}; "
        "http and sql run with network on"
    )
    print(f"{'action':<8}{'isolation':<10}{'conc':>5}{'p50 ms':>10}{'p95 ms':>10}{'calls/s':>10}")
    for (kind, isolation, concurrency), (p50, p95, rate) in rows.items():
        print(f"{kind:<8}{isolation:<10}{concurrency:>5}{p50:>10.3f}{p95:>10.3f}{rate:>10.0f}")
    print()
    for concurrency in (1, 4):
        for kind in ("http", "sql"):
            boxed = rows[(kind, "sandbox", concurrency)]
            inline = rows[(kind, "inline", concurrency)]
            print(
                f"{kind} concurrency {concurrency}: sandbox/inline p50 = "
                f"{boxed[0] / inline[0]:.1f}x, p95 = {boxed[1] / inline[1]:.1f}x, "
                f"inline calls/s / sandbox calls/s = {inline[2] / boxed[2]:.1f}x"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(main(args.calls))
