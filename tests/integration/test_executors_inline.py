"""``isolation: inline``: http and sql calls in the server process, against real servers.

A real HTTP server on 127.0.0.1, real SQLite files and the real PostgreSQL
server; the runner is the real ``SandboxRunner`` (its supervisor is started
only where a test compares with the sandbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import msgspec
import psycopg
import pytest
from _pg import pg_url
from structlog.testing import capture_logs

from gateway.executors._pools import Pools
from gateway.executors.http import HttpConfig
from gateway.executors.inline import InlineExecutor
from gateway.executors.runner import SandboxRunner
from gateway.executors.sql import SqlConfig
from gateway.manifests.catalog import Catalog
from gateway.manifests.loader import load_catalog
from gateway.manifests.model import Action, Database, SandboxLimits
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings
from tests._http import serving
from tests._loop import loop_gaps

if TYPE_CHECKING:
    from tests.integration.conftest import ServerFactory

ENVIRON = {"API_TOKEN": "tok-inline-secret-1", "SERVER_ONLY": "server-only-value-1"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so pooling is visible as one client port

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self.path.startswith("/cookie"):
            self.send_header("Set-Cookie", "session=leaked; Path=/")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(parsed.query)
        if parsed.path.startswith("/status/"):
            self._send(int(parsed.path.rsplit("/", 1)[1]), b"not here", "text/plain")
            return
        if parsed.path == "/slow":
            time.sleep(float(query["s"][0]))
        if parsed.path == "/big":
            self._send(200, b"y" * 5000, "text/plain")
            return
        payload = {
            "port": self.client_address[1],
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
        }
        self._send(200, json.dumps(payload).encode())


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A threaded HTTP/1.1 server on a free loopback port; yields its base URL."""
    with serving(_Handler, quiet=True) as url:
        yield url


@pytest.fixture
def data_root() -> Iterator[Path]:
    """A directory the sandbox uid can use, holding shop.db (writable by anyone)."""
    root = Path(tempfile.mkdtemp(prefix="gw-inline-test-"))
    root.chmod(0o777)
    _make_shop(root / "shop.db", [(1042, "shipped"), (1043, "open")])
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _make_shop(path: Path, rows: list[tuple[int, str]]) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT)")
    conn.executemany("INSERT INTO orders VALUES (?, ?)", rows)
    conn.commit()
    conn.close()
    path.chmod(0o666)


def _http(name: str, config: HttpConfig, **kw: Any) -> Action:
    return Action(
        name=name,
        description="d",
        kind_key="http",
        config=config,
        isolation=kw.pop("isolation", "inline"),
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
        **kw,
    )


def _sql(name: str, query: str, database: str = "shop", **kw: Any) -> Action:
    isolation = kw.pop("isolation", "inline")
    timeout = kw.pop("timeout", 10.0)
    return Action(
        name=name,
        description="d",
        kind_key="sql",
        config=SqlConfig(database=database, query=query, **kw),
        isolation=isolation,
        timeout=timeout,
        parameters={
            "type": "object",
            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
        },
    )


def _catalog(root: Path, *actions: Action, **databases: str) -> Catalog:
    dbs = {"shop": "sqlite:///shop.db", **databases}
    return Catalog(
        version=uuid.uuid4().hex[:8],
        root=root,
        gateway_root=root,
        loaded_at=0,
        databases={n: Database(name=n, url=u) for n, u in dbs.items()},
        actions={a.name: a for a in actions},
    )


@pytest.fixture
async def runner() -> AsyncIterator[SandboxRunner]:
    """A runner whose supervisor is never started: any sandboxed call would have to start it."""
    runner = SandboxRunner(Supervisor(Settings()), environ=ENVIRON)
    try:
        yield runner
    finally:
        await runner.aclose()


# --- HTTP ----------------------------------------------------------------------------------


async def test_http_inline_pools_one_connection(
    server: str, runner: SandboxRunner, data_root: Path
) -> None:
    """Inline calls share one keep-alive client: two calls arrive on the same connection."""
    catalog = _catalog(data_root, _http("get", HttpConfig(url=server + "/w/{{ city }}")))
    first = await runner.run(catalog, "get", {"city": "Paris"})
    second = await runner.run(catalog, "get", {"city": "Oslo"})
    assert first.status == second.status == "succeeded", (first, second)
    assert json.loads(first.output)["port"] == json.loads(second.output)["port"]


async def test_http_inline_secrets_masked_and_undeclared_invisible(
    server: str, runner: SandboxRunner, data_root: Path
) -> None:
    """A declared secret reaches the request but is masked in the result; others do not exist."""
    config = HttpConfig(
        url=server + "/echo",
        headers={"X-Token": "{{ secrets.API_TOKEN }}"},
        query={"other": "{{ secrets.SERVER_ONLY }}", "all": "{{ secrets | list | join(',') }}"},
    )
    catalog = _catalog(data_root, _http("echo", config, secrets=["API_TOKEN"]))
    result = await runner.run(catalog, "echo", {})
    assert result.status == "succeeded", result
    echoed = json.loads(result.output)
    assert echoed["headers"]["x-token"] == "[redacted]"
    assert "tok-inline-secret-1" not in result.output
    assert echoed["query"] == {"all": ["API_TOKEN"]}  # SERVER_ONLY rendered empty: omitted
    assert "server-only-value-1" not in result.output


async def test_http_inline_secret_cut_by_max_output_kb_is_masked_whole(
    server: str, runner: SandboxRunner, data_root: Path
) -> None:
    """A declared secret straddling the max_output_kb cut was cut first and masked after,
    so its first characters (no longer the whole secret) reached the model."""
    config = HttpConfig(
        url=server + "/echo",
        headers={"X-Token": "{{ city }}{{ secrets.API_TOKEN }}"},
        response="headers.x-token",
    )
    action = _http("echo", config, secrets=["API_TOKEN"], sandbox=SandboxLimits(max_output_kb=1))
    catalog = _catalog(data_root, action)
    result = await runner.run(catalog, "echo", {"city": "y" * (1024 - 6)})
    assert result.status == "succeeded" and result.truncated, result
    assert result.output.startswith("y" * (1024 - 6))
    assert "tok-" not in result.output, result.output[-80:]


async def test_a_variable_in_a_database_url_is_masked_in_its_sql_errors(
    runner: SandboxRunner, data_root: Path
) -> None:
    """A ``${VAR}`` in a ``kind: database`` URL is masked like a secret in what its
    ``sql`` actions send back: the error naming the missing file quoted it."""
    (data_root / "m.yaml").write_text(
        "kind: database\nname: shop\nurl: sqlite:///${DB_TAG}.db\n---\n"
        "kind: action\nname: count\ndescription: Count.\nisolation: inline\n"
        "sql: {database: shop, query: SELECT count(*) AS n FROM orders}\n"
    )
    (data_root / "shop.db").rename(data_root / "shop-8f3k2p.db")
    catalog = load_catalog(data_root, environ={"DB_TAG": "shop-8f3k2p"})
    assert (await runner.run(catalog, "count", {})).output == '[{"n":2}]'
    (data_root / "shop-8f3k2p.db").unlink()  # the file the URL names is gone
    failed = await runner.run(catalog, "count", {})
    assert failed.error_type == "database_error", failed
    assert "shop-8f3k2p" not in failed.output and "[redacted]" in failed.output, failed.output


async def test_http_inline_templates_cannot_reach_the_server(
    server: str, runner: SandboxRunner, data_root: Path
) -> None:
    """The sandboxed Jinja environment turns attribute tricks towards os.environ into nothing."""
    config = HttpConfig(
        url=server + "/echo",
        query={"env": "{{ cycler.__init__.__globals__.os.environ }}"},
    )
    catalog = _catalog(data_root, _http("escape", config))
    result = await runner.run(catalog, "escape", {})
    assert result.status == "succeeded", result
    assert json.loads(result.output)["query"] == {}  # rendered empty (unsafe attribute): omitted
    assert "server-only-value-1" not in result.output
    assert "tok-inline-secret-1" not in result.output


async def test_http_inline_timeout_status_and_output_cap(
    server: str, runner: SandboxRunner, data_root: Path
) -> None:
    """The action's timeout cancels the call; non-2xx is http_status; max_output_kb truncates."""
    catalog = _catalog(
        data_root,
        _http("slow", HttpConfig(url=server + "/slow?s=3"), timeout=0.5),
        _http("missing", HttpConfig(url=server + "/status/404")),
        _http("big", HttpConfig(url=server + "/big"), sandbox=SandboxLimits(max_output_kb=1)),
    )
    started = time.perf_counter()
    slow = await runner.run(catalog, "slow", {})
    assert slow.status == "timed_out" and slow.error_type == "timeout", slow
    assert time.perf_counter() - started < 2
    missing = await runner.run(catalog, "missing", {})
    assert missing.error_type == "http_status"
    assert json.loads(missing.output)["error"]["status"] == 404
    big = await runner.run(catalog, "big", {})
    assert big.status == "succeeded" and big.truncated
    assert big.output.endswith("[output truncated: 5000 bytes, limit 1 KB]")


def _heavy(server: str, timeout: float) -> Action:
    """An inline http action whose query template loops n * n times (n: an argument)."""
    heavy = (
        "{% for i in range(n) %}{% for j in range(n) %}{% if j < 0 %}x{% endif %}"
        "{% endfor %}{% endfor %}done"
    )
    return Action(
        name="heavy",
        description="d",
        kind_key="http",
        config=HttpConfig(url=server + "/echo", query={"q": heavy}),
        isolation="inline",
        timeout=timeout,
        parameters={"type": "object", "properties": {"n": {"type": "integer"}}},
    )


async def test_a_cancelled_inline_call_stops_its_render(server: str, data_root: Path) -> None:
    """A run cancelled during a heavy render left it running in its worker thread until the
    action's timeout (here 60 s), holding a thread every inline call needs; now leaving the
    call ends the render at its next loop round, and the next call gets the thread."""
    runner = SandboxRunner(
        Supervisor(Settings()), environ=ENVIRON, inline=InlineExecutor(Pools(sql_threads=1))
    )
    catalog = _catalog(
        data_root,
        _heavy(server, 60),
        _http("get", HttpConfig(url=server + "/w/{{ city }}"), timeout=3),
    )
    try:
        call = asyncio.ensure_future(runner.run(catalog, "heavy", {"n": 100000}))
        await asyncio.sleep(0.3)
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        after = await runner.run(catalog, "get", {"city": "Paris"})
        assert after.status == "succeeded", after
    finally:
        await runner.aclose()


async def test_http_inline_template_renders_off_the_event_loop_under_the_timeout(
    server: str, runner: SandboxRunner, data_root: Path
) -> None:
    """A heavy http template (loops over the model's numbers) rendered on the event loop,
    stalling every other request for seconds; now it renders in a worker thread and its
    time counts against the action's timeout: timed_out, and the next call runs at once."""
    catalog = _catalog(
        data_root, _heavy(server, 0.5), _http("get", HttpConfig(url=server + "/w/{{ city }}"))
    )
    async with loop_gaps() as gaps:
        started = time.perf_counter()
        result = await runner.run(catalog, "heavy", {"n": 10000})
        elapsed = time.perf_counter() - started
    assert result.status == "timed_out" and result.error_type == "timeout", result
    assert elapsed < 2
    assert max(gaps) < 0.3, max(gaps)
    after = await runner.run(catalog, "get", {"city": "Paris"})
    assert after.status == "succeeded", after
    light = await runner.run(catalog, "heavy", {"n": 3})
    assert light.status == "succeeded", light
    assert json.loads(light.output)["query"] == {"q": ["done"]}


async def test_http_inline_keeps_no_cookies(
    server: str, runner: SandboxRunner, data_root: Path
) -> None:
    """A cookie one inline call receives is never sent by the shared client on the next."""
    catalog = _catalog(
        data_root,
        _http("login", HttpConfig(url=server + "/cookie")),
        _http("echo", HttpConfig(url=server + "/echo")),
    )
    assert (await runner.run(catalog, "login", {})).status == "succeeded"
    echoed = json.loads((await runner.run(catalog, "echo", {})).output)
    assert "cookie" not in echoed["headers"]


async def test_invalid_arguments_are_refused_before_running(
    server: str, runner: SandboxRunner, data_root: Path
) -> None:
    """Arguments are validated first, inline as in the sandbox."""
    catalog = _catalog(data_root, _http("get", HttpConfig(url=server + "/w/{{ city }}")))
    result = await runner.run(catalog, "get", {"city": 12})
    assert result.error_type == "invalid_arguments"


# --- SQLite --------------------------------------------------------------------------------


async def test_sqlite_inline_reads_and_enforces_readonly(
    runner: SandboxRunner, data_root: Path
) -> None:
    """Reads return JSON rows; a read-only action's write is refused by SQLite itself."""
    catalog = _catalog(
        data_root,
        _sql("order", "SELECT id, status FROM orders WHERE id = {{ id }}"),
        _sql("wipe", "DELETE FROM orders"),
    )
    result = await runner.run(catalog, "order", {"id": 1042})
    assert result.output == '[{"id":1042,"status":"shipped"}]', result
    wiped = await runner.run(catalog, "wipe", {})
    assert wiped.status == "failed" and wiped.error_type == "readonly", wiped
    assert (await runner.run(catalog, "order", {"id": 1043})).output != "[]"


async def test_sqlite_inline_pooled_reads_see_writes(
    runner: SandboxRunner, data_root: Path
) -> None:
    """A pooled read connection holds no snapshot: after a cut result, the next read is fresh."""
    catalog = _catalog(
        data_root,
        _sql("all", "SELECT id, status FROM orders ORDER BY id", max_rows=1),
        _sql(
            "close",
            "UPDATE orders SET status = 'closed' WHERE id = {{ id }}",
            readonly=False,
        ),
    )
    first = msgspec.json.decode((await runner.run(catalog, "all", {})).output)
    assert first["truncated"] is True and first["rows"][0]["status"] == "shipped"
    assert (await runner.run(catalog, "close", {"id": 1042})).output == '{"rowcount":1}'
    again = msgspec.json.decode((await runner.run(catalog, "all", {})).output)
    assert again["rows"][0]["status"] == "closed"


async def test_sqlite_inline_timeout_interrupts_and_pool_recovers(
    runner: SandboxRunner, data_root: Path
) -> None:
    """A runaway statement is cut at the action's timeout; the next call works at once."""
    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
        "SELECT count(*) AS c FROM n"
    )
    catalog = _catalog(
        data_root,
        _sql("spin", endless, timeout=0.3),
        _sql("order", "SELECT status FROM orders WHERE id = {{ id }}"),
    )
    started = time.perf_counter()
    spin = await runner.run(catalog, "spin", {})
    assert spin.status == "timed_out", spin
    assert time.perf_counter() - started < 1.5
    assert (await runner.run(catalog, "order", {"id": 1042})).output == '[{"status":"shipped"}]'


async def test_sqlite_inline_sees_a_replaced_file(runner: SandboxRunner, data_root: Path) -> None:
    """A database file replaced on disk (a deploy) is read anew, not through stale connections."""
    catalog = _catalog(data_root, _sql("order", "SELECT status FROM orders WHERE id = {{ id }}"))
    assert (await runner.run(catalog, "order", {"id": 1042})).output == '[{"status":"shipped"}]'
    _make_shop(data_root / "new.db", [(1042, "returned")])
    (data_root / "new.db").replace(data_root / "shop.db")
    assert (await runner.run(catalog, "order", {"id": 1042})).output == '[{"status":"returned"}]'


async def test_switching_isolation_takes_effect_on_the_next_call(data_root: Path) -> None:
    """A catalog swap that flips an action between sandbox and inline applies to the next call."""
    sandboxed = _catalog(
        data_root,
        _sql("order", "SELECT status FROM orders WHERE id = {{ id }}", isolation="sandbox"),
    )
    inline = _catalog(data_root, _sql("order", "SELECT status FROM orders WHERE id = {{ id }}"))
    supervisor = Supervisor(Settings())
    await supervisor.start(sandboxed)
    runner = SandboxRunner(supervisor)
    try:
        for catalog, expected in (
            (sandboxed, "sandbox"),
            (inline, "inline"),
            (sandboxed, "sandbox"),
        ):
            await runner.reload(catalog)
            with capture_logs() as logs:
                result = await runner.run(catalog, "order", {"id": 1042})
            assert result.output == '[{"status":"shipped"}]', result
            ran_inline = any(e["event"] == "executors.inline_call" for e in logs)
            assert ran_inline == (expected == "inline"), logs
        assert supervisor.stats.calls == 2  # only the two sandboxed calls forked
    finally:
        await runner.aclose()
        await supervisor.aclose()


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg_table() -> Iterator[tuple[str, str]]:
    """A fresh table in the test database; yields (url, table name)."""
    url = pg_url()
    table = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 'ada'), (2, 'bob')")
    try:
        yield url, table
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.postgres
async def test_postgres_inline_pooled_bound_and_readonly(
    runner: SandboxRunner, data_root: Path, pg_table: tuple[str, str]
) -> None:
    """Pooled (few backends for many calls), values bound, read-only enforced, writes commit."""
    url, table = pg_table
    catalog = _catalog(
        data_root,
        _sql("pid", "SELECT pg_backend_pid() AS pid", database="pg"),
        _sql("find", f"SELECT id FROM {table} WHERE name = {{{{ name }}}}", database="pg"),
        _sql("wipe", f"DELETE FROM {table}", database="pg"),
        _sql(
            "rename",
            f"UPDATE {table} SET name = {{{{ name }}}} WHERE id = 2",
            database="pg",
            readonly=False,
        ),
        pg=url,
    )
    pids = {(await runner.run(catalog, "pid", {})).output for _ in range(8)}
    assert len(pids) <= 2, pids  # the pool's one or two connections, not one per call
    assert (await runner.run(catalog, "find", {"name": "ada"})).output == '[{"id":1}]'
    assert (await runner.run(catalog, "find", {"name": "x' OR '1'='1"})).output == "[]"
    wiped = await runner.run(catalog, "wipe", {})
    assert wiped.error_type == "readonly", wiped
    renamed = await runner.run(catalog, "rename", {"name": "b'; --"})
    assert renamed.output == '{"rowcount":1}', renamed
    assert (await runner.run(catalog, "find", {"name": "b'; --"})).output == '[{"id":2}]'


@pytest.mark.postgres
async def test_postgres_inline_pool_survives_a_reload_under_sqlalchemys_url_form() -> None:
    """A database URL in SQLAlchemy's form (``postgres://``) keeps its inline pool across a
    reload that still uses it (the pool was keyed by the rewritten URL, so every reload
    closed it and the next call connected again)."""
    from gateway.executors.sql import postgres_conninfo

    url = pg_url().replace("postgresql://", "postgres://", 1)
    pools = Pools(sql_threads=1)
    try:
        conn = await pools.postgres(
            url, timeout=5, conninfo=lambda: postgres_conninfo(url, 5), work=lambda c: c
        )
        await pools.retain({url})  # what a reload of a catalog still using it passes
        assert not conn.closed
        await pools.retain(set())
        assert conn.closed
    finally:
        await pools.aclose()


@pytest.mark.postgres
async def test_postgres_inline_timeout_cancels_the_statement(
    runner: SandboxRunner, data_root: Path, pg_table: tuple[str, str]
) -> None:
    """At the action's timeout the call ends and the statement is cancelled on the server
    (here with a longer ``statement_timeout``, which would otherwise end it first).

    ``readonly: false`` so the statement runs as itself: a read-only one runs through a
    cursor, and the server then shows ``FETCH``, never the marker. The probe first sees
    the statement running, so its later absence means something."""
    url, _ = pg_table
    marker = f"inline_{uuid.uuid4().hex[:8]}"
    catalog = _catalog(
        data_root,
        _sql(
            "sleep",
            f"SELECT pg_sleep(30) AS {marker}",
            database="pg",
            timeout=3.0,
            readonly=False,
            statement_timeout=60,  # not the server's timeout: the cancellation must end it
        ),
        _sql("one", "SELECT 1 AS one", database="pg"),
        pg=url,
    )

    def running() -> int:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s"
                " AND pid <> pg_backend_pid()",
                (f"%{marker}%",),
            ).fetchone()
        return row[0] if row else 0

    call = asyncio.ensure_future(runner.run(catalog, "sleep", {}))
    seen = 0
    for _ in range(50):
        await asyncio.sleep(0.05)
        if seen := await asyncio.to_thread(running):
            break
    assert seen == 1, "the probe never saw the statement running"
    result = await call
    assert result.status == "timed_out", result
    still = 1
    for _ in range(40):
        if (still := await asyncio.to_thread(running)) == 0:
            break
        await asyncio.sleep(0.05)
    assert still == 0
    assert (await runner.run(catalog, "one", {})).output == '[{"one":1}]'


# --- Through the real server ---------------------------------------------------------------

SHOP_YAML = """
kind: database
name: shop
url: sqlite:///shop.db
---
kind: action
name: order_status
description: Look up the status of an order by its number.
isolation: {isolation}
parameters:
  type: object
  properties: {{order_id: {{type: integer}}}}
  required: [order_id]
sql:
  database: shop
  query: SELECT id, status FROM orders WHERE id = {{{{ order_id }}}}
---
kind: assistant
name: shop
description: Answers questions about orders.
actions: [order_status]
"""


def _tool_calls(metrics: str, isolation: str) -> float:
    prefix = f'gateway_tool_calls_total{{isolation="{isolation}",status="succeeded"}} '
    [line] = [line for line in metrics.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


def test_inline_action_end_to_end_and_switched_by_a_reload(
    gateway_server: ServerFactory, data_root: Path
) -> None:
    """A chat turn calls an inline sql action in the server; a reload moves it to the sandbox."""
    manifests = data_root / "manifests"
    manifests.mkdir()
    manifests.chmod(0o755)
    shutil.copy(data_root / "shop.db", manifests / "shop.db")
    (manifests / "shop.db").chmod(0o666)
    (manifests / "shop.yaml").write_text(SHOP_YAML.format(isolation="inline"))
    server = gateway_server(manifests)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        body = client.post(
            "/chat", json={"assistant": "shop", "message": "what is the status of order 1042?"}
        ).json()
        [call] = body["tool_calls"]
        assert call["name"] == "order_status"
        assert call["status"] == "succeeded", call
        assert json.loads(call["output"]) == [{"id": 1042, "status": "shipped"}]
        assert _tool_calls(client.get("/metrics").text, "inline") == 1

        (manifests / "shop.yaml").write_text(SHOP_YAML.format(isolation="sandbox"))
        assert client.post("/manifests/reload").json()["result"] == "swapped"
        invoked = client.post(
            "/actions/order_status/invoke", json={"arguments": {"order_id": 1043}}
        ).json()
        assert invoked["status"] == "succeeded", invoked
        assert json.loads(invoked["output"]) == [{"id": 1043, "status": "open"}]
        metrics = client.get("/metrics").text
        assert _tool_calls(metrics, "sandbox") == 1
        assert _tool_calls(metrics, "inline") == 1


async def test_sqlite_inline_template_renders_off_the_event_loop_under_the_timeout(
    runner: SandboxRunner, data_root: Path
) -> None:
    """A template's loops run as long as the model's arguments say (here 10^10 rounds):
    inline, it rendered on the event loop, outside the action's timeout, and the whole
    server stood still. Now it renders in a SQL thread and stops at the timeout."""
    nested = (
        "SELECT status FROM orders WHERE 0 {% for i in range(id) %}"
        "{% for j in range(id) %} OR id = {{ j }}{% endfor %}{% endfor %}"
    )
    catalog = _catalog(
        data_root,
        _sql("nested", nested, timeout=0.5),
        _sql("order", "SELECT status FROM orders WHERE id = {{ id }}"),
    )
    async with loop_gaps() as gaps:
        started = time.perf_counter()
        result = await asyncio.wait_for(runner.run(catalog, "nested", {"id": 100000}), 30)
        elapsed = time.perf_counter() - started
    assert result.status == "timed_out", result
    assert elapsed < 2
    assert max(gaps) < 0.3, max(gaps)
    assert (await runner.run(catalog, "order", {"id": 1042})).output == '[{"status":"shipped"}]'
