"""SQL actions end to end: SQLite through the real sandbox, and the real PostgreSQL server."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from _pg import pg_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.executors._common import ToolError
from gateway.executors.runner import SandboxRunner
from gateway.executors.sql import SqlConfig
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Action, CallContext, Database, SandboxLimits
from gateway.sandbox._zygote_keys import WARM_BUDGET, zygote_key, zygote_warm
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A directory the sandbox uid can use, holding shop.db (writable by anyone)."""
    root = Path(tempfile.mkdtemp(prefix="gw-sql-test-"))
    root.chmod(0o777)
    db = root / "shop.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT, total REAL)")
    conn.executemany(
        "INSERT INTO orders VALUES (?, ?, ?)", [(1042, "shipped", 19.5), (1043, "open", 5.0)]
    )
    conn.commit()
    conn.close()
    db.chmod(0o666)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _sql(name: str, query: str, **kw: Any) -> Action:
    params = kw.pop("parameters", {"type": "object", "properties": {"id": {"type": "integer"}}})
    return Action(
        name=name,
        description="d",
        parameters=params,
        kind_key="sql",
        config=SqlConfig(database="shop", query=query, **kw),
        sandbox=SandboxLimits(network=False),
    )


@pytest.fixture
def catalog(data_root: Path) -> Catalog:
    """Read and write SQL actions over shop.db (relative URL resolved by the catalog)."""
    return Catalog(
        version="t",
        root=data_root,
        gateway_root=data_root,
        loaded_at=0,
        databases={"shop": Database(name="shop", url="sqlite:///shop.db")},
        actions={
            "order": _sql("order", "SELECT id, status, total FROM orders WHERE id = {{ id }}"),
            "wipe": _sql("wipe", "DELETE FROM orders"),
            "close": _sql(
                "close", "UPDATE orders SET status = 'closed' WHERE id = {{ id }}", readonly=False
            ),
        },
    )


@pytest.fixture
async def runner(catalog: Catalog) -> AsyncIterator[SandboxRunner]:
    """A runner over a started supervisor."""
    sup = Supervisor(Settings())
    await sup.start(catalog)
    try:
        yield SandboxRunner(sup)
    finally:
        await sup.aclose()


async def test_sqlite_through_sandbox(runner: SandboxRunner, catalog: Catalog) -> None:
    """A read query runs in the sandbox (network off) and returns JSON rows."""
    result = await runner.run(catalog, "order", {"id": 1042})
    assert result.status == "succeeded", result
    assert result.output == '[{"id":1042,"status":"shipped","total":19.5}]'


async def test_sqlite_readonly_in_sandbox(runner: SandboxRunner, catalog: Catalog) -> None:
    """A read-only action's write is refused by the database; a writable one works."""
    wiped = await runner.run(catalog, "wipe", {})
    assert wiped.status == "failed"
    assert wiped.error_type == "readonly"
    closed = await runner.run(catalog, "close", {"id": 1043})
    assert closed.output == '{"rowcount":1}'
    still = await runner.run(catalog, "order", {"id": 1043})
    assert '"closed"' in still.output


@pytest.mark.parametrize("isolation", ["sandbox", "inline"])
async def test_a_statement_timeout_is_timed_out_in_the_sandbox_as_inline(
    runner: SandboxRunner, catalog: Catalog, isolation: str
) -> None:
    """A statement cut by its ``statement_timeout`` (the kind's own ``timeout`` error) is a
    ``timed_out`` call, in the sandbox as inline (the sandbox said ``failed``)."""
    endless = _sql(
        "endless",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT count(*) AS n FROM c",
        parameters={"type": "object", "properties": {}},
        statement_timeout=0.3,
    )
    endless = msgspec.structs.replace(endless, isolation=isolation, timeout=10)
    cat = msgspec.structs.replace(catalog, actions={"endless": endless})
    result = await runner.run(cat, "endless", {})
    assert (result.status, result.error_type) == ("timed_out", "timeout"), result
    assert json.loads(result.output)["error"]["type"] == "timeout"


async def test_a_catalog_of_many_templates_starts_its_zygote(
    data_root: Path, catalog: Catalog
) -> None:
    """250 sql actions of about 1 KB: the warm list the zygote gets in its first message is cut
    at its budget (the whole list was over the datagram limit, so the zygote did not start);
    inline actions are left out of it; an action past the budget compiles its own template."""
    pad = "x" * 1000
    many = {
        f"a{n:03}": _sql(f"a{n:03}", f"SELECT {{{{ id }}}} + {n} AS n -- {pad}") for n in range(250)
    }
    inline = msgspec.structs.replace(_sql("inline", "SELECT 1 -- inline only"), isolation="inline")
    big = msgspec.structs.replace(catalog, actions={**many, "inline": inline})
    key = zygote_key(many["a000"])
    warm = zygote_warm(key, big)
    assert 0 < len(warm) < 250
    assert len(msgspec.json.encode(warm)) <= WARM_BUDGET + 1024
    assert all("inline only" not in config["query"] for _, config in warm)
    sup = Supervisor(Settings())
    await sup.start(big)
    try:
        runner = SandboxRunner(sup)
        assert (await runner.run(big, "a000", {"id": 1})).output == '[{"n":1}]'
        assert (await runner.run(big, "a249", {"id": 1})).output == '[{"n":250}]'
    finally:
        await sup.aclose()


# --- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture
def pg_table() -> Iterator[tuple[str, str]]:
    """A fresh table in the test database; yields (url, table name)."""
    url = pg_url()
    table = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {table} (id int PRIMARY KEY, name text, price numeric(10,2), "
            "born date, raw bytea)"
        )
        conn.execute(
            f"INSERT INTO {table} VALUES (1, 'ada', 12.50, '1815-12-10', '\\x0102'), "
            "(2, 'bob', 0.10, NULL, NULL)"
        )
    try:
        yield url, table
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


def _pg_run(url: str, query: str, **kw: Any) -> Any:
    arguments = kw.pop("arguments", {})
    config = SqlConfig(database="pg", query=query, **kw)
    return config.run(
        CallContext(action="q", arguments=arguments, databases={"pg": url}, timeout=5)
    )


@pytest.mark.postgres
def test_postgres_values_are_json_safe(pg_table: tuple[str, str]) -> None:
    """numeric, date and bytea come back as JSON-safe values."""
    url, table = pg_table
    rows = _pg_run(url, f"SELECT * FROM {table} ORDER BY id")
    assert rows[0] == {
        "id": 1,
        "name": "ada",
        "price": 12.5,
        "born": dt.date(1815, 12, 10).isoformat(),
        "raw": "base64:AQI=",
    }
    assert rows[1]["price"] == 0.1


@pytest.mark.postgres
def test_postgres_readonly_cannot_write(pg_table: tuple[str, str]) -> None:
    """A read-only action runs in a read-only transaction: the write is refused."""
    url, table = pg_table
    with pytest.raises(ToolError) as info:
        _pg_run(url, f"DELETE FROM {table}")
    assert info.value.error_type == "readonly"
    assert _pg_run(url, f"SELECT count(*) AS n FROM {table}") == [{"n": 2}]


@pytest.mark.postgres
def test_postgres_write_and_ident(pg_table: tuple[str, str]) -> None:
    """readonly: false commits; ident() picks a listed column and refuses others."""
    url, table = pg_table
    assert _pg_run(
        url,
        f"UPDATE {table} SET name = {{{{ n }}}} WHERE id = 2",
        readonly=False,
        arguments={"n": "b'; --"},
    ) == {"rowcount": 1}
    query = f'SELECT {{{{ col | ident(["name", "id"]) }}}} AS v FROM {table} ORDER BY id'
    assert _pg_run(url, query, arguments={"col": "name"}) == [{"v": "ada"}, {"v": "b'; --"}]
    with pytest.raises(ToolError):
        _pg_run(url, query, arguments={"col": "price"})


@pytest.mark.postgres
def test_postgres_statement_timeout(pg_table: tuple[str, str]) -> None:
    """A slow statement is cancelled at the statement timeout."""
    url, _ = pg_table
    with pytest.raises(ToolError) as info:
        _pg_run(url, "SELECT pg_sleep(5)", statement_timeout=0.3)
    assert info.value.error_type == "timeout"


@pytest.mark.postgres
def test_postgres_max_rows(pg_table: tuple[str, str]) -> None:
    """More rows than max_rows are cut with a note."""
    url, _ = pg_table
    result = _pg_run(url, "SELECT generate_series(1, 10) AS n", max_rows=3)
    assert result["rows"] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert result["truncated"] is True


@pytest.mark.postgres
async def test_postgres_max_rows_reads_only_what_it_returns(data_root: Path) -> None:
    """A read-only query whose whole result would not fit the call's memory still returns
    its first max_rows rows with the note: only those are fetched from the server."""
    query = "SELECT n, repeat('x', 1000) AS pad FROM generate_series(1, 300000) n"
    action = Action(
        name="pg",
        description="d",
        kind_key="sql",
        timeout=30,
        sandbox=SandboxLimits(memory_mb=128),
        config=SqlConfig(database="pg", query=query, max_rows=3),
    )
    catalog = Catalog(
        version="t",
        root=data_root,
        gateway_root=data_root,
        loaded_at=0,
        databases={"pg": Database(name="pg", url=pg_url())},
        actions={"pg": action},
    )
    sup = Supervisor(Settings())
    await sup.start(catalog)
    try:
        result = await SandboxRunner(sup).run(catalog, "pg", {})
    finally:
        await sup.aclose()
    assert result.status == "succeeded", result.output
    body = msgspec.json.decode(result.output)
    assert [r["n"] for r in body["rows"]] == [1, 2, 3]
    assert body["truncated"] is True


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query",
    [
        "SELECT 1 AS a; COMMIT; DELETE FROM {table}",
        "COMMIT; DELETE FROM {table}",
        "SELECT 1 AS a; SELECT 2 AS a",
    ],
)
def test_postgres_readonly_runs_one_statement(pg_table: tuple[str, str], query: str) -> None:
    """A read-only action runs one statement: a template without parameters went through the
    simple query protocol, which runs several, so ``COMMIT; DELETE ...`` ended the
    read-only transaction and deleted every row (as SQLite and any template with a
    parameter do, several statements are now refused)."""
    url, table = pg_table
    with pytest.raises(ToolError) as info:
        _pg_run(url, query.format(table=table))
    assert info.value.error_type == "database_error"
    assert "multiple commands" in str(info.value)
    assert _pg_run(url, f"SELECT count(*) AS n FROM {table}") == [{"n": 2}]


@pytest.mark.postgres
def test_postgres_readonly_statements_a_cursor_cannot_hold(pg_table: tuple[str, str]) -> None:
    """SHOW and EXPLAIN run as before; a write is still readonly."""
    url, table = pg_table
    assert _pg_run(url, "SHOW statement_timeout") == [{"statement_timeout": "5s"}]
    assert "QUERY PLAN" in _pg_run(url, f"EXPLAIN SELECT * FROM {table}")[0]
    with pytest.raises(ToolError) as info:
        _pg_run(url, f"WITH d AS (DELETE FROM {table} RETURNING id) SELECT * FROM d")
    assert info.value.error_type == "readonly"


@pytest.mark.postgres
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    value=st.text(max_size=40).filter(lambda s: "\x00" not in s)
    | st.sampled_from(["'; DROP TABLE x; --", "%s", "%(a)s", "$1", "{{ v }}"])
)
def test_postgres_hostile_values(pg_table: tuple[str, str], value: str) -> None:
    """Hostile strings through the template forms come back unchanged from PostgreSQL."""
    url, _ = pg_table
    for query in (
        "SELECT {{ v }}::text AS v",
        "SELECT {{ v }}::text AS v WHERE 'a%' LIKE 'a%'",
        "SELECT x AS v FROM (SELECT {{ v }}::text AS x) s WHERE x IN "
        "({% for y in [v, v] %}{{ y }}{% if not loop.last %}, {% endif %}{% endfor %})",
    ):
        assert _pg_run(url, query, arguments={"v": value}) == [{"v": value}]


@pytest.mark.postgres
async def test_postgres_through_sandbox(pg_table: tuple[str, str], data_root: Path) -> None:
    """A PostgreSQL action runs in the sandbox (its own uid, network on) with bound values."""
    url, table = pg_table
    action = Action(
        name="pg",
        description="d",
        parameters={"type": "object", "properties": {"name": {"type": "string"}}},
        kind_key="sql",
        config=SqlConfig(
            database="pg", query=f"SELECT id FROM {table} WHERE name = {{{{ name }}}}"
        ),
    )
    catalog = Catalog(
        version="t",
        root=data_root,
        gateway_root=data_root,
        loaded_at=0,
        databases={"pg": Database(name="pg", url=url)},
        actions={"pg": action},
    )
    sup = Supervisor(Settings())
    await sup.start(catalog)
    try:
        runner = SandboxRunner(sup)
        assert (await runner.run(catalog, "pg", {"name": "ada"})).output == '[{"id":1}]'
        hostile = await runner.run(catalog, "pg", {"name": "x' OR '1'='1"})
        assert hostile.output == "[]"
    finally:
        await sup.aclose()


def _lite_run(data_root: Path, query: str, **arguments: Any) -> Any:
    """``query`` on ``shop.db`` as the sandbox child runs it (``SqlConfig.run``)."""
    config = SqlConfig(database="shop", query=query)
    url = f"sqlite:///{data_root / 'shop.db'}"
    return config.run(
        CallContext(action="q", arguments=arguments, databases={"shop": url}, timeout=5)
    )


def test_sqlite_columns_of_one_name_are_all_returned(data_root: Path) -> None:
    """``SELECT a.id, b.id`` (a join) returned one ``id`` per row, the last one (a row is
    a JSON object keyed by column name): later duplicates are ``id_2``, ``id_3``..."""
    rows = _lite_run(
        data_root,
        "SELECT a.id, a.status, b.id, b.status, b.id, 1 AS id_2 FROM orders a "
        "JOIN orders b ON b.id = a.id + 1",
    )
    assert rows == [
        {"id": 1042, "status": "shipped", "id_3": 1043, "status_2": "open", "id_4": 1043, "id_2": 1}
    ]


@pytest.mark.postgres
def test_postgres_unnamed_columns_are_all_returned(pg_table: tuple[str, str]) -> None:
    """PostgreSQL names each unnamed expression ``?column?``: all of them come back."""
    url, table = pg_table
    rows = _pg_run(
        url, f"SELECT a.id, b.id, 1 + 1, 2 + 2 FROM {table} a JOIN {table} b ON b.id = a.id + 1"
    )
    assert rows == [{"id": 1, "id_2": 2, "?column?": 2, "?column?_2": 4}]


@pytest.mark.postgres
def test_postgres_dates_python_cannot_hold_come_back_as_text(pg_table: tuple[str, str]) -> None:
    """``'infinity'::timestamptz`` or a BC date failed the whole query ("timestamp too
    large"): such values come back as PostgreSQL writes them, the others as ISO 8601."""
    url, _ = pg_table
    rows = _pg_run(
        url,
        "SELECT 'infinity'::timestamptz AS a, '-infinity'::timestamp AS b, "
        "'0044-03-15 BC'::date AS c, '12000-01-01'::date AS d, '2024-01-02'::date AS e, "
        "'2024-01-02 03:04:05'::timestamp AS f, ARRAY['infinity'::date] AS g",
    )
    assert rows == [
        {
            "a": "infinity",
            "b": "-infinity",
            "c": "0044-03-15 BC",
            "d": "12000-01-01",
            "e": "2024-01-02",
            "f": "2024-01-02T03:04:05",
            "g": ["infinity"],
        }
    ]


@pytest.mark.postgres
def test_postgres_times_and_intervals_python_cannot_hold_come_back_as_text(
    pg_table: tuple[str, str],
) -> None:
    """``'24:00:00'::time`` (a closing time), its ``timetz`` and an interval of more than
    999,999,999 days failed the whole query ("hour must be in 0..23"): such values come
    back as PostgreSQL writes them, the others as before."""
    url, _ = pg_table
    rows = _pg_run(
        url,
        "SELECT '24:00:00'::time AS a, '24:00:00+02'::timetz AS b, "
        "interval '3000000 years' AS c, ARRAY['24:00'::time] AS d, '12:30'::time AS e",
    )
    assert rows == [
        {
            "a": "24:00:00",
            "b": "24:00:00+02",
            "c": "3000000 years",
            "d": ["24:00:00"],
            "e": "12:30:00",
        }
    ]


@pytest.mark.parametrize("sort", ["o.status", "o.id"])
def test_a_dotted_ident_quotes_each_part(data_root: Path, sort: str) -> None:
    """``ident(["o.status", "o.id"])`` printed ``"o.status"``, one unknown name that
    SQLite reads as a string constant (no ordering at all): each part is quoted."""
    query = 'SELECT o.id FROM orders o ORDER BY {{ sort | ident(["o.status", "o.id"]) }} DESC'
    rows = _lite_run(data_root, query, sort=sort)
    expected = [1042, 1043] if sort == "o.status" else [1043, 1042]  # shipped > open
    assert [r["id"] for r in rows] == expected


async def test_an_integer_sqlite_cannot_bind_is_invalid_arguments(
    runner: SandboxRunner, catalog: Catalog
) -> None:
    """A schema-valid integer past 64 bits came back as ``exception`` (OverflowError
    while binding, a traceback in the log): ``invalid_arguments`` naming the argument,
    sandboxed and inline."""
    for isolation in ("sandbox", "inline"):
        action = msgspec.structs.replace(catalog.actions["order"], isolation=isolation)
        one = msgspec.structs.replace(catalog, actions={"order": action})
        result = await runner.run(one, "order", {"id": 10**29})
        assert result.error_type == "invalid_arguments", (isolation, result)
        assert "argument 'id'" in result.output and "10000000000000" in result.output
        assert "Traceback" not in result.output
        fits = await runner.run(one, "order", {"id": 2**63 - 1})
        assert fits.output == "[]", (isolation, fits)


@pytest.fixture
def wal_root() -> Iterator[Path]:
    """A directory the sandbox uid can use, holding wal.db in WAL mode (no -wal or -shm
    file left: the last connection's close removed them)."""
    root = Path(tempfile.mkdtemp(prefix="gw-sql-wal-"))
    root.chmod(0o777)
    conn = sqlite3.connect(root / "wal.db")
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'a')")
    conn.commit()
    conn.close()
    (root / "wal.db").chmod(0o666)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wal_catalog(wal_root: Path) -> Catalog:
    """A read-only ``get`` and ``wipe`` over ``wal_root/wal.db``."""
    return Catalog(
        version="t",
        root=wal_root,
        gateway_root=wal_root,
        loaded_at=0,
        databases={"wal": Database(name="wal", url="sqlite:///wal.db")},
        actions={
            "get": msgspec.structs.replace(
                _sql("get", "SELECT 1"),
                config=SqlConfig(database="wal", query="SELECT id, name FROM t ORDER BY id"),
            ),
            "wipe": msgspec.structs.replace(
                _sql("wipe", "SELECT 1"), config=SqlConfig(database="wal", query="DELETE FROM t")
            ),
        },
    )


async def test_a_readonly_action_reads_a_wal_database_in_the_sandbox(wal_root: Path) -> None:
    """A ``readonly`` sandboxed action on a WAL-mode database failed ("attempt to write a
    readonly database": SQLite must create and write ``-shm`` and ``-wal``, and the call
    could only read the folder): it reads, also rows a live writer has only in the WAL,
    and still cannot write rows; the folder gets no other new file."""
    catalog = _wal_catalog(wal_root)
    sup = Supervisor(Settings())
    await sup.start(catalog)
    runner = SandboxRunner(sup)
    try:
        got = await runner.run(catalog, "get", {})
        assert got.output == '[{"id":1,"name":"a"}]', got
        wiped = await runner.run(catalog, "wipe", {})
        assert wiped.error_type == "readonly", wiped
        # A live writer: its row is in the -wal file only (not checkpointed).
        writer = sqlite3.connect(wal_root / "wal.db")
        try:
            writer.execute("PRAGMA wal_autocheckpoint=0")
            writer.execute("INSERT INTO t VALUES (2, 'b')")
            writer.commit()
            live = await runner.run(catalog, "get", {})
            assert live.output == '[{"id":1,"name":"a"},{"id":2,"name":"b"}]', live
        finally:
            writer.close()
    finally:
        await sup.aclose()
    with sqlite3.connect(wal_root / "wal.db") as check:
        assert check.execute("SELECT count(*) FROM t").fetchone() == (2,)
    check.close()
    assert {p.name for p in wal_root.iterdir()} <= {"wal.db", "wal.db-wal", "wal.db-shm"}
