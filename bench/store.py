"""PostgreSQL NOTIFY for live run events: what it costs the writer, what it saves a follower.

While a run goes, its replica appends its new events in batches (one every
``GATEWAY_EVENT_FLUSH_MS``) and each batch's commit notifies the followers on
other replicas (``pg_notify`` in the same transaction), which otherwise only
poll. Measured side by side in one run on the real server (a temporary
schema, dropped after):

1. appending one batch (5 token deltas) to a running run, the arms
   interleaved: ``no notify`` (baseline: the same guarded INSERT alone),
   ``notify, 2nd statement`` (``SELECT pg_notify`` after the INSERT, one more
   round trip), ``notify in INSERT`` (``pg_notify`` in the INSERT's
   ``RETURNING``: what ``PostgresStore.append_run_events`` does), taking
   turns 5 batches at a time. With 1 writer, then with ``--writers`` runs
   appending at once (replicas' worth of connections: PostgreSQL serializes
   the commits of notifying transactions, database-wide), each with nobody
   listening and with a follower's ``LISTEN`` connection open. p50 / p95 per
   batch and batches/s.
2. a follower's wake-up: from the start of a batch's append until
   ``follow_remote`` (the engine's follower, on another store instance, as
   another replica) has its events in its log, woken by NOTIFY, next to the
   same follower polling every 0.5 s (its interval: what it does without
   notices). Two runs followed at once, one each way, fed by the same writer
   at random intervals.

Run: ``uv run --frozen python bench/store.py [--url URL] [--batches N]
[--writers N] [--wakeups N]`` (default URL: ``postgresql://postgres@127.0.0.1:5432/test``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import random
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import psycopg
import structlog
from psycopg.conninfo import conninfo_to_dict

from gateway.engine.replay import follow_remote
from gateway.engine.runlog import RunLog
from gateway.events import Done, MessageDelta, encode_ws
from gateway.providers.base import ChatMessage
from gateway.store import _codec as c
from gateway.store import _notify
from gateway.store._sql import POSTGRES
from gateway.store.base import RunRecord
from gateway.store.postgres import PostgresStore

Append = Callable[[str, int, list[bytes]], Awaitable[bool]]

# The guarded INSERT of a batch without the notify, and with it as a second statement.
_INSERT = POSTGRES.append_batch.replace(f", pg_notify('{_notify.CHANNEL}', run_id)", "")
_NOTIFY = "SELECT pg_notify(%s, %s)"


def pct(values: list[float], q: float) -> float:
    """The q-th percentile of ``values``."""
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def frames(run_id: str, first: int, count: int) -> list[bytes]:
    """``count`` encoded token deltas, as a flush interval of a streaming answer holds."""
    return [
        encode_ws(MessageDelta(run_id=run_id, message_id="msg_1", delta=f"token {first + i} "))
        for i in range(count)
    ]


def record(thread_id: str) -> RunRecord:
    return RunRecord(
        id=c.new_id("run"),
        thread_id=thread_id,
        assistant="bench",
        status="in_progress",
        manifest_version="bench",
        created_at=time.time(),
    )


async def new_run(store: PostgresStore) -> RunRecord:
    """A running run owned by ``store``."""
    thread = await store.create_thread("bench")
    run = record(thread.id)
    await store.begin_run(run, ChatMessage(role="user", content="hi"))
    return run


def arms(store: PostgresStore) -> dict[str, Append]:
    """The three ways to append a batch, each under the store's own run guard."""

    async def plain(run_id: str, first: int, events: list[bytes], notify: bool) -> bool:
        params = (run_id, first, first + len(events) - 1, c.join_events(events), run_id)
        async with store.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(_INSERT, (*params, store.owner))
            if await cur.fetchone() is None:
                return False
            if notify:
                await conn.execute(_NOTIFY, (_notify.CHANNEL, run_id))
            return True

    async def without(run_id: str, first: int, events: list[bytes]) -> bool:
        return await plain(run_id, first, events, False)

    async def second(run_id: str, first: int, events: list[bytes]) -> bool:
        return await plain(run_id, first, events, True)

    return {
        "no notify (baseline)": without,
        "notify, 2nd statement": second,
        "notify in INSERT (store)": store.append_run_events,
    }


async def appends(
    store: PostgresStore, writers: int, batches: int, block: int = 5
) -> dict[str, tuple[list[float], float]]:
    """Per arm: every batch's latency (ms) and the batches/s of ``writers`` appending at once.

    The arms take turns, ``block`` batches per writer each (the order rotating), so a
    change in the machine's load weighs on all of them alike.
    """
    ways = arms(store)
    runs = {name: [await new_run(store) for _ in range(writers)] for name in ways}
    seqs = {run.id: 1 for runs_ in runs.values() for run in runs_}
    samples: dict[str, list[float]] = {name: [] for name in ways}
    elapsed: dict[str, float] = dict.fromkeys(ways, 0.0)

    async def writer(append: Append, run: RunRecord, out: list[float]) -> None:
        for _ in range(block):
            batch = frames(run.id, seqs[run.id], 5)
            started = time.perf_counter()
            assert await append(run.id, seqs[run.id], batch)
            out.append((time.perf_counter() - started) * 1000)
            seqs[run.id] += len(batch)

    order = list(ways)
    rounds = max(batches // block, 1)
    for round_ in range(rounds + 1):  # round 0 warms up
        turn = round_ % len(order)
        for name in order[turn:] + order[:turn]:
            out: list[float] = [] if round_ == 0 else samples[name]
            started = time.perf_counter()
            await asyncio.gather(*(writer(ways[name], run, out) for run in runs[name]))
            if round_:
                elapsed[name] += time.perf_counter() - started
    total = writers * block * rounds
    return {name: (samples[name], total / elapsed[name]) for name in ways}


@contextlib.asynccontextmanager
async def listening(url: str) -> AsyncIterator[None]:
    """A follower replica's LISTEN connection, open (and draining notices) meanwhile."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(f"LISTEN {_notify.CHANNEL}")

        async def drain() -> None:
            async for _ in conn.notifies():
                pass

        task = asyncio.create_task(drain())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class Polling:
    """``store`` with no notices: its followers only poll (what they did without NOTIFY)."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def run_event_notices(self, run_id: str) -> Any:
        del run_id
        return _notify.polling()


async def wakeups(owner: PostgresStore, follower: PostgresStore, count: int) -> dict[str, list]:
    """Per way of waking: the ms from a batch's append to the follower holding it."""
    followed = {"woken by NOTIFY": follower, "polling every 0.5 s": Polling(follower)}
    runs = {name: await new_run(owner) for name in followed}
    sent: dict[str, dict[int, float]] = {name: {} for name in followed}
    seen: dict[str, dict[int, float]] = {name: {} for name in followed}
    logs = {name: RunLog(run.id, run.thread_id) for name, run in runs.items()}

    async def watch(name: str) -> None:
        log, have = logs[name], 0
        while not log.done:
            await log.wait(have)
            now = time.perf_counter()
            for seq in range(have + 1, len(log) + 1):
                seen[name][seq] = now
            have = len(log)

    tasks = [
        asyncio.create_task(follow_remote(store, logs[name], runs[name], interval=0.5))
        for name, store in followed.items()
    ] + [asyncio.create_task(watch(name)) for name in followed]
    await asyncio.sleep(0.5)  # the follower's LISTEN connection is up
    rng = random.Random(7)
    for seq in range(1, count + 1):
        await asyncio.sleep(rng.uniform(0.02, 0.3))
        for name, run in runs.items():
            sent[name][seq] = time.perf_counter()
            assert await owner.append_run_events(run.id, seq, frames(run.id, seq, 1))
    for run in runs.values():
        log = [*frames(run.id, 1, count), encode_ws(Done())]
        done = msgspec.structs.replace(run, status="completed", completed_at=time.time())
        assert await owner.finish_run(done, log)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    return {
        name: [(seen[name][seq] - sent[name][seq]) * 1000 for seq in range(1, count + 1)]
        for name in followed
    }


def table(title: str, rows: dict[str, list[float]], extra: dict[str, str] | None = None) -> None:
    width = max(len(k) for k in rows)
    print(title)
    print(f"  {'':{width}}  {'p50':>8}  {'p95':>8}")
    for name, values in rows.items():
        more = f"  {extra[name]}" if extra else ""
        print(f"  {name:{width}}  {pct(values, 50):8.3f}  {pct(values, 95):8.3f}{more}")


def server(url: str) -> str:
    """``host:port/db`` of ``url`` (never its password)."""
    info = conninfo_to_dict(url)
    return f"{info.get('host', '')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


async def main(url: str, batches: int, writers: int, count: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=3):
            pass
    except psycopg.Error as exc:  # `just bench` on a machine without the database goes on
        print(f"bench/store.py skipped: no PostgreSQL at {server(url)} ({type(exc).__name__})")
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    owner = PostgresStore(url, schema=schema, max_size=max(writers + 2, 4))
    follower = PostgresStore(url, schema=schema, max_size=2)
    figures: dict[str, Any] = {}
    await owner.open()
    await follower.open()
    try:
        async with owner.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT current_setting('server_version'), current_setting('fsync'),"
                " current_setting('synchronous_commit')"
            )
            version, fsync, sync = await cur.fetchone() or ("?", "?", "?")
        print(f"PostgreSQL {version} (fsync={fsync}, synchronous_commit={sync}), {server(url)}")
        print()
        for n in (1, writers):
            for listener in (False, True):
                where = "a follower listening" if listener else "nobody listening"
                async with listening(url) if listener else contextlib.nullcontext():
                    got = await appends(owner, n, batches if n == 1 else batches // 2)
                rows = {name: values for name, (values, _) in got.items()}
                rates = {name: f"{rate:7.0f} batches/s" for name, (_, rate) in got.items()}
                table(f"append one batch, {n} writer(s), {where} (ms)", rows, rates)
                base = got["no notify (baseline)"]
                for name, (values, rate) in got.items():
                    if name.startswith("no notify"):
                        continue
                    print(
                        f"  {name}: p50 x{pct(values, 50) / pct(base[0], 50):.2f},"
                        f" p95 x{pct(values, 95) / pct(base[0], 95):.2f},"
                        f" batches/s x{rate / base[1]:.2f} of the baseline"
                    )
                print()
                figures[f"append {n}w {where}"] = {
                    name: {"p50": pct(v, 50), "p95": pct(v, 95), "per_s": r}
                    for name, (v, r) in got.items()
                }
        woken = await wakeups(owner, follower, count)
        table(f"follower wake-up, {count} batches at random 20-300 ms intervals (ms)", woken)
        notify, poll = woken["woken by NOTIFY"], woken["polling every 0.5 s"]
        print(
            f"  polling / NOTIFY: p50 x{pct(poll, 50) / pct(notify, 50):.0f},"
            f" p95 x{pct(poll, 95) / pct(notify, 95):.0f}"
        )
        figures["wake-up"] = {n: {"p50": pct(v, 50), "p95": pct(v, 95)} for n, v in woken.items()}
        print(json.dumps(figures))
    finally:
        await follower.close()
        await owner.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--batches", type=int, default=300, help="per writer and arm")
    parser.add_argument("--writers", type=int, default=8, help="writers at once, 2nd part")
    parser.add_argument("--wakeups", type=int, default=60, help="batches followed each way")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.batches, args.writers, args.wakeups))
