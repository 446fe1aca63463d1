"""How a failed run's error becomes the HTTP status and error body a client gets."""

from __future__ import annotations

import pytest

from gateway.api.chat import raise_run_error
from gateway.api.errors import status_and_type
from gateway.errors import GatewayError


def _answer(error_type: str, message: str) -> tuple[int, str, str]:
    try:
        raise_run_error(error_type, message)
    except GatewayError as exc:
        return status_and_type(exc)
    raise AssertionError("raise_run_error returned")


@pytest.mark.parametrize(
    ("error_type", "message", "expected"),
    [
        ("provider_error", "model provider 'x' timed out", 502),
        ("cancelled", "the run was cancelled", 409),
        ("not_ready", "the answer could not be stored; try again", 503),
        ("interrupted", "the gateway stopped during the run", 503),
        ("not_started", "the run could not be stored", 503),
    ],
)
def test_a_run_failure_keeps_its_type_and_message(
    error_type: str, message: str, expected: int
) -> None:
    """Each failure the client can act on keeps its type and message with its own status.

    An ``interrupted`` run (its replica lost the database for a whole lease and
    another took the thread over) answered 500 ``internal_error`` "internal error",
    logged as an unhandled error: the client could not tell it may simply retry.
    """
    assert _answer(error_type, message) == (expected, error_type, message)


def test_an_internal_error_says_nothing_more() -> None:
    """A run that crashed is a 500 whose message carries nothing of the crash."""
    assert _answer("internal_error", "the run failed unexpectedly") == (
        500,
        "internal_error",
        "internal error",
    )
