"""The sql kind: bound parameters by construction, identifiers from allow-lists, read-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.executors._common import ToolError
from gateway.executors.sql import SqlConfig, render_sql
from gateway.manifests.model import Action, CallContext, CheckContext

HOSTILE = st.one_of(
    st.text(max_size=60),
    st.sampled_from(
        [
            "'; DROP TABLE people; --",
            '" OR 1=1 --',
            "%s %(x)s ? :name $1",
            "{{ 7 * 7 }}",
            "{% raw %}",
            "\x00",
            "Robert'); DELETE FROM people;--",
            "\\'; SELECT 1; --",
        ]
    ),
)

# Every template form a value can appear in; each selects the value back as column v.
FORMS = [
    "SELECT {{ v }} AS v",
    "SELECT {{ v }} AS v WHERE {{ v }} = {{ v }}",
    "SELECT {{ v }} AS v WHERE 'a%' LIKE 'a%'",
    "SELECT {{ v | string }} AS v",
    "SELECT {{ v ~ '' }} AS v",
    "SELECT {{ obj.v }} AS v",
    "{% if v is not none %}SELECT {{ v }} AS v{% else %}SELECT 1 AS v{% endif %}",
    "SELECT {% for x in [v] %}{{ x }}{% endfor %} AS v",
    "SELECT v FROM (SELECT {{ v }} AS v) AS t WHERE v IN ({% for x in [v, v] %}{{ x }}"
    "{% if not loop.last %}, {% endif %}{% endfor %})",
]


def _sqlite_value(template: str, value: str) -> Any:
    statement, params = render_sql(template, {"v": value, "obj": {"v": value}}, style="qmark")
    conn = sqlite3.connect(":memory:")
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("template", FORMS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=HOSTILE)
def test_hostile_values_stay_values(template: str, value: str) -> None:
    """Any string through any template form comes back as itself and never changes the SQL."""
    rows = _sqlite_value(template, value)
    assert rows == [(value,)]
    statement, _ = render_sql(template, {"v": value, "obj": {"v": value}}, style="qmark")
    baseline, _ = render_sql(template, {"v": "x", "obj": {"v": "x"}}, style="qmark")
    assert statement == baseline
    assert value not in statement or value in baseline or value in template


def test_format_style_escapes_literal_percent() -> None:
    """For psycopg, literal % is doubled and values become %s."""
    statement, params = render_sql("SELECT {{ a }} WHERE x LIKE 'a%'", {"a": 1}, style="format")
    assert statement == "SELECT %s WHERE x LIKE 'a%%'"
    assert params == [1]


def test_constants_are_bound_at_every_render() -> None:
    """A constant ``{{ }}`` is a parameter like any value, render after render (it was folded
    into the cached template once, and later renders bound the wrong values)."""
    for x in (1, 2):
        assert render_sql("SELECT {{ 42 }}, {{ x }}", {"x": x}, style="qmark") == (
            "SELECT ?, ?",
            [42, x],
        )
    for _ in range(2):
        assert render_sql("SELECT {{ 1 }}, {{ 'a' }}", {}, style="qmark") == (
            "SELECT ?, ?",
            [1, "a"],
        )


def test_an_argument_named_self_does_not_break_the_call() -> None:
    """Arguments went to ``render`` as keywords, so one named ``self`` (an extra argument the
    schema allows: the model's choice) failed the call with a TypeError; now it renders."""
    assert render_sql("SELECT {{ id }}", {"self": "extra", "id": 1}, style="qmark") == (
        "SELECT ?",
        [1],
    )


def test_missing_argument_is_none() -> None:
    """An optional argument the model left out is None in the template."""
    statement, params = render_sql(
        "SELECT 1{% if city %} WHERE city = {{ city }}{% endif %} LIMIT {{ n }}", {}, style="qmark"
    )
    assert statement == "SELECT 1 LIMIT ?"
    assert params == [None]


def test_ident_allows_listed_names_only() -> None:
    """ident() prints a quoted identifier from the list and refuses anything else."""
    template = 'SELECT * FROM t ORDER BY {{ col | ident(["name", "email"]) }}'
    statement, params = render_sql(template, {"col": "email"}, style="qmark")
    assert statement == 'SELECT * FROM t ORDER BY "email"'
    assert params == []
    with pytest.raises(ToolError) as info:
        render_sql(template, {"col": "name; DROP TABLE t"}, style="qmark")
    assert info.value.error_type == "invalid_arguments"


def _action(config: SqlConfig) -> Action:
    return Action(name="q", description="d", kind_key="sql", config=config)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("SELECT {{ x", "does not parse"),
        ("{% filter upper %}x{% endfilter %}", "FilterBlock"),
        ("{% macro m() %}x{% endmacro %}", "Macro"),
        ("{% include 'x' %}", "Include"),
        ("SELECT {{ c | ident(cols) }}", "literal list"),
        ("SELECT {{ c | ident([1, 2]) }}", "literal list"),
    ],
)
def test_check_refuses_unsafe_templates(query: str, fragment: str) -> None:
    """Templates that do not parse or could rewrite rendered text fail validation."""
    config = SqlConfig(database="db", query=query)
    problems = config.check(_action(config), CheckContext(root=Path(), databases=frozenset({"db"})))
    assert any(fragment in p.message for p in problems), problems
    assert all(p.path == "query" for p in problems)


def test_check_unknown_database() -> None:
    """A database name not declared is a problem on the `database` field."""
    config = SqlConfig(database="nope", query="SELECT 1")
    problems = config.check(_action(config), CheckContext(root=Path(), databases=frozenset({"db"})))
    assert [p.path for p in problems] == ["database"]
    assert "nope" in problems[0].message


@pytest.fixture
def shop(tmp_path: Path) -> str:
    """A small SQLite database; returns its sqlite://// URL."""
    path = tmp_path / "shop.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, email TEXT, pic BLOB)")
    conn.executemany(
        "INSERT INTO people (name, email, pic) VALUES (?, ?, ?)",
        [(f"p{i}", f"p{i}@x.org", b"\x00\x01") for i in range(150)],
    )
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


def _run(config: SqlConfig, url: str, **arguments: Any) -> Any:
    return config.run(CallContext(action="q", arguments=arguments, databases={"db": url}))


def test_sqlite_rows_are_json_safe_and_capped(shop: str) -> None:
    """Rows come back as objects with JSON-safe values and a note when cut at max_rows."""
    config = SqlConfig(database="db", query="SELECT name, pic FROM people ORDER BY id")
    result = _run(config, shop)
    assert result["truncated"] is True
    assert len(result["rows"]) == 100
    assert result["rows"][0] == {"name": "p0", "pic": "base64:AAE="}
    assert "100" in result["note"]
    few = SqlConfig(database="db", query="SELECT name FROM people WHERE id <= {{ n }}")
    assert _run(few, shop, n=2) == [{"name": "p0"}, {"name": "p1"}]


def test_sqlite_readonly_cannot_write(shop: str) -> None:
    """A read-only action cannot change the database, whatever the statement."""
    config = SqlConfig(database="db", query="DELETE FROM people")
    with pytest.raises(ToolError) as info:
        _run(config, shop)
    assert info.value.error_type == "readonly"
    count = SqlConfig(database="db", query="SELECT count(*) AS n FROM people")
    assert _run(count, shop) == [{"n": 150}]


def test_sqlite_write_when_allowed(shop: str) -> None:
    """readonly: false writes and reports the row count."""
    config = SqlConfig(
        database="db", query="INSERT INTO people (name) VALUES ({{ name }})", readonly=False
    )
    assert _run(config, shop, name="Zed'); DROP TABLE people;--") == {"rowcount": 1}
    check = SqlConfig(database="db", query="SELECT name FROM people WHERE id = 151")
    assert _run(check, shop) == [{"name": "Zed'); DROP TABLE people;--"}]


def test_sqlite_single_statement_only(shop: str) -> None:
    """A template cannot smuggle a second statement."""
    config = SqlConfig(database="db", query="SELECT 1; DELETE FROM people", readonly=False)
    with pytest.raises(ToolError):
        _run(config, shop)


def test_sqlite_statement_timeout(shop: str) -> None:
    """A runaway query is interrupted at the statement timeout."""
    config = SqlConfig(
        database="db",
        statement_timeout=0.3,
        query="WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT count(*) FROM c",
    )
    with pytest.raises(ToolError) as info:
        _run(config, shop)
    assert info.value.error_type == "timeout"


@pytest.mark.parametrize(
    ("url", "timeout", "expected"),
    [
        ("postgresql://u:pw@h/db", 3.0, "3"),  # bounded by the call's timeout ...
        ("postgresql://u:pw@h/db", 60.0, "10"),  # ... and by the default 10 s
        ("postgresql://u:pw@h/db", 0.2, "1"),  # at least 1 s: 0 would mean no limit
        ("postgres+psycopg://u:pw@h/db?connect_timeout=30", 3.0, "30"),  # the URL's own wins
    ],
)
def test_postgres_connect_timeout(
    url: str, timeout: float, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call connects within its own timeout (at most 10 s) unless the database URL sets
    connect_timeout, which is kept (the sandboxed call overrode it); keepalives come along."""
    from psycopg.conninfo import conninfo_to_dict

    from gateway.executors.sql import postgres_conninfo

    monkeypatch.delenv("PGCONNECT_TIMEOUT", raising=False)
    params = conninfo_to_dict(postgres_conninfo(url, timeout))
    assert params["connect_timeout"] == expected
    assert params["keepalives_idle"] == "15" and params["tcp_user_timeout"] == "30000"
    assert params["password"] == "pw" and params["host"] == "h"


@pytest.mark.parametrize(
    "url", ["postgresql://u:s3cretpw@[h/db", "postgres://u:s3cretpw@h/db?bogus=1"]
)
def test_postgres_url_libpq_cannot_parse(url: str) -> None:
    """A database URL libpq cannot parse fails the call with a database_error that repeats
    neither the URL nor its password (psycopg's own message quoted the whole URL)."""
    config = SqlConfig(database="pg", query="SELECT 1")
    with pytest.raises(ToolError) as caught:
        config.run(CallContext(action="q", arguments={}, databases={"pg": url}, timeout=5))
    assert caught.value.error_type == "database_error"
    assert "not a valid PostgreSQL URL" in str(caught.value)
    assert "s3cretpw" not in str(caught.value)
