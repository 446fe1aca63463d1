"""The browser origins an operator allows (``GATEWAY_CORS_ORIGINS``): one rule, used everywhere.

An entry is ``*`` (any origin), an origin as a browser sends it
(``scheme://host[:port]``), or a subdomain wildcard ``scheme://*.domain[:port]``
in which ``*`` is exactly one DNS label: ``https://*.example.com`` matches
``https://app.example.com``, never ``https://example.com``,
``https://a.b.example.com``, ``https://evilexample.com`` nor
``https://example.com.evil.net``. A ``*`` anywhere else (``https://app-*.example.com``,
``https://example.*``, a port or a scheme), or before a single label
(``https://*.com``), is refused: Litestar's own rule (``*`` as ``.*``) would
let such entries match hosts the operator does not own.

Settings check and normalize the entries (``parse_origin``); ``AllowedOrigins``
compiles them into the one regular expression that both the gateway's Origin
check (``gateway.api.middleware``) and Litestar's CORS (``allow_origin_regex``,
``gateway.app``) match with, so the two never disagree. Browsers send scheme
and host in lowercase; entries are lowercased the same way. Imports nothing
of the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["AllowedOrigins", "parse_origin"]

# What a browser sends as ``Origin``: scheme://host[:port], nothing after it.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#\s*]+")
_WILDCARD = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)\*(?P<rest>(?:\.[a-z0-9-]+){2,}(?::[0-9]{1,5})?)"
)
# One DNS label as browsers send it (lowercase, punycode for other scripts): no dot.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"


def parse_origin(entry: str) -> str:
    """``entry`` checked and lowercased, as ``AllowedOrigins`` takes it.

    Raises:
        ValueError: not ``*``, an origin, or a ``scheme://*.domain[:port]`` wildcard; the
            message says what is accepted (the caller names the variable).
    """
    if entry == "*":
        return entry
    origin = entry.lower()
    if _ORIGIN.fullmatch(origin) or _WILDCARD.fullmatch(origin):
        return origin
    if "*" in entry:
        raise ValueError(
            f"entry {entry!r}: a wildcard must be the whole first label of a host with at least "
            "two more labels, as in https://*.example.com (it matches one label: "
            "https://app.example.com, not https://example.com or https://a.b.example.com)"
        )
    raise ValueError(
        f"takes origins as a browser sends them, scheme://host[:port] "
        f"(e.g. https://app.example.com), https://*.example.com, or *; got {entry!r}"
    )


class AllowedOrigins:
    """The allowed origins, compiled (entries as ``parse_origin`` returns them).

    Attributes:
        any: ``*`` is among them.
        regex: the pattern (for ``re.fullmatch``) an allowed ``Origin`` matches; None when
            there is no entry or ``any`` is set.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        entries = tuple(entries)
        self.any = "*" in entries
        self._empty = not entries
        origins = [_entry_regex(e) for e in entries if e != "*"]
        hosts = [_entry_regex(e.partition("://")[2]) for e in entries if e != "*"]
        self.regex = f"(?:{'|'.join(origins)})" if origins and not self.any else None
        self._origin = re.compile(self.regex) if self.regex else None
        self._host = re.compile(f"(?:{'|'.join(hosts)})") if hosts else None

    def __bool__(self) -> bool:
        return not self._empty

    def allows(self, origin: str) -> bool:
        """Whether a browser page of ``origin`` (an ``Origin`` header) is allowed."""
        return self.any or (self._origin is not None and self._origin.fullmatch(origin) is not None)

    def allows_host(self, host: str) -> bool:
        """Whether ``host`` (a ``Host`` header) is the host[:port] of an allowed origin."""
        if self.any:
            return True
        return self._host is not None and self._host.fullmatch(host.lower()) is not None


def _entry_regex(entry: str) -> str:
    """The pattern of one entry (an origin, or an authority when the scheme is cut off)."""
    star = entry.find("*")
    if star < 0:
        return re.escape(entry)
    return re.escape(entry[:star]) + _LABEL + re.escape(entry[star + 1 :])
