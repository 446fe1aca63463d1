"""The thread store contract, run unchanged against SQLite and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import psycopg
import pytest

from gateway.errors import Conflict, InvalidInput, NotFound, NotReady
from gateway.providers.base import ChatMessage, ToolCall, Usage
from gateway.store import _notify, open_store
from gateway.store._sql import POSTGRES, SQLITE
from gateway.store.base import (
    DEFAULT_LEASE_SECONDS,
    INTERRUPTED,
    LEGACY_LEASE_SECONDS,
    RunEventsPage,
    RunRecord,
    ThreadRecord,
    ThreadStore,
)
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests._pg import pg_url

Factory = Callable[..., Awaitable[ThreadStore]]


@pytest.fixture(params=["sqlite", "postgres"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    """A factory of opened stores sharing one database (so a reopen sees the same data)."""
    opened: list[ThreadStore] = []
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = pg_url() if request.param == "postgres" else ""

    async def factory(lease_seconds: float = DEFAULT_LEASE_SECONDS) -> ThreadStore:
        """Each store is another owner (replica) with its own ``lease_seconds``."""
        store: ThreadStore
        if request.param == "sqlite":
            # Not exclusive (as ``open_store`` makes it): replicas on one file, in one process.
            store = SQLiteStore(tmp_path / "var" / "gateway.db", lease_seconds=lease_seconds)
        else:
            store = PostgresStore(url, schema=schema, max_size=4, lease_seconds=lease_seconds)
        await store.open()
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()
    if request.param == "postgres":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _run(thread_id: str, status: str = "in_progress", run_id: str | None = None) -> RunRecord:
    return RunRecord(
        id=run_id or f"run_{uuid.uuid4().hex[:8]}",
        thread_id=thread_id,
        assistant="support",
        status=status,  # type: ignore[arg-type]
        manifest_version="v1",
        created_at=1.0,
    )


async def test_thread_roundtrip(make_store: Factory) -> None:
    """A created thread can be read back with its assistant and metadata, and deleted."""
    store = await make_store()
    thread = await store.create_thread("support", {"user": "ada"})
    got = await store.get_thread(thread.id)
    assert got == thread
    assert await store.get_thread("thread_missing") is None
    assert await store.delete_thread(thread.id) is True
    assert await store.get_thread(thread.id) is None
    assert await store.delete_thread(thread.id) is False


async def test_messages_keep_order_tool_calls_and_results(make_store: Factory) -> None:
    """Messages come back in order with tool calls, tool results and run ids intact."""
    store = await make_store()
    thread = await store.create_thread("support")
    call = ToolCall(id="call_1", name="lookup", arguments='{"id": 1042}')
    msgs = [
        ChatMessage(role="user", content="status of 1042?"),
        ChatMessage(role="assistant", content=None, tool_calls=[call]),
        ChatMessage(role="tool", content='{"status": "shipped"}', tool_call_id="call_1"),
        ChatMessage(role="assistant", content="It shipped. ✓"),
    ]
    stored = [await store.append_message(thread.id, m, run_id="run_1") for m in msgs]
    assert [s.seq for s in stored] == [1, 2, 3, 4]
    listed = await store.list_messages(thread.id)
    assert [s.message for s in listed] == msgs
    assert [s.id for s in listed] == [s.id for s in stored]
    assert all(s.run_id == "run_1" for s in listed)
    newest = await store.list_messages(thread.id, limit=2)
    assert [s.seq for s in newest] == [3, 4]


async def test_text_a_database_cannot_hold_is_stored_as_replacement_characters(
    make_store: Factory,
) -> None:
    """NUL (which PostgreSQL refuses in text) and lone surrogates (not UTF-8) in a message's
    text are stored as U+FFFD on both backends, in every write path; the rest is kept as is."""
    store = await make_store()
    thread = await store.create_thread("support")
    odd = "a\x00b \ud800 \U0001f600 \u202e\ufeff end"
    kept = "a\ufffdb \ufffd \U0001f600 \u202e\ufeff end"
    call = ToolCall(id="call_1", name="lookup", arguments='{"q": "\\u0000"}')
    run = _run(thread.id)
    await store.begin_run(run, ChatMessage(role="user", content=odd))
    await store.append_run_message(
        run.id, ChatMessage(role="assistant", content=None, tool_calls=[call])
    )
    tool = ChatMessage(role="tool", content=odd, tool_call_id="call\x00_1", name="look\x00up")
    await store.append_run_message(run.id, tool)
    done = msgspec.structs.replace(run, status="completed", completed_at=2.0)
    answer = ChatMessage(role="assistant", content=odd)
    assert await store.finish_run(done, [b'{"event":"done","data":{}}'], [(answer, "msg_end")])
    await store.append_message(thread.id, ChatMessage(role="user", content=odd))
    listed = [m.message for m in await store.list_messages(thread.id)]
    assert [m.content for m in listed] == [kept, None, kept, kept, kept]
    assert listed[1].tool_calls == [call]
    assert (listed[2].tool_call_id, listed[2].name) == ("call\ufffd_1", "look\ufffdup")


async def test_ids_holding_a_nul_are_unknown_not_errors(make_store: Factory) -> None:
    """A thread or run id with a NUL (a hostile path or body: PostgreSQL refuses NUL in text)
    is looked up like any unknown id: None, False, empty or NotFound, never a database error."""
    store = await make_store()
    thread = await store.create_thread("support")
    await store.create_run(_run(thread.id))
    bad = f"{thread.id}\x00"
    assert await store.get_thread(bad) is None
    assert await store.delete_thread(bad) is False
    assert await store.list_messages(bad) == []
    with pytest.raises(NotFound):
        await store.append_message(bad, ChatMessage(role="user", content="x"))
    assert await store.get_run("run_\x00") is None
    assert await store.update_run(_run(thread.id, "cancelled", run_id="run_\x00")) is False
    assert await store.load_run_events("run_\x00") is None
    assert await store.load_run_events_after("run_\x00", 0) == RunEventsPage()
    assert await store.append_run_message("run_\x00", ChatMessage(role="tool")) is None
    assert await store.expire_leases(bad) == []
    assert await store.get_thread(thread.id) == thread


async def test_append_uses_given_message_id_and_rejects_unknown_thread(make_store: Factory) -> None:
    """A caller-chosen message id is kept, and appending to a missing thread is NotFound."""
    store = await make_store()
    thread = await store.create_thread("support")
    stored = await store.append_message(
        thread.id, ChatMessage(role="user", content="hi"), message_id="msg_fixed"
    )
    assert stored.id == "msg_fixed"
    assert (await store.list_messages(thread.id))[0].id == "msg_fixed"
    with pytest.raises(NotFound):
        await store.append_message("thread_missing", ChatMessage(role="user", content="x"))


async def test_concurrent_appends_get_distinct_sequence_numbers(make_store: Factory) -> None:
    """Concurrent appends to one thread never share or skip a sequence number."""
    store = await make_store()
    thread = await store.create_thread("support")
    await asyncio.gather(
        *(
            store.append_message(thread.id, ChatMessage(role="user", content=str(i)))
            for i in range(20)
        )
    )
    seqs = [m.seq for m in await store.list_messages(thread.id)]
    assert seqs == list(range(1, 21))


async def test_one_active_run_per_thread(make_store: Factory) -> None:
    """A second active run on a thread is a Conflict; after the first finishes one is allowed."""
    store = await make_store()
    thread = await store.create_thread("support")
    other = await store.create_thread("support")
    first = _run(thread.id)
    await store.create_run(first)
    with pytest.raises(Conflict):
        await store.create_run(_run(thread.id))
    with pytest.raises(Conflict):
        await store.create_run(_run(thread.id, status="queued"))
    await store.create_run(_run(other.id))  # other threads are unaffected
    finished = RunRecord(
        id=first.id,
        thread_id=thread.id,
        assistant="support",
        status="completed",
        manifest_version="v1",
        created_at=1.0,
        completed_at=2.0,
        usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
        timings={"total_ms": 12.5, "first_token_ms": None},
    )
    await store.update_run(finished)
    assert await store.get_run(first.id) == finished
    await store.create_run(_run(thread.id))


async def test_concurrent_run_creation_admits_exactly_one(make_store: Factory) -> None:
    """Racing create_run calls on one thread: exactly one wins, the rest get Conflict."""
    store = await make_store()
    thread = await store.create_thread("support")
    results = await asyncio.gather(
        *(store.create_run(_run(thread.id)) for _ in range(8)), return_exceptions=True
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if r is not None)


async def test_create_run_on_missing_thread_is_not_found(make_store: Factory) -> None:
    """A run can only be created on an existing thread."""
    store = await make_store()
    with pytest.raises(NotFound):
        await store.create_run(_run("thread_missing"))


async def test_run_events_and_failure_records(make_store: Factory) -> None:
    """A finished run's event log and error round-trip; active runs are listed for recovery."""
    store = await make_store()
    thread = await store.create_thread("support")
    run = _run(thread.id)
    await store.create_run(run)
    assert [r.id for r in await store.list_active_runs()] == [run.id]
    assert await store.load_run_events(run.id) is None
    failed = RunRecord(
        id=run.id,
        thread_id=thread.id,
        assistant="support",
        status="failed",
        manifest_version="v1",
        created_at=1.0,
        completed_at=3.0,
        error={"type": "provider_error", "message": "upstream 503"},
    )
    await store.update_run(failed)
    events = [b'{"event":"thread.run.created","data":{"a":"x\\ny"}}', b'{"event":"done","data":{}}']
    await store.save_run_events(run.id, events)
    assert await store.load_run_events(run.id) == events
    assert await store.get_run(run.id) == failed
    assert await store.list_active_runs() == []
    assert await store.get_run("run_missing") is None


async def test_delete_thread_removes_messages_and_runs(make_store: Factory) -> None:
    """Deleting a thread removes its messages, runs and event logs."""
    store = await make_store()
    thread = await store.create_thread("support")
    await store.append_message(thread.id, ChatMessage(role="user", content="hi"))
    run = _run(thread.id, status="completed")
    await store.create_run(run)
    await store.save_run_events(run.id, [b"{}"])
    assert await store.delete_thread(thread.id)
    assert await store.list_messages(thread.id) == []
    assert await store.get_run(run.id) is None
    assert await store.load_run_events(run.id) is None


async def test_history_survives_close_and_reopen(make_store: Factory) -> None:
    """After closing and reopening the store (a restart), threads, messages and runs are intact."""
    store = await make_store()
    thread = await store.create_thread("support")
    await store.append_message(thread.id, ChatMessage(role="user", content="remember me"))
    run = _run(thread.id, status="completed")
    await store.create_run(run)
    await store.save_run_events(run.id, [b'{"event":"done","data":{}}'])
    await store.close()
    assert await store.ping() is False
    reopened = await make_store()  # the same database, migrated already
    assert await reopened.ping() is True
    assert await reopened.get_thread(thread.id) == thread
    assert [m.message.content for m in await reopened.list_messages(thread.id)] == ["remember me"]
    assert await reopened.get_run(run.id) == run
    assert await reopened.load_run_events(run.id) == [b'{"event":"done","data":{}}']
    # The sequence continues after the restart.
    again = await reopened.append_message(thread.id, ChatMessage(role="user", content="again"))
    assert again.seq == 2


async def test_sqlite_file_is_durable_wal_under_the_root(tmp_path: Path) -> None:
    """The SQLite store creates var/ under the root, uses WAL with synchronous=FULL."""
    store = open_store("sqlite:///var/sub/gateway.db", root=tmp_path)
    assert isinstance(store, SQLiteStore)
    await store.open()
    await store.open()  # idempotent
    try:
        assert store.path == tmp_path / "var" / "sub" / "gateway.db"
        assert store.path.is_file()
        with sqlite3.connect(store.path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("SELECT version FROM schema_version").fetchone() == (
                len(SQLITE.migrations),
            )
        sync = await store._run(lambda conn: conn.execute("PRAGMA synchronous").fetchone())
        assert sync == (2,)  # FULL
    finally:
        await store.close()


def test_open_store_schemes(tmp_path: Path) -> None:
    """URL schemes pick the backend; absolute SQLite paths work; unknown schemes are refused."""
    absolute = open_store(f"sqlite:///{tmp_path}/x.db", root=Path("/nowhere"))
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "x.db"
    assert isinstance(open_store("postgresql://u@h/db", root=tmp_path), PostgresStore)
    assert isinstance(open_store("postgres://u@h/db", root=tmp_path), PostgresStore)
    with pytest.raises(InvalidInput, match="postgresql, sqlite"):
        open_store("mysql://u@h/db", root=tmp_path)


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "postgres+psycopg2", "POSTGRESQL"])
async def test_postgres_sqlalchemy_style_urls_open_the_store(scheme: str) -> None:
    """A SQLAlchemy-style URL (``postgresql+psycopg://``, as SQL actions take) opens the
    PostgreSQL store, instead of a pool retrying an unparsable URL for 30 s."""
    url = pg_url().replace("postgresql", scheme, 1)
    store = open_store(url, root=Path("/nowhere"))
    try:
        await asyncio.wait_for(store.open(), 10)
        assert await store.ping()
    finally:
        await store.close()


def test_postgres_url_libpq_cannot_read_is_refused_at_once_without_its_password() -> None:
    """A PostgreSQL URL libpq cannot parse is InvalidInput when the store is built (not a pool
    timeout 30 s later), and the message does not repeat the URL and its password."""
    with pytest.raises(InvalidInput, match="not a valid PostgreSQL URL") as caught:
        open_store("postgresql://u:s3cret@h:5432/db?sslmode", root=Path("/nowhere"))
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("schema", ["gw\n", "Gw", "gw;drop", ""])
def test_a_schema_name_that_is_no_identifier_is_refused(schema: str) -> None:
    """The store's schema name must be a plain lowercase identifier, whole: "gw\\n" too
    is refused (`$` matches before a final newline)."""
    with pytest.raises(InvalidInput, match="invalid schema name"):
        PostgresStore("postgresql://u@h/db", schema=schema)


async def test_begin_run_stores_run_and_message_together_or_not_at_all(
    make_store: Factory,
) -> None:
    """begin_run stores the run with its user message; on Conflict neither is stored."""
    store = await make_store()
    thread = await store.create_thread("support")
    first = _run(thread.id)
    stored = await store.begin_run(first, ChatMessage(role="user", content="one"))
    assert stored.seq == 1 and stored.run_id == first.id
    assert await store.get_run(first.id) == first
    second = _run(thread.id)
    with pytest.raises(Conflict):
        await store.begin_run(second, ChatMessage(role="user", content="two"))
    assert [m.message.content for m in await store.list_messages(thread.id)] == ["one"]
    assert await store.get_run(second.id) is None
    with pytest.raises(NotFound):
        await store.begin_run(_run("thread_missing"), ChatMessage(role="user", content="x"))


async def test_finish_run_stores_record_and_log_together(make_store: Factory) -> None:
    """finish_run stores the final record and the event log, freeing the thread."""
    store = await make_store()
    thread = await store.create_thread("support")
    run = _run(thread.id)
    await store.create_run(run)
    done = RunRecord(
        id=run.id,
        thread_id=thread.id,
        assistant="support",
        status="completed",
        manifest_version="v1",
        created_at=1.0,
        completed_at=2.0,
    )
    await store.finish_run(done, [b'{"event":"done","data":{}}'])
    assert await store.get_run(run.id) == done
    assert await store.load_run_events(run.id) == [b'{"event":"done","data":{}}']
    await store.create_run(_run(thread.id))  # the thread is free again


async def test_an_incomplete_run_keeps_its_details_and_frees_the_thread(
    make_store: Factory,
) -> None:
    """An incomplete run (its answer cut short) reads back with its incomplete_details."""
    store = await make_store()
    thread = await store.create_thread("support")
    run = _run(thread.id)
    await store.create_run(run)
    done = msgspec.structs.replace(
        run,
        status="incomplete",
        completed_at=2.0,
        usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
        incomplete_details={"reason": "max_completion_tokens"},
    )
    assert await store.finish_run(done, [b'{"event":"done","data":{}}'])
    assert await store.get_run(run.id) == done
    await store.create_run(_run(thread.id))  # incomplete is an ending: the thread is free


async def test_begin_run_with_a_new_thread_commits_all_or_nothing(make_store: Factory) -> None:
    """begin_run(thread=...) stores a new thread with its run and message, or none of them."""
    store = await make_store()
    thread = ThreadRecord(id=f"thread_{uuid.uuid4().hex[:8]}", assistant="support", created_at=1.0)
    run = _run(thread.id)
    stored = await store.begin_run(run, ChatMessage(role="user", content="hi"), thread=thread)
    assert stored.seq == 1 and stored.thread_id == thread.id
    assert await store.get_thread(thread.id) == thread
    assert await store.get_run(run.id) == run
    orphan = ThreadRecord(id=f"thread_{uuid.uuid4().hex[:8]}", assistant="support", created_at=1.0)
    with pytest.raises(NotFound):  # the run names another (missing) thread: nothing is kept
        await store.begin_run(
            _run("thread_missing"), ChatMessage(role="user", content="x"), thread=orphan
        )
    assert await store.get_thread(orphan.id) is None


async def test_finish_run_appends_the_last_answer_in_the_same_commit(make_store: Factory) -> None:
    """finish_run(messages=...) appends the answer with its id and run, then closes the run."""
    store = await make_store()
    thread = await store.create_thread("support")
    run = _run(thread.id)
    await store.begin_run(run, ChatMessage(role="user", content="q"))
    done = msgspec.structs.replace(run, status="completed", completed_at=2.0)
    answer = ChatMessage(role="assistant", content="a")
    await store.finish_run(done, [b'{"event":"done","data":{}}'], [(answer, "msg_last")])
    messages = await store.list_messages(thread.id)
    assert [(m.id, m.seq, m.message, m.run_id) for m in messages[1:]] == [
        ("msg_last", 2, answer, run.id)
    ]
    assert await store.get_run(run.id) == done


async def test_sqlite_database_that_does_not_answer_is_not_ready(tmp_path: Path) -> None:
    """A SQLite file locked past the busy timeout is NotReady (503), not an internal error."""
    store = SQLiteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        thread = await store.create_thread("support")
        await store._run(lambda conn: conn.execute("PRAGMA busy_timeout=50"))
        blocker = sqlite3.connect(tmp_path / "gateway.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(NotReady):
                await store.append_message(thread.id, ChatMessage(role="user", content="x"))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await store.append_message(thread.id, ChatMessage(role="user", content="x"))
        with pytest.raises(Conflict):  # a broken rule is still a rule, not "not ready"
            await store.create_run(_run(thread.id))
            await store.create_run(_run(thread.id))
    finally:
        await store.close()
    with pytest.raises(NotReady):  # a closed store does not answer either
        await store.get_thread("thread_x")


async def test_sqlite_database_full_is_not_ready_with_its_cause(tmp_path: Path) -> None:
    """A write SQLite refuses for lack of room is NotReady naming that cause in words (not a
    failed rollback of the transaction SQLite already rolled back, nor SQLite's text), and
    nothing half-written stays."""
    store = SQLiteStore(tmp_path / "gateway.db")
    await store.open()
    try:
        thread = await store.create_thread("support")
        pages = await store._run(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
        await store._run(lambda conn: conn.execute(f"PRAGMA max_page_count={pages + 2}"))
        big = ChatMessage(role="user", content="x" * 100_000)
        with pytest.raises(NotReady, match=r"^the thread store failed: the disk is full; retry"):
            await store.append_message(thread.id, big)
        await store._run(lambda conn: conn.execute("PRAGMA max_page_count=1073741823"))
        stored = await store.append_message(thread.id, ChatMessage(role="user", content="y"))
        assert stored.seq == 1
        assert [m.message.content for m in await store.list_messages(thread.id)] == ["y"]
    finally:
        await store.close()


async def test_sqlite_store_that_cannot_open_holds_no_file_or_thread(tmp_path: Path) -> None:
    """Opening a database a newer gateway migrated fails naming both versions, and leaves
    neither the file open nor the store's thread running; a later open tries afresh."""
    path = tmp_path / "gateway.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    conn.close()
    store = SQLiteStore(path)

    def held() -> list[str]:
        fds = Path("/proc/self/fd")
        return [str(fd) for fd in fds.iterdir() if str(path) in os.path.realpath(fd)]

    def threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name.startswith("sqlite-store")]

    before = threads()
    for _ in range(2):
        with pytest.raises(NotReady, match="version 99, newer than this gateway"):
            await store.open()
    assert held() == []
    deadline = time.monotonic() + 5
    while threads() != before and time.monotonic() < deadline:  # each ends once its task did
        await asyncio.sleep(0.01)
    assert threads() == before
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (len(SQLITE.migrations),))
    conn.close()
    await store.open()
    try:
        assert await store.ping()
    finally:
        await store.close()


async def test_sqlite_open_cancelled_while_the_file_is_locked_leaves_nothing_open(
    tmp_path: Path,
) -> None:
    """An ``open`` cancelled while another process locks the file (a start-up timeout) closes
    the connection its thread makes once the lock is gone; the store stays closed."""
    path = tmp_path / "gateway.db"
    first = SQLiteStore(path)
    await first.open()
    await first.close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    store = SQLiteStore(path)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(store.open(), 0.3)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    fds = Path("/proc/self/fd")
    deadline = time.monotonic() + 10
    while any(str(path) in os.path.realpath(fd) for fd in fds.iterdir()):
        assert time.monotonic() < deadline, "the cancelled open's connection stayed open"
        await asyncio.sleep(0.02)
    with pytest.raises(NotReady):
        await store.get_thread("thread_x")


async def test_postgres_open_cancelled_while_connecting_leaves_no_pool_running() -> None:
    """An ``open`` cancelled while the server does not answer yet (a start-up timeout) closes
    the pool it began: no worker keeps reconnecting behind a store that is not open."""
    with socket.socket() as s:  # a free port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = PostgresStore(f"postgresql://postgres@127.0.0.1:{port}/test")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(store.open(), 0.5)

    def pool_tasks() -> list[str]:
        names = (t.get_name() for t in asyncio.all_tasks() if not t.done())
        return [n for n in names if re.fullmatch(r"pool-\d+-(worker-\d+|scheduler)", n)]

    deadline = time.monotonic() + 5
    while pool_tasks():
        assert time.monotonic() < deadline, f"still running: {pool_tasks()}"
        await asyncio.sleep(0.05)
    with pytest.raises(NotReady):
        await store.get_thread("thread_x")


async def test_postgres_connection_cut_mid_request_is_not_ready(tmp_path: Path) -> None:
    """A PostgreSQL connection killed under a request is NotReady (503); the pool recovers."""
    url = pg_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(url, schema=schema, min_size=1, max_size=1)
    await store.open()
    try:
        thread = await store.create_thread("support")
        marker = f"cut_{uuid.uuid4().hex}"
        request = asyncio.create_task(store._fetchone(f"SELECT pg_sleep(10) -- {marker}", ()))
        with psycopg.connect(url, autocommit=True) as admin:
            deadline = time.monotonic() + 10
            while not admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE %s AND pid <> pg_backend_pid()",
                (f"%{marker}%",),
            ).fetchall():
                assert time.monotonic() < deadline, "the request never reached the server"
                await asyncio.sleep(0.02)
        with pytest.raises(NotReady):
            await request
        assert await store.get_thread(thread.id) == thread  # a fresh connection answers
    finally:
        await store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_postgres_connections_cut_while_idle_are_replaced_not_used() -> None:
    """After PostgreSQL cut every idle pooled connection (a restart, a failover), the next
    requests all succeed: a dead connection is replaced when taken, never handed out."""
    url = pg_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(url, schema=schema, min_size=3, max_size=3)
    await store.open()
    try:
        thread = await store.create_thread("support")
        idle = [conn.info.backend_pid for conn in store.pool._pool]
        assert len(idle) == 3
        with psycopg.connect(url, autocommit=True) as admin:
            for pid in idle:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        for _ in range(4):
            assert await store.get_thread(thread.id) == thread
    finally:
        await store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_a_lapsed_lease_frees_the_thread_and_fails_the_run(make_store: Factory) -> None:
    """A run whose owner stopped renewing blocks its thread only until its lease lapses."""
    crashed = await make_store(lease_seconds=0.2)
    survivor = await make_store()
    assert crashed.owner != survivor.owner
    thread = await crashed.create_thread("support")
    old = _run(thread.id)
    await crashed.begin_run(old, ChatMessage(role="user", content="one"))
    with pytest.raises(Conflict):  # the lease is live: the owner may be busy, not dead
        await survivor.begin_run(_run(thread.id), ChatMessage(role="user", content="two"))
    assert await survivor.expire_leases(thread.id) == []
    await asyncio.sleep(0.3)
    new = _run(thread.id)
    await survivor.begin_run(new, ChatMessage(role="user", content="three"))
    failed = await survivor.get_run(old.id)
    assert failed is not None and failed.status == "failed" and failed.error == INTERRUPTED
    assert failed.completed_at is not None
    assert [r.id for r in await survivor.list_active_runs()] == [new.id]
    contents = [m.message.content for m in await survivor.list_messages(thread.id)]
    assert contents == ["one", "three"]
    assert await crashed.renew_leases([old.id]) == set()  # too late: it was taken over


async def test_renewal_keeps_a_long_run_past_its_lease(make_store: Factory) -> None:
    """Renewed leases outlive their duration; only the owner renews; a lapse frees the thread."""
    owner = await make_store(lease_seconds=0.3)
    other = await make_store(lease_seconds=0.3)
    thread = await owner.create_thread("support")
    run = _run(thread.id)
    await owner.create_run(run)
    assert await other.renew_leases([run.id]) == set()  # not its run
    assert await owner.renew_leases([]) == set()
    for _ in range(4):  # 0.6 s: two lease durations
        await asyncio.sleep(0.15)
        assert await owner.renew_leases([run.id, "run_unknown"]) == {run.id}
        with pytest.raises(Conflict):
            await other.create_run(_run(thread.id))
    assert await other.expire_leases(thread.id) == []
    await asyncio.sleep(0.4)  # renewals stop: the lease lapses
    expired = await other.expire_leases(thread.id)
    assert [(r.id, r.status, r.error) for r in expired] == [(run.id, "failed", INTERRUPTED)]
    await other.create_run(_run(thread.id))


async def test_racing_starters_on_a_lapsed_thread_admit_exactly_one(make_store: Factory) -> None:
    """Two replicas starting runs on a thread whose lease lapsed: exactly one run starts."""
    crashed = await make_store(lease_seconds=0.1)
    a, b = await make_store(), await make_store()
    thread = await crashed.create_thread("support")
    old = _run(thread.id)
    await crashed.create_run(old)
    await asyncio.sleep(0.2)
    results = await asyncio.gather(
        *(store.create_run(_run(thread.id)) for store in (a, b, a, b, a, b)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, Conflict) for r in results if r is not None)
    active = await a.list_active_runs()
    assert len(active) == 1 and active[0].id != old.id
    stored = await a.get_run(old.id)
    assert stored is not None and stored.status == "failed" and stored.error == INTERRUPTED


@pytest.mark.parametrize("isolation", ["search_path", "schema"])
async def test_postgres_replicas_starting_together_all_open_and_migrate_once(
    isolation: str,
) -> None:
    """Six stores opening at once on a fresh schema (named in the URL's search path, or
    created by the store's ``schema`` option) all open, and the schema is migrated once."""
    url = pg_url()
    for _ in range(3):  # the race is a matter of timing: a few rounds catch it reliably
        schema = f"t_{uuid.uuid4().hex[:12]}"
        if isolation == "search_path":
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {schema}")
            stores = [
                PostgresStore(f"{url}?options=-csearch_path%3D{schema}", max_size=2)
                for _ in range(6)
            ]
        else:
            stores = [PostgresStore(url, schema=schema, max_size=2) for _ in range(6)]
        try:
            opened = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
            assert [o for o in opened if o is not None] == []
            thread = await stores[0].create_thread("support")
            assert await stores[5].get_thread(thread.id) == thread
        finally:
            for store in stores:
                await store.close()
            with psycopg.connect(url, autocommit=True) as conn:
                versions = conn.execute(f"SELECT version FROM {schema}.schema_version").fetchall()
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        assert versions == [(len(POSTGRES.migrations),)]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_runs_of_gateways_without_leases_lapse_by_age(backend: str, tmp_path: Path) -> None:
    """Active runs with no lease (rows a pre-lease gateway left in a version-1 database, or
    inserted by such a replica still running after the upgrade) lapse once they are
    ``LEGACY_LEASE_SECONDS`` old: their threads take new runs again, never busy forever."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = pg_url() if backend == "postgres" else ""
    path = tmp_path / "old.db"

    def execute(statements: list[str]) -> None:
        """Run SQL straight on the database, as an old gateway would."""
        if backend == "sqlite":
            with sqlite3.connect(path) as conn:
                for statement in statements:
                    conn.execute(statement)
            conn.close()
            return
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            pg.execute(f"SET search_path = {schema}")
            for statement in statements:
                pg.execute(statement)

    def old_run(run_id: str, thread_id: str, created_at: float) -> list[str]:
        """A thread and its in-progress run as a gateway without leases inserts them."""
        return [
            f"INSERT INTO threads (id, assistant, created_at) VALUES ('{thread_id}', 'a', 1.0)",
            "INSERT INTO runs (id, thread_id, assistant, status, manifest_version, created_at)"
            f" VALUES ('{run_id}', '{thread_id}', 'a', 'in_progress', 'v1', {created_at!r})",
        ]

    migrations = SQLITE.migrations if backend == "sqlite" else POSTGRES.migrations
    now = time.time()
    execute(
        [
            *migrations[0],
            "CREATE TABLE schema_version (version INTEGER NOT NULL)",
            "INSERT INTO schema_version (version) VALUES (1)",
            *old_run("r_crashed", "t_crashed", now - 3600),  # its gateway crashed an hour ago
            *old_run("r_live", "t_live", now),  # its gateway may well be running it
        ]
    )
    store: ThreadStore = (
        SQLiteStore(path, lease_seconds=0.01)
        if backend == "sqlite"
        else PostgresStore(url, schema=schema, max_size=2, lease_seconds=0.01)
    )
    await store.open()
    try:
        assert await store.expire_leases("t_live") == []
        with pytest.raises(Conflict):
            await store.create_run(_run("t_live"))
        await store.begin_run(_run("t_crashed"), ChatMessage(role="user", content="again"))
        crashed = await store.get_run("r_crashed")
        assert crashed is not None and crashed.status == "failed"
        assert crashed.error == INTERRUPTED and crashed.completed_at is not None
        # A replica of the old version, still serving during a rolling upgrade, starts a run
        # on the migrated schema: its INSERT names no lease columns.
        execute(old_run("r_late", "t_late", time.time() - LEGACY_LEASE_SECONDS + 1.0))
        with pytest.raises(Conflict):
            await store.create_run(_run("t_late"))
        await asyncio.sleep(1.5)
        assert [r.id for r in await store.expire_leases("t_late")] == ["r_late"]
        await store.create_run(_run("t_late"))
        assert {r.thread_id for r in await store.list_active_runs()} == {
            "t_live",
            "t_crashed",
            "t_late",
        }
    finally:
        await store.close()
        if backend == "postgres":
            with psycopg.connect(url, autocommit=True) as pg:
                pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _frames(first: int, last: int) -> list[bytes]:
    return [
        f'{{"event":"thread.message.delta","data":{{"n":{n}}}}}'.encode()
        for n in range(first, last + 1)
    ]


async def test_live_batches_are_read_past_a_sequence_number_then_replaced_by_the_log(
    make_store: Factory,
) -> None:
    """A running run's batches read back in order past any seq; a retried batch replaces
    itself; the final log supersedes them (finished) and later batches are refused."""
    store = await make_store()
    thread = await store.create_thread("support")
    run = _run(thread.id)
    await store.create_run(run)
    assert await store.load_run_events_after(run.id, 0) == RunEventsPage()
    assert await store.append_run_events(run.id, 1, _frames(1, 2)) is True
    assert await store.append_run_events(run.id, 3, _frames(3, 5)) is True
    assert await store.append_run_events(run.id, 3, _frames(3, 5)) is True  # a retry
    assert await store.load_run_events_after(run.id, 0) == RunEventsPage(events=_frames(1, 5))
    assert await store.load_run_events_after(run.id, 3) == RunEventsPage(events=_frames(4, 5))
    assert await store.load_run_events_after(run.id, 5) == RunEventsPage()
    done = msgspec.structs.replace(run, status="completed", completed_at=2.0)
    await store.finish_run(done, _frames(1, 7))
    page = await store.load_run_events_after(run.id, 5)
    assert page == RunEventsPage(events=_frames(6, 7), finished=True)
    assert await store.append_run_events(run.id, 8, _frames(8, 8)) is False
    assert await store.load_run_events_after(run.id, 0) == RunEventsPage(
        events=_frames(1, 7), finished=True
    )
    assert await store.load_run_events(run.id) == _frames(1, 7)


async def test_only_the_owner_of_an_active_run_appends_batches(make_store: Factory) -> None:
    """Another replica cannot append to a run, and its owner cannot once it was cancelled."""
    owner, other = await make_store(), await make_store()
    thread = await owner.create_thread("support")
    run = _run(thread.id)
    await owner.create_run(run)
    assert await other.append_run_events(run.id, 1, _frames(1, 1)) is False
    assert await owner.append_run_events(run.id, 1, _frames(1, 1)) is True
    cancelled = msgspec.structs.replace(run, status="cancelled", completed_at=2.0)
    await other.update_run(cancelled)
    assert await owner.append_run_events(run.id, 2, _frames(2, 2)) is False
    page = await other.load_run_events_after(run.id, 0)
    assert page == RunEventsPage(events=_frames(1, 1), finished=True)  # kept by the cancel
    assert await owner.delete_thread(thread.id)
    assert await other.load_run_events_after(run.id, 0) == RunEventsPage()


async def _batch_rows(store: ThreadStore, run_id: str) -> int:
    """How many live batches of ``run_id`` are stored."""
    sql = "SELECT count(*) FROM run_event_batches WHERE run_id = "
    if isinstance(store, SQLiteStore):
        row = await store._run(lambda conn: conn.execute(sql + "?", (run_id,)).fetchone())
    else:
        assert isinstance(store, PostgresStore)
        async with store.pool.connection() as conn:
            row = await (await conn.execute(sql + "%s", (run_id,))).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_run_ended_elsewhere_keeps_its_batches_as_its_final_log(
    make_store: Factory,
) -> None:
    """A cancel from another replica, or a lapsed lease, turns the run's batches into its final
    log (no ending: readers make it from the record) in the commit that ends the run."""
    owner, other = await make_store(lease_seconds=0.2), await make_store()
    thread = await owner.create_thread("support")
    cancelled, lapsed, bare = _run(thread.id), _run(thread.id), _run(thread.id)
    await owner.create_run(cancelled)
    await owner.append_run_events(cancelled.id, 1, _frames(1, 2))
    await owner.append_run_events(cancelled.id, 3, _frames(3, 5))
    error = {"type": "cancelled", "message": "the run was cancelled"}
    ended = msgspec.structs.replace(cancelled, status="cancelled", completed_at=2.0, error=error)
    assert await other.update_run(ended) is True
    final = RunEventsPage(events=_frames(1, 5), finished=True)
    assert await other.load_run_events_after(cancelled.id, 0) == final
    assert await _batch_rows(other, cancelled.id) == 0
    await owner.create_run(lapsed)
    await owner.append_run_events(lapsed.id, 1, _frames(1, 3))
    await asyncio.sleep(0.3)
    assert [run.id for run in await other.expire_leases(thread.id)] == [lapsed.id]
    final = RunEventsPage(events=_frames(1, 3), finished=True)
    assert await other.load_run_events_after(lapsed.id, 0) == final
    assert await _batch_rows(other, lapsed.id) == 0
    await owner.create_run(bare)  # ended before its first batch: no log at all
    assert await other.update_run(msgspec.structs.replace(ended, id=bare.id)) is True
    assert await other.load_run_events_after(bare.id, 0) == RunEventsPage()
    assert await other.load_run_events(bare.id) is None


async def test_a_page_stops_at_a_gap_in_the_batches(make_store: Factory) -> None:
    """Events past a missing batch are not returned, so a reader never skips a number."""
    store = await make_store()
    thread = await store.create_thread("support")
    run = _run(thread.id)
    await store.create_run(run)
    await store.append_run_events(run.id, 1, _frames(1, 2))
    await store.append_run_events(run.id, 5, _frames(5, 6))
    assert await store.load_run_events_after(run.id, 0) == RunEventsPage(events=_frames(1, 2))
    await store.append_run_events(run.id, 3, _frames(3, 4))
    assert await store.load_run_events_after(run.id, 1) == RunEventsPage(events=_frames(2, 6))


async def test_followers_are_notified_of_batches_on_postgres_and_poll_on_sqlite(
    make_store: Factory,
) -> None:
    """PostgreSQL wakes another store's subscriber at the batch's commit; SQLite times out."""
    owner, follower = await make_store(), await make_store()
    thread = await owner.create_thread("support")
    run = _run(thread.id)
    await owner.create_run(run)
    async with follower.run_event_notices(run.id) as notices:
        if not follower.shared:
            assert await notices.wait(0.05) is False
            return
        assert isinstance(follower, PostgresStore)
        await _until(lambda: _listening(follower), "the listening connection")
        assert await notices.wait(1) is True  # the wake-up every subscriber gets on connecting
        assert await notices.wait(0.3) is False
        await asyncio.sleep(0.1)
        started = time.monotonic()
        writer = asyncio.create_task(owner.append_run_events(run.id, 1, _frames(1, 1)))
        assert await notices.wait(10) is True
        assert time.monotonic() - started < 2
        assert await writer is True
        done = msgspec.structs.replace(run, status="completed", completed_at=2.0)
        await owner.finish_run(done, _frames(1, 2))
        assert await notices.wait(10) is True  # the final commit wakes followers too


async def test_postgres_each_stored_batch_notifies_once_and_a_refused_one_never(
    pg_store: PostgresStore,
) -> None:
    """Every batch stored (a retried one too) sends one notice naming its run, from the
    statement that stores it; a batch refused (the run cancelled elsewhere) sends none."""
    thread = await pg_store.create_thread("support")
    run = _run(thread.id)
    await pg_store.create_run(run)
    async with await psycopg.AsyncConnection.connect(pg_url(), autocommit=True) as listen:
        await listen.execute(f"LISTEN {_notify.CHANNEL}")

        async def notices() -> list[str]:
            # The channel is database-wide: other tests' runs may notify on it meanwhile.
            return [n.payload async for n in listen.notifies(timeout=0.5) if n.payload == run.id]

        assert await pg_store.append_run_events(run.id, 1, _frames(1, 2)) is True
        assert await pg_store.append_run_events(run.id, 3, _frames(3, 3)) is True
        assert await pg_store.append_run_events(run.id, 3, _frames(3, 4)) is True  # a retry
        assert await notices() == [run.id] * 3
        error = {"type": "cancelled", "message": "the run was cancelled"}
        ended = msgspec.structs.replace(run, status="cancelled", completed_at=2.0, error=error)
        assert await pg_store.update_run(ended) is True
        assert await notices() == [run.id]  # the commit that ended it
        assert await pg_store.append_run_events(run.id, 5, _frames(5, 5)) is False
        assert await notices() == []


@pytest.fixture
async def pg_store() -> AsyncIterator[PostgresStore]:
    """An opened PostgreSQL store in a fresh schema, for what only PostgreSQL does."""
    url, schema = pg_url(), f"t_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(url, schema=schema, max_size=2)
    await store.open()
    yield store
    await store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        await asyncio.sleep(0.01)


def _listening(store: PostgresStore) -> bool:
    return store._listener is not None and store._listener.connected


def _listen_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if task.get_name() == "store:listen"]


async def test_the_listening_connection_is_held_only_while_someone_follows(
    pg_store: PostgresStore,
) -> None:
    """The LISTEN connection opens for the first follower, closes when the last leaves, and
    opens again (and wakes) for the next one."""
    thread = await pg_store.create_thread("support")
    run = _run(thread.id)
    await pg_store.create_run(run)
    async with pg_store.run_event_notices(run.id), pg_store.run_event_notices(run.id):
        await _until(lambda: _listening(pg_store), "the listening connection")
    assert not _listening(pg_store) and _listen_tasks() == []
    async with pg_store.run_event_notices(run.id) as notices:
        await _until(lambda: _listening(pg_store), "the listening connection, again")
        await notices.wait(1)  # the wake-up every subscriber gets on connecting
        assert await pg_store.append_run_events(run.id, 1, _frames(1, 1)) is True
        assert await notices.wait(10) is True
    assert not _listening(pg_store) and _listen_tasks() == []


async def test_a_store_closing_starts_no_listener(pg_store: PostgresStore) -> None:
    """A follower subscribing while the store closes is refused (NotReady), and one that asked
    before but enters after only polls: no listening connection outlives the store."""
    early = pg_store.run_event_notices("run_early")
    async with pg_store.run_event_notices("run_first"):
        await _until(lambda: _listening(pg_store), "the listening connection")
        closing = asyncio.create_task(pg_store.close())
        await asyncio.sleep(0)  # close() is now waiting for the listener to stop
        assert not closing.done()
        with pytest.raises(NotReady):
            pg_store.run_event_notices("run_late")
        await closing
    async with early as notices:
        assert await notices.wait(0.05) is False
        assert _listen_tasks() == []
    assert _listen_tasks() == []


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_to_live_batches_keeps_old_logs_readable(
    backend: str, tmp_path: Path
) -> None:
    """Upgrading a version-2 database adds the batches table; stored logs still replay."""
    statements = [
        s for step in (SQLITE if backend == "sqlite" else POSTGRES).migrations[:2] for s in step
    ]
    seed = [
        "CREATE TABLE schema_version (version INTEGER NOT NULL)",
        "INSERT INTO schema_version (version) VALUES (2)",
        "INSERT INTO threads (id, assistant, created_at) VALUES ('t1', 'a', 1.0)",
        "INSERT INTO runs (id, thread_id, assistant, status, manifest_version, created_at)"
        " VALUES ('r1', 't1', 'a', 'completed', 'v1', 1.0)",
    ]
    log = _frames(1, 3)
    store: ThreadStore
    schema = f"t_{uuid.uuid4().hex[:12]}"
    if backend == "sqlite":
        path = tmp_path / "old.db"
        with sqlite3.connect(path) as conn:
            for statement in statements + seed:
                conn.execute(statement)
            conn.execute("INSERT INTO run_events VALUES ('r1', ?)", (b"\n".join(log),))
        conn.close()
        store = SQLiteStore(path)
    else:
        url = pg_url()
        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute(f"CREATE SCHEMA {schema}")
            pg.execute(f"SET search_path = {schema}")
            for statement in statements + seed:
                pg.execute(statement)
            pg.execute("INSERT INTO run_events VALUES ('r1', %s)", (b"\n".join(log),))
        store = PostgresStore(url, schema=schema, max_size=2)
    await store.open()
    try:
        assert await store.load_run_events("r1") == log
        assert await store.load_run_events_after("r1", 1) == RunEventsPage(
            events=log[1:], finished=True
        )
        thread = await store.create_thread("a")
        run = _run(thread.id)
        await store.create_run(run)
        assert await store.append_run_events(run.id, 1, log) is True
    finally:
        await store.close()
        if backend == "postgres":
            with psycopg.connect(pg_url(), autocommit=True) as pg:
                pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_a_run_taken_over_adds_nothing_to_its_thread_or_record(make_store: Factory) -> None:
    """After a takeover, the old owner's tool result and final write store nothing at all."""
    crashed = await make_store(lease_seconds=0.2)
    survivor = await make_store()
    thread = await crashed.create_thread("support")
    old = _run(thread.id)
    await crashed.begin_run(old, ChatMessage(role="user", content="look it up"))
    call = ToolCall(id="call_1", name="lookup", arguments="{}")
    asked = ChatMessage(role="assistant", content=None, tool_calls=[call])
    stored = await crashed.append_run_message(old.id, asked, message_id="msg_call")
    assert stored is not None
    assert (stored.id, stored.thread_id, stored.run_id, stored.seq) == (
        "msg_call",
        thread.id,
        old.id,
        2,
    )
    await asyncio.sleep(0.3)  # the crashed replica's lease lapses: the survivor takes over
    new = _run(thread.id)
    await survivor.begin_run(new, ChatMessage(role="user", content="anyone there?"))
    before = await survivor.list_messages(thread.id)
    late = ChatMessage(role="tool", content="late", tool_call_id="call_1", name="lookup")
    assert await crashed.append_run_message(old.id, late) is None
    done = msgspec.structs.replace(old, status="completed", completed_at=2.0)
    stale = ChatMessage(role="assistant", content="stale answer")
    assert await crashed.finish_run(done, _frames(1, 3), [(stale, "msg_stale")]) is False
    assert await survivor.list_messages(thread.id) == before
    record = await survivor.get_run(old.id)
    assert record is not None and record.status == "failed" and record.error == INTERRUPTED
    assert await survivor.load_run_events(old.id) is None
    # The run that took over writes normally.
    reply = ChatMessage(role="assistant", content="here")
    finished = msgspec.structs.replace(new, status="completed", completed_at=3.0)
    assert await survivor.finish_run(finished, _frames(1, 2), [(reply, "msg_reply")]) is True
    contents = [m.message.content for m in await survivor.list_messages(thread.id)]
    assert contents == ["look it up", None, "anyone there?", "here"]
    assert await survivor.get_run(new.id) == finished


async def test_only_the_owner_of_an_active_run_writes_its_messages_and_outcome(
    make_store: Factory,
) -> None:
    """Another replica cannot write a run's messages or outcome; the owner can, until it ends."""
    owner, other = await make_store(), await make_store()
    thread = await owner.create_thread("support")
    run = _run(thread.id)
    await owner.create_run(run)
    note = ChatMessage(role="assistant", content="thinking")
    done = msgspec.structs.replace(run, status="completed", completed_at=2.0)
    assert await other.append_run_message(run.id, note) is None
    assert await other.finish_run(done, _frames(1, 1)) is False
    assert await owner.append_run_message("run_missing", note) is None
    assert await owner.get_run(run.id) == run
    stored = await owner.append_run_message(run.id, note)
    assert stored is not None and stored.seq == 1 and stored.run_id == run.id
    assert await owner.finish_run(done, _frames(1, 2)) is True
    assert await owner.finish_run(done, _frames(1, 3), [(note, "msg_again")]) is False
    assert await owner.append_run_message(run.id, note) is None  # it ended
    assert [m.id for m in await other.list_messages(thread.id)] == [stored.id]
    assert await other.load_run_events(run.id) == _frames(1, 2)


async def test_update_run_changes_only_an_active_run(make_store: Factory) -> None:
    """A cancel from any replica ends an active run, but never rewrites a finished one."""
    owner, other = await make_store(), await make_store()
    thread = await owner.create_thread("support")
    first, second = _run(thread.id), _run(thread.id)
    cancel = {"type": "cancelled", "message": "the run was cancelled"}
    await owner.create_run(first)
    cancelled = msgspec.structs.replace(first, status="cancelled", completed_at=2.0, error=cancel)
    assert await other.update_run(cancelled) is True
    assert await owner.get_run(first.id) == cancelled
    await owner.create_run(second)
    done = msgspec.structs.replace(second, status="completed", completed_at=3.0)
    assert await owner.finish_run(done, _frames(1, 1)) is True
    late = msgspec.structs.replace(second, status="cancelled", completed_at=4.0, error=cancel)
    assert await other.update_run(late) is False
    assert await other.update_run(msgspec.structs.replace(late, id="run_missing")) is False
    assert await owner.get_run(second.id) == done


async def test_postgres_a_takeover_committed_during_a_write_makes_it_store_nothing() -> None:
    """Writes racing a takeover wait for its row lock, then find the run ended: no stale write."""
    url = pg_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(url, schema=schema, max_size=4, lease_seconds=0.1)
    await store.open()
    try:
        thread = await store.create_thread("support")
        run = _run(thread.id)
        await store.create_run(run)
        await asyncio.sleep(0.2)  # the lease lapses
        done = msgspec.structs.replace(run, status="completed", completed_at=2.0)
        result = ChatMessage(role="tool", content="late", tool_call_id="call_1", name="lookup")
        answer = ChatMessage(role="assistant", content="stale answer")
        takeover = await psycopg.AsyncConnection.connect(url, options=f"-c search_path={schema}")
        # Another replica's takeover, not yet committed.
        async with takeover, takeover.transaction():
            cur = await takeover.execute(
                POSTGRES.expire_leases,
                (
                    time.time(),
                    msgspec.json.encode(INTERRUPTED).decode(),
                    thread.id,
                    LEGACY_LEASE_SECONDS,
                ),
            )
            assert [row[0] for row in await cur.fetchall()] == [run.id]
            appending = asyncio.create_task(store.append_run_message(run.id, result))
            finishing = asyncio.create_task(
                store.finish_run(done, _frames(1, 2), [(answer, "msg_stale")])
            )
            await asyncio.sleep(0.3)
            waited = not appending.done() and not finishing.done()
        appended, finished = await asyncio.gather(appending, finishing)
        assert waited  # both waited for the takeover's row lock
        assert appended is None
        assert finished is False
        assert await store.list_messages(thread.id) == []
        record = await store.get_run(run.id)
        assert record is not None and record.status == "failed" and record.error == INTERRUPTED
        assert await store.load_run_events(run.id) is None
    finally:
        await store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_postgres_deleting_a_thread_waits_for_a_run_writing_to_it() -> None:
    """A run's write locks its row, then the thread's; deleting the thread takes them in the
    same order, so it waits for the write instead of deadlocking with it."""
    url = pg_url()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(url, schema=schema, max_size=4)
    await store.open()
    try:
        thread = await store.create_thread("support")
        run = _run(thread.id)
        await store.create_run(run)
        writer = await psycopg.AsyncConnection.connect(url, options=f"-c search_path={schema}")
        async with writer, writer.transaction():
            # A run finishing on another replica: its row first (as ``finish_run``) ...
            await writer.execute(POSTGRES.lock_own_run_to_write, (run.id, store.owner))
            deleting = asyncio.create_task(store.delete_thread(thread.id))
            await asyncio.sleep(0.3)
            assert not deleting.done()  # waits for the run's row, holding nothing the run needs
            # ... then the thread's, for its answer's sequence number.
            await writer.execute(POSTGRES.next_seq, (thread.id,))
        assert await deleting is True
        assert await store.get_thread(thread.id) is None
        assert await store.get_run(run.id) is None
    finally:
        await store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_postgres_a_replica_stalled_inside_a_transaction_frees_its_locks() -> None:
    """A replica that stops in the middle of a transaction (frozen, or its node gone without
    closing the connection: to the server, a session idle in its transaction) holds its
    run's row lock only until ``idle_in_transaction_timeout``: then the server ends that
    session and other replicas' writes on the thread go on, instead of waiting for TCP
    keepalives (hours) with their pooled connections."""
    url, schema = pg_url(), f"t_{uuid.uuid4().hex[:12]}"
    stalled = PostgresStore(url, schema=schema, max_size=2, idle_in_transaction_timeout=0.5)
    other = PostgresStore(url, schema=schema, max_size=2)
    await stalled.open()
    await other.open()
    try:
        thread = await stalled.create_thread("support")
        run = _run(thread.id)
        await stalled.create_run(run)
        error = {"type": "cancelled", "message": "the run was cancelled"}
        cancelled = msgspec.structs.replace(run, status="cancelled", completed_at=2.0, error=error)
        # The stalled replica's transaction, where ``finish_run`` stands after its guard (the
        # run's row locked); when it wakes up, its session is gone: NotReady, as a cut one.
        with pytest.raises(NotReady):
            async with stalled._connection() as conn:
                await conn.execute(POSTGRES.lock_own_run_to_write, (run.id, stalled.owner))
                assert await asyncio.wait_for(other.update_run(cancelled), 20) is True
                await conn.execute("SELECT 1")
        stored = await other.get_run(run.id)
        assert stored is not None and stored.status == "cancelled"
        assert await stalled.get_thread(thread.id) == thread  # its pool replaced the session
    finally:
        await stalled.close()
        await other.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def test_sqlite_store_of_the_server_holds_its_file_until_closed(tmp_path: Path) -> None:
    """The store ``open_store`` makes for the server refuses a file another one holds
    (``NotReady`` naming the file and the holder's pid), and frees it on close."""
    first = open_store("sqlite:///var/gateway.db", root=tmp_path)
    second = open_store("sqlite:///var/gateway.db", root=tmp_path)
    await first.open()
    try:
        with pytest.raises(NotReady) as refused:
            await second.open()
        assert str(tmp_path / "var" / "gateway.db") in refused.value.message
        assert f"pid {os.getpid()}" in refused.value.message
        assert not await second.ping()
    finally:
        await first.close()
    await second.open()
    try:
        assert await second.ping()
    finally:
        await second.close()


async def test_postgres_schema_of_a_newer_gateway_is_not_ready() -> None:
    """A schema a newer gateway wrote stops ``open`` with ``NotReady`` (one clear start-up
    line, exit 3, saying to upgrade), not a RuntimeError's traceback."""
    url, schema = pg_url(), f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.schema_version (version INTEGER NOT NULL)")
        conn.execute(f"INSERT INTO {schema}.schema_version (version) VALUES (999)")
    store = PostgresStore(url, schema=schema, max_size=2)
    try:
        with pytest.raises(NotReady, match="version 999, newer than this gateway"):
            await store.open()
    finally:
        await store.close()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
