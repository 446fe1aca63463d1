"""Turning how a sandboxed call ended into the ``ToolResult`` the model reads.

One place maps every outcome (a result frame, an exit status, a signal, a
timeout) to ``{"error": {"type", "message"}}`` text and an ``error_type``, and
redacts declared secret values from what goes back; ``call_outcome`` picks
the outcome of a finished call from what the supervisor collected. Imports
``gateway.executors.base``, ``gateway.manifests.model``,
``gateway.sandbox.protocol``, ``gateway.sandbox._channels`` and the exit codes of
``gateway.sandbox.worker``.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from typing import Any

import msgspec
import structlog

from gateway.executors.base import ToolResult
from gateway.manifests.model import Action
from gateway.sandbox._channels import OutputReader, TooLarge
from gateway.sandbox._mask import mask, mask_cut
from gateway.sandbox.protocol import CallRequest, CallResult, Exited, Limits, output_result
from gateway.sandbox.worker import MESSAGE_CHARS, RESULT_LOST, SCRATCH_FULL, TRACEBACK_CHARS

__all__ = [
    "answered",
    "call_outcome",
    "error_output",
    "exit_failure",
    "failure",
    "from_result",
    "limits_for",
    "mask",
    "oom_failure",
    "redact",
]

log = structlog.get_logger("gateway.sandbox")


def error_output(error_type: str, message: str, **extra: Any) -> str:
    """The JSON text a failed call sends to the model: ``{"error": {"type", "message"}}``."""
    return msgspec.json.encode(
        {"error": {"type": error_type, "message": message, **extra}}
    ).decode()


def limits_for(action: Action) -> Limits:
    """The rlimits for one call of ``action`` (CPU defaults to just above its timeout)."""
    box = action.sandbox
    cpu = box.cpu_seconds if box.cpu_seconds is not None else math.ceil(action.timeout) + 1
    return Limits(
        memory_mb=box.memory_mb,
        cpu_seconds=cpu,
        max_output_kb=box.max_output_kb,
        max_processes=box.max_processes,
        max_open_files=box.max_open_files,
        max_file_size_mb=box.max_file_size_mb,
    )


def _elapsed(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def failure(
    started: float, error_type: str, message: str, *, outcome: str = "failed", **extra: Any
) -> ToolResult:
    """A failed (or timed-out) ``ToolResult`` carrying the error JSON the model reads."""
    return ToolResult(
        status="timed_out" if outcome == "timed_out" else "failed",
        output=error_output(error_type, message, **extra),
        duration_ms=_elapsed(started),
        error_type=error_type,
    )


def from_result(
    res: CallResult, action: Action, started: float, secrets: dict[str, str] | None = None
) -> ToolResult:
    """The ``ToolResult`` for a child's answer; its traceback (secrets masked) goes to the log."""
    if res.ok:
        return ToolResult(
            status="succeeded",
            output=res.output,
            duration_ms=_elapsed(started),
            truncated=res.truncated,
        )
    if res.traceback:
        log.info(
            "sandbox.action_error",
            action=action.name,
            error_type=res.error_type,
            traceback=mask(res.traceback, secrets or {}),
        )
    extra = {k: v for k, v in res.detail.items() if k not in _RESERVED}
    # A ``timeout`` error of a kind that is the gateway's own code (those that may run
    # inline: http, sql) is the call timing out (an http body's deadline, a statement
    # timeout), in the sandbox as inline. Action code (python, code_interpreter) is not
    # trusted to say so: its ``timeout`` error is a failure like any other.
    own_code = action.config is not None and type(action.config).inline
    outcome = "timed_out" if own_code and res.error_type == "timeout" else "failed"
    return failure(started, res.error_type or "exception", res.message, outcome=outcome, **extra)


_RESERVED = frozenset({"type", "message", "outcome", "started", "error_type"})
"""Keys an exception's ``detail`` may not set: the call's own status, type and message
(action code is not trusted to say it timed out, or to succeed while failing)."""


_SIGNAL_ERRORS = {
    signal.SIGXCPU: ("cpu_limit", "the action used up its CPU time limit ({cpu}s)"),
    signal.SIGSEGV: ("crashed", "the action crashed (segmentation fault)"),
    signal.SIGABRT: ("crashed", "the action crashed (aborted)"),
    signal.SIGBUS: ("crashed", "the action crashed (bus error)"),
}


SETUP_FAILED = {
    71: "confining the child failed",
    72: "the zygote was gone before the call started",
    SCRATCH_FULL: "the sandbox's scratch space (GATEWAY_SANDBOX_TMP_MB) is full: a call running "
    "beside this one filled it; the action did not run",
}
"""Exit codes of a spare that failed before the action ran (see ``worker.run_spare``).

Only before it acknowledged the call (``TAKEN``): once the action runs, it can
exit with any status itself (``os._exit(71)``), so then the code is its own."""


def exit_failure(
    status: Exited,
    limits: Limits,
    started: float,
    *,
    taken: bool = False,
    oom_bound: int | None = None,
) -> ToolResult:
    """The tool error for a child that ended without a result (signal, exit code).

    ``taken``: the child acknowledged the call, so the action ran. Exit codes are
    reported as what they may mean and no more: the action can exit with any code,
    those the sandbox itself uses included. ``oom_bound``: the child was the OOM
    killer's, in a memory cgroup of that many bytes (see ``oom_failure``).
    """
    code = status.status
    if oom_bound is not None and code == -signal.SIGKILL:
        return oom_failure(started, limits, oom_bound)
    if code in SETUP_FAILED and not taken:
        return failure(
            started, "sandbox_error", f"the sandbox could not set up the call: {SETUP_FAILED[code]}"
        )
    if code == RESULT_LOST:
        # The child exits 74 when its result socket is gone; an action's own os._exit(74)
        # looks the same from here, and nothing the child could add would prove otherwise.
        return failure(
            started,
            "crashed",
            f"the action ended with exit status {RESULT_LOST} and no result: it closed or "
            "replaced file descriptor 3 (the sandbox's result channel, so its result was "
            f"lost), or it exited with status {RESULT_LOST} itself (os._exit({RESULT_LOST}))",
        )
    if code < 0:
        signum = -code
        error_type, template = _SIGNAL_ERRORS.get(
            signal.Signals(signum) if signum in signal.valid_signals() else signal.SIGKILL,
            ("crashed", "the action was killed by signal {name}"),
        )
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        if signum == signal.SIGKILL:
            error_type = "killed"
            template = (
                "the action was killed (SIGKILL): memory ({memory} MB), CPU ({cpu}s) "
                "or the process limit"
            )
        message = template.format(name=name, cpu=limits.cpu_seconds, memory=limits.memory_mb)
        return failure(started, error_type, message)
    return failure(started, "crashed", f"the action exited with status {code} without a result")


def oom_failure(started: float, limits: Limits, bound: int) -> ToolResult:
    """The tool error for a call's child the OOM killer killed in its zygote's memory cgroup.

    ``bound``: that cgroup's limit in bytes. The same ``memory`` error type as a call
    past its own address space (``RLIMIT_AS``), but the message does not blame the
    call: the OOM killer takes the call with the most resident memory, which may not
    be the one that filled the bound with memory files it does not map.
    """
    return failure(
        started,
        "memory",
        f"the call was killed when the sandbox's memory was full ({bound >> 20} MB for "
        "the calls running at once, memory files and /dev/shm included, mapped or not): "
        f"this call (memory_mb {limits.memory_mb}) or another running beside it used it up",
    )


def redact(
    result: ToolResult, secrets: dict[str, str], action: str, correlation_id: str
) -> ToolResult:
    """Replace declared secret values in what goes back to the model; log failures."""
    output = mask(result.output, secrets)
    if result.status != "succeeded":
        log.info(
            "sandbox.call_failed",
            action=action,
            error_type=result.error_type,
            status=result.status,
            correlation_id=correlation_id,
            duration_ms=result.duration_ms,
        )
    if output == result.output:
        return result
    return msgspec.structs.replace(result, output=output)


def call_outcome(
    request: CallRequest,
    action: Action,
    limits: Limits,
    reader: asyncio.Future[bytes | None],
    status: Exited | None,
    output: OutputReader,
    started: float,
    *,
    taken: bool = False,
    oom_bound: int | None = None,
) -> ToolResult:
    """The ``ToolResult`` of a finished call: its result frame, or why there is none.

    ``reader`` read the child's result frame, ``status`` is how the child exited
    (None when it answered and is still exiting), ``taken``: the child
    acknowledged the call, ``oom_bound``: the OOM killer killed it (see
    ``exit_failure``). A frame over the limit got the call killed; a broken socket
    counts as no answer (the exit status says why).
    """
    body: bytes | None = None
    too_large: int | None = None
    if reader.done() and not reader.cancelled():
        exc = reader.exception()
        if isinstance(exc, TooLarge):
            too_large = exc.size
        elif exc is None:
            body = reader.result()
    if output.data or output.dropped:
        # Masked whole before its tail is taken; its end cut mid-secret if the cap dropped bytes.
        masking = mask_cut if output.dropped else mask
        log.debug(
            "sandbox.output",
            action=action.name,
            output=masking(output.text(), request.call.masked())[-2000:],
            dropped=output.dropped,
        )
    if too_large is not None:
        return failure(
            started,
            "output_too_large",
            f"the action's result ({too_large} bytes) is over the {limits.max_output_kb} KB limit",
        )
    if body is not None:
        try:
            res = msgspec.json.decode(body, type=CallResult)
        except (msgspec.DecodeError, RecursionError):  # msgspec's depth guard: RecursionError
            return failure(started, "sandbox_error", "the action sent an invalid result")
        masked = request.call.masked()
        res = _within_limits(_masked(res, masked), limits)
        return from_result(res, action, started, masked)
    if status is None:
        return failure(started, "crashed", "the action ended without a result")
    return exit_failure(status, limits, started, taken=taken, oom_bound=oom_bound)


def _masked(res: CallResult, secrets: dict[str, str]) -> CallResult:
    """``res`` with ``secrets`` masked, before ``_within_limits`` cuts it (a frame the action
    wrote itself was not masked, nor cut, by the child)."""
    if not secrets:
        return res
    return msgspec.structs.replace(
        res,
        output=mask(res.output, secrets),
        message=mask(res.message, secrets),
        traceback=mask(res.traceback, secrets),
    )


_NOTE_ROOM = 128
"""Bytes the truncation note adds past ``max_output_kb`` (``protocol.output_result``)."""


def _within_limits(res: CallResult, limits: Limits) -> CallResult:
    """``res`` cut as the child cuts it (``worker._execute``): the frame comes from the
    action's process, and an action can write one of its own on fd 3, uncut (its size is
    then bounded only by the frame cap, several times ``max_output_kb``)."""
    if res.ok:
        limit = limits.max_output_kb * 1024 + _NOTE_ROOM
        if len(res.output) * 4 > limit and len(res.output.encode("utf-8", "replace")) > limit:
            return output_result(res.output, limits.max_output_kb)
        return res
    if len(res.message) > MESSAGE_CHARS or len(res.traceback) > TRACEBACK_CHARS:
        return msgspec.structs.replace(
            res, message=res.message[:MESSAGE_CHARS], traceback=res.traceback[-TRACEBACK_CHARS:]
        )
    return res


def answered(reader: asyncio.Future[bytes | None]) -> bool:
    """Whether the child's result frame arrived complete."""
    return (
        reader.done()
        and not reader.cancelled()
        and reader.exception() is None
        and reader.result() is not None
    )
