"""Key parsing, constant-time lookup, route access levels and the token bucket."""

from __future__ import annotations

import pytest

from gateway.api.auth import KeyRing, RateLimiter, route_access
from gateway.errors import NotFound
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
    with pytest.raises(NotFound, match="assistant 'billing' not found"):
        kiosk.check_assistant("billing")  # as a missing one: a key cannot tell which exist
    admin = ring.lookup("adm")
    assert admin is not None
    assert admin.admin
    assert admin.may_use("anything")
    assert ring.lookup("nope") is None
    assert ring.lookup("") is None


def test_a_key_containing_equals_signs_needs_a_name() -> None:
    """An entry with `=` is NAME=KEY, split at the first `=`: a base64 key keeps its padding."""
    ring = KeyRing(["web=a/b+c==", "ops=dGVzdA=="], [], open_=False)
    web = ring.lookup("a/b+c==")
    assert web is not None and web.name == "web"
    ops = ring.lookup("dGVzdA==")
    assert ops is not None and ops.name == "ops"
    assert ring.lookup("=") is None


def test_spaces_around_the_separators_are_ignored() -> None:
    """`web = KEY`, `kiosk @ a + b = KEY` and a line break before `=` read as meant."""
    ring = KeyRing([" web = k1 ", "kiosk @ support + sales = k2", "ops\n=k3"], [], open_=False)
    web, kiosk, ops = ring.lookup("k1"), ring.lookup("k2"), ring.lookup("k3")
    assert web is not None and web.name == "web" and web.assistants is None
    assert kiosk is not None and kiosk.name == "kiosk"
    assert kiosk.assistants == frozenset({"support", "sales"})
    assert ops is not None and ops.name == "ops"  # stripped: no line break reaches a log


def test_one_name_for_several_keys_with_the_same_rights_is_a_rotation() -> None:
    """`web=old,web=new`: both keys work, both are `web` (one rate-limit bucket, one log name)."""
    ring = KeyRing(["web@helper=old", "web@helper=new", "plain", "key-3=k"], [], open_=False)
    for key in ("old", "new"):
        principal = ring.lookup(key)
        assert principal is not None and principal.name == "web"
    # A name like the one an unnamed entry gets is fine with the same rights.
    second = ring.lookup("k")
    assert second is not None and second.name == "key-3"
    plain = ring.lookup("plain")
    assert plain is not None and plain.name == "key-3"


# Each entry that used to become something else (mostly an unlimited anonymous key whose
# secret was the whole entry, or a key "=" named after the rest of a base64 key), and what
# the error must say. Every message names the variable and the position, never the key.
_MALFORMED = [
    # (api keys, admin keys, expected message fragment)
    (["web@=s3cret-1"], [], "GATEWAY_API_KEYS entry 1: after '@' come assistant names"),
    (["ok=k", "web@a b=s3cret-1"], [], "GATEWAY_API_KEYS entry 2: after '@' come assistant"),
    (["web@a++b=s3cret-1"], [], "entry 1: after '@' come assistant names"),
    (["web@+=s3cret-1"], [], "entry 1: after '@' come assistant names"),
    (["web@a@b=s3cret-1"], [], "entry 1: after '@' come assistant names"),
    (["web@helper.x=s3cret-1"], [], "entry 1: after '@' come assistant names"),
    (["web@" + "a" * 65 + "=s3cret-1"], [], "entry 1: after '@' come assistant names"),
    (["w b=s3cret-1"], [], "GATEWAY_API_KEYS entry 1: the text before '=' is no NAME"),
    (["we/b=s3cret-1"], [], "entry 1: the text before '=' is no NAME"),
    (["n" * 65 + "=s3cret-1"], [], "entry 1: the text before '=' is no NAME"),
    (["@helper=s3cret-1"], [], "entry 1: the text before '=' is no NAME"),
    (["=s3cret-1"], [], "GATEWAY_API_KEYS entry 1: nothing before '='"),
    (["web="], [], "GATEWAY_API_KEYS entry 1: no key after '=' (an unset variable?"),
    (["kiosk@helper="], [], "entry 1: no key after '='"),
    (["s3cret-1="], [], "entry 1: no key after '='"),  # base64, one padding `=`
    (["s3cret-1=="], [], "entry 1: the key after NAME= starts with '='"),  # two
    (["a/b+s3cret-1=="], [], "entry 1: the key after NAME= starts with '='"),
    (["web==s3cret-1"], [], "entry 1: the key after NAME= starts with '='"),
    (["s3cret-1 s3cret-2"], [], "GATEWAY_API_KEYS entry 1: a key cannot contain spaces"),
    (["web=s3cret-1 ops=s3cret-2"], [], "entry 1: a key cannot contain spaces"),
    (["web=s3cret-1\ts3cret-2"], [], "entry 1: a key cannot contain spaces"),
    (["web=s3cret-1\x00"], [], "entry 1: a key cannot contain spaces or control characters"),
    # Not ASCII: the SDKs cannot send it in Authorization (httpx refuses to encode it, and
    # the header arrived latin-1-decoded, so it never matched), only as ?api_key=.
    (["web=s3cret-\u00e9"], [], "GATEWAY_API_KEYS entry 1: a key can hold only ASCII"),
    (["s3cret-\u2014x"], [], "GATEWAY_API_KEYS entry 1: a key can hold only ASCII"),
    ([], ["ops=\u201cs3cret-1\u201d"], "GATEWAY_ADMIN_KEYS entry 1: a key can hold only ASCII"),
    (["   "], [], "GATEWAY_API_KEYS entry 1: empty"),
    ([], ["ops@=s3cret-1"], "GATEWAY_ADMIN_KEYS entry 1: after '@' come assistant names"),
    ([], ["x", "=s3cret-1"], "GATEWAY_ADMIN_KEYS entry 2: nothing before '='"),
    # The same key twice: only the first entry's rights would ever apply.
    (["s3cret-1", "s3cret-1"], [], "GATEWAY_API_KEYS entry 2 has the same key as "),
    (["web=s3cret-1"], ["ops=s3cret-1"], "GATEWAY_ADMIN_KEYS entry 1 has the same key as "),
    # One name for different rights: the logs and the rate limit could not tell them apart.
    (
        ["web@a=s3cret-1", "web@b=s3cret-2"],
        [],
        "GATEWAY_API_KEYS entry 2 is named 'web' like GATEWAY_API_KEYS entry 1: entries that "
        "may use different assistants need different names",
    ),
    (["web=s3cret-1", "web@b=s3cret-2"], [], "entry 2 is named 'web' like "),
    (
        ["web=s3cret-1"],
        ["web=s3cret-2"],
        "GATEWAY_ADMIN_KEYS entry 1 is named 'web' like GATEWAY_API_KEYS entry 1: a client "
        "key and an admin key need different names",
    ),
    (
        ["s3cret-1", "key-1@helper=s3cret-2"],
        [],
        "entry 2 is named 'key-1' like GATEWAY_API_KEYS entry 1 (an entry without a name is "
        "named key-N or admin-N)",
    ),
    (["admin-1=s3cret-1"], ["s3cret-2"], "GATEWAY_ADMIN_KEYS entry 1 is named 'admin-1' like"),
]


@pytest.mark.parametrize(("api", "admin", "says"), _MALFORMED)
def test_a_malformed_or_clashing_entry_is_refused_without_its_key(
    api: list[str], admin: list[str], says: str
) -> None:
    """An entry whose NAME does not parse, with no NAME or KEY, a key with spaces, the same key
    twice, or one name with different rights stops the start with an error naming the variable
    and the position: never a silent anonymous key for every assistant, never the key."""
    with pytest.raises(SettingsError) as caught:
        KeyRing(api, admin, open_=False)
    message = str(caught.value)
    assert says in message
    assert "s3cret" not in message


def test_an_admin_key_limited_to_assistants_is_refused() -> None:
    """`ops@helper=KEY` in GATEWAY_ADMIN_KEYS: admin keys use every assistant, so the limit the
    operator wrote would be ignored; it is refused, naming the entry, its name and the limit."""
    with pytest.raises(SettingsError) as caught:
        KeyRing([], ["root=s3cret-0", "ops@helper+sales=s3cret-1"], open_=False)
    assert str(caught.value) == (
        "GATEWAY_ADMIN_KEYS entry 2 ('ops'): an admin key may use every assistant, so "
        "'@helper+sales' would not limit it; limited keys go in GATEWAY_API_KEYS"
    )
    # The same entry is a limited client key.
    client = KeyRing(["ops@helper+sales=s3cret-1"], [], open_=False).lookup("s3cret-1")
    assert client is not None and client.assistants == frozenset({"helper", "sales"})


def test_entries_are_checked_from_the_environment_even_with_auth_none() -> None:
    """GATEWAY_AUTH=none ignores the keys but still refuses a broken entry (fix it now, not when
    authentication is turned back on); a sound set with it stays open."""
    env = {"GATEWAY_API_KEYS": "web@=s3cret-1", "GATEWAY_AUTH": "none"}
    with pytest.raises(SettingsError, match="GATEWAY_API_KEYS entry 1"):
        KeyRing.from_settings(Settings.from_env(env, dotenv=None))
    env = {"GATEWAY_API_KEYS": " ok=s3cret-1 , ,web@helper = s3cret-2", "GATEWAY_AUTH": "none"}
    assert KeyRing.from_settings(Settings.from_env(env, dotenv=None)).open
    with pytest.raises(SettingsError, match="GATEWAY_ADMIN_KEYS entry 1 "):
        KeyRing.from_settings(Settings(admin_keys=("ops@helper=s3cret-1",)))


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
