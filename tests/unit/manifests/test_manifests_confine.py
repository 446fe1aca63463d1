"""Which gateway-root entries import-time code may read (``_confine.code_entries``)."""

from __future__ import annotations

from pathlib import Path

from gateway.manifests._confine import code_entries


def test_only_entries_holding_python_code_are_readable(tmp_path: Path) -> None:
    """Packages, folders of modules (also deeper, namespace packages) and top-level code
    files are listed; .env, the store's var/, the knowledge index, data folders, hidden
    entries and a protected path are not."""
    files = {
        "actions/__init__.py": "",
        "helpers/util.py": "",
        "ns/deep/mod.py": "",
        "ext/fast.so": "",
        "single.py": "",
        ".env": "KEY=secret",
        ".hidden/x.py": "",
        "var/gateway.db": "",
        "knowledge/index.v4.sqlite3": "",
        "data/prices.json": "{}",
        "config.yaml": "",
        "guarded/mod.py": "",
        "guarded/store.db": "",
    }
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    protected = frozenset({str(tmp_path / "guarded" / "store.db")})
    found = code_entries(str(tmp_path), protected)
    assert found == [
        str(tmp_path / name) for name in ("actions", "ext", "helpers", "ns", "single.py")
    ]
