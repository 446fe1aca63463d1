"""The model's arguments on their way into real actions: undeclared names, nested nulls."""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.executors.runner import SandboxRunner
from gateway.manifests.catalog import Catalog
from gateway.manifests.loader import load_catalog
from gateway.manifests.tools import tool_schemas
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings

ACTIONS = """
def user_info(user: str, include_private: bool = False) -> dict:
    info = {"user": user}
    if include_private:
        info["email"] = user + "@private.example"
    return info


def echo(**arguments) -> dict:
    return arguments
"""

MANIFESTS = """
kind: database
name: lite
url: sqlite:///rows.db
---
kind: action
name: rows
description: Rows, optionally by name.
isolation: inline
parameters:
  type: object
  properties:
    name: {type: string}
sql:
  database: lite
  query: >-
    SELECT name FROM t WHERE {% if include_hidden %}1=1{% else %}name != 'hidden'{% endif %}
    {% if name %}AND name = {{ name }}{% endif %} ORDER BY name
---
kind: action
name: user_info
description: Public profile of a user.
parameters:
  type: object
  properties:
    user: {type: string}
  required: [user]
python:
  function: actions.acts:user_info
---
kind: action
name: open_echo
description: Echo whatever it is given.
parameters:
  type: object
  properties:
    user: {type: string}
  additionalProperties: true
python:
  function: actions.acts:echo
---
kind: action
name: nested
description: Echo a filter and rows.
parameters:
  type: object
  properties:
    filter:
      type: object
      properties:
        min: {type: integer}
        max: {type: integer, default: 10}
        note: {type: [string, "null"]}
      required: [min]
    rows:
      type: array
      items:
        type: object
        properties:
          a: {type: integer}
          b: {type: integer}
  required: [filter]
python:
  function: actions.acts:echo
---
kind: action
name: pay
description: Pay (json-schema.org's dependentSchemas example).
parameters:
  type: object
  properties:
    name: {type: string}
    credit_card: {type: number}
  required: [name]
  dependentSchemas:
    credit_card:
      properties:
        billing_address: {type: string}
      required: [billing_address]
python:
  function: actions.acts:echo
---
kind: action
name: either
description: By order or by email, the order's branch nested.
parameters:
  type: object
  oneOf:
    - allOf:
        - properties: {order_id: {type: integer}}
          required: [order_id]
    - properties: {email: {type: string}}
      required: [email]
python:
  function: actions.acts:echo
---
kind: assistant
name: helper
model: gpt-4o-mini
instructions: Help.
actions: [rows, user_info, open_echo, nested, pay, either]
"""


@pytest.fixture
def root() -> Iterator[Path]:
    """A world-readable gateway root (sandboxed calls run as another user) with the
    manifests above, their Python module and a SQLite database."""
    root = Path(tempfile.mkdtemp(prefix="gw-args-test-"))
    root.chmod(0o755)
    (root / "manifests").mkdir()
    (root / "manifests" / "a.yaml").write_text(MANIFESTS)
    (root / "actions").mkdir()
    (root / "actions" / "acts.py").write_text(ACTIONS)
    with sqlite3.connect(root / "manifests" / "rows.db") as db:
        db.execute("CREATE TABLE t (name TEXT)")
        db.executemany("INSERT INTO t VALUES (?)", [("ann",), ("hidden",)])
    db.close()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def running(root: Path) -> AsyncIterator[tuple[Catalog, SandboxRunner]]:
    """The catalog loaded from ``root`` and a runner over a started supervisor."""
    catalog = load_catalog(root / "manifests", environ={}, gateway_root=root)
    supervisor = Supervisor(Settings())
    await supervisor.start(catalog)
    runner = SandboxRunner(supervisor, environ={})
    try:
        yield catalog, runner
    finally:
        await runner.aclose()
        await supervisor.aclose()


async def test_undeclared_arguments_are_refused_before_the_call(
    running: tuple[Catalog, SandboxRunner],
) -> None:
    """A name ``parameters`` does not declare passed JSON Schema (extra properties are
    allowed by default) and reached a SQL template's ``{% if include_hidden %}`` and a
    function's keyword argument ``include_private``: it is ``invalid_arguments`` naming
    it, and nothing runs; a schema with ``additionalProperties: true`` still takes it."""
    catalog, runner = running
    plain = await runner.run(catalog, "rows", {})
    assert json.loads(plain.output) == [{"name": "ann"}], plain
    hidden = await runner.run(catalog, "rows", {"include_hidden": True})
    assert hidden.error_type == "invalid_arguments", hidden
    assert "include_hidden" in hidden.output and "hidden" not in hidden.output.replace(
        "include_hidden", ""
    ), hidden.output
    private = await runner.run(catalog, "user_info", {"user": "bob", "include_private": True})
    assert private.error_type == "invalid_arguments", private
    assert "'include_private'" in private.output and "@private" not in private.output
    public = await runner.run(catalog, "user_info", {"user": "bob"})
    assert json.loads(public.output) == {"user": "bob"}, public
    opened = await runner.run(catalog, "open_echo", {"user": "bob", "more": 1})
    assert json.loads(opened.output) == {"user": "bob", "more": 1}, opened


async def test_names_declared_below_the_top_are_arguments(
    running: tuple[Catalog, SandboxRunner],
) -> None:
    """Names declared in ``dependentSchemas``, or in a ``oneOf`` branch's ``allOf``, were
    refused as undeclared: ``pay`` with a credit card was uncallable (its billing address
    refused as unexpected, and required when left out), ``either`` by order id too. Every
    subschema that may add names counts; an undeclared name is still refused."""
    catalog, runner = running
    card = {"name": "ann", "credit_card": 4111, "billing_address": "1 Main St"}
    paid = await runner.run(catalog, "pay", card)
    assert json.loads(paid.output) == card, paid
    by_order = await runner.run(catalog, "either", {"order_id": 5})
    assert json.loads(by_order.output) == {"order_id": 5}, by_order
    extra = await runner.run(catalog, "either", {"order_id": 5, "sneaky": 1})
    assert extra.error_type == "invalid_arguments" and "'sneaky'" in extra.output, extra


def test_tool_schemas_close_parameters_the_runner_closes(
    running: tuple[Catalog, SandboxRunner],
) -> None:
    """The model is told what the runner enforces: ``additionalProperties: false`` where
    the action's schema does not say otherwise."""
    catalog, _ = running
    tools = {
        t["function"]["name"]: t["function"]["parameters"] for t in tool_schemas(catalog, "helper")
    }
    assert tools["rows"]["additionalProperties"] is False
    assert tools["user_info"]["additionalProperties"] is False
    assert tools["open_echo"]["additionalProperties"] is True
    # additionalProperties sees only the top level's properties: it would refuse the
    # names these declare below it, so the model is not told so.
    assert "additionalProperties" not in tools["pay"]
    assert "additionalProperties" not in tools["either"]


async def test_nested_strict_mode_nulls_mean_absent(
    running: tuple[Catalog, SandboxRunner],
) -> None:
    """OpenAI strict mode sends ``null`` for every optional property left out, nested
    ones too; only top-level ones were dropped, so ``{"filter": {"max": null}}`` was
    ``invalid_arguments``: nested ones are dropped (defaults then apply), in arrays too,
    and a property whose schema allows ``null`` keeps it."""
    catalog, runner = running
    result = await runner.run(
        catalog,
        "nested",
        {
            "filter": {"min": 1, "max": None, "note": None},
            "rows": [{"a": 1, "b": None}, {"a": None, "b": 2}],
        },
    )
    assert json.loads(result.output) == {
        "filter": {"min": 1, "max": 10, "note": None},
        "rows": [{"a": 1}, {"b": 2}],
    }, result
    missing = await runner.run(catalog, "nested", {"filter": {"min": None}})
    assert missing.error_type == "invalid_arguments", missing  # required: null stays, refused
