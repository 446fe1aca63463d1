"""Two engines sharing one PostgreSQL database behave as two replicas of one gateway."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest

from gateway.engine import Engine
from gateway.engine.runlog import RunLog
from gateway.errors import Conflict, NotReady
from gateway.events import (
    Done,
    ErrorInfo,
    MessageCompleted,
    MessageDelta,
    RunFailed,
    StepCreated,
)
from gateway.manifests.catalog import CatalogRef
from gateway.settings import Settings
from gateway.store.base import DEFAULT_LEASE_SECONDS, INTERRUPTED, RunEventsPage
from gateway.store.postgres import PostgresStore
from tests._pg import pg_url
from tests.unit.engine._fakes import (
    Providers,
    ScriptedProvider,
    ScriptedRunner,
    Turn,
    calls,
    make_catalog,
    text,
)

MakeReplica = Callable[..., Awaitable[tuple[Engine, PostgresStore]]]

pytestmark = pytest.mark.postgres


@pytest.fixture
async def replica() -> AsyncIterator[MakeReplica]:
    """Builds engines (each with its own pool) over one fresh PostgreSQL schema."""
    url = pg_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    made: list[tuple[Engine, PostgresStore]] = []

    async def factory(
        turns: list[Turn], lease: float = DEFAULT_LEASE_SECONDS, delay: float = 0.0
    ) -> tuple[Engine, PostgresStore]:
        store = PostgresStore(url, schema=schema, max_size=4, lease_seconds=lease)
        engine = Engine(
            catalog=CatalogRef(make_catalog()),
            store=store,
            runner=ScriptedRunner(),
            providers=Providers(ScriptedProvider(turns, delay=delay)),
            settings=Settings(),
        )
        await engine.start()
        made.append((engine, store))
        return engine, store

    yield factory
    for engine, store in made:
        await engine.aclose()
        await store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_busy_thread_is_a_conflict_on_the_other_replica(replica: MakeReplica) -> None:
    """While replica A runs on a thread, replica B refuses a run on it; afterwards B may run."""
    a, _ = await replica([calls(("slow", {"seconds": 1.0})), text("from a")])
    b, _ = await replica([text("from b")])
    first = await a.start_run(thread_id=None, message="one")
    with pytest.raises(Conflict):
        await b.start_run(thread_id=first.thread_id, message="two")
    assert (await first.result()).responses == ["from a"]
    second = await b.start_run(thread_id=first.thread_id, message="three")
    assert (await second.result()).responses == ["from b"]


async def test_other_replica_follows_a_live_run(replica: MakeReplica) -> None:
    """Replica B serves the events of a run still going on replica A, once A stores them."""
    a, _ = await replica([calls(("slow", {"seconds": 1.0})), text("done on a")])
    b, _ = await replica([])
    handle = await a.start_run(thread_id=None, message="go")
    remote = await b.get_run_log(handle.thread_id, handle.run_id)
    assert not remote.done
    events = [event async for _, event in remote.follow()]
    await handle.result()  # A's final events reach its log just after their commit
    assert events == handle.log.events


async def test_other_replica_streams_a_live_run_as_it_goes(replica: MakeReplica) -> None:
    """Replica B shows A's text deltas while A is still streaming them, numbered as on A."""
    # 2 s of deltas: B may lag A by over 1.5 s (a loaded machine) and still show 10 live.
    a, _ = await replica([text(*[f"w{n} " for n in range(40)])], delay=0.05)
    b, _ = await replica([])
    handle = await a.start_run(thread_id=None, message="go")
    remote = await b.get_run_log(handle.thread_id, handle.run_id)
    live = 0
    async for _, event in remote.follow():
        live += isinstance(event, MessageDelta) and not handle.log.done
    await handle.result()  # A's final events reach its log just after their commit
    assert live >= 10
    assert remote.events == handle.log.events
    assert await b.get_run_log(handle.thread_id, handle.run_id) is remote  # remembered


async def test_failed_reads_delay_a_followed_run_but_never_cut_it(
    replica: MakeReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica B's reads failing a while (its pool timing out) only delay its copy of A's run:
    every reader on B still gets A's whole log."""
    a, _ = await replica([text(*[f"w{n} " for n in range(20)])], delay=0.05)
    b, store = await replica([])
    handle = await a.start_run(thread_id=None, message="go")
    remote = await b.get_run_log(handle.thread_id, handle.run_id)
    read, failures = store.load_run_events_after, 3

    async def flaky(run_id: str, after: int) -> RunEventsPage:
        nonlocal failures
        if failures:
            failures -= 1
            raise NotReady("the thread store does not answer (PoolTimeout)")
        return await read(run_id, after)

    monkeypatch.setattr(store, "load_run_events_after", flaky)
    events = [event async for _, event in remote.follow()]
    await handle.result()  # A's final events reach its log just after their commit
    assert events == handle.log.events
    assert failures == 0


async def test_cancel_from_the_other_replica_stops_the_run(replica: MakeReplica) -> None:
    """A cancel on replica B marks the run cancelled; replica A stops it at its next step. What
    A stored before it is the run's final log, shown with the cancel as its ending."""
    # B reads A's first batch (~0.1 s) and cancels long before A's tool ends.
    a, store = await replica([calls(("slow", {"seconds": 1.0})), text("never sent")])
    b, _ = await replica([text("after the cancel")])
    handle = await a.start_run(thread_id=None, message="go")
    followed = await b.get_run_log(handle.thread_id, handle.run_id)
    await _first_step(followed)  # read by B from A's batches
    record = await b.cancel(handle.thread_id, handle.run_id)
    assert record.status == "cancelled"
    result = await handle.result()
    assert result.status == "cancelled" and result.responses == []
    assert isinstance(handle.log.events[-3], RunFailed)
    stored = await store.get_run(handle.run_id)
    assert stored is not None and stored.status == "cancelled"
    assert await _batch_rows(store, handle.run_id) == 0  # joined into the final log
    c, _ = await replica([])
    replayed = (await c.get_run_log(handle.thread_id, handle.run_id)).events
    assert [event async for _, event in followed.follow()] == replayed
    cancelled = ErrorInfo(type="cancelled", message="the run was cancelled")
    assert replayed[-2:] == [RunFailed(run_id=handle.run_id, error=cancelled), Done()]
    assert any(isinstance(event, StepCreated) for event in replayed)
    assert replayed[:-2] == handle.log.events[: len(replayed) - 2]
    nxt = await b.start_run(thread_id=handle.thread_id, message="again")
    assert (await nxt.result()).responses == ["after the cancel"]


async def test_history_and_logs_survive_a_restart(replica: MakeReplica) -> None:
    """After a replica stops, a new one sees the thread's history and replays its runs."""
    a, store = await replica([calls(("lookup", {"id": 7})), text("seven")])
    handle = await a.start_run(thread_id=None, message="look 7 up")
    await handle.result()
    await a.aclose()
    await store.close()
    c, fresh = await replica([text("still here")])
    roles = [m.message.role for m in await fresh.list_messages(handle.thread_id)]
    assert roles == ["user", "assistant", "tool", "assistant"]
    log = await c.get_run_log(handle.thread_id, handle.run_id)
    assert log.done and log.events == handle.log.events
    nxt = await c.start_run(thread_id=handle.thread_id, message="and now?")
    assert (await nxt.result()).responses == ["still here"]


async def _first_step(engine_log: RunLog) -> None:
    async for _, event in engine_log.follow():
        if isinstance(event, StepCreated):
            return


async def test_renewal_keeps_a_long_run_past_its_lease(replica: MakeReplica) -> None:
    """A run lasting several leases keeps its thread: its replica renews the lease."""
    # Renewed every 0.2 s, the lease lapses only if two renewals in a row are 0.2 s late;
    # the run lasts 0.8 s past B's attempt.
    a, _ = await replica([calls(("slow", {"seconds": 2.0})), text("from a")], lease=0.6)
    b, _ = await replica([], lease=0.6)
    handle = await a.start_run(thread_id=None, message="go")
    await asyncio.sleep(1.2)  # two lease durations
    with pytest.raises(Conflict):
        await b.start_run(thread_id=handle.thread_id, message="two")
    assert (await handle.result()).responses == ["from a"]


async def test_a_dead_replica_frees_its_thread_once_its_lease_lapses(
    replica: MakeReplica,
) -> None:
    """A replica that stops renewing holds its thread one lease; then B runs, the old run failed."""
    # Renewed every 0.2 s, A's lease has 0.4 s or more left when it "dies"; B takes over
    # about 0.7 s later, over a second before A's tool ends (A's write would land first).
    a, store = await replica([calls(("slow", {"seconds": 2.0})), text("never")], lease=0.6)
    b, _ = await replica([text("from b")], lease=0.6)
    handle = await a.start_run(thread_id=None, message="go")
    await _first_step(handle.log)
    assert a._lease_task is not None
    a._lease_task.cancel()  # A "dies": no more renewals (its task, left running, stands in)
    with pytest.raises(Conflict):
        await b.start_run(thread_id=handle.thread_id, message="too early")
    followed = await b.get_run_log(handle.thread_id, handle.run_id)  # B follows A's run
    await asyncio.sleep(0.7)
    nxt = await b.start_run(thread_id=handle.thread_id, message="after the lease")
    assert (await nxt.result()).responses == ["from b"]
    events = [event async for _, event in followed.follow()]
    assert isinstance(events[-2], RunFailed) and events[-2].error.type == "interrupted"
    # B showed what A stored while it lived, then the interruption; so does a replay.
    assert any(isinstance(event, StepCreated) for event in events)
    assert events[:-2] == handle.log.events[: len(events) - 2]
    c, _ = await replica([], lease=0.6)
    assert (await c.get_run_log(handle.thread_id, handle.run_id)).events == events
    cancelled = await b.cancel(handle.thread_id, handle.run_id)
    assert cancelled.status == "failed" and cancelled.error == INTERRUPTED
    # A's task reaches its next step, sees it was taken over, and writes no outcome.
    result = await handle.result()
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "interrupted"
    stored = await store.get_run(handle.run_id)
    assert stored is not None and stored.status == "failed" and stored.error == INTERRUPTED


async def test_a_replica_that_lost_its_lease_stops_the_run(
    replica: MakeReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renewals failing past the lease: B takes over, and A's renewal then stops A's run."""
    a, store = await replica([calls(("slow", {"seconds": 10})), text("never")], lease=0.3)
    b, _ = await replica([text("from b")], lease=0.3)
    renew = store.renew_leases

    async def unreachable(run_ids: object) -> set[str]:
        raise NotReady("the thread store does not answer")

    handle = await a.start_run(thread_id=None, message="go")
    await _first_step(handle.log)
    monkeypatch.setattr(store, "renew_leases", unreachable)
    # The lease lapses 0.3 s after the last renewal, which may have been in flight just now.
    await asyncio.sleep(0.8)
    nxt = await b.start_run(thread_id=handle.thread_id, message="taken over")
    monkeypatch.setattr(store, "renew_leases", renew)
    result = await asyncio.wait_for(handle.result(), 5)  # long before the 10 s tool ends
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "interrupted"
    assert (await nxt.result()).responses == ["from b"]
    stored = await store.get_run(handle.run_id)
    assert stored is not None and stored.status == "failed" and stored.error == INTERRUPTED


async def _batch_rows(store: PostgresStore, run_id: str) -> int:
    """How many live batches of ``run_id`` are stored."""
    async with store.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM run_event_batches WHERE run_id = %s", (run_id,)
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _lapse(store: PostgresStore, run_id: str) -> None:
    """Expire the run's lease now, as if its replica had stopped renewing it a lease ago."""
    async with store.pool.connection() as conn, conn.transaction():
        await conn.execute("UPDATE runs SET lease_until = 0 WHERE id = %s", (run_id,))


async def _thread(store: PostgresStore, thread_id: str) -> list[tuple[str, str | None, str | None]]:
    return [
        (m.message.role, m.message.content, m.run_id) for m in await store.list_messages(thread_id)
    ]


async def test_a_run_taken_over_mid_tool_does_not_store_its_tool_result(
    replica: MakeReplica,
) -> None:
    """A's lease lapses during a tool and B takes the thread over: A's result never lands."""
    # B takes over in a few queries: well within A's 1.5 s tool.
    a, store = await replica([calls(("slow", {"seconds": 1.5})), text("stale answer")])
    b, _ = await replica([text("from b")])
    handle = await a.start_run(thread_id=None, message="go")
    await _first_step(handle.log)
    await _lapse(store, handle.run_id)  # A is alive but its renewal is late: B may take over
    nxt = await b.start_run(thread_id=handle.thread_id, message="taken over")
    assert (await nxt.result()).responses == ["from b"]
    result = await asyncio.wait_for(handle.result(), 5)
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "interrupted"
    assert result.responses == [] and result.tool_calls == []
    assert await _thread(store, handle.thread_id) == [
        ("user", "go", handle.run_id),
        ("assistant", None, handle.run_id),  # its tool call, stored before the takeover
        ("user", "taken over", nxt.run_id),
        ("assistant", "from b", nxt.run_id),
    ]
    stored = await store.get_run(handle.run_id)
    assert stored is not None and stored.status == "failed" and stored.error == INTERRUPTED


async def test_a_run_taken_over_during_its_answer_does_not_store_it(replica: MakeReplica) -> None:
    """A's final commit after a takeover is refused: no answer, the record stays interrupted,
    and A's clients see the same ending as B's."""
    # B takes over in a few queries: well within A's 1.5 s answer.
    a, store = await replica([text(*[f"w{n} " for n in range(30)])], delay=0.05)
    b, _ = await replica([text("from b")])
    handle = await a.start_run(thread_id=None, message="go")
    async for _, event in handle.log.follow():
        if isinstance(event, MessageDelta):
            break
    await _lapse(store, handle.run_id)
    nxt = await b.start_run(thread_id=handle.thread_id, message="taken over")
    assert (await nxt.result()).responses == ["from b"]
    result = await asyncio.wait_for(handle.result(), 5)
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "interrupted" and result.responses == []
    assert not any(isinstance(event, MessageCompleted) for event in handle.log.events)
    assert await _thread(store, handle.thread_id) == [
        ("user", "go", handle.run_id),
        ("user", "taken over", nxt.run_id),
        ("assistant", "from b", nxt.run_id),
    ]
    stored = await store.get_run(handle.run_id)
    assert stored is not None and stored.status == "failed" and stored.error == INTERRUPTED
    # No answer in its log either: B's takeover kept as A's final log only the batches A
    # had flushed before it (none, or a few deltas on a slow machine), never A's ending.
    kept = await store.load_run_events(handle.run_id) or []
    assert not any(b"thread.message.completed" in e or b"thread.run.completed" in e for e in kept)
    seen_on_b = (await b.get_run_log(handle.thread_id, handle.run_id)).events
    assert isinstance(seen_on_b[-2], RunFailed) and seen_on_b[-2] == handle.log.events[-3]


async def test_a_nul_character_in_a_turn_is_stored_and_frees_the_thread(
    replica: MakeReplica,
) -> None:
    """A NUL in the user's message and in the model's answer (text PostgreSQL refuses) is
    stored as U+FFFD: the turn completes and the thread takes the next message at once."""
    a, store = await replica([text("an\x00swer"), text("fine")])
    handle = await a.start_run(thread_id=None, message="que\x00stion")
    result = await handle.result()
    assert (result.status, result.responses) == ("completed", ["an\x00swer"])
    again = await a.start_run(thread_id=handle.thread_id, message="next")
    assert (await again.result()).status == "completed"
    stored = await store.list_messages(handle.thread_id)
    assert [m.message.content for m in stored] == ["que\ufffdstion", "an\ufffdswer", "next", "fine"]


async def test_a_run_keeps_its_answer_after_postgres_cut_the_idle_connections(
    replica: MakeReplica,
) -> None:
    """PostgreSQL restarting (every idle pooled connection cut) while a run waits on a tool
    costs the run nothing: its next writes get live connections and its answer is stored."""
    a, store = await replica([calls(("slow", {"seconds": 1.0})), text("kept")])
    handle = await a.start_run(thread_id=None, message="go")
    await asyncio.sleep(0.5)  # the tool runs: the run holds no connection
    idle = [conn.info.backend_pid for conn in store.pool._pool]
    assert idle
    with psycopg.connect(pg_url(), autocommit=True) as admin:
        for pid in idle:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    result = await handle.result()
    assert (result.status, result.responses) == ("completed", ["kept"])
    stored = await store.list_messages(handle.thread_id)
    assert stored[-1].message.content == "kept"
