"""``gateway test``: run every action's ``examples:`` through the real runner and check them.

An example passes when the call ends with ``expect.status`` (default
``succeeded``), its output contains ``expect.contains`` (if given) and equals
``expect.equals`` (if given, ``null`` included). ``equals`` is a JSON value
compared by type: the output, read as JSON, must be that very value (``true``
is neither ``1`` nor ``"True"``; ``2`` and ``2.0`` are one number); an expected
string also matches the output text itself, since a result that is a string
reaches the model as its bare text. Imports ``gateway.executors`` and
``gateway.manifests``.
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
    if expect.equals is not msgspec.UNSET and not _equals(result.output, expect.equals):
        problems.append(f"output is {result.output[:200]!r}, expected {_json(expect.equals)}")
    return problems


def _equals(output: str, expected: Any) -> bool:
    """Whether ``output`` is the JSON value ``expected``, or the text of an expected string.

    No text form of another value stands in: ``True`` (a string result) is not
    ``true``, and ``null`` is only the output ``null``.
    """
    if isinstance(expected, str) and output == expected:
        return True  # a string result reaches the model as its bare text
    try:
        actual = msgspec.json.decode(output)
    except (msgspec.DecodeError, RecursionError):  # msgspec's depth guard: RecursionError
        return False
    return _same(actual, expected)


def _json(value: Any) -> str:
    """``value`` as JSON for a message (``true``, ``null``, ``"True"``), else its repr."""
    try:
        return msgspec.json.encode(value).decode()[:200]
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def _same(actual: Any, expected: Any) -> bool:
    """JSON equality by type: numbers by value (``2 == 2.0``), every other kind only with
    its own kind; ``true``/``false`` never equal ``1``/``0``.

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
