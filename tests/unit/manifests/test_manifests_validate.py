"""Problem output formats: text lines, GitHub annotations, JSON."""

from __future__ import annotations

import gc
import json
import tracemalloc
from pathlib import Path

from gateway.errors import Problem
from gateway.manifests.validate import format_problems

PROBLEMS = [
    Problem(file="m/a.yaml", line=3, col=5, message="unknown action 'x'", path="actions[0]"),
    Problem(file="m/b,c.yaml", line=1, col=1, message="50% wrong\nsecond line"),
]


def test_text_is_one_problem_a_line() -> None:
    """The default format is `file:line:col: message`, one a line."""
    assert format_problems(PROBLEMS[:1]) == "m/a.yaml:3:5: unknown action 'x'\n"


def test_github_annotations_escape_their_fields() -> None:
    """GitHub workflow commands carry file, line and col, with % , : and newlines escaped."""
    lines = format_problems(PROBLEMS, "github").splitlines()
    assert lines[0] == "::error file=m/a.yaml,line=3,col=5::unknown action 'x'"
    assert lines[1] == "::error file=m/b%2Cc.yaml,line=1,col=1::50%25 wrong%0Asecond line"


def test_json_is_a_list_of_objects() -> None:
    """--format json prints a list with file, line, col, message and path."""
    data = json.loads(format_problems(PROBLEMS, "json"))
    assert data[0] == {
        "file": "m/a.yaml",
        "line": 3,
        "col": 5,
        "message": "unknown action 'x'",
        "path": "actions[0]",
    }
    assert json.loads(format_problems([], "json")) == []


def test_the_secret_warning_threshold_is_the_sandboxs_masking_threshold() -> None:
    """`secret_warnings` warns exactly about the values the sandbox would leave unmasked."""
    from gateway.manifests.validate import MIN_MASKED_SECRET
    from gateway.sandbox._mask import MIN_MASKED

    assert MIN_MASKED_SECRET == MIN_MASKED


def test_a_large_parameters_schema_is_not_kept_once_its_set_is_gone(tmp_path: Path) -> None:
    """The meta-schema check was cached by the schema's JSON bytes (4,096 of them): a
    set with a megabyte schema (an alias bomb made it hundreds) kept that memory after
    a small set replaced it. The cache keeps a digest."""
    import gateway.executors  # noqa: F401 - registers the action kinds
    from gateway.manifests.loader import load_catalog

    big, small = tmp_path / "big", tmp_path / "small"
    enum = ", ".join(f'"{i:07d}{"v" * 90}"' for i in range(4_000))  # 400 KB of JSON
    for root, values in ((big, enum), (small, "a, b")):
        root.mkdir()
        (root / "a.yaml").write_text(
            "kind: action\nname: a1\ndescription: d\nhttp: {url: 'https://example.com/'}\n"
            "parameters:\n  type: object\n  properties:\n"
            f"    p: {{type: string, enum: [{values}]}}\n"
        )
    load_catalog(small, gateway_root=small)  # the first load's imports and caches
    tracemalloc.start()
    try:
        catalog = load_catalog(big, gateway_root=big)
        assert len(catalog.actions["a1"].parameters["properties"]["p"]["enum"]) == 4_000
        catalog = load_catalog(small, gateway_root=small)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 200_000, held
