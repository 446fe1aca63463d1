"""What a child's answer becomes: declared secrets masked, a kind's timeout trusted or not."""

from __future__ import annotations

import base64
import html
import json
import re
import time
import urllib.parse

import pytest

from gateway.executors.http import HttpConfig
from gateway.executors.python import PythonConfig
from gateway.executors.sql import SqlConfig
from gateway.manifests.model import Action, ActionConfig
from gateway.sandbox._mask import mask_cut
from gateway.sandbox.protocol import CallResult
from gateway.sandbox.results import from_result, mask

SECRET = "s3cr/et+key=42&x"


@pytest.mark.parametrize(
    "leak",
    [
        SECRET,
        urllib.parse.quote(SECRET, safe=""),
        urllib.parse.quote_plus(SECRET),
        base64.b64encode(SECRET.encode()).decode(),
        json.dumps({"token": SECRET}),
        repr(SECRET.encode()),
        f"GET https://api.example/v1?key={urllib.parse.quote(SECRET, safe='')}: 401",
    ],
    ids=["plain", "percent", "plus", "base64", "json", "bytes-repr", "url"],
)
def test_secret_forms_are_masked(leak: str) -> None:
    """A secret in plain, URL-encoded, base64, JSON-escaped or bytes-repr form is redacted."""
    masked = mask(f"error: {leak} end", {"API_KEY": SECRET})
    assert "[redacted]" in masked
    for form in (SECRET, urllib.parse.quote(SECRET, safe=""), "s3cr"):
        assert form not in masked


ESCAPED = "sk/live/9f8A<7b>&6C'5d\""


@pytest.mark.parametrize(
    "leak",
    [
        json.dumps({"error": ESCAPED}).replace("/", "\\/"),
        json.dumps({"error": ESCAPED}, ensure_ascii=False).replace("/", "\\/"),
        json.dumps({"error": ESCAPED})
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e"),
        json.dumps({"error": ESCAPED})
        .replace("/", "\\/")
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e"),
        html.escape(ESCAPED),
        html.escape(ESCAPED).replace("&#x27;", "&#39;").replace("/", "&#x2F;"),
        html.escape(ESCAPED).replace("/", "&#47;"),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), urllib.parse.quote(ESCAPED, safe="")),
        re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), urllib.parse.quote_plus(ESCAPED)),
    ],
    ids=[
        "json-slash",
        "json-slash-unicode",
        "json-go",
        "json-go-slash",
        "html",
        "html-hex-slash",
        "html-decimal-slash",
        "percent-lower",
        "plus-lower",
    ],
)
def test_escaped_secret_forms_are_masked(leak: str) -> None:
    """A secret as APIs escape it in an error (PHP's ``\\/``, Go's ``\\u0026``, HTML
    entities, lowercase percent-encoding) is redacted."""
    masked = mask(f"error: {leak} end", {"API_KEY": ESCAPED})
    assert "[redacted]" in masked
    assert "9f8a" not in masked.lower(), masked


def test_short_values_and_other_text_are_left_alone() -> None:
    """Values under four characters are not masked (they would blank out ordinary words)."""
    assert mask("the id is abc", {"X": "abc"}) == "the id is abc"
    assert mask("nothing secret here", {"API_KEY": SECRET}) == "nothing secret here"


@pytest.mark.parametrize(
    ("config", "status"),
    [
        (HttpConfig(url="http://127.0.0.1:9/x"), "timed_out"),
        (SqlConfig(database="shop", query="SELECT 1"), "timed_out"),
        (PythonConfig(function="actions.x:f"), "failed"),
    ],
    ids=["http", "sql", "python"],
)
def test_a_timeout_error_is_timed_out_only_from_the_gateways_own_kinds(
    config: ActionConfig, status: str
) -> None:
    """A child's ``timeout`` error from http or sql (the body's deadline, a statement
    timeout) is ``timed_out``, as inline; action code cannot claim it (``failed``)."""
    action = Action(name="a", description="d", kind_key=config.key, config=config)
    res = CallResult(ok=False, error_type="timeout", message="the request took too long")
    result = from_result(res, action, time.perf_counter())
    assert (result.status, result.error_type) == (status, "timeout")
    other = from_result(CallResult(ok=False, error_type="http_status", message="404"), action, 0)
    assert other.status == "failed"


def test_a_secret_cut_at_the_end_is_masked() -> None:
    """Text cut mid-secret (a capped pipe) ends with the secret's start: masked too, as
    are whole secrets; an end that is no secret's start, or under 4 characters of one,
    stays."""
    secrets = {"API_KEY": SECRET}
    assert mask_cut(f"a {SECRET} b {SECRET[:7]}", secrets) == "a [redacted] b [redacted]"
    assert mask_cut(f"b {SECRET[:3]}", secrets) == f"b {SECRET[:3]}"
    assert mask_cut("plain text", secrets) == "plain text"
