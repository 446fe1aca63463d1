"""Benchmark: the offline model on an ordinary message next to hostile long ones.

The offline model reads messages on the event loop, so its worst case is the
server's: a message built to make its scans quadratic (numbers after numbers,
a 20,000-digit run, ``a-a-a-...``) must cost about what an ordinary message
costs. Times ``offline_reply`` for each, in the same run, and prints p50/p95
and the ratio to the ordinary message. Only the first ``MAX_MESSAGE_CHARS``
characters of a message are read.

Run: ``uv run --frozen python bench/offline.py [--repeats 30]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from gateway.providers.base import ChatMessage, ModelRequest
from gateway.providers.offline import MAX_MESSAGE_CHARS, offline_reply


def _tool(name: str, props: dict[str, object], required: list[str]) -> dict[str, object]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')}.",
            "parameters": {"type": "object", "properties": props, "required": required},
        },
    }


TOOLS = [
    _tool("get_order_status", {"order_id": {"type": "integer"}}, ["order_id"]),
    _tool("search_customers", {"query": {"type": "string"}}, ["query"]),
    _tool("run_code", {"code": {"type": "string"}}, ["code"]),
]

MESSAGES = {
    "ordinary": "what's the status of order 1042?",
    "numbers": "order " + "1 " * 10_000,
    "digits": "code " + "1" * 20_000,
    "dashes": "email " + "a-" * 10_000,
    "open sum": "1 " * 1_990 + "+",  # within the characters read
    "no domain": "a-" * 1_990 + "@",
}


def measure(text: str, repeats: int) -> list[float]:
    """Milliseconds per ``offline_reply`` of one user message ``text``."""
    request = ModelRequest(
        model="offline",
        instructions="You help customers.",
        messages=[ChatMessage(role="user", content=text)],
        tools=TOOLS,
    )
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        offline_reply(request)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main(repeats: int) -> None:
    print(f"offline_reply, {repeats} calls each (messages read up to {MAX_MESSAGE_CHARS} chars)")
    base = statistics.median(measure(MESSAGES["ordinary"], repeats))
    for name, text in MESSAGES.items():
        times = sorted(measure(text, repeats))
        p50 = statistics.median(times)
        p95 = times[int(0.95 * (len(times) - 1))]
        print(
            f"{name:>10} ({len(text):>6} chars): p50 {p50:8.3f} ms  p95 {p95:8.3f} ms  "
            f"{p50 / base:6.1f}x the ordinary message"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    main(parser.parse_args().repeats)
