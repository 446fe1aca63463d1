"""The ``http`` action kind: one HTTP request built from sandboxed Jinja templates.

String values in ``url``, ``headers``, ``query``, ``json`` and ``form`` are
templates over the call's arguments (by name, and as ``args``) and its
declared ``secrets``. Values rendered into the URL are percent-encoded; a JSON
leaf that is exactly ``{{ name }}`` keeps the argument's JSON type; the
scheme and host of ``url`` are literal (checked at load time and again before
sending), so the model never chooses where a request goes. Connect, read and
total timeouts, a response size cap, non-2xx as a tool error with the status
and a short excerpt, and an optional ``response`` path selecting what goes
back. Compiled templates are cached per process.

``run`` sends the request with a client of its own (in the sandbox child);
``run_inline`` (``isolation: inline``) sends the same request through the
server's shared, pooled ``httpx.AsyncClient`` (``gateway.executors._pools``).
Both share building the request and reading and judging the response.
Imports ``gateway.manifests.model``, ``gateway.executors._common`` and
``gateway.sandbox._mask`` (the standard library only).
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import time
import urllib.parse
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import msgspec

from gateway.executors import _templates
from gateway.executors._common import ToolError
from gateway.executors._templates import compile_template, guarded_environment
from gateway.manifests.model import (
    Action,
    ActionConfig,
    CallContext,
    CheckContext,
    KindProblem,
    register_action_kind,
)
from gateway.sandbox._mask import mask

if TYPE_CHECKING:
    import httpx
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    from gateway.executors._pools import Pools

__all__ = ["HttpConfig", "select"]

_WHOLE = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s*\}\}$")
_ORIGIN = re.compile(r"^(https?)://([^/?#]+)")


def _env(finalize: Any) -> SandboxedEnvironment:
    """A sandboxed environment that evaluates nothing while it compiles.

    Jinja folds constant expressions at compile time (``{{ ("a" * 10**9) | length }}``
    would allocate a gigabyte in ``from_string``), and constant outputs through
    ``finalize``. Compiling happens in the zygote (``sandbox_warm``) and in the
    server (``isolation: inline``), outside any call's limits: ``optimized=False``
    turns the optimizer off, and a ``pass_eval_context`` finalize cannot be
    called before a render, so every expression runs when a call renders it.
    """
    import jinja2

    return guarded_environment(
        autoescape=False,
        undefined=jinja2.ChainableUndefined,
        finalize=jinja2.pass_eval_context(finalize),
        optimized=False,
    )


def _is_undefined(value: Any) -> bool:
    import jinja2

    return isinstance(value, jinja2.Undefined)


@functools.lru_cache(maxsize=1024)
def _template(text: str, *, url: bool) -> jinja2.Template:
    """``text`` compiled once per process (URL values percent-encoded when ``url``)."""
    return compile_template(_envs()[1 if url else 0], text)


_SIZING_FILTERS = frozenset({"center", "format", "indent", "replace", "wordwrap"})
"""Filters whose result an argument's value (a width, a count) can make large."""


@functools.lru_cache(maxsize=256)
def _repeats(texts: tuple[str, ...]) -> bool:
    """Whether any template in ``texts`` has work an argument's value can make long: a
    ``{% for %}``, a call (``range()``, a method, a macro), ``*``, ``**``, ``%`` or a
    sizing filter (``_SIZING_FILTERS``). Only templates with none of these, whose render
    costs their size and their arguments' sizes, render in place on the event loop (a
    template that does not parse counts: its render raises)."""
    import jinja2
    from jinja2 import nodes

    env = _envs()[0]
    for text in texts:
        try:
            tree = env.parse(text)
        except jinja2.TemplateSyntaxError:
            return True
        if next(tree.find_all((nodes.For, nodes.Call, nodes.Mul, nodes.Pow, nodes.Mod)), None):
            return True
        if any(f.name in _SIZING_FILTERS for f in tree.find_all(nodes.Filter)):
            return True
    return False


@functools.lru_cache(maxsize=512)
def _expression(source: str) -> Any:
    """A whole-leaf JSON expression (``{{ name }}``) compiled once per process."""
    return _envs()[0].compile_expression(source, undefined_to_none=True)


@functools.cache
def _envs() -> tuple[SandboxedEnvironment, SandboxedEnvironment]:
    """The (text, URL) rendering environments, built once per process."""
    return _env(_text_finalize), _env(_url_finalize)


def _url_finalize(eval_ctx: Any, value: Any) -> str:
    """A value in the URL, percent-encoded; one made only of dots has its dots encoded too.

    ``quote`` leaves ``.`` as is, and a path segment that is exactly ``.`` or ``..``
    is removed by URL normalization (httpx's included): ``/users/{{ id }}/profile``
    with ``id`` ``..`` would request ``/profile``. ``%2E`` is not a dot segment.
    """
    if value is None or _is_undefined(value):
        return ""
    text = urllib.parse.quote(_spelled(value), safe="")
    if text and text.strip(".") == "":
        return "%2E" * len(text)
    return text


def _with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to its own query string (``?api-version=...``).

    httpx's ``params=`` replaces a URL's query instead: the literal parameters
    of the manifest's URL were dropped whenever ``query:`` rendered a value. A
    rendered key also in the literal query replaces it where it stands (later
    literal ones of that name are dropped): sent twice (``?limit=10&limit=5``),
    many servers read the first. Other literal parameters keep their place and
    spelling; new keys follow them.
    """
    if not params:
        return url
    import urllib.parse

    import httpx

    base, hash_sign, fragment = url.partition("#")
    path, _, query = base.partition("?")
    pieces: list[str] = []
    placed: set[str] = set()
    for piece in query.split("&"):
        if not piece:
            continue
        name = urllib.parse.unquote_plus(piece.partition("=")[0])
        if name in params:
            if name not in placed:
                placed.add(name)
                pieces.append(str(httpx.QueryParams({name: params[name]})))
            continue
        pieces.append(piece)
    rest = {name: value for name, value in params.items() if name not in placed}
    if rest:
        pieces.append(str(httpx.QueryParams(rest)))
    return path + "?" + "&".join(pieces) + hash_sign + fragment


_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")  # fullmatch: `$` also matches before a final "\n"


def _header_value(name: str, value: str, secrets: dict[str, str]) -> str:
    """``value`` if a header can carry it: printable ASCII and tabs only.

    A line break would end the header (h11 refuses it with the whole value in
    its message, secrets included), and non-ASCII text has no agreed encoding
    (httpx fails with a bare ``UnicodeEncodeError``): both are the caller's
    ``invalid_arguments`` here, naming the header, never echoing the value;
    unless a declared secret in ``value`` is what the header cannot carry (a
    trailing newline from a file): the model cannot change that, so it is a
    ``configuration_error`` naming the secret.
    """
    if _HEADER_VALUE.fullmatch(value):
        return value
    for secret, text in secrets.items():
        if text and text in value and not _HEADER_VALUE.fullmatch(text):
            raise ToolError(
                "configuration_error",
                f"header {name!r} cannot carry the value of the secret {secret} "
                f"({_unfit(text)}, such as a trailing newline from a file); "
                "fix the variable on the server",
                header=name,
            )
    raise ToolError(
        "invalid_arguments",
        f"header {name!r} cannot carry its value ({_unfit(value)}); "
        "pass such text in the query or the body",
        header=name,
    )


def _unfit(value: str) -> str:
    """Why a header cannot carry ``value`` (which ``_HEADER_VALUE`` refused)."""
    return "non-ASCII text" if value.isprintable() else "a line break or control character"


def _text_finalize(eval_ctx: Any, value: Any) -> str:
    if value is None or _is_undefined(value):
        return ""
    return _spelled(value)


def _spelled(value: Any) -> str:
    """A value as text in a URL, header, query value or text body: JSON's spelling, not
    Python's (``true``, not ``True``; ``[1,2]``, not ``[1, 2]``; ``100000000000000000000``,
    not ``1e+20``, as JavaScript writes numbers). ``None`` is left out (``""``) by the
    callers, as a missing argument is."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return str(value)


_SSL: list[Any] = []


def warm() -> None:
    """Build the TLS context and rehearse one request, once, in the sandbox's zygote.

    Without it every forked call would reload the CA files and import httpcore
    and h11 itself (about 70 ms per sandboxed call). The rehearsal (a GET to a
    one-shot local responder) leaves what httpx, httpcore and h11 set up on
    first use in the zygote, shared by every fork: a call then copies about 270
    fewer pages of memory (``bench/inline.py``: a sandboxed http call went from
    about 8 to 5 ms). Best effort: without a loopback (a network-isolated
    zygote) it is skipped.
    """
    import httpx

    httpx.Client(verify=ssl_context(), trust_env=False).close()
    with contextlib.suppress(Exception):
        _rehearse_request()


def _rehearse_request() -> None:
    """``HttpConfig.run`` against a forked responder on 127.0.0.1 that answers once."""
    import os
    import signal
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the responder
            try:
                listener.settimeout(10)
                conn, _ = listener.accept()
                conn.settimeout(10)
                request = b""
                while b"\r\n\r\n" not in request and (chunk := conn.recv(65536)):
                    request += chunk
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2\r\n\r\n{}"
                )
                conn.close()
            finally:
                os._exit(0)
        try:
            port = listener.getsockname()[1]
            # Generous: a loaded machine may be slow to schedule the responder, and
            # a rehearsal given up on only leaves the first call to set up more.
            config = HttpConfig(
                url=f"http://127.0.0.1:{port}/", connect_timeout=5.0, read_timeout=5.0
            )
            config.run(CallContext(action="warm", arguments={}, timeout=5.0))
        finally:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def ssl_context() -> Any:
    """The process-wide default TLS context (certifi's CA bundle, as httpx uses)."""
    if not _SSL:
        import ssl

        import certifi

        _SSL.append(ssl.create_default_context(cafile=certifi.where()))
    return _SSL[0]


def select(data: Any, path: str) -> Any:
    """Follow a dotted path (``data.items.0.name``) into decoded JSON.

    Raises:
        ToolError: ``response_selection`` when a step does not exist.
    """
    current = data
    for step in [p for p in path.removeprefix("$").split(".") if p]:
        if isinstance(current, dict) and step in current:
            current = current[step]
        elif (
            isinstance(current, list)
            and step.lstrip("-").isdigit()
            and -len(current) <= int(step) < len(current)
        ):
            current = current[int(step)]
        else:
            raise ToolError("response_selection", f"the response has no {step!r} at {path!r}")
    return current


@register_action_kind
class HttpConfig(ActionConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``http:`` — a request to a fixed host.

    Attributes:
        method: HTTP method.
        url: template; scheme and host must be literal text.
        headers / query / form: templates per value (an empty query value is omitted).
        json: a JSON body; string leaves are templates, ``"{{ name }}"`` keeps its type.
        response: dotted path selecting part of a JSON response.
        connect_timeout / read_timeout: seconds; the action's timeout bounds the total.
        max_response_kb: larger responses are refused with ``response_too_large``.
        follow_redirects: off by default; on, redirects on the URL's own host only.
    """

    key: ClassVar[str] = "http"
    inline: ClassVar[bool] = True  # isolation: inline runs ``run_inline`` in the server
    network_default: ClassVar[bool] = True
    preload: ClassVar[tuple[str, ...]] = ("httpx", "jinja2.sandbox", "gateway.executors.http:warm")

    url: Annotated[str, msgspec.Meta(min_length=1)]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    json: Any = None
    form: dict[str, str] | None = None
    response: str | None = None
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 5.0
    read_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 30.0
    max_response_kb: Annotated[int, msgspec.Meta(ge=1, le=65536)] = 1024
    follow_redirects: bool = False

    def check(self, action: Action, ctx: CheckContext) -> list[KindProblem]:
        """Templates parse; the URL's scheme and host are literal; one body at most."""
        import jinja2

        problems: list[KindProblem] = []
        env = _envs()[0]
        for path, text in self._templates():
            try:
                env.parse(text)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(KindProblem(path, f"template does not parse: {exc.message}"))
        origin = _ORIGIN.match(self.url)
        if origin is None or "{" in origin.group(0) or "%" in origin.group(2):
            problems.append(
                KindProblem(
                    "url",
                    "the scheme and host of url must be literal text (http:// or https://host)",
                )
            )
        if self.json is not None and self.form is not None:
            problems.append(KindProblem("form", "use json or form, not both"))
        return problems

    def _templates(self) -> list[tuple[str, str]]:
        found = [("url", self.url)]
        found += [(f"headers.{k}", v) for k, v in self.headers.items()]
        found += [(f"query.{k}", v) for k, v in self.query.items()]
        found += [(f"form.{k}", v) for k, v in (self.form or {}).items()]

        def walk(node: Any, path: str) -> None:
            if isinstance(node, str):
                found.append((path, node))
            elif isinstance(node, dict):
                for k, v in node.items():
                    walk(v, f"{path}.{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{path}.{i}")

        walk(self.json, "json")
        return found

    def _build(self, call: CallContext) -> tuple[str, dict[str, str], dict[str, Any]]:
        """Render the URL, headers and body/query arguments for httpx."""
        context: dict[str, Any] = {
            **call.arguments,
            "args": call.arguments,
            "secrets": call.secrets,
        }
        url = _template(self.url, url=True).render(context)
        literal = _ORIGIN.match(self.url)
        rendered = _ORIGIN.match(url)
        if literal is None or rendered is None or literal.group(0) != rendered.group(0):
            raise ToolError("invalid_url", "the rendered URL changed its scheme or host")
        headers = {
            k: _header_value(k, _template(v, url=False).render(context), call.secrets)
            for k, v in self.headers.items()
        }
        if not any(k.lower() == "accept-encoding" for k in headers):
            # What _Body can undo (httpx would also offer br and zstd when their packages
            # are installed, and the body is read raw).
            headers["Accept-Encoding"] = "gzip, deflate"
        params = {}
        for k, v in self.query.items():
            value = _template(v, url=False).render(context)
            if value != "":
                params[k] = value
        url = _with_query(url, params)
        kwargs: dict[str, Any] = {}
        if self.json is not None:
            kwargs["json"] = _render_json(self.json, context)
        if self.form is not None:
            kwargs["data"] = {
                k: _template(v, url=False).render(context) for k, v in self.form.items()
            }
        return url, headers, kwargs

    def template_names(self) -> frozenset[str]:
        """The argument names the URL, headers, query and body templates read by name
        (``args`` and ``secrets`` are the render's own)."""
        texts = [text for _, text in self._templates()]
        return _templates.template_names(_envs()[0], texts) - {"args", "secrets"}

    def sandbox_warm(self) -> None:
        """Compile every template once in the zygote (a call's fork then only renders).

        Compiles, never renders: a template's run time belongs to a call, under its timeout.
        """
        _template(self.url, url=True)
        for path, text in self._templates()[1:]:
            whole = _WHOLE.match(text.strip()) if path.startswith("json") else None
            if whole is not None:  # as _render_json renders it
                _expression(whole.group(1))
            else:
                _template(text, url=False)

    def _timeout(self, total: float) -> httpx.Timeout:
        """Connect, read, write and pool timeouts, none above the action's ``total``."""
        import httpx

        return httpx.Timeout(
            connect=min(self.connect_timeout, total),
            read=min(self.read_timeout, total),
            write=min(self.read_timeout, total),
            pool=min(self.connect_timeout, total),
        )

    def run(self, call: CallContext) -> Any:
        """Send the request and return the (selected) body: JSON when the server says so."""
        import httpx

        url, headers, kwargs = self._build(call)
        body = _Body(self.max_response_kb, call.timeout)
        with (
            _transport_errors(),
            httpx.Client(
                timeout=self._timeout(call.timeout),
                follow_redirects=False,  # followed here, on the same host only
                trust_env=False,
                verify=ssl_context(),
            ) as client,
        ):
            request = client.build_request(self.method, url, headers=headers, **kwargs)
            for _ in range(_MAX_REDIRECTS + 1):
                response = client.send(request, stream=True)
                try:
                    following = self._redirect(request, response)
                    if following is None:
                        body.start(response)
                        for chunk in response.iter_raw():
                            body.add(chunk)
                        body.finish()
                        return self._answer(response, bytes(body.data), call.masked())
                finally:
                    response.close()
                request = following
        raise _too_many_redirects()

    async def run_inline(self, call: CallContext, pools: Pools) -> Any:
        """``isolation: inline``: the same request through the server's pooled client.

        The shared client keeps no cookies and reads no proxy settings from the
        environment; timeouts are set per request, and redirects are followed
        here, as ``run`` follows them. Templates with a loop or a call render in
        a worker thread, never on the event loop, and stop at the call's deadline
        (a loop runs as many rounds as the model's arguments ask for); the others
        render in place: their time is bounded by their own size and the
        arguments', as decoding those is, and a hop to a thread costs more (under
        load the thread waits for the GIL: +20-30% per call, ``bench/inline.py``).
        """

        def build() -> tuple[str, dict[str, str], dict[str, Any]]:
            with _templates.deadline(call.timeout):
                return self._build(call)

        if _repeats(tuple(text for _, text in self._templates())):
            url, headers, kwargs = await pools.offload(build)
        else:
            url, headers, kwargs = build()
        body = _Body(self.max_response_kb, call.timeout)
        client = pools.http()
        with _transport_errors():
            request = client.build_request(
                self.method, url, headers=headers, timeout=self._timeout(call.timeout), **kwargs
            )
            for _ in range(_MAX_REDIRECTS + 1):
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    following = self._redirect(request, response)
                    if following is None:
                        body.start(response)
                        async for chunk in response.aiter_raw():
                            body.add(chunk)
                        body.finish()
                        return self._answer(response, bytes(body.data), call.masked())
                finally:
                    await response.aclose()
                request = following
        raise _too_many_redirects()

    def _redirect(self, request: httpx.Request, response: httpx.Response) -> httpx.Request | None:
        """The request a redirect asks for, if this action follows it; None: use ``response``.

        Only redirects on the URL's own host are followed: the scheme and host
        are literal in the manifest so that neither the model nor an open
        redirect on the API can choose where a call (and its secret headers) goes.
        """
        following = response.next_request if self.follow_redirects else None
        if following is None:
            return None
        if not _same_host(request.url, following.url):
            raise ToolError(
                "http_redirect",
                f"HTTP {response.status_code}: the server redirected to another host "
                f"({following.url.scheme}://{following.url.host}); only redirects on "
                f"{request.url.scheme}://{request.url.host} are followed",
                status=response.status_code,
            )
        return following

    def _answer(self, response: httpx.Response, body: bytes, secrets: dict[str, str]) -> Any:
        """What goes back to the model: non-2xx is an error; JSON decoded, ``response`` selected.

        An error body's excerpt is cut and its whitespace collapsed after ``secrets``
        are masked: a secret the body echoes across the cut, or one with line breaks
        (a PEM key), would no longer match whole when the result is masked.
        """
        text = body.decode(response.encoding or "utf-8", errors="replace")
        if not 200 <= response.status_code < 300:
            excerpt = " ".join(mask(text, secrets).split())[:300]
            raise ToolError(
                "http_status",
                f"HTTP {response.status_code} {response.reason_phrase}: {excerpt}".rstrip(": "),
                status=response.status_code,
            )
        content_type = response.headers.get("content-type", "")
        is_json = "json" in content_type
        if not is_json and self.response is None:
            return text
        try:
            data = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError):  # msgspec's depth guard: RecursionError
            if self.response is not None:
                raise ToolError(
                    "response_selection", "the response is not JSON (or nested too deeply)"
                ) from None
            return text
        return select(data, self.response) if self.response else data


_MAX_REDIRECTS = 10
"""Redirects a call follows (``follow_redirects: true``) before failing with ``http_redirect``."""


def _same_host(origin: httpx.URL, target: httpx.URL) -> bool:
    """Whether a redirect from ``origin`` to ``target`` stays on its host.

    Same host, same scheme and port; or the same host upgraded from ``http`` to
    ``https``, both on their default ports.
    """
    if origin.host != target.host:
        return False
    if origin.scheme == target.scheme:
        return origin.port == target.port
    return (origin.scheme, target.scheme) == (
        "http",
        "https",
    ) and origin.port is target.port is None


def _too_many_redirects() -> ToolError:
    return ToolError("http_redirect", f"more than {_MAX_REDIRECTS} redirects")


_MAX_ENCODINGS = 4
"""Content codings a response may stack (``gzip, gzip``...); more is an ``http_error``."""


class _Inflater:
    """One ``gzip`` or ``deflate`` layer undone as data arrives, its output capped."""

    def __init__(self, name: str, limit: int) -> None:
        self._deflate = name == "deflate"
        # deflate is meant as zlib-wrapped, but servers send raw deflate too (httpx tries both).
        self._z = zlib.decompressobj(zlib.MAX_WBITS if self._deflate else zlib.MAX_WBITS | 16)
        self._limit = limit
        self._produced = 0
        self._first = True

    def feed(self, data: bytes) -> bytes:
        """Inflate ``data``; ``_TooLarge`` once the output would pass the limit."""
        room = self._limit - self._produced + 1
        try:
            out = self._z.decompress(data, room)
        except zlib.error:
            if not (self._deflate and self._first):
                raise
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._z.decompress(data, room)
        self._first = self._first and not data
        return self._count(out)

    def flush(self) -> bytes:
        """What is left once the body ended."""
        return self._count(self._z.flush(self._limit - self._produced + 1))

    def _count(self, out: bytes) -> bytes:
        self._produced += len(out)
        if self._produced > self._limit:
            raise _TooLarge
        return out


class _TooLarge(Exception):
    """A layer's output passed its limit."""


class _Body:
    """A response body as it arrives, decoded, held to the size cap and the action's total time.

    The body is read raw and its ``Content-Encoding`` undone here, never by
    httpx: httpx inflates each network read whole, so a few hundred bytes of
    ``gzip, gzip`` can inflate to gigabytes before any cap is checked. Here
    every layer stops at the cap (an inner, still compressed layer at twice the
    cap), so memory stays near ``max_response_kb`` whatever the server sends.
    """

    def __init__(self, max_kb: int, total: float) -> None:
        self.data = bytearray()
        self._max_kb = max_kb
        self._total = total
        self._deadline = time.monotonic() + total
        self._status = 0
        self._layers: list[_Inflater] = []

    def start(self, response: httpx.Response) -> None:
        """Take the status and the content codings of ``response`` (before its body)."""
        self._status = response.status_code
        names = [
            v.strip().lower()
            for v in response.headers.get_list("content-encoding", split_commas=True)
        ]
        names = [n for n in names if n != "identity"]
        unknown = sorted({n for n in names if n not in ("gzip", "x-gzip", "deflate")})
        if unknown:  # br, zstd...: the bytes would reach the model still compressed
            raise ToolError(
                "http_error",
                f"the response is encoded with {', '.join(unknown)}, which this action cannot "
                "decode (it asks for gzip or deflate unless its headers set Accept-Encoding)",
                status=self._status,
            )
        if len(names) > _MAX_ENCODINGS:
            raise ToolError(
                "http_error",
                f"the response stacks {len(names)} content encodings (at most {_MAX_ENCODINGS})",
                status=self._status,
            )
        cap = self._max_kb * 1024
        # Applied in the order listed: undone from the last.
        layers = list(reversed(names))
        self._layers = [
            _Inflater(n, cap if i == len(layers) - 1 else 2 * cap + 1024)
            for i, n in enumerate(layers)
        ]

    def add(self, chunk: bytes) -> None:
        """Append raw ``chunk``; a ``ToolError`` once over the cap or past the deadline."""
        self._decode(chunk, flush=False)

    def finish(self) -> None:
        """The body ended: flush the decoders (a ``ToolError`` if that passes the cap)."""
        self._decode(b"", flush=True)

    def _decode(self, chunk: bytes, *, flush: bool) -> None:
        try:
            for layer in self._layers:
                chunk = layer.feed(chunk) + (layer.flush() if flush else b"")
        except _TooLarge:
            self._too_large()
        except zlib.error as exc:
            raise ToolError("http_error", f"DecodingError: {exc}", status=self._status) from None
        self.data += chunk
        if len(self.data) > self._max_kb * 1024:
            self._too_large()
        if time.monotonic() > self._deadline:
            raise ToolError("timeout", f"the request took longer than {self._total:g}s")

    def _too_large(self) -> None:
        raise ToolError(
            "response_too_large",
            f"the response is over the {self._max_kb} KB limit",
            status=self._status,
        )


@contextlib.contextmanager
def _transport_errors() -> Iterator[None]:
    """httpx's timeouts and transport errors as tool errors (``http_timeout``, ``http_error``)."""
    import httpx

    try:
        yield
    except httpx.TimeoutException as exc:
        raise ToolError("http_timeout", f"{type(exc).__name__}: the request timed out") from None
    except httpx.HTTPError as exc:
        raise ToolError("http_error", f"{type(exc).__name__}: {exc}") from None


def _render_json(node: Any, context: dict[str, Any]) -> Any:
    if isinstance(node, str):
        whole = _WHOLE.match(node.strip())
        if whole is not None:
            value = _expression(whole.group(1))(context)
            return None if _is_undefined(value) else value
        return _template(node, url=False).render(context)
    if isinstance(node, dict):
        return {k: _render_json(v, context) for k, v in node.items()}
    if isinstance(node, list):
        return [_render_json(v, context) for v in node]
    return node
