"""Built-in tools that are not manifest kinds: ``code_interpreter`` runs in the sandbox.

``CodeInterpreterConfig`` is an ``ActionConfig`` that is deliberately *not*
registered (no YAML key); the runner builds a synthetic ``Action`` around it
with the network off. Its ``run`` executes the model's code as ``__main__``
with file descriptors 1 and 2 pointed at an in-memory file, so output from
``print``, ``os.write`` and subprocesses is all captured, and returns that
text. ``file_search`` needs no sandbox (it reads the knowledge index) and is
handled by the runner. Imports only ``gateway.manifests.model``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, ClassVar

from gateway.manifests.model import Action, ActionConfig, CallContext, SandboxLimits

__all__ = [
    "CODE_INTERPRETER",
    "FILE_SEARCH",
    "CodeInterpreterConfig",
    "code_interpreter_action",
    "file_search_action",
]

CODE_INTERPRETER = "code_interpreter"
FILE_SEARCH = "file_search"


class CodeInterpreterConfig(ActionConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Run the ``code`` argument as a Python program; the result is its stdout/stderr."""

    key: ClassVar[str] = "_code_interpreter"
    network_default: ClassVar[bool] = False
    preload: ClassVar[tuple[str, ...]] = ()

    def run(self, call: CallContext) -> Any:
        """Execute ``call.arguments["code"]``; return what it printed (and its traceback)."""
        code = str(call.arguments.get("code", ""))
        capture = os.memfd_create("output")
        saved = os.dup(1), os.dup(2)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(capture, 1)
        os.dup2(capture, 2)
        failed: BaseException | None = None
        trace = ""
        try:
            compiled = compile(code, "<code>", "exec")
            exec(compiled, {"__name__": "__main__", "__builtins__": __builtins__})  # noqa: S102 - sandboxed by design
        except SystemExit as exc:
            if exc.code not in (None, 0):
                failed = exc
        except BaseException as exc:
            import traceback

            failed = exc
            # Skip our own frame: the program's traceback starts at its first line. Kept
            # out of the capture, which may be what failed (full: see ``_output_full``).
            tb = exc.__traceback__
            trace = "".join(
                traceback.format_exception(type(exc), exc, tb.tb_next if tb is not None else None)
            )
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
        os.lseek(capture, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(capture, 1 << 20):
            chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8", errors="replace") + trace
        if failed is not None:
            from gateway.executors._common import ToolError

            full = _output_full(failed, capture)
            if full is not None:
                raise ToolError("output_too_large", full, output=text[-16000:])
            raise ToolError("exception", f"{type(failed).__name__}: {failed}", output=text[-16000:])
        return text if text else "(no output)"


def _output_full(failed: BaseException, capture: int) -> str | None:
    """Why the program stopped, if its output filled the capture; else None.

    The capture is a memory file, so the call's file size limit
    (``max_file_size_mb``) bounds it: a write past it fails with ``EFBIG``.
    """
    import errno
    import resource

    if not (isinstance(failed, OSError) and failed.errno == errno.EFBIG):
        return None
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit == resource.RLIM_INFINITY or os.fstat(capture).st_size < limit:
        return None  # a file of the program's own went past the limit
    return (
        f"the program's output passed the {limit / (1 << 20):g} MB file size limit "
        "(max_file_size_mb) and the program was stopped there"
    )


def code_interpreter_action(timeout: float = 30.0, memory_mb: int = 512) -> Action:
    """The synthetic action the runner sends to the sandbox for ``code_interpreter``."""
    return Action(
        name=CODE_INTERPRETER,
        description="Run Python code in a sandbox with no network; returns stdout and stderr.",
        parameters={
            "type": "object",
            "properties": {"code": {"type": "string", "description": "Python source to run"}},
            "required": ["code"],
        },
        timeout=timeout,
        sandbox=SandboxLimits(network=False, memory_mb=memory_mb),
        kind_key=CodeInterpreterConfig.key,
        config=CodeInterpreterConfig(),
    )


def file_search_action() -> Action:
    """The synthetic action whose schema ``file_search`` arguments are validated against.

    It never reaches the sandbox (the runner asks the knowledge index); ``gateway
    invoke`` validates ``--args`` against it before starting anything.
    """
    return Action(
        name=FILE_SEARCH,
        description="search",
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string", "minLength": 1}},
            "required": ["query"],
        },
    )
