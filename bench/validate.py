"""Benchmark: load + validate 1,000 generated manifests, next to plain YAML parsing.

Generates a manifest set in a temporary directory (assistants, SQL / HTTP /
Python actions, databases, providers; one document per file), then times, in
the same run and several repeats:

- ``gateway``: ``load_catalog`` (YAML with positions, schema check, decode,
  cross-document checks, the Python-action import subprocess, tool schemas),
  cold (as a first load) and warm (as a hot reload, where unchanged files are
  not parsed or checked again and the meta-schema verdicts of unchanged
  ``parameters`` are cached);
- ``yaml.safe_load`` (C loader when available), the floor for reading the files;
- ``yaml.safe_load`` with the pure-Python loader, PyYAML's default.

Prints totals and per-manifest p50/p95 for each, and the ratios.

Run: ``uv run --frozen python bench/validate.py [--manifests 1000] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

import gateway.executors  # noqa: F401  (registers the action kinds)
from gateway.errors import Problem
from gateway.manifests import validate
from gateway.manifests._yaml import read_documents
from gateway.manifests.loader import _decode, forget_previous_load, load_catalog
from gateway.manifests.model import KINDS

FUNCTIONS = '''
from typing import Literal


def lookup(item_id: int, detail: Literal["short", "full"] = "short") -> dict[str, object]:
    """Look up an item.

    Args:
        item_id: The item.
        detail: How much to return.
    """
    return {"id": item_id, "detail": detail}


def echo(text: str, times: int = 1) -> str:
    """Repeat text."""
    return text * times
'''


def generate(root: Path, count: int) -> None:
    """Write ``count`` manifest files under ``root/manifests`` plus a Python module."""
    manifests = root / "manifests"
    (manifests / "docs").mkdir(parents=True)
    (manifests / "docs" / "kb.md").write_text("# Knowledge\n\nSome text.\n", encoding="utf-8")
    (root / "benchactions.py").write_text(FUNCTIONS, encoding="utf-8")
    n_db, n_prov = 10, 10
    n_asst = count // 10
    n_action = count - n_db - n_prov - n_asst
    files: dict[str, str] = {}
    for i in range(n_db):
        files[f"databases/db{i}.yaml"] = (
            f"kind: database\nname: db{i}\nurl: sqlite:///data/{i}.db\n"
        )
    for i in range(n_prov):
        files[f"providers/p{i}.yaml"] = (
            f"kind: provider\nname: p{i}\nbase_url: http://127.0.0.1:{9000 + i}/v1\napi: chat\n"
        )
    for i in range(n_action):
        head = (
            f"kind: action\nname: action_{i}\ndescription: Action number {i} does a thing.\n"
            f"timeout: 5\n"
        )
        params = (
            "parameters:\n  type: object\n  properties:\n"
            f"    q: {{type: string, description: What action {i} looks for}}\n"
            "    limit: {type: integer, minimum: 1, maximum: 50, default: 10}\n"
            "  required: [q]\n"
        )
        if i % 3 == 0:
            body = (
                params + f"sql:\n  database: db{i % n_db}\n  query: |\n"
                "    SELECT * FROM items WHERE name LIKE {{ q }}\n"
                "    {% if limit %}LIMIT {{ limit }}{% endif %}\n"
            )
        elif i % 3 == 1:
            body = (
                params + "http:\n  method: GET\n  url: https://api.example.com/v1/search\n"
                "  query: {q: '{{ q }}', limit: '{{ limit }}'}\n"
                "  headers: {Accept: application/json}\n"
            )
        else:
            body = f"python:\n  function: benchactions:{'lookup' if i % 2 else 'echo'}\n"
        files[f"actions/{i // 100:02d}/action_{i}.yaml"] = head + body
    for i in range(n_asst):
        listed = ", ".join(f"action_{(i * 7 + k) % n_action}" for k in range(6))
        files[f"assistants/a{i}.yaml"] = (
            f"kind: assistant\nname: assistant_{i}\ndescription: Assistant {i}.\n"
            f"provider: p{i % n_prov}\nmodel: gpt-4.1-mini\n"
            "instructions: |\n  You are helpful.\n  Answer briefly.\n"
            f"actions: [{listed}]\ncode_interpreter: {str(i % 2 == 0).lower()}\n"
            "file_search: {files: [docs/kb.md], max_results: 3}\n"
        )
    for rel, text in files.items():
        path = manifests / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    """Seconds per call, one entry per repeat (after one warm-up call)."""
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def per_document(paths: list[Path], loader: type) -> tuple[list[float], list[float]]:
    """Seconds per file for the per-document stage of the loader, and for plain parsing."""
    declared: dict[str, set[str]] = {kind: set() for kind in KINDS}
    ours, plain = [], []
    for path in paths:
        start = time.perf_counter()
        problems: list[Problem] = []
        for doc in read_documents(path.read_text(encoding="utf-8"), str(path), {}):
            _decode(doc, problems, declared)
        ours.append(time.perf_counter() - start)
        assert not problems, problems
        start = time.perf_counter()
        yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
        plain.append(time.perf_counter() - start)
    return ours, plain


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    """Generate, time, print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, args.manifests)
        manifests = root / "manifests"
        paths = sorted(manifests.rglob("*.yaml"))
        count = len(paths)
        catalog = load_catalog(manifests, environ={})
        assert (
            len(catalog.assistants)
            + len(catalog.actions)
            + len(catalog.databases)
            + len(catalog.providers)
            == count
        )

        def read_all(loader: type) -> Callable[[], object]:
            return lambda: [yaml.load(p.read_text(encoding="utf-8"), Loader=loader) for p in paths]

        c_loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

        def cold() -> object:
            # What a first load pays: nothing remembered of the files or of `parameters`.
            validate._meta_errors.cache_clear()
            forget_previous_load()
            return load_catalog(manifests, environ={})

        rows = [
            ("gateway load_catalog, cold", timed(cold, args.repeats)),
            (
                "gateway load_catalog, warm (reload)",
                timed(lambda: load_catalog(manifests, environ={}), args.repeats),
            ),
            (f"yaml.load {c_loader.__name__}", timed(read_all(c_loader), args.repeats)),
            ("yaml.safe_load (pure Python)", timed(read_all(yaml.SafeLoader), args.repeats)),
        ]
        per_doc = per_document(paths, c_loader)
    base = statistics.median(rows[2][1])
    print(f"{count} manifests (one document per file), {args.repeats} repeats after a warm-up")
    header = f"{'total p50':>10} {'total p95':>10} {'per-manifest p50':>17} {'p95':>9}"
    print(f"{'':40} {header} {'ratio':>7}")
    for label, samples in rows:
        p50, p95 = pct(samples, 0.5), pct(samples, 0.95)
        ratio = statistics.median(samples) / base
        print(
            f"{label:40} {p50 * 1e3:8.1f}ms {p95 * 1e3:8.1f}ms "
            f"{p50 / count * 1e6:14.1f}us {p95 / count * 1e6:7.1f}us {ratio:6.2f}x"
        )
    print("ratio: median total relative to the C YAML loader alone")
    print()
    print("per manifest, each file timed on its own (read + parse + schema check + decode;")
    print("cross-document checks and the one Python-import subprocess are whole-set costs)")
    gateway_doc, yaml_doc = per_doc
    for label, samples in (
        ("gateway, per document", gateway_doc),
        ("yaml.load, per file", yaml_doc),
    ):
        p50, p95 = pct(samples, 0.5) * 1e6, pct(samples, 0.95) * 1e6
        ratio = statistics.median(samples) / statistics.median(yaml_doc)
        print(f"{label:40} p50 {p50:7.1f}us  p95 {p95:7.1f}us  ratio {ratio:5.2f}x")


if __name__ == "__main__":
    main()
