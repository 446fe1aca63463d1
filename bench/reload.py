"""Reload-to-live latency: a file write until the new tool is visible, for 10/100/1,000 manifests.

For each size, a temporary site holds one assistant file plus N-1 action files
(HTTP actions, and one Python action so the loader's import check is part of
every reload). Each manifest edit rewrites the assistant file so it defines and
references a new action ``probe_<k>``; we time from just before the write until:

- ``load``: ``load_catalog`` alone (no watching), the floor of any reload;
- ``swap``: an in-process ``Reloader`` (real watchfiles, real loader, no
  sandbox hook) has swapped in a catalog with the new tool;
- ``http``: the real server (uvicorn subprocess, watching) lists the tool at
  ``GET /assistants/bench/tools`` (a manifest-only edit keeps the sandbox's
  zygotes: nothing they load changed);
- ``code``: the same server, after an edit of the Python action's code, answers
  ``POST /actions/add/invoke`` with the new code's result (the zygote running
  it is replaced: this includes starting a new one).

Run: ``uv run --frozen python bench/reload.py [--sizes 10,100,1000] [--edits 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import structlog

import gateway.executors  # noqa: F401  (registers the action kinds)
from gateway.manifests.catalog import CatalogRef
from gateway.manifests.loader import load_catalog
from gateway.manifests.watch import Reloader
from gateway.settings import Settings

ACTION = """kind: action
name: fetch_{i}
description: Fetch record number {i} from the example service.
parameters:
  type: object
  properties:
    id: {{type: string, description: The record id}}
  required: [id]
http:
  method: GET
  url: https://example.com/records/{i}
  query: {{id: "{{{{ id }}}}"}}
"""

PY_ACTION = """kind: action
name: add
description: Add two numbers.
python:
  function: benchactions.tools:add
"""

ASSISTANT = """kind: assistant
name: bench
provider: offline
actions: [add, fetch_1, {probe}]
---
kind: action
name: {probe}
description: A probe added by edit {k}.
http:
  method: GET
  url: https://example.com/probe/{k}
"""

LAUNCHER = """
import uvicorn
from gateway.app import create_app
from gateway.settings import Settings
uvicorn.run(create_app(Settings.from_env(dotenv=None)), host="127.0.0.1", port=0,
            log_level="info", access_log=False)
"""


def make_site(root: Path, n: int) -> Path:
    """One assistant file + n-1 action files (one Python) under root/manifests."""
    manifests = root / "manifests"
    (manifests / "actions").mkdir(parents=True)
    (root / "benchactions").mkdir()
    (root / "benchactions" / "__init__.py").write_text("")
    (root / "benchactions" / "tools.py").write_text(
        'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n    return a + b\n'
    )
    (manifests / "actions" / "add.yaml").write_text(PY_ACTION)
    for i in range(1, n - 1):
        (manifests / "actions" / f"fetch_{i}.yaml").write_text(ACTION.format(i=i))
    write_assistant(manifests, 0)
    return manifests


def write_assistant(manifests: Path, k: int) -> str:
    """Rewrite the assistant so it references probe_<k>; returns the probe name."""
    probe = f"probe_{k}"
    tmp = manifests / ".bench.yaml.tmp"
    tmp.write_text(ASSISTANT.format(probe=probe, k=k))
    tmp.replace(manifests / "bench.yaml")  # atomic, as editors and git do
    return probe


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values, by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bench_load(manifests: Path, edits: int) -> list[float]:
    """load_catalog alone, in ms."""
    times = []
    for _ in range(edits):
        start = time.perf_counter()
        load_catalog(manifests)
        times.append((time.perf_counter() - start) * 1000)
    return times


async def bench_swap(manifests: Path, edits: int, first: int) -> list[float]:
    """Write -> in-process Reloader swap, in ms."""
    settings = Settings(manifests=manifests, watch=True, reload_debounce_ms=50)
    ref = CatalogRef()
    reloader = Reloader(settings, ref, load=lambda: load_catalog(manifests))
    await reloader.reload("bench start")
    await reloader.start()
    await asyncio.sleep(0.3)
    times = []
    try:
        for k in range(first, first + edits):
            start = time.perf_counter()
            probe = write_assistant(manifests, k)
            while ref.current is None or probe not in ref.current.actions:
                await asyncio.sleep(0.002)
            times.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.25)
    finally:
        await reloader.aclose()
    return times


def write_code(root: Path, k: int) -> None:
    """Rewrite the Python action so ``add(1, 1)`` answers ``2 + k``."""
    path = root / "benchactions" / "tools.py"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        f'def add(a: int, b: int) -> int:\n    """Add two numbers."""\n    return a + b + {k}\n'
    )
    tmp.replace(path)


def bench_http(
    root: Path, manifests: Path, edits: int, first: int
) -> tuple[list[float], list[float], list[float]]:
    """Write -> tool visible at GET /assistants/bench/tools on the real server, in ms.

    Also returns the server's own reload durations (load + swap hooks) from its log,
    and code edit -> new result from ``POST /actions/add/invoke``, in ms.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "OPENAI_"))}
    env |= {
        "GATEWAY_MANIFESTS": str(manifests),
        "GATEWAY_DATABASE_URL": f"sqlite:///{root}/gateway.db",
        "GATEWAY_WATCH": "true",
        "GATEWAY_RELOAD_DEBOUNCE_MS": "50",
        "LOGGING_LEVEL": "INFO",
    }
    log_path = root / "server.log"
    manifest_log = 0
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER], cwd=root, env=env, stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 120
        while not (m := re.search(r"running on (http://\S+:\d+)", log_path.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + log_path.read_text()[-2000:])
            time.sleep(0.05)
        url = m.group(1) + "/assistants/bench/tools"
        times = []
        with httpx.Client(timeout=30) as client:
            for k in range(first, first + edits):
                start = time.perf_counter()
                probe = write_assistant(manifests, k)
                while probe not in client.get(url).text:
                    time.sleep(0.01)  # gentle: a busy poller slows the server it measures
                times.append((time.perf_counter() - start) * 1000)
                time.sleep(0.25)
            manifest_log = len(log_path.read_bytes())  # reloads after this are code edits
            invoke = m.group(1) + "/actions/add/invoke"
            code = []
            for k in range(1, edits + 1):
                start = time.perf_counter()
                write_code(root, k)
                while client.post(invoke, json={"arguments": {"a": 1, "b": 1}}).json().get(
                    "output"
                ) != str(2 + k):
                    time.sleep(0.01)
                code.append((time.perf_counter() - start) * 1000)
                time.sleep(0.25)
    finally:
        proc.terminate()
        proc.wait(15)
    reloads = [
        float(m.group(1))
        for m in re.finditer(
            r"event=reload_swapped .*?reason=\S*watch\S* .*?duration_ms=([\d.]+)",
            log_path.read_bytes()[:manifest_log].decode(errors="replace"),
        )
    ]
    return times, reloads, code


def main() -> None:
    """Run every size and print p50/p95 side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--edits", type=int, default=15)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"reload-to-live, debounce 50 ms, p50 / p95 in ms over {args.edits} edits (fewer for 1,000)"
    )
    header = (
        f"{'manifests':>9} | {'load':>13} | {'write->swap':>13} | {'server reload':>13} "
        f"| {'write->HTTP':>13} | HTTP/swap | {'code->invoke':>13}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        edits = args.edits if n < 1000 else max(5, args.edits // 2)
        with tempfile.TemporaryDirectory(prefix=f"reload-bench-{n}-") as tmp:
            root = Path(tmp)
            manifests = make_site(root, n)
            load = bench_load(manifests, min(edits, 5))
            swap = asyncio.run(bench_swap(manifests, edits, first=1))
            http, server, code = bench_http(root, manifests, edits, first=1000)
        ratio = statistics.median(http) / statistics.median(swap)
        print(
            f"{n:>9} | {pct(load, 0.5):>5.0f} / {pct(load, 0.95):>5.0f} | "
            f"{pct(swap, 0.5):>5.0f} / {pct(swap, 0.95):>5.0f} | "
            f"{pct(server, 0.5):>5.0f} / {pct(server, 0.95):>5.0f} | "
            f"{pct(http, 0.5):>5.0f} / {pct(http, 0.95):>5.0f} | {ratio:>8.2f}x | "
            f"{pct(code, 0.5):>5.0f} / {pct(code, 0.95):>5.0f}"
        )


if __name__ == "__main__":
    main()
