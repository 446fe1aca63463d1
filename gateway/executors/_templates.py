"""Jinja environments whose renders stop at their call's deadline (``http`` and ``sql`` kinds).

A template runs as long as the model's arguments say: ``{% for a in items %}{% for b in
items %}`` over a 100,000-item argument is 10^10 rounds. In the sandbox the child is
killed at the action's timeout; inline (``isolation: inline``) a render runs in a thread
of the server, which nothing can kill, so the render stops itself: every ``{% for %}``
iteration and every call the template makes (``range()``, methods, ``loop()`` of a
recursive loop, macros) checks the deadline and raises ``ToolError("timeout")`` past it.
Loops and calls are how a template repeats work, so a render ends within one step of its
deadline. A single step is not interrupted, so the steps whose size an argument's *value*
sets are bounded where they are cheap to bound: ``*`` may build at most ``MAX_ITEMS``
characters or items, ``**`` at most ``MAX_BITS`` bits, and ``%`` takes no ``*`` width
over ``MAX_ITEMS`` (``call_binop``). What is left (a method such as ``s.ljust(n)``, a
filter such as ``center(n)``) is bounded by the action's JSON Schema (``maximum``), or by
the sandbox's limits when the action is not inline.

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

__all__ = [
    "MAX_BITS",
    "MAX_ITEMS",
    "check_deadline",
    "compile_template",
    "deadline",
    "guarded_environment",
]

MAX_ITEMS = 1 << 20
"""Most characters or items one ``*`` in a template may build, and the widest ``%*`` width."""
MAX_BITS = 1 << 16
"""Most bits one integer ``**`` in a template may build (about 20,000 digits)."""


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
        """A sandboxed environment whose every call checks the deadline, and whose ``*``,
        ``**`` and ``%`` refuse results whose size an argument's value makes huge."""

        intercepted_binops = frozenset({"*", "**", "%"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right)
            return super().call_binop(context, operator, left, right)

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


_SIZED = (str, bytes, list, tuple)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Raise ``ToolError("invalid_template")`` for a ``*``, ``**`` or ``%`` that would
    build more than ``MAX_ITEMS`` items or ``MAX_BITS`` bits in one uninterruptible step."""
    if operator == "*":
        if isinstance(left, _SIZED) and isinstance(right, int):
            size = len(left) * right
        elif isinstance(right, _SIZED) and isinstance(left, int):
            size = len(right) * left
        else:
            return
        if size > MAX_ITEMS:
            raise ToolError(
                "invalid_template",
                f"`*` in a template would build {size:,} items (at most {MAX_ITEMS:,})",
            )
    elif operator == "**":
        if (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and left.bit_length() * right > MAX_BITS
        ):
            raise ToolError(
                "invalid_template",
                f"`**` in a template would build a number of over {MAX_BITS:,} bits",
            )
    elif operator == "%" and isinstance(left, str) and "*" in left:
        values = right if isinstance(right, tuple) else (right,)
        if any(isinstance(v, int) and abs(v) > MAX_ITEMS for v in values):
            raise ToolError("invalid_template", f"a `%*` width in a template is over {MAX_ITEMS:,}")


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


def template_names(env: SandboxedEnvironment, sources: Iterable[str]) -> frozenset[str]:
    """The names ``sources`` read from their render context (loop variables and the
    environment's globals, such as ``range``, left out); a source that does not parse
    reads none (``check`` reports it). Parses only: nothing is evaluated."""
    import jinja2
    from jinja2 import meta

    names: set[str] = set()
    for source in sources:
        try:
            names |= meta.find_undeclared_variables(env.parse(source))
        except jinja2.TemplateSyntaxError:
            continue
    return frozenset(names - set(env.globals))
