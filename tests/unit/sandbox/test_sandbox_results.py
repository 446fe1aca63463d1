"""Declared secrets are masked in what goes back to the model, in the forms they travel in."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from gateway.sandbox.results import mask

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


def test_short_values_and_other_text_are_left_alone() -> None:
    """Values under four characters are not masked (they would blank out ordinary words)."""
    assert mask("the id is abc", {"X": "abc"}) == "the id is abc"
    assert mask("nothing secret here", {"API_KEY": SECRET}) == "nothing secret here"
