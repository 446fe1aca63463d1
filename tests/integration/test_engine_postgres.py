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
from gateway.events import RunFailed, StepCreated
from gateway.manifests.catalog import CatalogRef
from gateway.settings import Settings
from gateway.store.base import DEFAULT_LEASE_SECONDS, INTERRUPTED
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
        turns: list[Turn], lease: float = DEFAULT_LEASE_SECONDS
    ) -> tuple[Engine, PostgresStore]:
        store = PostgresStore(url, schema=schema, max_size=4, lease_seconds=lease)
        engine = Engine(
            catalog=CatalogRef(make_catalog()),
            store=store,
            runner=ScriptedRunner(),
            providers=Providers(ScriptedProvider(turns)),
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
    a, _ = await replica([calls(("slow", {"seconds": 0.3})), text("from a")])
    b, _ = await replica([text("from b")])
    first = await a.start_run(thread_id=None, message="one")
    with pytest.raises(Conflict):
        await b.start_run(thread_id=first.thread_id, message="two")
    assert (await first.result()).responses == ["from a"]
    second = await b.start_run(thread_id=first.thread_id, message="three")
    assert (await second.result()).responses == ["from b"]


async def test_other_replica_follows_a_live_run(replica: MakeReplica) -> None:
    """Replica B serves the events of a run still going on replica A, once A stores them."""
    a, _ = await replica([calls(("slow", {"seconds": 0.3})), text("done on a")])
    b, _ = await replica([])
    handle = await a.start_run(thread_id=None, message="go")
    remote = await b.get_run_log(handle.thread_id, handle.run_id)
    assert not remote.done
    events = [event async for _, event in remote.follow()]
    assert events == handle.log.events


async def test_cancel_from_the_other_replica_stops_the_run(replica: MakeReplica) -> None:
    """A cancel on replica B marks the run cancelled; replica A stops it at its next step."""
    a, store = await replica([calls(("slow", {"seconds": 0.3})), text("never sent")])
    b, _ = await replica([text("after the cancel")])
    handle = await a.start_run(thread_id=None, message="go")
    async for _, event in handle.log.follow():
        if isinstance(event, StepCreated):
            break
    record = await b.cancel(handle.thread_id, handle.run_id)
    assert record.status == "cancelled"
    result = await handle.result()
    assert result.status == "cancelled" and result.responses == []
    assert isinstance(handle.log.events[-3], RunFailed)
    stored = await store.get_run(handle.run_id)
    assert stored is not None and stored.status == "cancelled"
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
    a, _ = await replica([calls(("slow", {"seconds": 0.8})), text("from a")], lease=0.3)
    b, _ = await replica([], lease=0.3)
    handle = await a.start_run(thread_id=None, message="go")
    await asyncio.sleep(0.6)  # two lease durations
    with pytest.raises(Conflict):
        await b.start_run(thread_id=handle.thread_id, message="two")
    assert (await handle.result()).responses == ["from a"]


async def test_a_dead_replica_frees_its_thread_once_its_lease_lapses(
    replica: MakeReplica,
) -> None:
    """A replica that stops renewing holds its thread one lease; then B runs, the old run failed."""
    a, store = await replica([calls(("slow", {"seconds": 0.8})), text("never")], lease=0.3)
    b, _ = await replica([text("from b")], lease=0.3)
    handle = await a.start_run(thread_id=None, message="go")
    await _first_step(handle.log)
    assert a._lease_task is not None
    a._lease_task.cancel()  # A "dies": no more renewals (its task, left running, stands in)
    with pytest.raises(Conflict):
        await b.start_run(thread_id=handle.thread_id, message="too early")
    followed = await b.get_run_log(handle.thread_id, handle.run_id)  # B follows A's run
    await asyncio.sleep(0.4)
    nxt = await b.start_run(thread_id=handle.thread_id, message="after the lease")
    assert (await nxt.result()).responses == ["from b"]
    events = [event async for _, event in followed.follow()]
    assert isinstance(events[-2], RunFailed) and events[-2].error.type == "interrupted"
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
    a, store = await replica([calls(("slow", {"seconds": 5})), text("never")], lease=0.3)
    b, _ = await replica([text("from b")], lease=0.3)
    renew = store.renew_leases

    async def unreachable(run_ids: object) -> set[str]:
        raise NotReady("the thread store does not answer")

    handle = await a.start_run(thread_id=None, message="go")
    await _first_step(handle.log)
    monkeypatch.setattr(store, "renew_leases", unreachable)
    await asyncio.sleep(0.4)
    nxt = await b.start_run(thread_id=handle.thread_id, message="taken over")
    monkeypatch.setattr(store, "renew_leases", renew)
    result = await asyncio.wait_for(handle.result(), 2)  # long before the 5 s tool ends
    assert result.status == "failed" and result.error is not None
    assert result.error.type == "interrupted"
    assert (await nxt.result()).responses == ["from b"]
    stored = await store.get_run(handle.run_id)
    assert stored is not None and stored.status == "failed" and stored.error == INTERRUPTED
