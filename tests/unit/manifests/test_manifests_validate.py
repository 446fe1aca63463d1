"""Problem output formats: text lines, GitHub annotations, JSON."""

from __future__ import annotations

import json

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
