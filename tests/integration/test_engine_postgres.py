"""Two engines sharing one PostgreSQL database behave as two replicas of one gateway."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import psycopg
import pytest

from gateway.engine import Engine
from gateway.errors import Conflict
from gateway.events import RunFailed, StepCreated
from gateway.manifests.catalog import CatalogRef
from gateway.settings import Settings
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

MakeReplica = Callable[[list[Turn]], Awaitable[tuple[Engine, PostgresStore]]]

pytestmark = pytest.mark.postgres


@pytest.fixture
async def replica() -> AsyncIterator[MakeReplica]:
    """Builds engines (each with its own pool) over one fresh PostgreSQL schema."""
    url = pg_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    made: list[tuple[Engine, PostgresStore]] = []

    async def factory(turns: list[Turn]) -> tuple[Engine, PostgresStore]:
        store = PostgresStore(url, schema=schema, max_size=4)
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
