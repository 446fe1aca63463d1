"""Pure pieces of the sandbox: frames, limits, and how exits map to tool errors."""

from __future__ import annotations

import json
import signal

import msgspec
import pytest

from gateway.executors.python import PythonConfig
from gateway.manifests.model import Action, CallContext, SandboxLimits
from gateway.sandbox import results
from gateway.sandbox import supervisor as sup
from gateway.sandbox.protocol import (
    HEADER,
    CallRequest,
    Exited,
    Kill,
    Limits,
    Start,
    decode_control,
    encode,
    frame,
)


def test_control_messages_round_trip() -> None:
    """Control messages are tagged JSON and decode back to the same Struct."""
    start = Start(id=7, limits=Limits(memory_mb=64), uid=64001, gid=65534)
    assert decode_control(encode(start)) == start
    assert decode_control(encode(Kill(id=7))) == Kill(id=7)
    assert json.loads(encode(Exited(id=7, status=-9)))["type"] == "exited"


def test_frames_are_length_prefixed_json() -> None:
    """A call frame is a 4-byte big-endian length followed by JSON (never pickle)."""
    request = CallRequest(kind="m:K", config={"a": 1}, call=CallContext(action="x", arguments={}))
    data = frame(request)
    (size,) = HEADER.unpack(data[: HEADER.size])
    assert size == len(data) - HEADER.size
    assert msgspec.json.decode(data[HEADER.size :], type=CallRequest) == request


def test_limits_from_action() -> None:
    """CPU seconds default to just above the timeout; other limits come from `sandbox`."""
    action = Action(
        name="a",
        description="d",
        timeout=2.5,
        sandbox=SandboxLimits(memory_mb=128, max_output_kb=8),
        kind_key="python",
        config=PythonConfig(function="m:f"),
    )
    limits = results.limits_for(action)
    assert (limits.cpu_seconds, limits.memory_mb, limits.max_output_kb) == (4, 128, 8)


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (-signal.SIGABRT, "crashed"),
        (-signal.SIGSEGV, "crashed"),
        (-signal.SIGXCPU, "cpu_limit"),
        (-signal.SIGKILL, "killed"),
        (3, "crashed"),
        (71, "sandbox_error"),  # confining the spare failed: not the action's fault
        (72, "sandbox_error"),
    ],
)
def test_exit_status_mapping(status: int, error_type: str) -> None:
    """A child that ended without a result maps to a typed, failed ToolResult."""
    result = results.exit_failure(Exited(id=1, status=status), Limits(), 0.0)
    assert result.status == "failed"
    assert result.error_type == error_type
    assert json.loads(result.output)["error"]["type"] == error_type


def test_secret_values_are_redacted() -> None:
    """Declared secret values never reach the model in a tool output."""
    result = results.failure(0.0, "http_status", "HTTP 401 for key=abcd-1234-secret")
    redacted = results.redact(result, {"K": "abcd-1234-secret"}, "a", "cid")
    assert "abcd-1234-secret" not in redacted.output
    assert "[redacted]" in redacted.output


def test_zygote_keys_group_by_network_and_preload() -> None:
    """Python actions share the light zygotes; http/sql get zygotes with their libraries."""
    from gateway.executors.http import HttpConfig

    py = Action(name="p", description="d", kind_key="python", config=PythonConfig(function="m:f"))
    web = Action(name="h", description="d", kind_key="http", config=HttpConfig(url="https://x"))
    assert sup._key(py) == (False, ())
    assert sup._key(web)[0] is True
    assert "httpx" in sup._key(web)[1]
