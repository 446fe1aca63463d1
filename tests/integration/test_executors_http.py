"""HTTP actions against a real HTTP server on 127.0.0.1 (in-process and through the sandbox)."""

from __future__ import annotations

import asyncio
import functools
import html
import json
import re
import time
import tracemalloc
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.executors._common import ToolError
from gateway.executors._pools import Pools
from gateway.executors.http import HttpConfig
from gateway.executors.runner import SandboxRunner
from gateway.manifests.catalog import Catalog
from gateway.manifests.loader import load_catalog
from gateway.manifests.model import Action, CallContext
from gateway.sandbox.supervisor import Supervisor
from gateway.settings import Settings
from tests._http import serving


@functools.cache
def _encoded(mb: int, codings: tuple[str, ...]) -> bytes:
    """``mb`` MiB of ``"ok"`` (0: the word ``hello``) with each content coding applied in turn."""
    body = b"ok" * (mb * 512 * 1024) if mb else b"hello"
    for coding in codings:
        wbits = {"gzip": 31, "deflate": 15, "rawdeflate": -15}[coding]
        packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
        body = packer.compress(body) + packer.flush()
    return body


_ECHOED_AS: dict[str, Any] = {
    "plain": lambda key: key,
    # PHP's json_encode and many APIs: "/" escaped as "\\/".
    "json_slash": lambda key: json.dumps({"error": key}).replace("/", "\\/"),
    # Go's encoding/json: "&<>" as \\u0026 \\u003c \\u003e.
    "json_go": lambda key: (
        json.dumps({"error": key})
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
    ),
    "html": lambda key: html.escape(key).replace("/", "&#x2F;"),
    "html_decimal": lambda key: (
        html.escape(key, quote=False).replace("'", "&#39;").replace("/", "&#47;")
    ),
    "percent_lower": lambda key: re.sub(
        "%[0-9A-F]{2}", lambda m: m.group().lower(), urllib.parse.quote(key, safe="")
    ),
}
"""How ``/reject`` echoes the key it refuses (``?as=``): the spellings APIs quote it in."""


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        parsed = urllib.parse.urlsplit(self.path)
        if parsed.path.startswith("/status/"):
            self._send(int(parsed.path.rsplit("/", 1)[1]), b"  not   here\n" * 50, "text/plain")
            return
        if parsed.path == "/reject":  # an API echoing the key it refuses, after some text
            query = urllib.parse.parse_qs(parsed.query)
            key = _ECHOED_AS[query.get("as", ["plain"])[0]](urllib.parse.parse_qs(body)["key"][0])
            self._send(401, ("x" * int(query["pad"][0]) + key).encode(), "text/plain")
            return
        if parsed.path == "/slow":
            time.sleep(float(urllib.parse.parse_qs(parsed.query)["s"][0]))
        if parsed.path == "/big":
            self._send(200, b"x" * (3 * 1024 * 1024), "text/plain")
            return
        if parsed.path == "/encoded":
            query = urllib.parse.parse_qs(parsed.query)
            codings = query["codings"][0].split(",")
            body = _encoded(int(query["mb"][0]), tuple(codings))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            names = [c.replace("rawdeflate", "deflate") for c in codings]
            self.send_header("Content-Encoding", ", ".join(names))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if parsed.path == "/text":
            self._send(200, b"plain words", "text/plain")
            return
        if parsed.path == "/deep":
            self._send(200, b"[" * 5000 + b"]" * 5000)
            return
        if parsed.path == "/brotli":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Encoding", "br")
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"\x0b\x02\x80x")
            return
        if parsed.path in ("/redirect", "/loop"):
            query = urllib.parse.parse_qs(parsed.query)
            self.send_response(int(query.get("code", ["302"])[0]))
            self.send_header("Location", query.get("to", ["/loop"])[0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        payload = {
            "method": self.command,
            "raw_path": parsed.path,
            "query": urllib.parse.parse_qs(parsed.query),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
            "data": {"items": [{"name": "first"}, {"name": "second"}]},
        }
        self._send(200, json.dumps(payload).encode())

    do_GET = do_POST = do_PUT = _echo


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A threaded HTTP server on a free loopback port; yields its base URL."""
    with serving(_Handler) as url:
        yield url


def _run(
    config: HttpConfig, timeout: float = 5, secrets: dict[str, str] | None = None, **arguments: Any
) -> Any:
    return config.run(
        CallContext(action="h", arguments=arguments, secrets=secrets or {}, timeout=timeout)
    )


def _run_inline(config: HttpConfig, secrets: dict[str, str] | None = None, **arguments: Any) -> Any:
    async def main() -> Any:
        pools = Pools()
        try:
            call = CallContext(action="h", arguments=arguments, secrets=secrets or {}, timeout=10)
            return await config.run_inline(call, pools)
        finally:
            await pools.aclose()

    return asyncio.run(main())


def test_url_values_are_percent_encoded(server: str) -> None:
    """Argument values in the URL path cannot add segments, queries or fragments."""
    config = HttpConfig(url=server + "/cities/{{ city }}/x")
    result = _run(config, city="../admin?x=1#frag")
    assert result["raw_path"] == "/cities/..%2Fadmin%3Fx%3D1%23frag/x"
    assert result["query"] == {}


@pytest.mark.parametrize("value", [".", "..", "..."])
def test_dot_segment_values_stay_in_their_segment(server: str, value: str) -> None:
    """A value of only dots in the URL path is encoded, so it cannot climb out of its segment."""
    config = HttpConfig(url=server + "/api/users/{{ id }}/profile")
    result = _run(config, id=value)
    assert result["raw_path"] == "/api/users/" + "%2E" * len(value) + "/profile"


def test_query_headers_and_secrets(server: str) -> None:
    """Query values and headers are templates over arguments and declared secrets."""
    config = HttpConfig(
        url=server + "/q",
        query={"q": "{{ term }}", "unit": "{{ unit }}"},
        headers={"Authorization": "Bearer {{ secrets.API_TOKEN }}"},
    )
    result = _run(config, secrets={"API_TOKEN": "tok-abc"}, term="a&b=c")
    assert result["query"] == {"q": ["a&b=c"]}  # unit was not given: omitted
    assert result["headers"]["authorization"] == "Bearer tok-abc"


@pytest.mark.parametrize("inline", [False, True], ids=["sandboxed", "inline"])
def test_values_in_text_templates_are_spelled_as_json(server: str, inline: bool) -> None:
    """Booleans, lists and numbers in the URL, a query value, a header or a text body
    were written in Python's spelling (``False``, ``[1, 2]``, ``1e+20``): JSON's now
    (``false``, ``[1,2]``, ``100000000000000000000``); a whole JSON leaf keeps its type."""
    config = HttpConfig(
        url=server + "/items/{{ closed }}",
        method="POST",
        query={"closed": "{{ closed }}", "ids": "{{ ids }}", "limit": "{{ limit }}"},
        headers={"X-Filter": "{{ filter }}", "X-Ratio": "{{ ratio }}"},
        json={"closed": "{{ closed }}", "text": "closed={{ closed }}", "none": "{{ gone }}"},
    )
    run = _run_inline if inline else _run
    got = run(
        config,
        closed=False,
        ids=[1, 2],
        limit=1e20,
        filter={"a": [True, None]},
        ratio=0.5,
        gone=None,
    )
    assert got["raw_path"] == "/items/false"
    assert got["query"] == {
        "closed": ["false"],
        "ids": ["[1,2]"],
        "limit": ["100000000000000000000"],
    }
    assert got["headers"]["x-filter"] == '{"a":[true,null]}'
    assert got["headers"]["x-ratio"] == "0.5"
    assert json.loads(got["body"]) == {"closed": False, "text": "closed=false", "none": None}


@pytest.mark.parametrize("inline", [False, True], ids=["sandboxed", "inline"])
def test_query_values_are_added_to_the_urls_own_query(server: str, inline: bool) -> None:
    """A literal query in ``url`` (``?api-version=...``) was dropped whenever ``query:``
    rendered a value (httpx replaces a URL's query with ``params``): both are sent, the
    URL's own first."""
    config = HttpConfig(url=server + "/q?api-version=2024-06-01&x=1", query={"q": "{{ q }}"})
    run = _run_inline if inline else _run
    both = run(config, q="a&b c")
    assert both["query"] == {"api-version": ["2024-06-01"], "x": ["1"], "q": ["a&b c"]}
    assert list(both["query"]) == ["api-version", "x", "q"]
    assert run(config)["query"] == {"api-version": ["2024-06-01"], "x": ["1"]}
    plain = run(HttpConfig(url=server + "/q", query={"q": "{{ q }}"}), q="z")
    assert plain["query"] == {"q": ["z"]}


@pytest.mark.parametrize("inline", [False, True], ids=["sandboxed", "inline"])
def test_a_query_value_replaces_the_urls_own_of_that_name(server: str, inline: bool) -> None:
    """A ``query:`` key also in the URL's literal query replaces it, where it is (the
    others keep their place): both were sent (``?limit=10&x=1&limit=5``), and many
    servers read the first, ignoring the rendered value."""
    config = HttpConfig(
        url=server + "/q?limit=10&x=1&limit=20&a%20b=c", query={"limit": "{{ n }}", "a b": "d"}
    )
    run = _run_inline if inline else _run
    got = run(config, n=5)
    assert got["query"] == {"limit": ["5"], "x": ["1"], "a b": ["d"]}
    assert list(got["query"]) == ["limit", "x", "a b"]
    kept = run(HttpConfig(url=server + "/q?limit=10&x=1", query={"q": "{{ n }}"}), n=5)
    assert list(kept["query"].items()) == [("limit", ["10"]), ("x", ["1"]), ("q", ["5"])]


@pytest.mark.parametrize("inline", [False, True], ids=["sandboxed", "inline"])
@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\n", "a\x00b", "Zürich"])
def test_header_values_a_header_cannot_carry_are_refused(
    server: str, inline: bool, value: str
) -> None:
    """A header value with a line break, a control character or non-ASCII text is refused
    as invalid_arguments naming the header, without echoing the value (or a secret)."""
    config = HttpConfig(url=server + "/h", headers={"X-City": "Bearer {{ secrets.K }} {{ city }}"})
    with pytest.raises(ToolError) as info:
        (_run_inline if inline else _run)(config, secrets={"K": "sekrit-123"}, city=value)
    assert info.value.error_type == "invalid_arguments"
    assert "X-City" in str(info.value)
    assert "sekrit" not in str(info.value)
    assert value not in str(info.value)


@pytest.mark.parametrize("inline", [False, True], ids=["sandboxed", "inline"])
@pytest.mark.parametrize("secret", ["tok-abc\n", "tok-\u00e9t\u00e9"], ids=["newline", "non-ascii"])
def test_a_secret_a_header_cannot_carry_is_a_configuration_error(
    server: str, inline: bool, secret: str
) -> None:
    """A declared secret a header cannot carry (a trailing newline, as a variable read from
    a file often has) was reported as the model's invalid_arguments, telling it to pass the
    text in the query: the model cannot fix the server's variable. It is a
    configuration_error naming the secret (never its value)."""
    config = HttpConfig(
        url=server + "/h", headers={"Authorization": "Bearer {{ secrets.API_TOKEN }}"}
    )
    with pytest.raises(ToolError) as info:
        (_run_inline if inline else _run)(config, secrets={"API_TOKEN": secret}, city="x")
    assert info.value.error_type == "configuration_error", info.value
    message = str(info.value)
    assert "API_TOKEN" in message and "Authorization" in message, message
    assert "tok-" not in message


def test_json_body_keeps_types(server: str) -> None:
    """A JSON leaf that is exactly {{ name }} keeps the argument's type; others are text."""
    config = HttpConfig(
        url=server + "/post",
        method="POST",
        json={
            "count": "{{ n }}",
            "tags": "{{ tags }}",
            "note": "n={{ n }}",
            "fixed": True,
            "nested": {"flag": "{{ flag }}", "missing": "{{ nope }}"},
        },
    )
    result = _run(config, n=3, tags=["a", "b"], flag=False)
    assert json.loads(result["body"]) == {
        "count": 3,
        "tags": ["a", "b"],
        "note": "n=3",
        "fixed": True,
        "nested": {"flag": False, "missing": None},
    }


def test_response_selection(server: str) -> None:
    """`response` selects a dotted path into the JSON response."""
    config = HttpConfig(url=server + "/j", response="data.items.1.name")
    assert _run(config) == "second"
    missing = HttpConfig(url=server + "/j", response="data.nothing")
    with pytest.raises(ToolError) as info:
        _run(missing)
    assert info.value.error_type == "response_selection"


def test_text_response(server: str) -> None:
    """A non-JSON response goes back as text."""
    assert _run(HttpConfig(url=server + "/text")) == "plain words"


def test_json_nested_too_deeply_goes_back_as_text(server: str) -> None:
    """A JSON response nested past msgspec's depth guard raised RecursionError (an
    'exception' with a traceback, not a tool error); now it goes back as text, as any
    response that does not decode, and selecting in it is a response_selection error."""
    for run in (_run, _run_inline):
        assert run(HttpConfig(url=server + "/deep")) == "[" * 5000 + "]" * 5000
        with pytest.raises(ToolError) as info:
            run(HttpConfig(url=server + "/deep", response="a"))
        assert info.value.error_type == "response_selection"


def test_non_2xx_is_a_tool_error(server: str) -> None:
    """A 404 becomes an http_status error with the status and a short excerpt."""
    with pytest.raises(ToolError) as info:
        _run(HttpConfig(url=server + "/status/404"))
    assert info.value.error_type == "http_status"
    assert info.value.detail == {"status": 404}
    message = str(info.value)
    assert message.startswith("HTTP 404 Not Found: not here")
    assert len(message) < 400


class _Elsewhere(BaseHTTPRequestHandler):
    """Another host: records every request it gets."""

    seen: list[dict[str, str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        _Elsewhere.seen.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[str]:
    """A second server, reached by another host name (``localhost``) than ``server``."""
    with serving(_Elsewhere) as url:
        yield url.replace("127.0.0.1", "localhost")


@pytest.mark.parametrize("run", [_run, _run_inline], ids=["sandboxed", "inline"])
def test_redirects_on_the_same_host_are_followed_with_their_headers(server: str, run: Any) -> None:
    """``follow_redirects``: a 303 on the same host is followed (as a GET), headers kept."""
    to = urllib.parse.quote("/landed?x=1")
    config = HttpConfig(
        url=server + "/redirect?code=303&to=" + to,
        method="POST",
        json={"a": 1},
        headers={"X-Api-Key": "{{ secrets.K }}"},
        follow_redirects=True,
    )
    result = run(config, secrets={"K": "sekrit-123"})
    assert (result["method"], result["raw_path"]) == ("GET", "/landed")
    assert result["query"] == {"x": ["1"]}
    assert result["headers"]["x-api-key"] == "sekrit-123"


@pytest.mark.parametrize("run", [_run, _run_inline], ids=["sandboxed", "inline"])
def test_a_redirect_to_another_host_is_refused_and_never_sent(
    server: str, elsewhere: str, run: Any
) -> None:
    """The scheme and host are literal: a redirect cannot carry a call (or its secret
    headers) to a host the model or an open redirect chose."""
    _Elsewhere.seen.clear()
    to = urllib.parse.quote(elsewhere + "/steal")
    config = HttpConfig(
        url=server + "/redirect?to=" + to,
        headers={"X-Api-Key": "{{ secrets.K }}"},
        follow_redirects=True,
    )
    with pytest.raises(ToolError) as info:
        run(config, secrets={"K": "sekrit-123"})
    assert info.value.error_type == "http_redirect"
    assert "another host (http://localhost)" in str(info.value)
    assert info.value.detail == {"status": 302}
    assert _Elsewhere.seen == []


@pytest.mark.parametrize("run", [_run, _run_inline], ids=["sandboxed", "inline"])
def test_redirects_end_after_ten(server: str, run: Any) -> None:
    """A redirect loop fails with ``http_redirect``; without ``follow_redirects`` a 302 is
    an ``http_status`` error, as any other non-2xx."""
    with pytest.raises(ToolError) as info:
        run(HttpConfig(url=server + "/loop", follow_redirects=True))
    assert (info.value.error_type, str(info.value)) == ("http_redirect", "more than 10 redirects")
    with pytest.raises(ToolError) as info:
        run(HttpConfig(url=server + "/loop"))
    assert (info.value.error_type, info.value.detail) == ("http_status", {"status": 302})


def test_read_timeout(server: str) -> None:
    """A server slower than read_timeout fails with http_timeout."""
    config = HttpConfig(url=server + "/slow?s=2", read_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ToolError) as info:
        _run(config)
    assert info.value.error_type == "http_timeout"
    assert time.monotonic() - started < 1.5


def test_big_response_is_refused(server: str) -> None:
    """A response over max_response_kb is refused without reading it all."""
    with pytest.raises(ToolError) as info:
        _run(HttpConfig(url=server + "/big", max_response_kb=64))
    assert info.value.error_type == "response_too_large"


@pytest.mark.parametrize("run", [_run, _run_inline], ids=["sandboxed", "inline"])
@pytest.mark.parametrize("codings", ["gzip", "gzip,gzip"])
def test_compressed_bomb_is_refused_within_the_cap(server: str, run: Any, codings: str) -> None:
    """A small compressed body that inflates far past max_response_kb is refused without
    inflating it: memory stays near the cap (an inline call shares the server's)."""
    _encoded(256, tuple(codings.split(",")))  # built before measuring
    config = HttpConfig(url=server + f"/encoded?mb=256&codings={codings}", max_response_kb=64)
    tracemalloc.start()
    try:
        with pytest.raises(ToolError) as info:
            run(config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.error_type == "response_too_large"
    assert peak < 16 * 1024 * 1024, f"{peak / 1e6:.0f} MB allocated for a 64 KB cap"


@pytest.mark.parametrize("run", [_run, _run_inline], ids=["sandboxed", "inline"])
def test_only_codings_the_action_can_undo_are_asked_for_or_accepted(server: str, run: Any) -> None:
    """The request offers gzip and deflate (httpx would add br and zstd once their packages
    are installed); a body in another coding is an error, never compressed bytes."""
    assert run(HttpConfig(url=server + "/h"))["headers"]["accept-encoding"] == "gzip, deflate"
    with pytest.raises(ToolError) as info:
        run(HttpConfig(url=server + "/brotli", headers={"Accept-Encoding": "br"}))
    assert info.value.error_type == "http_error"
    assert "encoded with br" in str(info.value)


@pytest.mark.parametrize("run", [_run, _run_inline], ids=["sandboxed", "inline"])
@pytest.mark.parametrize("codings", ["gzip", "deflate", "rawdeflate", "gzip,deflate"])
def test_compressed_response_is_decoded(server: str, run: Any, codings: str) -> None:
    """gzip, deflate (zlib or raw) and stacked codings are undone as httpx would."""
    result = run(HttpConfig(url=server + f"/encoded?mb=0&codings={codings}"))
    assert result == "hello"


def test_host_is_literal() -> None:
    """A template in the scheme or host is a validation error on `url`."""
    action = Action(name="h", description="d")
    ctx_root = Path()
    from gateway.manifests.model import CheckContext

    ctx = CheckContext(root=ctx_root, databases=frozenset())
    for url in (
        "https://{{ host }}/x",
        "{{ scheme }}://example.com",
        "https://ex{{ a }}.com/",
        "ftp://example.com/",
    ):
        problems = HttpConfig(url=url).check(action, ctx)
        assert [p.path for p in problems] == ["url"], url
    assert HttpConfig(url="https://example.com/{{ a }}?b={{ b }}").check(action, ctx) == []
    bad = HttpConfig(url="https://example.com/", headers={"X": "{{ oops"}).check(action, ctx)
    assert [p.path for p in bad] == ["headers.X"]


@pytest.fixture
async def sandbox() -> AsyncIterator[Supervisor]:
    """A started supervisor (no catalog: zygotes for http are started on demand)."""
    sup = Supervisor(Settings())
    await sup.start(None)
    try:
        yield sup
    finally:
        await sup.aclose()


@pytest.mark.parametrize("isolation", ["sandbox", "inline"])
async def test_a_secret_echoed_in_an_error_body_is_masked_whole(
    server: str, sandbox: Supervisor, isolation: str
) -> None:
    """A non-2xx body echoing a secret was cut to its excerpt (300 characters) and its
    whitespace collapsed before masking: a secret straddling the cut kept its first
    characters, a multi-line one (a PEM key) its lines, in the error the model reads."""
    root = Path().resolve()
    token = "tok-straddles-the-cut"
    pem = "-----BEGIN KEY-----\nabcdEFGH1234\n-----END KEY-----"

    def act(name: str, secret: str, pad: int) -> Action:
        return Action(
            name=name,
            description="d",
            kind_key="http",
            config=HttpConfig(
                url=f"{server}/reject?pad={pad}",
                method="POST",
                form={"key": "{{ secrets." + secret + " }}"},
            ),
            secrets=[secret],
            isolation=isolation,  # type: ignore[arg-type]
        )

    catalog = Catalog(
        version="t",
        root=root,
        gateway_root=root,
        loaded_at=0,
        actions={"cut": act("cut", "API_TOKEN", 300 - 6), "pem": act("pem", "PEM_KEY", 10)},
    )
    runner = SandboxRunner(sandbox, environ={"API_TOKEN": token, "PEM_KEY": pem})
    try:
        cut = await runner.run(catalog, "cut", {})
        pem_result = await runner.run(catalog, "pem", {})
    finally:
        await runner.aclose()
    assert cut.error_type == pem_result.error_type == "http_status", (cut, pem_result)
    assert json.loads(cut.output)["error"]["message"].startswith("HTTP 401 Unauthorized: xxx")
    assert token[:4] not in cut.output, cut.output[-60:]
    assert "abcdEFGH1234" not in pem_result.output, pem_result.output


@pytest.mark.parametrize("isolation", ["sandbox", "inline"])
async def test_a_secret_an_api_escapes_in_its_error_is_masked(
    server: str, sandbox: Supervisor, isolation: str
) -> None:
    """An API quoting a refused key in JSON with ``/`` as ``\\/`` (PHP), ``&<>`` as Go's
    ``\\u0026``, HTML entities or lowercase percent-encoding reached the model and the
    log unmasked in the error's excerpt: each spelling is masked."""
    root = Path().resolve()
    token = "sk/live/9f8A<7b>&6C'5d"

    def act(form: str) -> Action:
        return Action(
            name=form,
            description="d",
            kind_key="http",
            config=HttpConfig(
                url=f"{server}/reject?pad=3&as={form}",
                method="POST",
                form={"key": "{{ secrets.API_TOKEN }}"},
            ),
            secrets=["API_TOKEN"],
            isolation=isolation,  # type: ignore[arg-type]
        )

    catalog = Catalog(
        version="t",
        root=root,
        gateway_root=root,
        loaded_at=0,
        actions={form: act(form) for form in _ECHOED_AS},
    )
    runner = SandboxRunner(sandbox, environ={"API_TOKEN": token})
    try:
        for form in _ECHOED_AS:
            with capture_logs() as logs:
                result = await runner.run(catalog, form, {})
            assert result.error_type == "http_status", result
            assert "[redacted]" in result.output, (form, result.output)
            seen = result.output + repr(logs)
            assert "9f8A" not in seen, (form, seen)
    finally:
        await runner.aclose()


@pytest.mark.parametrize("isolation", ["sandbox", "inline"])
async def test_a_variable_substituted_into_an_action_is_masked_like_a_secret(
    server: str, sandbox: Supervisor, isolation: str, tmp_path: Path
) -> None:
    """A ``${VAR}`` in an http action (``Authorization: Bearer ${KEY}``, the README's way
    to put a variable anywhere) reached the model unmasked when the endpoint echoed it,
    in a result or an error's excerpt: only declared ``secrets`` were masked. Values a
    variable put into the action's document are masked too."""
    token = "var-token-8c1f2e"
    (tmp_path / "actions.yaml").write_text(
        f"""
kind: action
name: echo
description: Echo the request.
isolation: {isolation}
http:
  url: {server}/echo
  response: headers.authorization
  headers: {{Authorization: "Bearer ${{VAR_TOKEN}}"}}
---
kind: action
name: refused
description: Refused, echoing the key.
isolation: {isolation}
http:
  url: {server}/reject?pad=3
  method: POST
  form: {{key: "${{VAR_TOKEN}}"}}
"""
    )
    catalog = load_catalog(tmp_path, environ={"VAR_TOKEN": token})
    runner = SandboxRunner(sandbox, environ={})
    try:
        echoed = await runner.run(catalog, "echo", {})
        refused = await runner.run(catalog, "refused", {})
    finally:
        await runner.aclose()
    assert echoed.status == "succeeded", echoed
    assert echoed.output == "Bearer [redacted]"
    assert refused.error_type == "http_status", refused
    assert token not in refused.output and "[redacted]" in refused.output, refused.output


async def test_a_variable_in_the_url_origin_is_not_masked(
    server: str, sandbox: Supervisor, tmp_path: Path
) -> None:
    """The scheme and host of an http action's URL are public by contract (literal, never
    the model's): a ``${API_BASE}`` there is configuration, not a secret, and a response
    quoting it (a pagination link) reaches the model as is; one in a header is masked."""
    (tmp_path / "a.yaml").write_text(
        """
kind: action
name: echo
description: Echo the request.
isolation: inline
parameters: {type: object, properties: {next: {type: string}}}
http:
  url: ${API_BASE}/echo
  query: {next: "{{ next }}"}
  headers: {X-Token: "${VAR_TOKEN}"}
"""
    )
    token = "var-token-2f9a7c"
    catalog = load_catalog(tmp_path, environ={"API_BASE": server, "VAR_TOKEN": token})
    runner = SandboxRunner(sandbox, environ={})
    try:
        result = await runner.run(catalog, "echo", {"next": f"{server}/items?page=2"})
    finally:
        await runner.aclose()
    echoed = json.loads(result.output)
    assert echoed["query"] == {"next": [f"{server}/items?page=2"]}, result.output
    assert echoed["headers"]["x-token"] == "[redacted]"


async def test_http_through_sandbox(server: str, sandbox: Supervisor) -> None:
    """An http action runs in the sandbox with a secret header; 4xx and timeouts map cleanly."""
    root = Path().resolve()

    def act(name: str, config: HttpConfig, timeout: float = 5) -> Action:
        return Action(
            name=name,
            description="d",
            kind_key="http",
            config=config,
            secrets=["API_TOKEN"],
            timeout=timeout,
            parameters={"type": "object", "properties": {"city": {"type": "string"}}},
        )

    catalog = Catalog(
        version="t",
        root=root,
        gateway_root=root,
        loaded_at=0,
        actions={
            "get": act(
                "get",
                HttpConfig(
                    url=server + "/w/{{ city }}",
                    headers={"X-Token": "{{ secrets.API_TOKEN }}"},
                    response="headers.x-token",
                ),
            ),
            "missing": act("missing", HttpConfig(url=server + "/status/404")),
            "slow": act("slow", HttpConfig(url=server + "/slow?s=3"), timeout=0.5),
        },
    )
    runner = SandboxRunner(sandbox, environ={"API_TOKEN": "tok-sandboxed-1"})
    got = await runner.run(catalog, "get", {"city": "Paris"})
    assert got.status == "succeeded", got
    assert got.output == "[redacted]"  # the secret arrived, and is not echoed to the model
    missing = await runner.run(catalog, "missing", {})
    assert missing.error_type == "http_status"
    assert json.loads(missing.output)["error"]["status"] == 404
    slow = await runner.run(catalog, "slow", {})
    assert slow.status == "timed_out"
