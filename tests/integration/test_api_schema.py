"""schemathesis against the live /schema: no 500s, every response matches its documented schema."""

from __future__ import annotations

import httpx
import schemathesis
from conftest import GatewayServer
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


def test_openapi_schema_is_served(api_server: GatewayServer) -> None:
    """/schema/openapi.json documents the chat, thread and OpenAI-compatible routes, and the
    JSON answer's tool calls with their ``arguments``."""
    spec = httpx.get(f"{api_server.url}/schema/openapi.json").json()
    for path in ("/chat", "/start", "/threads/{thread_id}/messages", "/v1/chat/completions"):
        assert path in spec["paths"], path
    assert "ErrorBody" in spec["components"]["schemas"]
    schemas = spec["components"]["schemas"]
    tool_call = schemas["ChatResponse"]["properties"]["tool_calls"]["items"]["$ref"]
    assert "arguments" in schemas[tool_call.rsplit("/", 1)[1]]["required"]


def test_schemathesis_finds_no_server_error_or_schema_violation(api_server: GatewayServer) -> None:
    """Generated requests to every documented operation never get a 500 or an undocumented shape."""
    schema = schemathesis.openapi.from_url(f"{api_server.url}/schema/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/manifests/reload":
            continue  # reloading on every example is slow and proves nothing here
        operations += 1

        @settings(
            max_examples=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call(base_url=api_server.url, timeout=20)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert operations >= 15
    assert not failures, "\n\n".join(failures)
