"""GATEWAY_CORS_ORIGINS entries: what is accepted, and what each one matches."""

from __future__ import annotations

import pytest
from litestar.config.cors import CORSConfig

from gateway._origins import AllowedOrigins, parse_origin

WILDCARD = "https://*.example.com"


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://x-1.example.com", True),
        ("https://xn--bcher-kva.example.com", True),  # a punycode label
        ("https://example.com", False),  # the wildcard is one label, never none
        ("https://a.b.example.com", False),  # ... and never two
        ("https://.example.com", False),
        ("https://evilexample.com", False),
        ("https://app.example.com.evil.net", False),
        ("https://evil.net/.example.com", False),
        ("https://evil.net#.example.com", False),
        ("https://-.example.com", False),
        ("http://app.example.com", False),  # another scheme
        ("https://app.example.com:8443", False),  # another port
        ("https://app.example.com:443", False),  # browsers never send the default port
        ("https://app.exampleXcom", False),  # dots are dots
    ],
)
def test_a_subdomain_wildcard_matches_exactly_one_label(origin: str, allowed: bool) -> None:
    """``https://*.example.com`` matches one DNS label in place of ``*`` and nothing else, in
    the gateway's check and in Litestar's CORS alike (both given the same expression)."""
    origins = AllowedOrigins([parse_origin(WILDCARD)])
    assert origins.allows(origin) is allowed
    cors = CORSConfig(allow_origins=[], allow_origin_regex=origins.regex)
    assert cors.is_origin_allowed(origin) is allowed


def test_exact_origins_match_themselves_only_and_star_matches_all() -> None:
    """Exact entries (dots included) match only themselves; ``*`` matches any origin."""
    origins = AllowedOrigins(
        [parse_origin("https://app.example"), parse_origin("http://[::1]:3000")]
    )
    assert origins.allows("https://app.example") and origins.allows("http://[::1]:3000")
    assert not origins.allows("https://appxexample") and not origins.allows("https://app.example2")
    assert AllowedOrigins(["*"]).allows("https://anything.test")
    assert AllowedOrigins(["*"]).regex is None and not AllowedOrigins([]).allows("https://a.b")
    assert not AllowedOrigins([])


def test_hosts_of_allowed_origins_follow_the_same_rule() -> None:
    """The Host a browser sends for an allowed origin matches (a loopback gateway serves it),
    with its port; other hosts do not."""
    origins = AllowedOrigins([parse_origin("http://*.dev.example:8000"), "https://app.example"])
    assert origins.allows_host("web.dev.example:8000")
    assert origins.allows_host("WEB.dev.example:8000")  # Host is not case-sensitive
    assert origins.allows_host("app.example")
    assert not origins.allows_host("dev.example:8000")
    assert not origins.allows_host("a.b.dev.example:8000")
    assert not origins.allows_host("web.dev.example")
    assert not origins.allows_host("evil.example")


@pytest.mark.parametrize(
    "entry",
    [
        "https://app-*.example.com",
        "https://*example.com",
        "https://example.*",
        "https://a.*.example.com",
        "https://*.*.example.com",
        "https://*.com",
        "https://*",
        "*://app.example.com",
        "https://app.example.com:*",
        "https://*.example.com/",
        "**",
    ],
)
def test_any_other_wildcard_is_refused_with_the_rule(entry: str) -> None:
    """A ``*`` anywhere but as the whole first label of a host of two labels or more is
    refused, with the accepted form in the message (Litestar would have read it as ``.*``)."""
    with pytest.raises(ValueError, match=r"https://\*\.example\.com") as caught:
        parse_origin(entry)
    assert repr(entry) in str(caught.value)


def test_entries_are_lowercased_as_browsers_send_origins() -> None:
    """Scheme and host are case-insensitive; browsers send them lowercased, so entries are."""
    assert parse_origin("HTTPS://App.Example.COM") == "https://app.example.com"
    assert parse_origin("https://*.Example.com") == "https://*.example.com"
