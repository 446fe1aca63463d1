"""Auth on a real server: 401/403, admin separation, assistant-limited keys, WebSocket keys, 429."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import websockets
from conftest import GatewayServer, ServerFactory
from httpx_sse import connect_sse

from gateway.app import create_app
from gateway.settings import Settings, SettingsError

CLIENT, WEB, ADMIN = "client-key-123", "web-key-456", "admin-key-789"
KEYS = {"GATEWAY_API_KEYS": f"{CLIENT},web@helper={WEB}", "GATEWAY_ADMIN_KEYS": f"ops={ADMIN}"}


def bearer(key: str) -> dict[str, str]:
    """The Authorization header for ``key``."""
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def server(gateway_server: ServerFactory, api_manifests: Path) -> GatewayServer:
    """A server with a client key, a key limited to `helper`, and an admin key."""
    return gateway_server(api_manifests, env=KEYS)


@pytest.fixture
def c(server: GatewayServer) -> Iterator[httpx.Client]:
    """An httpx client on that server."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_open_routes_need_no_key(c: httpx.Client) -> None:
    """/, /health, /ready, /schema and /ui answer without a key."""
    for path in ("/", "/health", "/ready", "/schema/openapi.json", "/ui"):
        assert c.get(path).status_code == 200, path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/assistants"),
        ("GET", "/actions"),
        ("GET", "/start"),
        ("POST", "/chat"),
        ("GET", "/v1/models"),
        ("GET", "/threads/x/messages"),
        ("GET", "/manifests/status"),
        ("GET", "/metrics"),
        ("GET", "/unknown/route"),
    ],
)
def test_missing_or_wrong_key_is_401(c: httpx.Client, method: str, path: str) -> None:
    """Without a key, or with a wrong one, every other route is 401 with WWW-Authenticate."""
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {CLIENT}"}):
        response = c.request(method, path, headers=headers, json={"message": "hi"})
        assert response.status_code == 401, (path, headers)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "unauthorized"
        assert CLIENT not in response.text


def test_client_key_is_not_an_admin_key(c: httpx.Client, server: GatewayServer) -> None:
    """A client key gets 403 on admin routes however the path is spelled; an admin key passes."""
    assert c.get("/assistants", headers=bearer(CLIENT)).status_code == 200
    chat = c.post("/chat", json={"assistant": "other", "message": "hi"}, headers=bearer(CLIENT))
    assert chat.status_code == 200
    for method, path in (
        ("GET", "/manifests/status"),
        ("POST", "/manifests/reload"),
        ("POST", "/actions/get_weather/invoke"),
        ("GET", "/manifests/status/"),
        ("GET", "//manifests/status"),
        ("POST", "/manifests//reload"),
        ("POST", "//actions/get_weather/invoke"),
        ("POST", "/actions/get_weather/invoke/"),
    ):
        url = server.url + path  # a full URL, so httpx keeps the path's slashes as sent
        denied = c.request(method, url, headers=bearer(CLIENT), json={"arguments": {"city": "X"}})
        assert denied.status_code == 403, path
        assert denied.json()["error"]["type"] == "forbidden"
        allowed = c.request(method, url, headers=bearer(ADMIN), json={"arguments": {"city": "X"}})
        assert allowed.status_code == 200, path
    # An admin key is also a client key; /metrics is a client route (DESIGN marks it no admin).
    assert c.get("/assistants", headers=bearer(ADMIN)).status_code == 200
    assert c.get("/metrics", headers=bearer(CLIENT)).status_code == 200


def test_key_limited_to_an_assistant(c: httpx.Client, server: GatewayServer) -> None:
    """`web@helper=KEY` sees and uses only `helper`; other assistants are 404 (as missing
    ones), their threads 403."""
    web = bearer(WEB)
    assert [a["name"] for a in c.get("/assistants", headers=web).json()] == ["helper"]
    assert c.get("/assistants/other", headers=web).status_code == 404
    assert c.get("/start", params={"assistant": "other"}, headers=web).status_code == 404
    started = c.get("/start", headers=web).json()  # its only assistant is its default
    assert started["assistant"] == "helper"
    denied = c.post("/chat", json={"assistant": "other", "message": "hi"}, headers=web)
    assert denied.status_code == 404
    assert denied.json()["error"]["type"] == "not_found"
    other_thread = c.post(
        "/chat", json={"assistant": "other", "message": "hi"}, headers=bearer(CLIENT)
    ).json()["thread_id"]
    forbidden = c.get(f"/threads/{other_thread}/messages", headers=web)
    assert forbidden.status_code == 403
    assert "other" not in forbidden.json()["error"]["message"]  # not the assistant's name
    assert (
        c.post("/chat", json={"thread_id": other_thread, "message": "x"}, headers=web).status_code
        == 403
    )
    assert c.delete(f"/threads/{other_thread}", headers=web).status_code == 403
    ok = c.post("/chat", json={"message": "weather in Rome"}, headers=web)
    assert ok.status_code == 200
    assert [a["name"] for a in c.get("/actions", headers=web).json()] == [
        "explode",
        "get_weather",
        "slow_wait",
    ]
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=WEB)
    assert [m.id for m in sdk.models.list()] == ["helper"]
    assert sdk.models.retrieve("helper").id == "helper"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("other")
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}])
    reply = sdk.chat.completions.create(
        model="helper", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content


async def test_a_limited_key_cannot_tell_which_other_assistants_exist(
    c: httpx.Client, server: GatewayServer
) -> None:
    """For a key limited to `helper`, the deployed `other` answers as the missing `nope`
    does (404, the same body but for the name) on every route that takes an assistant's
    name; `other` was a 403, so the key could tell which names exist. A key that may
    use `other` still gets it."""
    web = bearer(WEB)
    requests = {
        "assistant": lambda name, key: c.get(f"/assistants/{name}", headers=key),
        "tools": lambda name, key: c.get(f"/assistants/{name}/tools", headers=key),
        "model": lambda name, key: c.get(f"/v1/models/{name}", headers=key),
        "completion": lambda name, key: c.post(
            "/v1/chat/completions",
            json={"model": name, "messages": [{"role": "user", "content": "hi"}]},
            headers=key,
        ),
        "start": lambda name, key: c.get("/start", params={"assistant": name}, headers=key),
        "chat": lambda name, key: c.post(
            "/chat", json={"assistant": name, "message": "hi"}, headers=key
        ),
    }
    for route, request in requests.items():
        hidden, missing = request("other", web), request("nope", web)
        assert hidden.status_code == missing.status_code == 404, (route, hidden.text)
        shown = hidden.json()["error"]
        assert shown["type"] == missing.json()["error"]["type"] == "not_found"
        assert shown["message"].replace("other", "nope") == missing.json()["error"]["message"]
        assert request("other", bearer(CLIENT)).status_code == 200, route
        assert request("other", bearer(ADMIN)).status_code == 200, route
    async with websockets.connect(
        f"{server.ws_url}/ws/chat",
        subprotocols=["bearer", WEB],  # type: ignore[list-item]
        max_queue=None,
    ) as ws:
        errors = []
        for name in ("other", "nope"):
            await ws.send(json.dumps({"assistant": name, "message": "hi"}))
            errors.append(json.loads(await ws.recv())["data"])
        assert errors[0]["type"] == errors[1]["type"] == "not_found"
        assert errors[0]["message"].replace("other", "nope") == errors[1]["message"]


async def test_a_key_limited_to_several_assistants_uses_the_default_among_them(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """With ``GATEWAY_DEFAULT_ASSISTANT`` set, a key limited to several assistants that
    include it may omit the assistant (GET /start, POST /chat, a WebSocket frame), as
    DESIGN says; all three were a 400 "this key may use several assistants: name one".
    A key whose assistants do not include the default must still name one."""
    keys = {
        "GATEWAY_API_KEYS": "web@helper+other=k-web,side@other+third=k-side",
        "GATEWAY_DEFAULT_ASSISTANT": "helper",
    }
    server = gateway_server(api_manifests, env=keys)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        started = client.get("/start", headers=bearer("k-web"))
        assert started.status_code == 200, started.text
        assert started.json()["assistant"] == "helper"
        chat = client.post("/chat", json={"message": "hi"}, headers=bearer("k-web"))
        assert chat.status_code == 200, chat.text
        history = client.get(
            f"/threads/{chat.json()['thread_id']}/messages", headers=bearer("k-web")
        )
        assert history.status_code == 200
        for refused in (
            client.get("/start", headers=bearer("k-side")),
            client.post("/chat", json={"message": "hi"}, headers=bearer("k-side")),
        ):
            assert refused.status_code == 400, refused.text
            assert "name one" in refused.json()["error"]["message"]
    async with websockets.connect(
        f"{server.ws_url}/ws/chat",
        subprotocols=["bearer", "k-web"],  # type: ignore[list-item]
        max_queue=None,
    ) as ws:
        await ws.send(json.dumps({"message": "hi"}))
        created = json.loads(await ws.recv())
        assert created["event"] == "thread.run.created", created
        assert created["data"]["assistant"] == "helper"


def test_keys_limited_to_assistants_the_set_lacks_are_reported_on_every_load(
    capsys: pytest.CaptureFixture[str], gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """A key limited to an assistant the manifest set does not have (a typo, a rename) quietly
    got 403 (now 404) for it: every load now logs a warning naming the key's NAME (never the
    key) and the assistant, and /manifests/status and the reload's answer list it, until a
    set has it."""
    secrets = ["k-web-1111", "k-ghost-2222", "k-all-4444", "k-ops-5555"]
    env = {
        "GATEWAY_API_KEYS": (
            f"web@helper+helpr={secrets[0]},ghost@nobody={secrets[1]},all={secrets[2]}"
        ),
        "GATEWAY_ADMIN_KEYS": f"ops={secrets[3]}",  # admin keys use every assistant
        "LOG_FORMAT": "json",
    }
    server = gateway_server(api_manifests, env=env)
    web = "GATEWAY_API_KEYS: key 'web' is limited to assistant 'helpr', not in the manifest set"
    ghost = (
        "GATEWAY_API_KEYS: key 'ghost' is limited to assistant 'nobody', not in the manifest "
        "set, so it may use no assistant"
    )
    admin = bearer(secrets[3])
    with httpx.Client(base_url=server.url, timeout=30) as c:
        status = c.get("/manifests/status", headers=admin)
        assert status.json()["warnings"] == [web, ghost]
        assert c.get("/start?assistant=helper", headers=bearer(secrets[1])).status_code == 404
        # The operator adds the assistant: the next load no longer warns about that key.
        (api_manifests / "nobody.yaml").write_text(
            "kind: assistant\nname: nobody\ndescription: Was missing.\n"
        )
        reloaded = c.post("/manifests/reload", headers=admin).json()
        assert (reloaded["result"], reloaded["warnings"]) == ("swapped", [web])
        status = c.get("/manifests/status", headers=admin)
        assert status.json()["warnings"] == [web]
        assert c.get("/start?assistant=nobody", headers=bearer(secrets[1])).status_code == 200
        again = c.post("/manifests/reload", headers=admin).json()  # an unchanged set warns too
        assert (again["result"], again["warnings"]) == ("unchanged", [web])
    server.stop()  # before capsys closes the stream the server logs to
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    logged = [(x["level"], x["warning"]) for x in lines if x["event"] == "reload_warning"]
    expected = [web, ghost, web, web]
    assert logged == [("warning", text) for text in expected]
    for secret in secrets:
        assert secret not in err
        assert secret not in status.text


def test_sse_resume_accepts_the_key_in_the_query(c: httpx.Client) -> None:
    """EventSource cannot set headers, so GET streams accept ?api_key=."""
    body = c.post(
        "/chat", json={"assistant": "other", "message": "hi"}, headers=bearer(CLIENT)
    ).json()
    url = f"/threads/{body['thread_id']}/runs/{body['run_id']}/events"
    assert c.get(url).status_code == 401
    with connect_sse(c, "GET", url, params={"api_key": CLIENT}) as source:
        assert [e.event for e in source.iter_sse()][-1] == "done"


def test_a_base64_key_works_in_the_query_as_written(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """``?api_key=KEY`` with a base64 key (``openssl rand -base64``: ``+``, ``/``, ``=``)
    pasted as is, as the README's EventSource example does, is that key: its ``+`` was
    read as a space (form encoding), so the key never matched (401). Percent-encoded
    (``%2B``, as URLSearchParams writes it) it works too.
    """
    key = "Ab+cD/eF+gH="
    server = gateway_server(api_manifests, env={"GATEWAY_API_KEYS": f"web={key}"})
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for query in (key, key.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")):
            answer = client.get(f"/v1/models?api_key={query}")
            assert answer.status_code == 200, (query, answer.text)
        assert client.get("/v1/models?api_key=Ab cD/eF gH=").status_code == 401


async def test_websocket_auth_in_query_or_subprotocol(server: GatewayServer) -> None:
    """Browsers authenticate a WebSocket with ?api_key= or the ["bearer", KEY] subprotocols."""
    async with websockets.connect(f"{server.ws_url}/ws/chat") as ws:
        refused = json.loads(await ws.recv())
        assert refused["event"] == "error"
        assert refused["data"]["type"] == "unauthorized"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
    # max_queue=None: leaving mid-run, the client must still read the server's close
    # frame behind the run's events (websockets stops reading when its queue is full).
    async with websockets.connect(
        f"{server.ws_url}/ws/chat?api_key={CLIENT}", max_queue=None
    ) as ws:
        await ws.send(json.dumps({"assistant": "other", "message": "hi"}))
        assert json.loads(await ws.recv())["event"] == "thread.run.created"
    async with websockets.connect(
        f"{server.ws_url}/ws/chat",
        subprotocols=["bearer", WEB],  # type: ignore[list-item]
        max_queue=None,
    ) as ws:
        assert ws.subprotocol == "bearer"
        await ws.send(json.dumps({"assistant": "other", "message": "hi"}))
        denied = json.loads(await ws.recv())
        assert denied["event"] == "error"
        assert denied["data"]["type"] == "not_found"
        await ws.send(json.dumps({"message": "hi"}))
        assert json.loads(await ws.recv())["event"] == "thread.run.created"


def test_rate_limit_per_key(gateway_server: ServerFactory, api_manifests: Path) -> None:
    """GATEWAY_RATE_LIMIT/_BURST: a key over its bucket gets 429 with Retry-After; others pass."""
    server = gateway_server(
        api_manifests, env={**KEYS, "GATEWAY_RATE_LIMIT": "6", "GATEWAY_RATE_LIMIT_BURST": "3"}
    )
    with httpx.Client(base_url=server.url) as c:
        codes = [c.get("/assistants", headers=bearer(CLIENT)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = c.get("/assistants", headers=bearer(CLIENT))
        assert limited.json()["error"]["type"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 10
        assert c.get("/assistants", headers=bearer(WEB)).status_code == 200
        assert c.get("/health").status_code == 200


async def test_rate_limit_counts_each_websocket_exchange(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """One WebSocket cannot bypass GATEWAY_RATE_LIMIT: a message over it gets `rate_limited`."""
    server = gateway_server(
        api_manifests, env={**KEYS, "GATEWAY_RATE_LIMIT": "6", "GATEWAY_RATE_LIMIT_BURST": "3"}
    )
    async with websockets.connect(f"{server.ws_url}/ws/chat?api_key={CLIENT}") as ws:
        outcomes = []
        for _ in range(4):
            await ws.send(json.dumps({"assistant": "other", "message": "hi"}))
            while True:
                frame = json.loads(await ws.recv())
                if frame["event"] in ("done", "error"):
                    outcomes.append(frame)
                    break
        # The handshake's token pays for the first exchange: 3 runs, then refused.
        assert [f["event"] for f in outcomes] == ["done", "done", "done", "error"]
        assert outcomes[-1]["data"]["type"] == "rate_limited"
        # The socket stays open, and the key's bucket is the one HTTP requests draw from.
        await ws.send(json.dumps({"assistant": "other", "message": "hi"}))
        assert json.loads(await ws.recv())["data"]["type"] == "rate_limited"
    async with httpx.AsyncClient(base_url=server.url) as c:
        assert (await c.get("/assistants", headers=bearer(CLIENT))).status_code == 429


async def test_rate_limit_counts_bad_websocket_frames_too(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """A WebSocket frame that is not a valid message takes a token too: no free flood."""
    server = gateway_server(
        api_manifests, env={**KEYS, "GATEWAY_RATE_LIMIT": "6", "GATEWAY_RATE_LIMIT_BURST": "3"}
    )
    async with websockets.connect(f"{server.ws_url}/ws/chat?api_key={CLIENT}") as ws:
        types = []
        for _ in range(4):
            await ws.send("{not json")
            types.append(json.loads(await ws.recv())["data"]["type"])
    # The handshake's token pays for the first frame: 3 answered, then refused.
    assert types == ["invalid_request"] * 3 + ["rate_limited"]


def test_made_up_methods_do_not_grow_the_metrics(c: httpx.Client) -> None:
    """Methods a client invents are counted as OTHER: no key can add a time series per request."""
    for i in range(5):
        assert c.request(f"BREW{i}", "/assistants").status_code == 401
        assert c.request(f"BREW{i}", "/nowhere").status_code == 401
    text = c.get("/metrics", headers=bearer(ADMIN)).text
    assert "BREW" not in text
    assert re.search(r'gateway_http_requests_total\{method="OTHER",[^}]*status="401"\} 10', text)


def test_production_refuses_to_start_without_keys(api_manifests: Path) -> None:
    """ENVIRONMENT=production with no key fails at app creation unless GATEWAY_AUTH=none."""
    env = {"ENVIRONMENT": "production", "GATEWAY_MANIFESTS": str(api_manifests)}
    with pytest.raises(SettingsError, match="GATEWAY_API_KEYS"):
        create_app(Settings.from_env(env, dotenv=None))
    create_app(Settings.from_env({**env, "GATEWAY_AUTH": "none"}, dotenv=None))
    create_app(Settings.from_env({**env, "GATEWAY_API_KEYS": "k"}, dotenv=None))


def test_auth_none_in_production_is_open(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """GATEWAY_AUTH=none serves without keys, admin routes included."""
    server = gateway_server(
        api_manifests, env={"ENVIRONMENT": "production", "GATEWAY_AUTH": "none"}
    )
    with httpx.Client(base_url=server.url) as c:
        assert c.get("/assistants").status_code == 200
        assert c.get("/manifests/status").status_code == 200


def test_cors_for_browser_front_ends(gateway_server: ServerFactory, api_manifests: Path) -> None:
    """GATEWAY_CORS_ORIGINS: preflights need no key; answers and 401s carry the CORS header."""
    origin = "https://app.example"
    server = gateway_server(api_manifests, env={**KEYS, "GATEWAY_CORS_ORIGINS": origin})
    with httpx.Client(base_url=server.url) as c:
        preflight = c.options(
            "/chat",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code in (200, 204)
        assert preflight.headers["access-control-allow-origin"] == origin
        ok = c.get("/assistants", headers={"Origin": origin, **bearer(CLIENT)})
        assert ok.headers["access-control-allow-origin"] == origin
        exposed = ok.headers["access-control-expose-headers"].lower()
        assert "x-correlation-id" in exposed
        # The openai JS SDK reads it to know a failed completion must not be sent again.
        assert "x-should-retry" in exposed
        refused = c.get("/assistants", headers={"Origin": origin})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == origin
        stranger = c.get(
            "/assistants", headers={"Origin": "https://evil.example", **bearer(CLIENT)}
        )
        assert "access-control-allow-origin" not in stranger.headers


# What the official ``openai`` JS SDK sends from a browser (dangerouslyAllowBrowser): its
# own X-Stainless-* headers besides Authorization, so each request is preflighted with them.
_OPENAI_JS_HEADERS = (
    "authorization, content-type, x-stainless-arch, x-stainless-lang, x-stainless-os, "
    "x-stainless-package-version, x-stainless-retry-count, x-stainless-runtime, "
    "x-stainless-runtime-version, x-stainless-timeout"
)


def test_cors_preflight_admits_the_openai_js_sdk(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """A chat UI on an allowed origin using the openai JS SDK gets through its preflight
    (it was 400 'Disallowed CORS headers', so no browser client could call /v1 at all).
    """
    origin = "https://app.example"
    server = gateway_server(api_manifests, env={**KEYS, "GATEWAY_CORS_ORIGINS": origin})
    with httpx.Client(base_url=server.url) as c:
        preflight = c.options(
            "/v1/chat/completions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": _OPENAI_JS_HEADERS,
            },
        )
        assert preflight.status_code == 204, preflight.text
        assert preflight.headers["access-control-allow-origin"] == origin
        allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
        assert {h.strip() for h in _OPENAI_JS_HEADERS.split(",")} <= {a.lower() for a in allowed}
        stranger = c.options(
            "/v1/chat/completions",
            headers={
                "Origin": "https://evil.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": _OPENAI_JS_HEADERS,
            },
        )
        assert "access-control-allow-origin" not in stranger.headers


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://web-2.example.com", True),
        ("https://example.com", False),
        ("https://a.b.example.com", False),
        ("https://evilexample.com", False),
        ("https://app.example.com.evil.net", False),
        ("http://app.example.com", False),
    ],
)
def test_a_subdomain_wildcard_origin_is_one_rule_for_cors_and_the_origin_check(
    gateway_server: ServerFactory, api_manifests: Path, origin: str, allowed: bool
) -> None:
    """GATEWAY_CORS_ORIGINS=https://*.example.com: Litestar's CORS read ``*`` as ``.*`` while
    the open gateway's Origin check compared exact strings (a preflight passed, then the
    request was 403). Now both let through exactly the origins whose host is one label
    followed by .example.com, on the same scheme and port."""
    server = gateway_server(api_manifests, env={"GATEWAY_CORS_ORIGINS": "https://*.example.com"})
    body = json.dumps({"assistant": "other", "message": "hi"})
    with httpx.Client(base_url=server.url, timeout=30) as c:
        preflight = c.options(
            "/chat",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        request = c.post(
            "/chat", content=body, headers={"Origin": origin, "content-type": "text/plain"}
        )
    statuses = (preflight.status_code, request.status_code)
    assert statuses == ((204, 200) if allowed else (400, 403))
    expected = origin if allowed else None
    assert preflight.headers.get("access-control-allow-origin") == expected
    assert request.headers.get("access-control-allow-origin") == expected


def test_a_wildcard_origin_litestar_would_widen_stops_the_server(api_manifests: Path) -> None:
    """An entry with ``*`` elsewhere than a whole first label (``https://app.example.*``,
    which Litestar matched against app.example.evil.net) is a settings error naming it."""
    with pytest.raises(
        SettingsError, match=r"GATEWAY_CORS_ORIGINS entry 'https://app\.example\.\*'"
    ):
        Settings.from_env(
            {
                "GATEWAY_MANIFESTS": str(api_manifests),
                "GATEWAY_CORS_ORIGINS": "https://app.example.*",
            },
            dotenv=None,
        )


async def test_an_open_loopback_gateway_refuses_dns_rebinding(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """A page on evil.example whose name is rebound to 127.0.0.1 is same-origin with the
    gateway (Origin and Host both evil.example), so the origin check let it run assistants
    and invoke actions on a developer's open local gateway. Listening on loopback, an open
    gateway now serves browsers only under a loopback name (localhost, 127.0.0.1, [::1]).
    """
    server = gateway_server(api_manifests)
    rebound = f"evil.example:{server.port}"
    page = {"Host": rebound, "Origin": f"http://{rebound}"}
    body = json.dumps({"assistant": "helper", "message": "weather in Paris"})
    plain = {"content-type": "text/plain;charset=UTF-8"}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        refused = c.post("/chat", content=body, headers={**plain, **page})
        assert refused.status_code == 403, refused.text
        assert "evil.example" in refused.json()["error"]["message"]
        invoke = c.post(
            "/actions/get_weather/invoke", json={"arguments": {"city": "x"}}, headers=page
        )
        assert invoke.status_code == 403
        # A same-origin GET carries no Origin, but a browser marks it with Sec-Fetch-Site.
        same_site = {"Host": rebound, "Sec-Fetch-Site": "same-origin"}
        assert c.get("/manifests/status", headers=same_site).status_code == 403
        # Loopback names pass, and so do clients that are not browsers (no Origin).
        for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}"):
            ok = c.post(
                "/chat", content=body, headers={**plain, "Host": host, "Origin": f"http://{host}"}
            )
            assert ok.is_success, ok.text
        assert c.get("/assistants", headers={"Host": rebound}).is_success
    # A name the operator lists in GATEWAY_CORS_ORIGINS is served, same-origin GETs included.
    named = gateway_server(api_manifests, env={"GATEWAY_CORS_ORIGINS": f"http://{rebound}"})
    with httpx.Client(base_url=named.url, timeout=30) as c:
        listed = {"Host": rebound, "Sec-Fetch-Site": "same-origin"}
        assert c.get("/assistants", headers=listed).is_success
    # The socket goes to 127.0.0.1, the handshake names the rebound host.
    async with websockets.connect(  # type: ignore[call-arg]
        f"ws://{rebound}/ws/chat", origin=page["Origin"], host="127.0.0.1", port=server.port
    ) as ws:
        assert json.loads(await ws.recv())["data"]["type"] == "forbidden"


async def test_an_open_gateway_refuses_other_origins(
    gateway_server: ServerFactory, api_manifests: Path
) -> None:
    """With no key needed, a page on another origin cannot drive the gateway from a browser.

    A browser sends a ``text/plain`` POST (no preflight) or opens a WebSocket (no CORS)
    to any address, the developer's localhost included; ``Origin`` says whose page it is.
    """
    front = "https://app.example"
    server = gateway_server(api_manifests, env={"GATEWAY_CORS_ORIGINS": front})
    evil = {"Origin": "https://evil.example"}
    body = json.dumps({"assistant": "helper", "message": "weather in Paris"})
    plain = {"content-type": "text/plain;charset=UTF-8"}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        refused = c.post("/chat", content=body, headers={**plain, **evil})
        assert refused.status_code == 403
        assert refused.json()["error"]["type"] == "forbidden"
        assert "GATEWAY_CORS_ORIGINS" in refused.json()["error"]["message"]
        assert c.post("/v1/chat/completions", json={}, headers=evil).status_code == 403
        # Same origin (the /ui playground), an allowed origin, and no Origin (curl, SDKs) pass.
        assert c.post("/chat", content=body, headers={**plain, "Origin": server.url}).is_success
        assert c.post("/chat", content=body, headers={**plain, "Origin": front}).is_success
        assert c.post("/chat", content=body, headers=plain).is_success
        assert c.get("/health", headers=evil).status_code == 200  # open routes stay open
    async with websockets.connect(f"{server.ws_url}/ws/chat", origin=evil["Origin"]) as ws:  # type: ignore[arg-type]
        assert json.loads(await ws.recv())["data"]["type"] == "forbidden"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4403
    # max_queue=None: past 16 unread frames of the run the client would stop reading, and
    # its closing handshake then waited out its close_timeout (10 s), one run in five.
    async with websockets.connect(
        f"{server.ws_url}/ws/chat",
        origin=server.url,  # type: ignore[arg-type]
        max_queue=None,
    ) as ws:
        await ws.send(json.dumps({"assistant": "other", "message": "hi"}))
        assert json.loads(await ws.recv())["event"] == "thread.run.created"
    # With keys the key is the protection: another origin holding one is served as before.
    keyed = gateway_server(api_manifests, env=KEYS)
    with httpx.Client(base_url=keyed.url, timeout=30) as c:
        headers = {**plain, **evil, **bearer(CLIENT)}
        assert c.post("/chat", content=body, headers=headers).is_success
