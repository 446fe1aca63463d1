"""Sandbox round trip, side by side: in-process vs fresh interpreter vs our zygote sandbox.

Run: ``uv run --frozen python bench/sandbox.py [--calls N] [--user auto|own|root]``.
The same trivial action (return a short string) is called three ways:
back to back (the next call starts when the last one ends) with 1, 2 and 4
calls in flight, and *paced* (one call at a time, 5 ms apart, as tool calls
come between model turns). p50/p95 latency and calls/s are printed for each,
with the ratios. Target: sandbox p50 <= 2 ms, >= 10x faster than a fresh
interpreter. A fourth row, *bare fork*, is the floor of any fork-per-call
design: an interpreter that imports and isolates nothing forks a child that
answers and exits.

Back to back on 2 cores, the sandbox is bound by CPU, not by the call's path:
every call also pays for forking and preparing the next spare (copy-on-write
page faults in the new child, about 3-3.5 ms of CPU per call in all processes
on this VM), which competes with the call itself. Paced calls find a spare
ready and show the call's own latency (the zygote forks a lone call's
replacement once it ended, see ``zygote._CALM_GAP``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import gateway.executors  # noqa: F401  (registers the kinds)
from gateway.executors.python import PythonConfig
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action, CallContext
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings

ACTION = "def noop(name='x'):\n    return 'hello ' + name\n"


def percentile(samples: list[float], q: float) -> float:
    """The q-quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    call: Callable[[], Awaitable[object]], calls: int, concurrency: int, pause: float = 0.0
) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, calls/s) for ``calls`` calls with ``concurrency`` in flight.

    ``pause``: seconds each worker waits before a call (not timed; calls/s counts it).
    """
    latencies: list[float] = []
    queue = list(range(calls))

    async def worker() -> None:
        while queue:
            queue.pop()
            if pause:
                await asyncio.sleep(pause)
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    for _ in range(min(5, calls)):  # warm up
        await call()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return percentile(latencies, 0.5), percentile(latencies, 0.95), calls / elapsed


PACE = 0.005
"""Seconds between paced calls."""

BARE_FORK = """
import os, socket, sys
sock = socket.socket(fileno=int(sys.argv[1]))
def noop(name='x'):
    return 'hello ' + name
while True:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    data = sock.recv(64)
    if not data:
        break
    if os.fork() == 0:
        sock.send(noop(data.decode()).encode())
        os._exit(0)
"""
"""The floor of any fork-per-call design: a bare interpreter (nothing imported, nothing
isolated) forks one child per call, which answers and exits."""


async def bare_fork_server() -> tuple[Callable[[], Awaitable[object]], socket.socket]:
    """Start the ``BARE_FORK`` process; return a one-call-at-a-time caller and our socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-S",
        "-c",
        BARE_FORK,
        str(theirs.fileno()),
        pass_fds=[theirs.fileno()],
    )
    theirs.close()
    ours.setblocking(False)
    loop = asyncio.get_running_loop()

    async def call() -> object:
        await loop.sock_sendall(ours, b"x")
        return await loop.sock_recv(ours, 64)

    return call, ours


def _cpu(pid: int) -> tuple[float, int, float, int]:
    """(own CPU s, own minor faults, reaped children's CPU s, their faults) of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / tick
    children = (int(fields[13]) + int(fields[14])) / tick
    return own, int(fields[7]), children, int(fields[8])


async def cpu_split(
    supervisor: Supervisor, call: Callable[[], Awaitable[object]], calls: int
) -> str:
    """Where the CPU of back-to-back calls goes: this process, the zygote, its children."""
    zygote = next(z for (network, _), z in supervisor._zygotes.items() if not network)
    before, self_before = _cpu(zygote.pid), resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        await call()
    after, self_after = _cpu(zygote.pid), resource.getrusage(resource.RUSAGE_SELF)
    server = self_after.ru_utime + self_after.ru_stime - self_before.ru_utime - self_before.ru_stime
    per = 1000 / calls
    return (
        f"CPU per call, back to back ({calls} calls): server {server * per:.2f} ms, "
        f"zygote {(after[0] - before[0]) * per:.2f} ms ({(after[1] - before[1]) / calls:.0f} "
        f"page faults), children {(after[2] - before[2]) * per:.2f} ms "
        f"({(after[3] - before[3]) / calls:.0f} page faults)"
    )


async def main(calls: int, fresh_calls: int, user: str) -> None:
    """Run the three variants and print the table and ratios."""
    root = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    root.chmod(0o755)
    (root / "bench_actions.py").write_text(ACTION)
    sys.path.insert(0, str(root))
    from bench_actions import noop  # type: ignore[import-not-found]

    action = Action(
        name="noop",
        description="d",
        kind_key="python",
        config=PythonConfig(function="bench_actions:noop"),
    )
    catalog = Catalog(
        version="b", root=root, gateway_root=root, loaded_at=0, actions={"noop": action}
    )
    supervisor = Supervisor(Settings(sandbox_concurrency=8, sandbox_user=user))  # type: ignore[arg-type]
    await supervisor.start(catalog)
    ctx = CallContext(action="noop", arguments={"name": "x"})

    async def in_process() -> object:
        return noop(name="x")

    code = (
        f"import sys; sys.path.insert(0, {str(root)!r}); "
        "from bench_actions import noop; print(noop('x'))"
    )

    async def fresh() -> object:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", code, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        return out

    async def sandboxed() -> object:
        result = await supervisor.call(action, ctx)
        assert result.status == "succeeded", result
        return result

    rows: dict[tuple[str, str], tuple[float, float, float]] = {}
    try:
        for concurrency in (1, 2, 4):
            mode = str(concurrency)
            rows[("in-process", mode)] = await measure(in_process, calls, concurrency)
            rows[("fresh interpreter", mode)] = await measure(fresh, fresh_calls, concurrency)
            rows[("sandbox (zygote)", mode)] = await measure(sandboxed, calls, concurrency)
        rows[("fresh interpreter", "paced")] = await measure(fresh, fresh_calls, 1, PACE)
        rows[("sandbox (zygote)", "paced")] = await measure(sandboxed, calls, 1, PACE)
        split = await cpu_split(supervisor, sandboxed, 1000)
        bare, bare_socket = await bare_fork_server()
        with bare_socket:  # closing it ends the process
            rows[("bare fork (floor)", "1")] = await measure(bare, calls, 1)
            rows[("bare fork (floor)", "paced")] = await measure(bare, calls, 1, PACE)
    finally:
        await supervisor.aclose()
        shutil.rmtree(root, ignore_errors=True)

    caps = supervisor.capabilities
    who, why = supervisor.call_user
    print(
        f"isolation: netns={caps and caps.network_namespace}, seccomp={caps and caps.seccomp}, "
        f"landlock={caps and caps.landlock}; calls run as: {who} ({why}); "
        f"python actions run with network off (new netns)"
    )
    print(f"{'variant':<20}{'conc':>6}{'p50 ms':>10}{'p95 ms':>10}{'calls/s':>10}")
    for (name, mode), (p50, p95, rate) in rows.items():
        print(f"{name:<20}{mode:>6}{p50:>10.4f}{p95:>10.4f}{rate:>10.0f}")
    print()
    for mode in ("1", "2", "4", "paced"):
        fresh_row = rows[("fresh interpreter", mode)]
        ours = rows[("sandbox (zygote)", mode)]
        inproc = rows.get(("in-process", mode))
        versus = (
            f", sandbox/in-process p50 = {ours[0] / max(inproc[0], 1e-6):.0f}x" if inproc else ""
        )
        print(
            f"{mode:>5}: fresh/sandbox p50 = {fresh_row[0] / ours[0]:.1f}x, "
            f"sandbox calls/s / fresh calls/s = {ours[2] / fresh_row[2]:.1f}x{versus}"
        )
    print(split)
    for mode, label in (("1", "back to back"), ("paced", f"paced ({PACE * 1000:g} ms apart)")):
        p50 = rows[("sandbox (zygote)", mode)][0]
        ratio = rows[("fresh interpreter", mode)][0] / p50
        print(
            f"{label}: target p50 <= 2 ms: {'met' if p50 <= 2 else 'NOT met'} ({p50:.2f} ms); "
            f">= 10x faster than a fresh interpreter: {'met' if ratio >= 10 else 'NOT met'} "
            f"({ratio:.1f}x)"
        )
        floor = rows[("bare fork (floor)", mode)][0]
        print(
            f"{'':>{len(label)}}  a bare fork per call (no isolation) takes {floor:.2f} ms: "
            "at best "
            f"{rows[('fresh interpreter', mode)][0] / floor:.1f}x for any fork-per-call design"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--fresh-calls", type=int, default=40)
    parser.add_argument("--user", choices=["auto", "own", "root"], default="auto")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.fresh_calls, args.user))
