"""Masking declared secret values in text that leaves a call (result, error, log).

Shared by both sides of the sandbox: the child masks what it sends *before*
cutting it to its limits (a secret straddling a cut would otherwise lose its
first or last characters and no longer match), and the server masks again
what it receives, before its own cuts. Imports only the standard library.
"""

from __future__ import annotations

import base64
import html
import json
import re
import urllib.parse
from collections.abc import Mapping

__all__ = ["MIN_MASKED", "mask", "mask_cut"]

MIN_MASKED = 4
"""Shortest secret value masked: a shorter one would mangle ordinary text (``"id"``)."""


def mask(text: str, secrets: Mapping[str, str]) -> str:
    """``text`` with every declared secret value (``MIN_MASKED``+ characters) replaced.

    Also the forms a secret takes on its way through an HTTP call or an error
    message: percent-encoded (URL query), base64 of the value itself, JSON-escaped
    (with or without ``\\uXXXX`` for non-ASCII text) or repr-escaped (``b'...'``
    in an exception). A secret combined with other text before encoding
    (``base64("user:" + secret)``) cannot be recognised.
    Mask before cutting ``text`` to a length, never after.
    """
    for value in secrets.values():
        if len(value) < MIN_MASKED:
            continue
        for form in _forms(value):
            if form in text:
                text = text.replace(form, "[redacted]")
    return text


def mask_cut(text: str, secrets: Mapping[str, str]) -> str:
    """``mask``, for ``text`` that was already cut at its end (a capped pipe's first bytes).

    A secret the cut went through ends ``text`` with its first characters only:
    an end that is the start of a secret's form (``MIN_MASKED``+ characters of
    it) is masked too.
    """
    text = mask(text, secrets)
    for value in secrets.values():
        if len(value) < MIN_MASKED:
            continue
        for form in _forms(value):
            # Only where the form's first character is (the tail, scanned once).
            tail = text[-(len(form) - 1) :]
            start = tail.find(form[0])
            while 0 <= start <= len(tail) - MIN_MASKED:
                if form.startswith(tail[start:]):
                    return text[: len(text) - len(tail) + start] + "[redacted]"
                start = tail.find(form[0], start + 1)
    return text


def _forms(value: str) -> list[str]:
    raw = value.encode()
    percent = {urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    forms = {
        value,
        *percent,
        # Lowercase hex digits (``%2f``): as some clients and servers write them.
        *(_PERCENT.sub(lambda m: m.group().lower(), f) for f in percent),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        *_json_forms(value),
        *_html_forms(value),
        repr(value)[1:-1],
        repr(raw)[2:-1],
    }
    # Longest first, so a form containing another is replaced whole.
    return sorted((f for f in forms if len(f) >= MIN_MASKED), key=len, reverse=True)


_PERCENT = re.compile(r"%[0-9A-F]{2}")

_GO_ESCAPES = {"&": "\\u0026", "<": "\\u003c", ">": "\\u003e"}
"""What Go's ``encoding/json`` writes for HTML-sensitive characters (by default)."""


def _json_forms(value: str) -> set[str]:
    """A string's JSON spellings: non-ASCII escaped or as is (msgspec), ``/`` as ``\\/``
    (PHP's ``json_encode``, many APIs) or not, ``&<>`` as Go's ``\\u0026`` or not."""
    forms = set()
    for ascii_only in (True, False):
        text = json.dumps(value, ensure_ascii=ascii_only)[1:-1]
        for slash in (False, True):
            slashed = text.replace("/", "\\/") if slash else text
            forms.add(slashed)
            forms.add("".join(_GO_ESCAPES.get(c, c) for c in slashed))
    return forms


def _html_forms(value: str) -> set[str]:
    """A string's HTML-escaped spellings (an error page quoting it): ``&amp; &lt; &gt;
    &quot;``, the apostrophe as ``&#39;`` or ``&#x27;``, ``/`` as is, ``&#x2F;`` or ``&#47;``."""
    base = html.escape(value, quote=False).replace('"', "&quot;")
    return {
        base.replace("'", apostrophe).replace("/", slash)
        for apostrophe in ("'", "&#39;", "&#x27;")
        for slash in ("/", "&#x2F;", "&#47;")
    }
