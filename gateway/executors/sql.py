"""The ``sql`` action kind: Jinja templates whose every ``{{ expression }}`` is a bound parameter.

How injection is impossible by construction: the template is rendered by a
sandboxed Jinja environment whose ``finalize`` hook sees every ``{{ }}`` value
and, instead of printing it, stores it and prints an opaque marker. The text
that reaches the database is therefore only the template's own literal text,
markers (turned into ``?`` or ``%s`` placeholders) and identifiers chosen
from literal allow-lists by ``ident([...])``. ``{% if %}``/``{% for %}`` shape
the statement; blocks that could rewrite rendered text (``{% filter %}``,
macros, includes) are refused at load time.

SQLite read-only actions open the file with ``mode=ro`` (and ``query_only``);
PostgreSQL ones run in a read-only transaction; both get a statement timeout.
Compiled templates are cached per process (the collector is found through a
context variable, so one compiled template serves every render).

``run`` opens a connection per call (in the sandbox child); ``run_inline``
(``isolation: inline``) runs the same statement code on a pooled connection
in a worker thread of the server (``gateway.executors._pools``). PostgreSQL
connections of both get the thread store's TCP keepalives and timeouts
(``gateway._libpq``) unless the database URL sets them. Imports
``gateway.manifests.model``, ``gateway.executors._common`` and ``gateway._libpq``.
"""

from __future__ import annotations

import contextvars
import functools
import os
import re
import time
import urllib.parse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec

from gateway import _libpq as libpq
from gateway.executors import _templates
from gateway.executors._common import ToolError, json_safe
from gateway.executors._templates import compile_template, guarded_environment
from gateway.manifests.model import (
    Action,
    ActionConfig,
    CallContext,
    CheckContext,
    KindProblem,
    register_action_kind,
)

if TYPE_CHECKING:
    import sqlite3

    import jinja2
    import psycopg
    from jinja2.sandbox import SandboxedEnvironment
    from psycopg.abc import Buffer
    from psycopg.adapt import Loader

    from gateway.executors._pools import Pools

__all__ = ["Ident", "SqlConfig", "open_sqlite", "postgres_conninfo", "render_sql", "sqlite_path"]

_MARK = "\x00{}\x00"
_MARK_RE = re.compile("\x00(\\d+)\x00")
_FORBIDDEN_NODES = (
    "FilterBlock",
    "Macro",
    "CallBlock",
    "Include",
    "Import",
    "FromImport",
    "Extends",
    "Block",
)


class Ident(str):
    """An identifier picked from a literal allow-list; printed quoted (each dotted part:
    ``t.name`` is ``"t"."name"``), never bound."""

    __slots__ = ()


def _ident(value: Any, allowed: Any) -> Ident:
    if not isinstance(allowed, list | tuple) or not all(isinstance(a, str) for a in allowed):
        raise ToolError("invalid_template", "ident() needs a literal list of names")
    if value not in allowed:
        raise ToolError(
            "invalid_arguments",
            f"{value!r} is not one of the allowed names: {', '.join(allowed)}",
        )
    return Ident(value)


class _Collector:
    """Per-render state: the values the markers stand for."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def finalize(self, value: Any) -> str:
        if isinstance(value, Ident):
            # Each dotted part on its own: `"t.name"` is one (unknown) name, which SQLite
            # then reads as the string 't.name' (ORDER BY a constant: no ordering at all).
            return ".".join('"' + part.replace('"', '""') + '"' for part in value.split("."))
        if _is_undefined(value):
            value = None
        self.values.append(value)
        return _MARK.format(len(self.values) - 1)


def _is_undefined(value: Any) -> bool:
    import jinja2

    return isinstance(value, jinja2.Undefined)


_COLLECTOR: contextvars.ContextVar[_Collector | None] = contextvars.ContextVar(
    "gateway_sql_collector", default=None
)


def _finalize(eval_ctx: Any, value: Any) -> str:
    """Every ``{{ }}`` value, at render time only (see ``_environment``)."""
    collector = _COLLECTOR.get()
    if collector is None:  # only render_sql renders, and it always sets one
        raise ToolError("invalid_template", "SQL templates render only through render_sql")
    return collector.finalize(value)


@functools.cache
def _environment() -> SandboxedEnvironment:
    import jinja2

    # Nothing is evaluated while compiling (see http._env): a constant ``{{ 42 }}`` must go
    # through the collector at each render, and a template's cost belongs to its call.
    # Loops and calls stop at the call's deadline (``_templates``).
    env = guarded_environment(
        autoescape=False,
        undefined=jinja2.ChainableUndefined,
        finalize=jinja2.pass_eval_context(_finalize),
        keep_trailing_newline=False,
        optimized=False,
    )
    env.filters["ident"] = _ident
    return env


@functools.lru_cache(maxsize=512)
def _compiled(template: str) -> jinja2.Template:
    """The compiled template (compiling costs ~0.5 ms; rendering a cached one ~20 µs)."""
    return compile_template(_environment(), template)


def render_sql(
    template: str, arguments: dict[str, Any], *, style: str, timeout: float | None = None
) -> tuple[str, list[Any]]:
    """Render ``template`` to (statement, parameters) with ``?`` or ``%s`` placeholders.

    Missing arguments are ``None``. Literal ``%`` in the template is doubled for ``%s`` style.
    ``timeout``: seconds after which the render fails with a ``timeout`` ``ToolError``
    (checked at each loop round and call, ``_templates``; an earlier deadline of the
    call already set wins): a loop runs as often as the arguments say, and an inline
    call's thread is not stopped by cancelling it.
    """
    collector = _Collector()
    token = _COLLECTOR.set(collector)
    try:
        with _templates.deadline(timeout):
            rendered = _compiled(template).render(arguments)  # a dict: "self" is a name too
    finally:
        _COLLECTOR.reset(token)
    params: list[Any] = []
    parts: list[str] = []
    last = 0
    for match in _MARK_RE.finditer(rendered):
        parts.append(_literal(rendered[last : match.start()], style))
        parts.append("?" if style == "qmark" else "%s")
        params.append(collector.values[int(match.group(1))])
        last = match.end()
    parts.append(_literal(rendered[last:], style))
    return "".join(parts), params


def _literal(text: str, style: str) -> str:
    if "\x00" in text:
        raise ToolError("invalid_template", "the SQL template produced a NUL character")
    return text.replace("%", "%%") if style == "format" else text


def _template_problems(query: str) -> list[str]:
    import jinja2
    import jinja2.nodes

    try:
        tree = _environment().parse(query)
    except jinja2.TemplateSyntaxError as exc:
        return [f"the SQL template does not parse (line {exc.lineno}): {exc.message}"]
    problems = []
    forbidden = tuple(getattr(jinja2.nodes, name) for name in _FORBIDDEN_NODES)
    for node in tree.find_all(forbidden):
        problems.append(f"{type(node).__name__} blocks are not allowed in SQL templates")
    for node in tree.find_all(jinja2.nodes.Filter):
        if node.name != "ident":
            continue
        args = node.args
        ok = (
            len(args) == 1
            and isinstance(args[0], jinja2.nodes.List)
            and all(
                isinstance(i, jinja2.nodes.Const) and isinstance(i.value, str)
                for i in args[0].items
            )
        )
        if not ok:
            problems.append('ident() takes one literal list of names: ident(["a", "b"])')
    return problems


@register_action_kind
class SqlConfig(ActionConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``sql:`` — one statement against a ``kind: database``.

    Attributes:
        database: name of a ``kind: database`` document.
        query: Jinja template; ``{{ expr }}`` are bound parameters,
            identifiers only via ``{{ x | ident(["a", "b"]) }}``.
        readonly: enforced by the database (read-only connection/transaction).
        max_rows: rows returned at most; a note says when more existed.
        statement_timeout: seconds, default the action's timeout.
    """

    key: ClassVar[str] = "sql"
    inline: ClassVar[bool] = True  # isolation: inline runs ``run_inline`` in the server
    network_default: ClassVar[bool] = True  # PostgreSQL is reached over the network
    preload: ClassVar[tuple[str, ...]] = ("jinja2.sandbox", "psycopg", "sqlite3")

    database: str
    query: Annotated[str, msgspec.Meta(min_length=1)]
    readonly: bool = True
    max_rows: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 100
    statement_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] | None = None

    def check(self, action: Action, ctx: CheckContext) -> list[KindProblem]:
        """The database exists and the template parses with only allowed constructs."""
        problems = [KindProblem("query", message) for message in _template_problems(self.query)]
        if self.database not in ctx.databases:
            known = ", ".join(sorted(ctx.databases)) or "none"
            problems.append(
                KindProblem("database", f"unknown database {self.database!r} (known: {known})")
            )
        return problems

    def template_names(self) -> frozenset[str]:
        """The argument names the query template reads."""
        return _templates.template_names(_environment(), [self.query])

    def sandbox_warm(self) -> None:
        """Compile the template once in the zygote (a call's fork then only renders it).

        Compiles, never renders: a template's run time belongs to a call, under its timeout.
        """
        _compiled(self.query)

    def run(self, call: CallContext) -> Any:
        """Render, execute with bound parameters, return rows as JSON-safe objects."""
        url, scheme, timeout = self._target(call)
        if scheme == "sqlite":
            path = sqlite_path(url)
            statement, params = render_sql(self.query, call.arguments, style="qmark")
            _check_sqlite_integers(params, call.arguments)
            conn = open_sqlite(path, readonly=self.readonly, timeout=timeout)
            try:
                return self.execute_sqlite(conn, statement, params, time.monotonic() + timeout)
            finally:
                conn.close()
        return self._run_postgres(url, call.arguments, timeout)

    async def run_inline(self, call: CallContext, pools: Pools) -> Any:
        """``isolation: inline``: the same statement on a pooled connection, in a worker thread.

        The caller (``InlineExecutor``) enforces the action's timeout by
        cancelling; the pool then interrupts the statement (SQLite) or cancels
        it on the server (PostgreSQL), and the statement timeout bounds it too.
        """
        url, scheme, timeout = self._target(call)
        # Rendered in the SQL thread, never on the event loop, and cut at the timeout:
        # a template's loops run as many rounds as the model's arguments ask for.
        if scheme == "sqlite":
            path = sqlite_path(url)

            def on_sqlite(conn: sqlite3.Connection) -> Any:
                deadline = time.monotonic() + timeout
                statement, params = render_sql(
                    self.query, call.arguments, style="qmark", timeout=timeout
                )
                _check_sqlite_integers(params, call.arguments)
                return self.execute_sqlite(conn, statement, params, deadline)

            def opener() -> sqlite3.Connection:
                return open_sqlite(
                    path, readonly=self.readonly, timeout=timeout, who="the server", shared=True
                )

            return await pools.sqlite(
                url, path, readonly=self.readonly, timeout=timeout, opener=opener, work=on_sqlite
            )

        def on_postgres(conn: psycopg.Connection[Any]) -> Any:
            statement, params = render_sql(
                self.query, call.arguments, style="format", timeout=timeout
            )
            return self.execute_postgres(conn, statement, params, timeout)

        return await pools.postgres(
            url,
            timeout=timeout,
            conninfo=lambda: postgres_conninfo(url, timeout),
            work=on_postgres,
        )

    def _target(self, call: CallContext) -> tuple[str, str, float]:
        """(database URL, scheme ``sqlite`` or ``postgresql``, statement timeout) of a call."""
        url = call.databases.get(self.database)
        if url is None:
            raise ToolError("sandbox_error", f"database {self.database!r} is not configured")
        scheme = url.split("://", 1)[0].split("+", 1)[0]
        if scheme == "postgres":
            scheme = "postgresql"
        if scheme not in ("sqlite", "postgresql"):
            raise ToolError("sandbox_error", f"unsupported database scheme {scheme!r}")
        return url, scheme, self.statement_timeout or call.timeout

    def _shape(self, columns: list[str], rows: list[Any], more: bool) -> Any:
        columns = _unique(columns)
        records = [{c: json_safe(v) for c, v in zip(columns, row, strict=False)} for row in rows]
        if not more:
            return records
        return {
            "rows": records,
            "truncated": True,
            "note": f"only the first {self.max_rows} rows are shown; narrow the query for more",
        }

    def execute_sqlite(
        self, conn: sqlite3.Connection, statement: str, params: list[Any], deadline: float
    ) -> Any:
        """Run one rendered statement on an open connection; the statement ends with the call.

        The cursor is closed before returning, so a pooled connection holds no
        read snapshot between calls. After a raised error the connection may be
        mid-transaction: close it, do not reuse it.
        """
        import sqlite3

        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            if not self.readonly:
                conn.execute("BEGIN")
            cursor = conn.execute(statement, params)
            try:
                columns = [d[0] for d in cursor.description or ()]
                rows = cursor.fetchmany(self.max_rows + 1) if columns else []
                rowcount = cursor.rowcount
            finally:
                cursor.close()
            if not self.readonly:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise ToolError(_sqlite_error_type(exc, deadline), f"{exc}") from None
        finally:
            conn.set_progress_handler(None, 0)
        if not columns:
            return {"rowcount": rowcount}
        return self._shape(columns, rows[: self.max_rows], len(rows) > self.max_rows)

    def _run_postgres(self, url: str, arguments: dict[str, Any], timeout: float) -> Any:
        import psycopg

        statement, params = render_sql(self.query, arguments, style="format")
        conninfo = postgres_conninfo(url, timeout)
        try:
            with psycopg.connect(conninfo, autocommit=False) as conn:
                return self.execute_postgres(conn, statement, params, timeout)
        except psycopg.Error as exc:  # could not connect; the statement's errors are ToolErrors
            raise ToolError("database_error", str(exc).strip()[:500]) from None

    def execute_postgres(
        self, conn: psycopg.Connection[Any], statement: str, params: list[Any], timeout: float
    ) -> Any:
        """Run one rendered statement in its own transaction (read-only unless ``readonly: false``).

        A read-only action runs exactly one statement (as on SQLite): several are
        refused, since a ``COMMIT`` among them would end the read-only transaction.

        The transaction is committed (writable) or rolled back (read-only)
        before returning, and rolled back when the statement fails, so the
        connection is idle again either way.
        """
        import psycopg

        ms = max(1, int(timeout * 1000))
        for name, loader in _lenient_loaders().items():
            conn.adapters.register_loader(name, loader)
        try:
            try:
                conn.read_only = self.readonly
                with conn.cursor() as cursor:
                    cursor.execute("SELECT set_config('statement_timeout', %s, true)", (str(ms),))
                fetched = self._fetch_declared(conn, statement, params) if self.readonly else None
                if fetched is None:
                    with conn.cursor() as cursor:
                        # Read-only: prepared, so one statement (the extended protocol).
                        # Without parameters psycopg sends a simple query, which runs
                        # several: ``COMMIT; DELETE ...`` wrote outside the read-only
                        # transaction.
                        cursor.execute(
                            statement.encode(), params, prepare=True if self.readonly else None
                        )
                        columns = [d.name for d in cursor.description or ()]
                        rows = cursor.fetchmany(self.max_rows + 1) if columns else []
                        rowcount = cursor.rowcount
                else:
                    (columns, rows), rowcount = fetched, -1
                if self.readonly:
                    conn.rollback()
                else:
                    conn.commit()
            except psycopg.Error:
                if not conn.closed:
                    conn.rollback()
                raise
        except psycopg.errors.QueryCanceled as exc:
            raise ToolError("timeout", f"the statement was cancelled after {timeout:g}s") from exc
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise ToolError("readonly", f"this action is read-only: {exc}") from None
        except psycopg.Error as exc:
            raise ToolError("database_error", str(exc).strip()[:500]) from None
        if not columns:
            return {"rowcount": rowcount}
        return self._shape(columns, rows[: self.max_rows], len(rows) > self.max_rows)

    def _fetch_declared(
        self, conn: psycopg.Connection[Any], statement: str, params: list[Any]
    ) -> tuple[list[str], list[Any]] | None:
        """(columns, the first ``max_rows + 1`` rows) through a server-side cursor, or None.

        A plain cursor receives the whole result before ``fetchmany`` cuts it: a
        query matching a million rows filled the call's memory (``out of memory
        for query result`` in the sandbox, the server's own memory inline) to
        return a hundred. ``DECLARE`` takes a query (``SELECT``, ``VALUES``,
        ``WITH``) only: for anything else (``SHOW``, ``EXPLAIN``, several
        statements, a data-modifying ``WITH``) it is rolled back to a savepoint
        and None says to run the statement as it is.
        """
        import psycopg

        conn.execute("SAVEPOINT gateway_rows")
        try:
            with conn.cursor(name="gateway_rows") as cursor:
                cursor.execute(statement.encode(), params)
                columns = [d.name for d in cursor.description or ()]
                rows = cursor.fetchmany(self.max_rows + 1) if columns else []
        except (psycopg.errors.SyntaxError, psycopg.errors.FeatureNotSupported):
            conn.execute("ROLLBACK TO SAVEPOINT gateway_rows")
            return None
        return columns, rows


_SQLITE_INTEGER = range(-(2**63), 2**63)


def _check_sqlite_integers(params: list[Any], arguments: dict[str, Any]) -> None:
    """Refuse an integer SQLite cannot bind (past 64 bits), naming the argument it came
    from: binding raised ``OverflowError``, an ``exception`` with a traceback in the log,
    for a value the schema (``type: integer``) accepted."""
    for value in params:
        if isinstance(value, int) and not isinstance(value, bool) and value not in _SQLITE_INTEGER:
            name = next(_paths_of(value, arguments), "")
            where = f"argument {name!r}: " if name else "a value of the query: "
            raise ToolError(
                "invalid_arguments",
                f"{where}{value} is outside SQLite's integer range (-2**63 to 2**63-1)",
                argument=name,
            )


def _paths_of(value: int, node: Any, path: str = "") -> Iterator[str]:
    """Dotted paths in ``node`` (the arguments) holding the integer ``value``."""
    if isinstance(node, dict):
        for key, item in node.items():
            yield from _paths_of(value, item, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _paths_of(value, item, f"{path}.{i}")
    elif isinstance(node, int) and not isinstance(node, bool) and node == value:
        yield path


@functools.cache
def _lenient_loaders() -> dict[str, type[Loader]]:
    """Loaders of ``date``, ``timestamp``, ``timestamptz``, ``time``, ``timetz`` and
    ``interval`` that give PostgreSQL's text (``infinity``, ``0044-03-15 BC``,
    ``12000-01-01``, ``24:00:00``, ``3000000 years``) when Python's ``datetime`` cannot
    hold the value: psycopg's own raise ``DataError``, failing the whole query."""
    from psycopg.types.datetime import (
        DateLoader,
        IntervalLoader,
        TimeLoader,
        TimestampLoader,
        TimestamptzLoader,
        TimetzLoader,
    )

    bases: dict[str, type[Loader]] = {
        "date": DateLoader,
        "timestamp": TimestampLoader,
        "timestamptz": TimestamptzLoader,
        "time": TimeLoader,
        "timetz": TimetzLoader,
        "interval": IntervalLoader,
    }
    return {name: _text_fallback(base) for name, base in bases.items()}


def _text_fallback(base: type[Loader]) -> type[Loader]:
    """``base``, giving the value's text where ``base`` raises ``DataError``."""
    import psycopg

    def load(self: Loader, data: Buffer) -> Any:
        try:
            return base.load(self, data)
        except psycopg.DataError:
            return bytes(data).decode()

    return type(f"Lenient{base.__name__}", (base,), {"load": load})


def _unique(columns: list[str]) -> list[str]:
    """Column names made unique: a later duplicate gets ``_2``, ``_3``... (the first
    free one), so ``SELECT a.id, b.id`` returns ``id`` and ``id_2`` instead of one ``id``
    (a row is a JSON object; the second value overwrote the first). PostgreSQL names
    every unnamed expression ``?column?``: they become ``?column?``, ``?column?_2``..."""
    if len(set(columns)) == len(columns):
        return columns
    taken = set(columns)
    seen: set[str] = set()
    out = []
    for name in columns:
        if name in seen:
            n = 2
            while f"{name}_{n}" in taken:
                n += 1
            name = f"{name}_{n}"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///rel`` or ``sqlite:////abs`` URL (``:memory:`` as is)."""
    path = url.split("://", 1)[1]
    return path[1:] if path.startswith("/") else path


def open_sqlite(
    path: str,
    *,
    readonly: bool,
    timeout: float,
    who: str = "the sandbox user",
    shared: bool = False,
) -> sqlite3.Connection:
    """Open ``path`` in autocommit mode: ``mode=ro`` plus ``query_only`` when ``readonly``.

    Args:
        path: from ``sqlite_path``; ``""`` or ``:memory:`` is a fresh in-memory database.
        readonly: open read-only (enforced by SQLite).
        timeout: seconds; the busy timeout is at most 5 s of it.
        who: the process that opens it, for the error message.
        shared: usable from any thread (a pooled connection, one thread at a time).

    Raises:
        ToolError: ``database_error`` saying why the file could not be opened.
    """
    import sqlite3

    if path in ("", ":memory:"):
        target, uri = ":memory:", False
    else:
        mode = "ro" if readonly else "rw"
        target, uri = f"file:{urllib.parse.quote(path)}?mode={mode}", True
    try:
        conn = sqlite3.connect(
            target,
            uri=uri,
            timeout=min(timeout, 5.0),
            isolation_level=None,
            check_same_thread=not shared,
        )
    except sqlite3.OperationalError as exc:
        raise ToolError("database_error", _open_failure(path, exc, who)) from None
    if readonly:
        try:
            conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
    return conn


def postgres_conninfo(url: str, timeout: float) -> str:
    """The libpq connection string of a call to ``url`` (SQLAlchemy's forms accepted).

    It carries the TCP keepalives, ``tcp_user_timeout`` and ``connect_timeout`` of
    ``gateway._libpq`` (as the thread store's connections do) for what the URL does
    not set itself, so a database host gone silent fails the call (or the pool's
    check) in about 30 s instead of hanging on the kernel's retransmissions; the
    connect timeout is at most the call's ``timeout``.

    Raises:
        ToolError: ``database_error`` when libpq cannot parse the URL (the message
            repeats neither the URL nor its password).
    """
    try:
        return libpq.conninfo(url, connect_timeout=int(min(timeout, 10)))
    except ValueError as exc:
        raise ToolError("database_error", str(exc)) from None


def _open_failure(path: str, exc: Exception, who: str = "the sandbox user") -> str:
    """Why SQLite could not open ``path``, in words an operator can act on.

    The usual cause in the sandbox is its own uid: when the gateway runs as
    root, actions run as an unprivileged user that needs to reach the file.
    ``who`` names the process that tried (``the server`` for inline calls).
    """
    if os.path.exists(path) and not os.access(path, os.R_OK):  # noqa: PTH110 - a str path
        return (
            f"cannot open the database: {who} (uid {os.getuid()}) cannot read "
            f"{path!r}; make it and its folders readable by other users, or run the "
            "gateway as a non-root user"
        )
    if not os.path.exists(path):  # noqa: PTH110 - a str path
        return (
            f"cannot open the database: {path!r} does not exist or its folders are not "
            f"reachable by {who} (uid {os.getuid()}; when the gateway runs as "
            "root, the folders must be searchable by other users)"
        )
    return f"cannot open the database: {exc}"


def _sqlite_error_type(exc: Exception, deadline: float) -> str:
    text = str(exc).lower()
    if "interrupted" in text and time.monotonic() > deadline:
        return "timeout"
    if "readonly" in text or "read-only" in text:
        return "readonly"
    return "database_error"
