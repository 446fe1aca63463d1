"""Key parsing, constant-time lookup, route access levels and the token bucket."""

from __future__ import annotations

import pytest

from gateway.api.auth import KeyRing, RateLimiter, route_access
from gateway.errors import Forbidden
from gateway.settings import Settings, SettingsError


def test_key_entries_plain_named_and_limited() -> None:
    """`KEY`, `name=KEY` and `name@a+b=KEY` parse into principals; the key is never the name."""
    ring = KeyRing(["plain", "web=k2", "kiosk@support+sales=k3"], ["ops=adm"], open_=False)
    plain = ring.lookup("plain")
    assert plain is not None
    assert plain.name == "key-1"
    assert plain.assistants is None
    assert not plain.admin
    web = ring.lookup("k2")
    assert web is not None
    assert web.name == "web"
    kiosk = ring.lookup("k3")
    assert kiosk is not None
    assert kiosk.name == "kiosk"
    assert kiosk.assistants == frozenset({"support", "sales"})
    assert kiosk.may_use("sales")
    assert not kiosk.may_use("billing")
    with pytest.raises(Forbidden):
        kiosk.check_assistant("billing")
    admin = ring.lookup("adm")
    assert admin is not None
    assert admin.admin
    assert admin.may_use("anything")
    assert ring.lookup("nope") is None
    assert ring.lookup("") is None


def test_a_key_containing_equals_signs_is_kept_whole() -> None:
    """A base64-looking entry whose prefix is not a name is the key itself."""
    ring = KeyRing(["a/b+c==", "x y=z"], [], open_=False)
    assert ring.lookup("a/b+c==") is not None
    assert ring.lookup("x y=z") is not None


def test_a_name_ending_in_a_newline_is_no_name() -> None:
    """`ops\\n=k` is one key, not key `k` named "ops\\n" (`$` matches before a final newline)."""
    ring = KeyRing(["ops\n=k"], [], open_=False)
    assert ring.lookup("k") is None
    whole = ring.lookup("ops\n=k")
    assert whole is not None and whole.name == "key-1"


def test_open_only_in_development_without_keys() -> None:
    """No keys: open in development, refused in production unless GATEWAY_AUTH=none."""
    assert KeyRing.from_settings(Settings()).open
    assert not KeyRing.from_settings(Settings(api_keys=("k",))).open
    assert not KeyRing.from_settings(Settings(admin_keys=("k",))).open
    with pytest.raises(SettingsError):
        KeyRing.from_settings(Settings(environment="production"))
    assert KeyRing.from_settings(Settings(environment="production", auth="none")).open


@pytest.mark.parametrize(
    ("path", "level"),
    [
        ("/", "open"),
        ("/health", "open"),
        ("/ready", "open"),
        ("/schema", "open"),
        ("/schema/openapi.json", "open"),
        ("/ui", "open"),
        ("/chat", "client"),
        ("/schemas", "client"),
        ("/v1/models", "client"),
        ("/metrics", "client"),
        ("/manifests/status", "admin"),
        ("/manifests/status/", "admin"),
        ("//manifests/status", "admin"),
        ("/manifests//status", "admin"),
        ("/./manifests/./status", "admin"),
        ("/x/../manifests/reload", "admin"),
        ("//actions/calculate/invoke", "admin"),
        ("/actions/calculate/invoke/", "admin"),
        ("/actions//calculate//invoke", "admin"),
        ("//health", "open"),
        ("/manifests/reload", "admin"),
        ("/actions/get_weather/invoke", "admin"),
        ("/actions", "client"),
    ],
)
def test_route_access(path: str, level: str) -> None:
    """Routes are open, client or admin by path alone, whatever slashes a caller adds."""
    assert route_access(path) == level


def test_token_bucket() -> None:
    """A bucket of 2 allows two calls, then says how long to wait; callers are separate."""
    limiter = RateLimiter(per_minute=60, burst=2)
    assert limiter.take("a") == 0.0
    assert limiter.take("a") == 0.0
    wait = limiter.take("a")
    assert 0.0 < wait <= 1.0
    assert limiter.take("b") == 0.0


def test_many_callers_cost_amortized_constant_time() -> None:
    """Past 10,000 recent callers (an open gateway, one bucket per address), a new caller must
    not rescan every bucket: 30,000 addresses within the refill window scan them twice (a scan
    per request, 20,000 scans, took about a minute, all of it on the event loop)."""
    limiter = RateLimiter(per_minute=60)
    scans: list[float] = []
    prune = limiter._prune
    limiter._prune = lambda now: (scans.append(now), prune(now))[1]  # type: ignore[method-assign]
    for i in range(30_000):
        assert limiter.take(f"10.0.{i // 256}.{i % 256}") == 0.0
    assert len(scans) == 2  # at 10,001 callers, then at 20,003 (the threshold doubles)
    assert limiter.take("10.0.0.0") == 0.0  # a known caller keeps its (nearly full) bucket
