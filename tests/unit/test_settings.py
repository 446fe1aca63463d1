"""Settings: every variable of DESIGN.md's table, its default, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import Settings, SettingsError, read_dotenv


def from_env(env: dict[str, str], dotenv: Path | None = None) -> Settings:
    return Settings.from_env(env, dotenv=dotenv)


def test_defaults_are_the_development_defaults() -> None:
    """With an empty environment every field has its documented default."""
    s = from_env({})
    assert s.manifests == Path("manifests")
    assert s.database_url == "sqlite:///var/gateway.db"
    assert (s.api_keys, s.admin_keys) == ((), ())
    assert s.default_assistant is None
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.watch is True
    assert s.sse_heartbeat == 15.0
    assert s.environment == "development"
    assert s.auth == "keys"
    assert (s.logging_level, s.log_format) == ("INFO", "keyvalue")
    assert s.openai_api_key is None and s.openai_base_url is None
    assert s.max_body_bytes == 1_048_576
    assert s.gateway_root is None
    assert s.run_lease == 30.0
    assert (s.sandbox_concurrency, s.inline_concurrency) == (8, 16)


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"GATEWAY_MANIFESTS": "/srv/m"}, "manifests", Path("/srv/m")),
        ({"GATEWAY_DATABASE_URL": "postgresql://u@h/db"}, "database_url", "postgresql://u@h/db"),
        ({"GATEWAY_API_KEYS": "a, b ,,c"}, "api_keys", ("a", "b", "c")),
        ({"GATEWAY_ADMIN_KEYS": "ops=k1"}, "admin_keys", ("ops=k1",)),
        ({"GATEWAY_DEFAULT_ASSISTANT": "support"}, "default_assistant", "support"),
        ({"ASSISTANT_ID": "legacy"}, "default_assistant", "legacy"),
        ({"GATEWAY_HOST": "0.0.0.0"}, "host", "0.0.0.0"),
        ({"GATEWAY_PORT": "9000"}, "port", 9000),
        ({"GATEWAY_WATCH": "off"}, "watch", False),
        ({"GATEWAY_WATCH": "YES"}, "watch", True),
        ({"GATEWAY_SSE_HEARTBEAT": "2.5"}, "sse_heartbeat", 2.5),
        ({"GATEWAY_DRAIN_SECONDS": "0"}, "drain_seconds", 0.0),
        ({"GATEWAY_DRAIN_SECONDS": "25"}, "drain_seconds", 25.0),
        ({"ENVIRONMENT": "Production"}, "environment", "production"),
        ({"GATEWAY_AUTH": "none"}, "auth", "none"),
        ({"LOGGING_LEVEL": "DEBUG"}, "logging_level", "DEBUG"),
        ({"LOGGING_LEVEL": " warning "}, "logging_level", "WARNING"),
        ({"LOG_FORMAT": "json"}, "log_format", "json"),
        ({"OPENAI_API_KEY": "sk-test"}, "openai_api_key", "sk-test"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, "openai_base_url", "http://127.0.0.1:1/v1"),
        ({"GATEWAY_MAX_BODY_BYTES": "10"}, "max_body_bytes", 10),
        ({"GATEWAY_SANDBOX_CONCURRENCY": "3"}, "sandbox_concurrency", 3),
        ({"GATEWAY_INLINE_CONCURRENCY": "64"}, "inline_concurrency", 64),
        ({"GATEWAY_INLINE_CONCURRENCY": " 2 "}, "inline_concurrency", 2),
        ({"GATEWAY_RELOAD_DEBOUNCE_MS": "5"}, "reload_debounce_ms", 5),
        ({"GATEWAY_RUN_LEASE": "7.5"}, "run_lease", 7.5),
        ({"GATEWAY_EVENT_FLUSH_MS": "0"}, "event_flush_ms", 0),
        ({"GATEWAY_ROOT": "/srv"}, "gateway_root", Path("/srv")),
        ({"GATEWAY_HISTORY_MAX_MESSAGES": "40"}, "history_max_messages", 40),
        ({"GATEWAY_HISTORY_MAX_KB": "16384"}, "history_max_kb", 16384),
        (
            {"GATEWAY_CORS_ORIGINS": "https://app.example, http://127.0.0.1:3000,*"},
            "cors_origins",
            ("https://app.example", "http://127.0.0.1:3000", "*"),
        ),
        (
            {"GATEWAY_CORS_ORIGINS": "HTTPS://*.Example.com:8443,https://App.example"},
            "cors_origins",
            ("https://*.example.com:8443", "https://app.example"),
        ),
    ],
)
def test_each_variable_sets_its_field(env: dict[str, str], field: str, expected: object) -> None:
    """Each documented variable lands in its field with the right type."""
    assert getattr(from_env(env), field) == expected


def test_default_assistant_wins_over_its_legacy_alias() -> None:
    """GATEWAY_DEFAULT_ASSISTANT takes precedence over ASSISTANT_ID."""
    env = {"GATEWAY_DEFAULT_ASSISTANT": "new", "ASSISTANT_ID": "old"}
    assert from_env(env).default_assistant == "new"


def test_empty_values_mean_unset() -> None:
    """An empty variable keeps the default instead of becoming an empty value."""
    s = from_env({"GATEWAY_PORT": "", "OPENAI_API_KEY": "", "GATEWAY_MANIFESTS": ""})
    assert (s.port, s.openai_api_key, s.manifests) == (8000, None, Path("manifests"))


def test_legacy_variables_are_accepted_and_ignored() -> None:
    """PROJECT_ID and BUCKET_ID from the old Assistant Service do not break startup."""
    assert from_env({"PROJECT_ID": "p", "BUCKET_ID": "b"}) == from_env({})


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"GATEWAY_PORT": "abc"}, "GATEWAY_PORT"),
        ({"GATEWAY_SSE_HEARTBEAT": "soon"}, "GATEWAY_SSE_HEARTBEAT"),
        ({"GATEWAY_WATCH": "maybe"}, "GATEWAY_WATCH"),
        ({"ENVIRONMENT": "staging"}, "ENVIRONMENT"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"LOGGING_LEVEL": "verbose"}, "LOGGING_LEVEL"),
        ({"LOGGING_LEVEL": "10"}, "LOGGING_LEVEL"),
        ({"GATEWAY_AUTH": "basic"}, "GATEWAY_AUTH"),
        ({"GATEWAY_RUN_LEASE": "0"}, "GATEWAY_RUN_LEASE"),
        ({"GATEWAY_RUN_LEASE": "-5"}, "GATEWAY_RUN_LEASE"),
        ({"GATEWAY_INLINE_CONCURRENCY": "many"}, "GATEWAY_INLINE_CONCURRENCY"),
        ({"GATEWAY_INLINE_CONCURRENCY": "0"}, "GATEWAY_INLINE_CONCURRENCY"),
        ({"GATEWAY_INLINE_CONCURRENCY": "-4"}, "GATEWAY_INLINE_CONCURRENCY"),
        ({"GATEWAY_INLINE_CONCURRENCY": "2.5"}, "GATEWAY_INLINE_CONCURRENCY"),
        ({"GATEWAY_EVENT_FLUSH_MS": "-1"}, "GATEWAY_EVENT_FLUSH_MS"),
        ({"GATEWAY_PORT": "-1"}, "GATEWAY_PORT"),
        ({"GATEWAY_PORT": "65536"}, "GATEWAY_PORT"),
        ({"GATEWAY_SSE_HEARTBEAT": "0"}, "GATEWAY_SSE_HEARTBEAT"),
        ({"GATEWAY_SSE_HEARTBEAT": "inf"}, "GATEWAY_SSE_HEARTBEAT"),
        ({"GATEWAY_MAX_BODY_BYTES": "-1"}, "GATEWAY_MAX_BODY_BYTES"),
        ({"GATEWAY_MAX_BODY_BYTES": "0"}, "GATEWAY_MAX_BODY_BYTES"),
        ({"GATEWAY_SANDBOX_CONCURRENCY": "0"}, "GATEWAY_SANDBOX_CONCURRENCY"),
        ({"GATEWAY_RELOAD_DEBOUNCE_MS": "-50"}, "GATEWAY_RELOAD_DEBOUNCE_MS"),
        ({"GATEWAY_RATE_LIMIT": "-1"}, "GATEWAY_RATE_LIMIT"),
        ({"GATEWAY_RATE_LIMIT": "nan"}, "GATEWAY_RATE_LIMIT"),
        ({"GATEWAY_RATE_LIMIT_BURST": "-3"}, "GATEWAY_RATE_LIMIT_BURST"),
        ({"GATEWAY_RUN_LEASE": "nan"}, "GATEWAY_RUN_LEASE"),
        ({"GATEWAY_DRAIN_SECONDS": "-1"}, "GATEWAY_DRAIN_SECONDS"),
        ({"GATEWAY_DRAIN_SECONDS": "inf"}, "GATEWAY_DRAIN_SECONDS"),
        ({"GATEWAY_HISTORY_MAX_MESSAGES": "0"}, "GATEWAY_HISTORY_MAX_MESSAGES"),
        ({"GATEWAY_HISTORY_MAX_MESSAGES": "10001"}, "GATEWAY_HISTORY_MAX_MESSAGES"),
        ({"GATEWAY_HISTORY_MAX_MESSAGES": "lots"}, "GATEWAY_HISTORY_MAX_MESSAGES"),
        ({"GATEWAY_HISTORY_MAX_KB": "0"}, "GATEWAY_HISTORY_MAX_KB"),
        ({"GATEWAY_HISTORY_MAX_KB": "16385"}, "GATEWAY_HISTORY_MAX_KB"),
        ({"GATEWAY_HISTORY_MAX_KB": "1.5"}, "GATEWAY_HISTORY_MAX_KB"),
        ({"GATEWAY_CORS_ORIGINS": "app.example.com"}, "GATEWAY_CORS_ORIGINS"),
        (
            {"GATEWAY_CORS_ORIGINS": "https://ok.example,https://app.example/"},
            "GATEWAY_CORS_ORIGINS",
        ),
        ({"GATEWAY_CORS_ORIGINS": "https://app-*.example.com"}, "GATEWAY_CORS_ORIGINS"),
        ({"GATEWAY_CORS_ORIGINS": "https://*.com"}, "GATEWAY_CORS_ORIGINS"),
    ],
)
def test_malformed_values_are_errors_naming_the_variable(
    env: dict[str, str], variable: str
) -> None:
    """A malformed value raises SettingsError naming the variable, never a silent default."""
    with pytest.raises(SettingsError, match=variable):
        from_env(env)


@pytest.mark.parametrize(
    ("env", "field", "expected"),
    [
        ({"GATEWAY_PORT": "0"}, "port", 0),
        ({"GATEWAY_RELOAD_DEBOUNCE_MS": "0"}, "reload_debounce_ms", 0),
        ({"GATEWAY_RATE_LIMIT": "0"}, "rate_limit", 0.0),
        ({"GATEWAY_RATE_LIMIT_BURST": "0"}, "rate_limit_burst", 0),
    ],
)
def test_zero_stays_valid_where_it_means_something(
    env: dict[str, str], field: str, expected: object
) -> None:
    """Port 0 (any free port), no debounce, no rate limit, burst = the limit: all still accepted."""
    assert getattr(from_env(env), field) == expected


def test_history_budget_errors_say_the_range() -> None:
    """An out-of-range history budget names the variable and the range it must be in."""
    with pytest.raises(SettingsError) as info:
        from_env({"GATEWAY_HISTORY_MAX_KB": "0"})
    assert (
        str(info.value) == "GATEWAY_HISTORY_MAX_KB must be a whole number from 1 to 16384, got '0'"
    )
    defaults = from_env({})
    assert (defaults.history_max_messages, defaults.history_max_kb) == (200, 400)


def test_inline_concurrency_error_says_what_is_expected() -> None:
    """A bad GATEWAY_INLINE_CONCURRENCY names the variable, the value and what would do."""
    with pytest.raises(SettingsError) as caught:
        from_env({"GATEWAY_INLINE_CONCURRENCY": "0"})
    assert (
        str(caught.value)
        == "GATEWAY_INLINE_CONCURRENCY must be a whole number of at least 1, got '0'"
    )


def test_root_is_the_parent_of_the_manifests_root(tmp_path: Path) -> None:
    """Python actions import from the manifests root's parent unless GATEWAY_ROOT says otherwise."""
    manifests = tmp_path / "repo" / "manifests"
    manifests.mkdir(parents=True)
    assert from_env({"GATEWAY_MANIFESTS": str(manifests)}).root == tmp_path / "repo"
    override = from_env({"GATEWAY_MANIFESTS": str(manifests), "GATEWAY_ROOT": str(tmp_path)})
    assert override.root == tmp_path


def test_dotenv_is_read_and_real_variables_win(tmp_path: Path) -> None:
    """A .env file fills variables, but the real environment takes precedence."""
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\nexport GATEWAY_PORT=9100\nGATEWAY_HOST='0.0.0.0'\n"
        'OPENAI_API_KEY="sk-file"\nnot a pair\n\n',
        encoding="utf-8",
    )
    s = from_env({"OPENAI_API_KEY": "sk-env"}, dotenv=dotenv)
    assert (s.port, s.host, s.openai_api_key) == (9100, "0.0.0.0", "sk-env")


def test_missing_dotenv_is_fine(tmp_path: Path) -> None:
    """A .env path that does not exist is skipped."""
    assert from_env({}, dotenv=tmp_path / "nope.env") == from_env({})


def test_read_dotenv_parses_quotes_comments_and_export(tmp_path: Path) -> None:
    """read_dotenv strips quotes and `export`, skips comments and lines without `=`."""
    path = tmp_path / ".env"
    path.write_text('export A=1\nB="two words"\n# C=3\nD\nE=x=y\n', encoding="utf-8")
    assert read_dotenv(path) == {"A": "1", "B": "two words", "E": "x=y"}


def test_root_is_the_manifests_parent_as_given_not_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git-sync's ``current -> revs/r1``: the root is ``current`` (it was ``revs/r1``,
    which the next flip replaces and git-sync deletes); a relative path is made
    absolute, its ``..`` removed."""
    (tmp_path / "revs" / "r1" / "manifests").mkdir(parents=True)
    (tmp_path / "current").symlink_to("revs/r1")
    given = tmp_path / "current" / "manifests"
    assert from_env({"GATEWAY_MANIFESTS": str(given)}).root == tmp_path / "current"
    monkeypatch.chdir(tmp_path)
    relative = "current/manifests/../manifests"
    assert from_env({"GATEWAY_MANIFESTS": relative}).root == tmp_path / "current"


def test_dotenv_inline_comments_are_not_part_of_the_value(tmp_path: Path) -> None:
    """`OPENAI_API_KEY=s3cret # the web team` made the key "s3cret # the web team" (and
    GATEWAY_PORT=9100 # api an error): a ` #` ends an unquoted value, as docker compose
    and python-dotenv read it; a quoted value ends at its closing quote, a `#` inside it
    or not after a space is kept."""
    path = tmp_path / ".env"
    path.write_text(
        "OPENAI_API_KEY=s3cret # the web team\n"
        "GATEWAY_PORT=9100\t# the api\n"
        'A="x # y" # a comment\n'
        "B='q'  # another\n"
        "C=abc#def\n"
        "D=   # nothing\n"
        'E="unclosed # c\n'
        "F=#starts-with-a-hash\n",
        encoding="utf-8",
    )
    assert read_dotenv(path) == {
        "OPENAI_API_KEY": "s3cret",
        "GATEWAY_PORT": "9100",
        "A": "x # y",
        "B": "q",
        "C": "abc#def",
        "D": "",
        "E": '"unclosed',
        "F": "#starts-with-a-hash",  # a password may: a comment only after a blank
    }
    settings = from_env({}, dotenv=path)
    assert (settings.openai_api_key, settings.port) == ("s3cret", 9100)
