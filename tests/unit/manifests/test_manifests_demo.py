"""The demo deployment: every manifest loads, carries the schema comment, and works offline."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.manifests.catalog import Catalog
from gateway.manifests.loader import load_catalog
from gateway.manifests.model import ACTION_KINDS

REPO = Path(__file__).resolve().parents[3]
MANIFESTS = REPO / "manifests"


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(MANIFESTS, environ={})


def test_the_demo_manifests_load_without_problems(catalog: Catalog) -> None:
    """`gateway validate manifests` passes: two assistants, every action kind used."""
    assert set(catalog.assistants) >= {"support", "concierge"}
    kinds = {a.kind_key for a in catalog.actions.values()}
    assert kinds == set(ACTION_KINDS) >= {"python", "http", "sql"}
    assert catalog.assistants["concierge"].code_interpreter is True
    assert catalog.knowledge_files == (MANIFESTS / "docs" / "faq.md",)
    assert {p.name for p in catalog.code_files} >= {"support.py", "concierge.py"}


@pytest.mark.parametrize("path", sorted(MANIFESTS.rglob("*.y*ml")), ids=lambda p: p.name)
def test_every_demo_file_points_editors_at_the_schema(path: Path) -> None:
    """Each file starts with the yaml-language-server comment whose path reaches the schema."""
    first = path.read_text(encoding="utf-8").splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    target = (path.parent / first.removeprefix(prefix)).resolve()
    assert target == REPO / "schemas" / "manifest.schema.json"


def test_python_parameters_are_inferred_for_the_demo(catalog: Catalog) -> None:
    """create_ticket's schema comes from its signature: enum priority, optional email."""
    params = catalog.actions["create_ticket"].parameters
    assert params is not None
    assert params["required"] == ["subject"]
    assert params["properties"]["priority"]["enum"] == ["low", "normal", "high", "urgent"]


def test_the_shop_database_has_the_readme_order() -> None:
    """manifests/data/shop.db holds order 1042, shipped, the one the README asks about."""
    with sqlite3.connect(f"file:{MANIFESTS / 'data' / 'shop.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT status, tracking_number FROM orders WHERE id = 1042").fetchone()
    assert row is not None and row[0] == "shipped" and row[1]


def test_the_committed_database_matches_its_seed_script(tmp_path: Path) -> None:
    """actions/seed_shop.py rebuilds the same rows as the committed shop.db."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("seed_shop", REPO / "actions" / "seed_shop.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build(tmp_path / "shop.db")

    def dump(path: Path) -> list[tuple[object, ...]]:
        with sqlite3.connect(path) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            return [row for t in sorted(tables) for row in db.execute(f"SELECT * FROM {t}")]

    assert dump(tmp_path / "shop.db") == dump(MANIFESTS / "data" / "shop.db")


@pytest.mark.parametrize(
    ("assistant", "message", "tool", "arguments"),
    [
        ("support", "what's the status of order 1042?", "get_order_status", {"order_id": 1042}),
        (
            "support",
            "list the orders for alice@example.com",
            "search_orders",
            {"email": "alice@example.com"},
        ),
        (
            "support",
            "open a ticket about a broken charger",
            "create_ticket",
            {"subject": "broken charger"},
        ),
        ("concierge", "convert 10 km to miles", "convert_units", {"value": 10.0, "unit": "km"}),
        ("concierge", 'calculate "(12 + 30) * 2"', "calculate", {"formula": "(12 + 30) * 2"}),
    ],
)
def test_demo_messages_pick_the_right_tool_offline(
    catalog: Catalog, assistant: str, message: str, tool: str, arguments: dict[str, object]
) -> None:
    """The offline model maps the README's example messages to the intended tool and arguments."""
    import json

    offline = pytest.importorskip("gateway.providers.offline")
    base = pytest.importorskip("gateway.providers.base")
    request = base.ModelRequest(
        model="offline",
        instructions="",
        messages=[base.ChatMessage(role="user", content=message)],
        tools=catalog.tools[assistant],
    )
    _, calls = offline.offline_reply(request)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [(tool, arguments)]


def test_the_readme_manifest_example_loads(tmp_path: Path) -> None:
    """The YAML example of the README's Manifests section is a valid manifest set."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Manifests\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    root = tmp_path / "manifests"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "faq.md").write_text("# FAQ\n", encoding="utf-8")
    (root / "example.yaml").write_text(example, encoding="utf-8")
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "__init__.py").write_text("", encoding="utf-8")
    (tmp_path / "actions" / "support.py").write_text(
        "def create_ticket(subject: str) -> str:\n    return subject\n", encoding="utf-8"
    )
    catalog = load_catalog(root, environ={"LOCAL_LLM_KEY": "k"})
    assert set(catalog.actions) == {"get_order_status", "create_ticket"}
    assert catalog.providers["local"].api_key == "k"


def test_the_readme_inline_example_loads(tmp_path: Path) -> None:
    """The YAML example of the README's isolation: inline section is a valid inline action."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Inline http and sql actions (`isolation: inline`)\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    root = tmp_path / "manifests"
    root.mkdir()
    (root / "example.yaml").write_text(
        example + "---\nkind: database\nname: shop\nurl: sqlite:///shop.db\n", encoding="utf-8"
    )
    catalog = load_catalog(root, environ={})
    action = catalog.actions["order_status"]
    assert action.isolation == "inline"
    assert action.sandbox.max_output_kb == 16


def test_the_readme_knowledge_limits_example_loads(tmp_path: Path) -> None:
    """The YAML example of the README's knowledge-file limits raises the per-file cap
    and the PDF limits."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Knowledge files (file_search)\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    root = tmp_path / "manifests"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "handbook.pdf").write_bytes(b"%PDF-1.4\n")
    (root / "example.yaml").write_text(example, encoding="utf-8")
    config = load_catalog(root, environ={}).assistants["handbook"].file_search
    assert config is not None
    assert (config.max_file_size_mb, config.max_total_size_mb) == (100, 256)
    assert (config.pdf.timeout, config.pdf.max_pages, config.pdf.max_chars) == (600, 50000, 32e6)
