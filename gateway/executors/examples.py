"""``gateway test``: run every action's ``examples:`` through the real runner and check them.

An example passes when the call ends with ``expect.status`` (default
``succeeded``), its output contains ``expect.contains`` (if given) and equals
``expect.equals`` (if given; compared as JSON when the output is JSON, where
``true`` is not ``1``, else as text). Imports ``gateway.executors`` and ``gateway.manifests``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.executors.base import ActionRunner, ToolResult
from gateway.manifests.catalog import Catalog
from gateway.manifests.model import Expect

__all__ = ["ExampleOutcome", "check_expect", "run_examples"]


class ExampleOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One example's result: which, how it ended, and what did not match."""

    action: str
    index: int
    result: ToolResult
    problems: list[str]

    @property
    def ok(self) -> bool:
        """Whether every expectation held."""
        return not self.problems


def check_expect(expect: Expect, result: ToolResult) -> list[str]:
    """What in ``result`` does not meet ``expect`` (empty when it passes)."""
    problems = []
    if result.status != expect.status:
        problems.append(f"status is {result.status}, expected {expect.status}")
    if expect.contains is not None and expect.contains not in result.output:
        problems.append(f"output does not contain {expect.contains!r}")
    if expect.equals is not None:
        actual: Any
        try:
            actual = msgspec.json.decode(result.output)
        except (msgspec.DecodeError, RecursionError):  # msgspec's depth guard: RecursionError
            actual = result.output
        if not _same(actual, expect.equals) and result.output != str(expect.equals):
            problems.append(f"output is {result.output[:200]!r}, expected {expect.equals!r}")
    return problems


def _same(actual: Any, expected: Any) -> bool:
    """JSON equality: as ``==``, except that ``true``/``false`` never equal ``1``/``0``.

    Python's ``True == 1`` would let an example expecting ``true`` pass on ``1``.
    """
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    if isinstance(actual, dict) and isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(
            _same(actual[k], expected[k]) for k in actual
        )
    if isinstance(actual, list) and isinstance(expected, list):
        return len(actual) == len(expected) and all(
            _same(a, e) for a, e in zip(actual, expected, strict=True)
        )
    return bool(actual == expected)


async def run_examples(
    catalog: Catalog, runner: ActionRunner, *, only: list[str] | None = None
) -> list[ExampleOutcome]:
    """Run the examples of every action (or of ``only``), one after the other."""
    outcomes = []
    for name in sorted(catalog.actions):
        if only and name not in only:
            continue
        for index, example in enumerate(catalog.actions[name].examples):
            result = await runner.run(catalog, name, dict(example.args), correlation_id="test")
            outcomes.append(
                ExampleOutcome(
                    action=name,
                    index=index,
                    result=result,
                    problems=check_expect(example.expect, result),
                )
            )
    return outcomes
