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
Imports ``gateway.manifests.model`` and ``gateway.executors._common``.
"""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec

from gateway.executors._common import ToolError, json_safe
from gateway.manifests.model import (
    Action,
    ActionConfig,
    CallContext,
    CheckContext,
    KindProblem,
    register_action_kind,
)

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

__all__ = ["Ident", "SqlConfig", "render_sql"]

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
    """An identifier picked from a literal allow-list; printed quoted, never bound."""

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
            return '"' + value.replace('"', '""') + '"'
        if _is_undefined(value):
            value = None
        self.values.append(value)
        return _MARK.format(len(self.values) - 1)


def _is_undefined(value: Any) -> bool:
    import jinja2

    return isinstance(value, jinja2.Undefined)


def _environment(collector: _Collector | None = None) -> SandboxedEnvironment:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(
        autoescape=False,
        undefined=jinja2.ChainableUndefined,
        finalize=collector.finalize if collector is not None else None,
        keep_trailing_newline=False,
    )
    env.filters["ident"] = _ident
    return env


def render_sql(template: str, arguments: dict[str, Any], *, style: str) -> tuple[str, list[Any]]:
    """Render ``template`` to (statement, parameters) with ``?`` or ``%s`` placeholders.

    Missing arguments are ``None``. Literal ``%`` in the template is doubled for ``%s`` style.
    """
    collector = _Collector()
    rendered = _environment(collector).from_string(template).render(**arguments)
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

    def run(self, call: CallContext) -> Any:
        """Render, execute with bound parameters, return rows as JSON-safe objects."""
        url = call.databases.get(self.database)
        if url is None:
            raise ToolError("sandbox_error", f"database {self.database!r} is not configured")
        timeout = self.statement_timeout or call.timeout
        scheme = url.split("://", 1)[0].split("+", 1)[0]
        if scheme == "sqlite":
            return self._run_sqlite(url, call.arguments, timeout)
        if scheme in ("postgresql", "postgres"):
            return self._run_postgres(url, call.arguments, timeout)
        raise ToolError("sandbox_error", f"unsupported database scheme {scheme!r}")

    def _shape(self, columns: list[str], rows: list[Any], more: bool) -> Any:
        records = [{c: json_safe(v) for c, v in zip(columns, row, strict=False)} for row in rows]
        if not more:
            return records
        return {
            "rows": records,
            "truncated": True,
            "note": f"only the first {self.max_rows} rows are shown; narrow the query for more",
        }

    def _run_sqlite(self, url: str, arguments: dict[str, Any], timeout: float) -> Any:
        import sqlite3

        path = url.split("://", 1)[1]
        path = path[1:] if path.startswith("/") else path  # sqlite:///rel or sqlite:////abs
        if path in ("", ":memory:"):
            target, uri = ":memory:", False
        else:
            mode = "ro" if self.readonly else "rw"
            target, uri = f"file:{urllib.parse.quote(path)}?mode={mode}", True
        statement, params = render_sql(self.query, arguments, style="qmark")
        deadline = time.monotonic() + timeout
        try:
            conn = sqlite3.connect(target, uri=uri, timeout=min(timeout, 5.0), isolation_level=None)
        except sqlite3.OperationalError as exc:
            raise ToolError("database_error", _open_failure(path, exc)) from None
        try:
            if self.readonly:
                conn.execute("PRAGMA query_only = ON")
            conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
            try:
                if not self.readonly:
                    conn.execute("BEGIN")
                cursor = conn.execute(statement, params)
                columns = [d[0] for d in cursor.description or ()]
                rows = cursor.fetchmany(self.max_rows + 1) if columns else []
                if not self.readonly:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise ToolError(_sqlite_error_type(exc, deadline), f"{exc}") from None
            if not columns:
                return {"rowcount": cursor.rowcount}
            return self._shape(columns, rows[: self.max_rows], len(rows) > self.max_rows)
        finally:
            conn.close()

    def _run_postgres(self, url: str, arguments: dict[str, Any], timeout: float) -> Any:
        import psycopg

        url = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
        statement, params = render_sql(self.query, arguments, style="format")
        ms = max(1, int(timeout * 1000))
        try:
            with psycopg.connect(
                url, connect_timeout=max(1, int(min(timeout, 10))), autocommit=False
            ) as conn:
                conn.read_only = self.readonly
                with conn.cursor() as cursor:
                    cursor.execute("SELECT set_config('statement_timeout', %s, true)", (str(ms),))
                    cursor.execute(statement.encode(), params)
                    columns = [d.name for d in cursor.description or ()]
                    rows = cursor.fetchmany(self.max_rows + 1) if columns else []
                    rowcount = cursor.rowcount
                if self.readonly:
                    conn.rollback()
                else:
                    conn.commit()
        except psycopg.errors.QueryCanceled as exc:
            raise ToolError("timeout", f"the statement was cancelled after {timeout:g}s") from exc
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            raise ToolError("readonly", f"this action is read-only: {exc}") from None
        except psycopg.Error as exc:
            raise ToolError("database_error", str(exc).strip()[:500]) from None
        if not columns:
            return {"rowcount": rowcount}
        return self._shape(columns, rows[: self.max_rows], len(rows) > self.max_rows)


def _open_failure(path: str, exc: Exception) -> str:
    """Why SQLite could not open ``path``, in words an operator can act on.

    The usual cause is the sandbox's own uid: when the gateway runs as root,
    actions run as an unprivileged user that needs to reach the file.
    """
    if os.path.exists(path) and not os.access(path, os.R_OK):  # noqa: PTH110 - a str path
        return (
            f"cannot open the database: the sandbox user (uid {os.getuid()}) cannot read "
            f"{path!r}; make it and its folders readable by other users, or run the "
            "gateway as a non-root user"
        )
    if not os.path.exists(path):  # noqa: PTH110 - a str path
        return (
            f"cannot open the database: {path!r} does not exist or its folders are not "
            f"reachable by the sandbox user (uid {os.getuid()}; when the gateway runs as "
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
