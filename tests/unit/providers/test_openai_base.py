"""Shared SDK-provider behaviour: backoff schedule, safe error messages, API registration."""

from __future__ import annotations

import httpx2
import openai
import pytest

from gateway.providers._openai_base import (
    API_KINDS,
    IncompleteStream,
    OpenAIProvider,
    ProviderConfig,
    _backoff,
    register_api,
)
from gateway.providers.registry import ProviderRegistry


@pytest.mark.parametrize(
    ("attempt", "base"), [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (9, 8.0)]
)
def test_backoff_doubles_with_jitter_and_a_cap(attempt: int, base: float) -> None:
    """Retry delays double from 0.5 s, cap at 8 s, and are cut by at most 25 % jitter."""
    delays = [_backoff(attempt) for _ in range(200)]
    assert all(0.75 * base <= d <= base for d in delays)
    assert len(set(delays)) > 1


def _provider(api_key: str = "sk-secret-abcdef123456") -> OpenAIProvider:
    return OpenAIProvider(
        ProviderConfig(name="p", base_url="http://127.0.0.1:9/v1", api_key=api_key)
    )


def _status_error(status: int, message: str) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    response = httpx2.Response(status, request=request)
    return openai.APIStatusError(message, response=response, body={"message": message})


def test_status_error_message_names_provider_and_hides_keys() -> None:
    """A status error becomes a ProviderError with the status, and keys are redacted."""
    error = _provider()._error(
        _status_error(401, "Incorrect API key sk-secret-abcdef123456 or sk-proj-zzzzzzzz99")
    )
    assert error.status == 401
    assert error.message.startswith("model provider 'p' answered HTTP 401: ")
    assert "abcdef123456" not in error.message
    assert "zzzzzzzz99" not in error.message


def test_transport_errors_have_fixed_messages() -> None:
    """Timeouts, connection failures and truncated streams get fixed, key-free messages."""
    provider = _provider()
    request = httpx2.Request("POST", "http://127.0.0.1:9/v1/responses")
    timeout = provider._error(openai.APITimeoutError(request=request))
    assert timeout.message == "model provider 'p' timed out after 60s"
    connection = provider._error(openai.APIConnectionError(request=request))
    assert "connection failed" in connection.message
    cut = provider._error(IncompleteStream("the stream ended early"))
    assert cut.message == "model provider 'p': the stream ended early"
    assert cut.status is None


def test_register_api_refuses_duplicates() -> None:
    """The registry's API kinds are registered, and a second class under one is an error."""
    assert ProviderRegistry.__module__ == "gateway.providers.registry"  # imported: kinds registered
    assert set(API_KINDS) == {"chat", "responses"}

    class Duplicate(OpenAIProvider):
        api = "chat"

    with pytest.raises(ValueError, match="already registered"):
        register_api(Duplicate)
