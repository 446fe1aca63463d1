"""Jinja environments whose renders stop at their call's deadline (``http`` and ``sql`` kinds).

A template runs as long as the model's arguments say: ``{% for a in items %}{% for b in
items %}`` over a 100,000-item argument is 10^10 rounds. In the sandbox the child is
killed at the action's timeout; inline (``isolation: inline``) a render runs in a thread
of the server, which nothing can kill, so the render stops itself: every ``{% for %}``
iteration and every call the template makes (``range()``, methods, ``loop()`` of a
recursive loop, macros) checks the deadline and raises ``ToolError("timeout")`` past it.
Loops are the only way a template repeats work, so a render ends within one step of its
deadline (a single step, such as a huge string repetition, is not interrupted).

The deadline lives in a context variable: ``deadline(timeout)`` sets it (an earlier one
already set wins), ``InlineExecutor`` sets the call's (from its arrival, so queued time
counts) and ``Pools`` runs a call's blocking work in a copy of its context. Leaving the
``deadline`` block ends it early: a call cancelled (its run was) or timed out does not
leave a render running in a worker thread until the clock says so. Without a deadline
the checks cost one context-variable read per loop and call.

Imports ``gateway.executors._common``; jinja2 lazily (the zygote imports it once).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from gateway.executors._common import ToolError

if TYPE_CHECKING:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

__all__ = ["check_deadline", "compile_template", "deadline", "guarded_environment"]


class _Deadline:
    """When renders must stop (``time.monotonic()``), the timeout it came from, and whether
    the block that set it was left (``ended``: nobody waits for the render any more)."""

    __slots__ = ("ended", "timeout", "when")

    def __init__(self, when: float, timeout: float) -> None:
        self.when = when
        self.timeout = timeout
        self.ended = False

    def check(self) -> None:
        """Raise ``ToolError("timeout")`` if the deadline passed or its block was left."""
        if self.ended or time.monotonic() > self.when:
            raise ToolError(
                "timeout",
                f"rendering the action's templates did not finish within {self.timeout:g}s",
            )


_DEADLINE: contextvars.ContextVar[_Deadline | None] = contextvars.ContextVar(
    "gateway_render_deadline", default=None
)
"""The current call's deadline (shared with the copies of the context that threads run in)."""

_GUARD = "gateway_deadline"
"""The filter wrapped around every loop's iterable by ``compile_template``."""


@contextlib.contextmanager
def deadline(timeout: float | None) -> Iterator[None]:
    """Renders in this block stop ``timeout`` seconds from now (``None``: no new deadline).

    A deadline already set that comes first stays (the call's own, set by the
    inline executor when the call arrived). Leaving the block, however (an
    exception, a cancellation), ends the deadline it set: renders still running
    under it in other threads stop at their next check.
    """
    if timeout is None:
        yield
        return
    when = time.monotonic() + timeout
    outer = _DEADLINE.get()
    if outer is not None and outer.when <= when:
        yield
        return
    current = _Deadline(when, timeout)
    token = _DEADLINE.set(current)
    try:
        yield
    finally:
        current.ended = True
        _DEADLINE.reset(token)


def check_deadline() -> None:
    """Raise ``ToolError("timeout")`` once the current deadline has passed or ended."""
    current = _DEADLINE.get()
    if current is not None:
        current.check()


class _Guarded:
    """An iterable checking the deadline at every item (with ``len``, for ``loop.length``)."""

    __slots__ = ("_deadline", "_items")

    def __init__(self, items: Any, deadline: _Deadline) -> None:
        self._items = items
        self._deadline = deadline

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        check = self._deadline.check
        for item in self._items:
            check()
            yield item


def _guard(items: Iterable[Any]) -> Any:
    """The ``gateway_deadline`` filter: ``items`` as is without a deadline, else guarded."""
    current = _DEADLINE.get()
    if current is None:
        return items
    return _Guarded(items, current)


@functools.cache
def _environment_class() -> type[SandboxedEnvironment]:
    from jinja2.sandbox import SandboxedEnvironment

    class GuardedEnvironment(SandboxedEnvironment):
        """A sandboxed environment whose every call checks the deadline."""

        def call(
            __self,  # Jinja's own signature: positional-only by name mangling
            __context: Any,
            __obj: Any,
            *args: Any,
            **kwargs: Any,
        ) -> Any:
            check_deadline()
            return super().call(__context, __obj, *args, **kwargs)

    return GuardedEnvironment


def guarded_environment(**options: Any) -> SandboxedEnvironment:
    """A ``SandboxedEnvironment`` (built with ``options``) whose calls check the deadline.

    Compile its templates with ``compile_template`` so that loops check it too.
    """
    env = _environment_class()(**options)
    env.filters[_GUARD] = _guard
    return env


def compile_template(env: SandboxedEnvironment, source: str) -> jinja2.Template:
    """``source`` compiled by ``env`` with every ``{% for %}`` iterable checking the deadline.

    The parsed tree is rewritten before code generation (``from_string`` takes a
    tree), so the check is in the loop itself, whatever its body does.
    """
    from jinja2 import nodes

    tree = env.parse(source)
    for loop in list(tree.find_all(nodes.For)):
        loop.iter = nodes.Filter(loop.iter, _GUARD, [], [], None, None, lineno=loop.lineno)
    return env.from_string(tree)
