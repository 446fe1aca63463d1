"""What the gateway adds to a model call: latency (p50/p95) and requests/s, side by side.

One run starts the fake OpenAI server (instant replies, its own process) and
the gateway (``gateway serve``, its own single process, no tools on the
benchmark assistant), then interleaves the arms request by request so both
see the same machine state:

- ``direct``     the fake called with the openai SDK (non-streaming), the baseline;
- ``v1``         the same SDK call through the gateway's ``/v1/chat/completions``;
- ``chat``       ``POST /chat`` JSON (creates a thread, stores two messages);
- ``direct ttft`` / ``sse ttft``: time to the first text delta, streaming
  directly vs ``POST /chat`` as SSE;
- ``health`` / ``v1 offline``: a bare round trip to the gateway vs ``/v1`` on
  the embedded offline model, i.e. the gateway's own work without any model
  client (HTTP layer, auth, engine, events), which isolates the API's cost
  from the openai SDK's.

Then it measures requests/s with concurrent clients against ``/v1`` and
``/chat``. ``--profile`` runs the gateway under pyinstrument and prints where
its time goes. Targets (issue 5): <= 1 ms added at p50 on /v1, <= 2 ms on
/chat, <= 1.5 ms on time-to-first-token, >= 500 requests/s.

    uv run --frozen python bench/overhead.py [--n 300] [--seconds 5] [--profile]

Where the time goes (2 shared cores, 2026-11-24, pyinstrument on the gateway
under ``/chat`` load): about two thirds of the event loop's busy time is the
openai SDK calling the model (``AsyncOpenAI.post`` through httpx + anyio +
h11, ~0.85 ms per streamed call in isolation); the HTTP layer (uvicorn's
pure-Python h11 protocol, Litestar, our middleware at ~10 us) is most of the
rest; the engine and the store are a few percent. A plain ``/chat`` turn is
two SQLite commits (``synchronous=FULL``: thread + run + user message, then
answer + run record + event log, ~0.2-0.3 ms each), and the first one
overlaps the model call. The gateway's own work without any model client
(``v1 offline`` minus ``health``) is ~0.15-0.3 ms. Not installed, so not
used: ``uvloop`` and ``httptools`` (uvicorn picks them up by itself when
present), which usually take a third or more off the HTTP layer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai

MANIFEST = """
kind: provider
name: fake
base_url: {base_url}
api_key: bench
api: chat
max_retries: 0
---
kind: assistant
name: bench
provider: fake
model: fake-model
---
kind: assistant
name: local
provider: offline
"""

FAKE = """
import time
from gateway.testing.fake_openai import FakeOpenAI
fake = FakeOpenAI().start()  # with no scripted reply it echoes the last user message
print(fake.base_url, flush=True)
while True:
    fake.requests.clear()  # the request log would grow for the whole run
    time.sleep(1)
"""


def free_port() -> int:
    """A free loopback port (bind 0, read, close)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def processes(workdir: Path, profile: Path | None) -> Iterator[tuple[str, str]]:
    """Start the fake and the gateway; yield (fake base URL, gateway URL)."""
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE], stdout=subprocess.PIPE, text=True, cwd=workdir
    )
    gateway: subprocess.Popen[bytes] | None = None
    try:
        assert fake.stdout is not None
        fake_url = fake.stdout.readline().strip()
        manifests = workdir / "manifests"
        manifests.mkdir()
        (manifests / "bench.yaml").write_text(MANIFEST.format(base_url=fake_url))
        port = free_port()
        env = {
            **os.environ,
            "GATEWAY_MANIFESTS": str(manifests),
            "GATEWAY_DATABASE_URL": f"sqlite:///{workdir}/bench.db",
            "GATEWAY_PORT": str(port),
            "GATEWAY_WATCH": "false",
            "LOGGING_LEVEL": "WARNING",
            "ENVIRONMENT": "development",
        }
        for var in (
            "GATEWAY_API_KEYS",
            "GATEWAY_ADMIN_KEYS",
            "OPENAI_API_KEY",
            "GATEWAY_RATE_LIMIT",
        ):
            env.pop(var, None)
        serve = "from gateway.cli import main; main(['serve'])"
        command = [sys.executable, "-c", serve]
        if profile is not None:
            command = [sys.executable, "-m", "pyinstrument", "-r", "text", "-o", str(profile)]
            command += ["-c", serve]
        gateway = subprocess.Popen(command, env=env, cwd=workdir)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or gateway.poll() is not None:
                raise RuntimeError("the gateway did not become ready")
            time.sleep(0.05)
        yield fake_url, url
    finally:
        if gateway is not None:
            gateway.send_signal(2)  # SIGINT: graceful, lets pyinstrument write its report
            with contextlib.suppress(subprocess.TimeoutExpired):
                gateway.wait(20)
            if gateway.poll() is None:
                gateway.kill()
        fake.kill()
        fake.wait()


def timed(fn: Callable[[], object]) -> float:
    """Milliseconds one call takes."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def direct_ttft(client: openai.OpenAI) -> float:
    """Milliseconds to the first content chunk, streaming from the fake directly."""
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model="fake-model",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
    )
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = (time.perf_counter() - start) * 1000
    assert first is not None
    return first


def sse_ttft(http: httpx.Client) -> float:
    """Milliseconds to the first ``thread.message.delta`` of ``POST /chat`` as SSE."""
    start = time.perf_counter()
    first = None
    body = {"assistant": "bench", "message": "hello", "stream": True}
    with http.stream("POST", "/chat", json=body) as response:
        for line in response.iter_lines():
            if first is None and line == "event: thread.message.delta":
                first = (time.perf_counter() - start) * 1000
    assert first is not None
    return first


def latency(fake_url: str, url: str, n: int) -> dict[str, list[float]]:
    """Interleave every arm ``n`` times (after a warm-up) and return milliseconds per arm."""
    direct = openai.OpenAI(base_url=fake_url, api_key="bench", max_retries=0)
    via = openai.OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0)
    http = httpx.Client(base_url=url, timeout=30)
    messages = [{"role": "user", "content": "hello"}]

    def direct_call() -> None:
        direct.chat.completions.create(model="fake-model", messages=messages)  # type: ignore[arg-type]

    def v1_call() -> None:
        via.chat.completions.create(model="bench", messages=messages)  # type: ignore[arg-type]

    def chat_call() -> None:
        body = {"assistant": "bench", "message": "hello"}
        response = http.post("/chat", json=body)
        assert response.status_code == 200, response.text

    def health_call() -> None:
        assert http.get("/health").status_code == 200

    def offline_call() -> None:
        body = {"model": "local", "messages": messages}
        assert http.post("/v1/chat/completions", json=body).status_code == 200

    results: dict[str, list[float]] = {
        k: [] for k in ("direct", "v1", "chat", "direct ttft", "sse ttft", "health", "v1 offline")
    }
    for i in range(n + 30):
        sample = {
            "direct": timed(direct_call),
            "v1": timed(v1_call),
            "chat": timed(chat_call),
            "direct ttft": direct_ttft(direct),
            "sse ttft": sse_ttft(http),
            "health": timed(health_call),
            "v1 offline": timed(offline_call),
        }
        if i >= 30:  # warm-up: connections, caches, JIT-free but lazy imports
            for key, value in sample.items():
                results[key].append(value)
    http.close()
    return results


async def throughput(
    url: str, path: str, seconds: float, concurrency: int, assistant: str = "bench"
) -> float:
    """Requests/s on ``path`` with ``concurrency`` keep-alive connections for ``seconds``.

    The load generator is raw asyncio HTTP/1.1 (pre-encoded request, read the
    headers and ``Content-Length`` bytes): httpx's async client tops out near
    450 requests/s on a small machine, which would measure the client instead.
    """
    if path == "/v1/chat/completions":
        payload: dict[str, object] = {
            "model": assistant,
            "messages": [{"role": "user", "content": "hello"}],
        }
    else:
        payload = {"assistant": assistant, "message": "hello"}
    body = json.dumps(payload).encode()
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    done = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.perf_counter() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            done += 1
        writer.close()
        await writer.wait_closed()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def main() -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="requests per latency arm")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each load test")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="run the gateway under pyinstrument")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        profile = workdir / "profile.txt" if args.profile else None
        with processes(workdir, profile) as (fake_url, url):
            lat = latency(fake_url, url, args.n)
            v1 = "/v1/chat/completions"
            rps_v1 = asyncio.run(throughput(url, v1, args.seconds, args.concurrency))
            rps_chat = asyncio.run(throughput(url, "/chat", args.seconds, args.concurrency))
            rps_local = asyncio.run(
                throughput(url, v1, args.seconds, args.concurrency, assistant="local")
            )
        print(f"latency over {args.n} interleaved requests per arm (ms)")
        print(f"{'arm':<14}{'p50':>9}{'p95':>9}{'added p50':>11}{'added p95':>11}{'ratio p50':>11}")
        for arm, base in (
            ("direct", "direct"),
            ("v1", "direct"),
            ("chat", "direct"),
            ("direct ttft", "direct ttft"),
            ("sse ttft", "direct ttft"),
            ("health", "health"),
            ("v1 offline", "health"),
        ):
            p50, p95 = pct(lat[arm], 50), pct(lat[arm], 95)
            b50, b95 = pct(lat[base], 50), pct(lat[base], 95)
            print(
                f"{arm:<14}{p50:>9.2f}{p95:>9.2f}{p50 - b50:>11.2f}{p95 - b95:>11.2f}"
                f"{p50 / b50:>10.2f}x"
            )
        print(
            f"added p50 targets: v1 <= 1 ms, chat <= 2 ms, ttft <= 1.5 ms; "
            f"mean direct {statistics.mean(lat['direct']):.2f} ms"
        )
        clients = f"{args.concurrency} concurrent clients, {args.seconds:g} s each"
        print(f"throughput, {clients} (one gateway process):")
        print(f"  /v1/chat/completions {rps_v1:8.0f} req/s")
        print(f"  /chat (JSON)         {rps_chat:8.0f} req/s   (target >= 500)")
        print(
            f"  /v1 offline model    {rps_local:8.0f} req/s   (no model client: the API's ceiling)"
        )
        if profile is not None and profile.exists():
            print("\npyinstrument profile of the gateway process:\n")
            print(profile.read_text())


if __name__ == "__main__":
    main()
